"""The ``mlcache-lab`` command line.

* ``demo``: the tour on the built-in transformer: every pipeline change of the
  cache table in fresh processes, the cluster graph (SVG), a schedule over
  several batch sizes, and their plots, all in one output folder.
* ``bench <study>``: a named study (ablation grids, the warm-start and
  serving-trace benchmarks), CSV plus PNG plots.
* ``cache info|clear|prune``: look at and manage a store.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .cache.store import LEVELS

__all__ = ["main"]


def _default_store_root() -> Path:
    return Path(os.path.expanduser(os.environ.get("MLCACHE_LAB_DIR") or "~/.cache/mlcache_lab"))


def demo(args: argparse.Namespace) -> int:
    """Each pipeline change of the cache table in fresh processes; a table, a CSV and a plot."""
    from tqdm import tqdm

    from .experiments import CHANGES, CallSpec, WarmStores, run_change

    begin = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store_root = Path(args.store).expanduser() if args.store else _default_store_root() / "demo"
    if store_root.exists():
        shutil.rmtree(store_root)  # the tour starts cold, every time
    config = (("layers", args.layers), ("seq", args.seq), ("width", args.width))
    _say(
        f"mlcache-lab demo: built-in transformer ({args.layers} layers, sequence {args.seq}, "
        f"width {args.width}), batch {args.batch_size}"
    )
    _say(
        f"store: {store_root}  (each change starts from a copy of a store warmed by the base "
        "call; every call starts a fresh Python process, so a row takes a while)\n"
    )
    header = f"{'change':<44} " + " ".join(f"{lvl:>17}" for lvl in LEVELS) + "   call s  ok"
    _say(header)
    _say("-" * len(header))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    # The bar (stderr) counts the changes; each row prints above it as soon as it is done.
    bar = tqdm(
        CHANGES, desc="pipeline changes", unit="change", file=sys.stderr, disable=args.no_progress
    )
    warmed: WarmStores = {}  # rows with the same base call share its run
    for change in bar:
        bar.set_postfix_str(change.name)
        spec = CallSpec(
            store=str(store_root / change.name),
            workdir=str(out / "work"),
            model="transformer",
            config=config,
            batch_size=args.batch_size,
        )
        base, changed = run_change(change, spec, warmed=warmed)
        if not rows:
            rows.append(_row("cold", "cold start (empty store)", base, None))
            tqdm.write(_row_text(rows[-1]), file=sys.stdout)
        rows.append(_row(change.name, change.description, changed, change.expected))
        tqdm.write(_row_text(rows[-1]), file=sys.stdout)
    bar.close()
    csv_path = out / "cache_changes.csv"
    _write_csv(csv_path, rows)
    written = [csv_path, *filter(None, [_plot(rows, out / "cache_changes.png")])]
    ok = all(r["as_expected"] in ("yes", "") for r in rows)
    _say(
        f"\n{len(rows)} runs in fresh processes, {time.perf_counter() - start:.1f} s; "
        f"every row as expected: {'yes' if ok else 'NO'}"
    )
    batched_path, batched_ok = _demo_batched(args, out, store_root / "batched")
    ok = ok and batched_ok
    written += [batched_path]
    written += _demo_graph(args, out)
    written += _demo_schedule(args, out, store_root / "schedule")
    _say(f"\nwrote {len(written)} files to {out} in {time.perf_counter() - begin:.0f} s:")
    for path in written:
        _say(f"  {path.name}")
    _say(
        f"\nOpen first: {out / 'cache_changes.png'} (what each cache level did after each "
        "pipeline change), then cluster_graph.svg and schedule.png."
    )
    return 0 if ok else 1


def _demo_batched(args: argparse.Namespace, out: Path, store: Path) -> tuple[Path, bool]:
    """batched_jit's rows of the table (trace, partition, segments), each in a fresh process."""
    from .experiments.batched_changes import (
        BATCHED_CHANGES,
        BatchedSpec,
        check_row,
        run_batched_changes,
    )

    config = (("layers", args.layers), ("seq", args.seq), ("width", args.width))
    spec = BatchedSpec(
        store=str(store), workdir=str(out / "work-batched"), model="transformer", config=config
    )
    _say(
        f"\nbatched_jit (policy chunk, micro_batch {spec.micro_batch}, batch "
        f"{spec.batch_size}): its levels after each change, and its segments' executables"
    )
    header = f"{'change':<56} {'trace':>9} {'partition':>10} {'segments':>9}  executables  ok"
    _say(header)
    _say("-" * len(header))
    base, changed = run_batched_changes(spec)
    rows = []
    for change in BATCHED_CHANGES:
        result = changed[change.name]
        problem = check_row(change, base, result)
        levels = {
            lvl: result["levels"][lvl]["status"] for lvl in ("trace", "partition", "segments")
        }
        compiles = sorted({e["compile"] for e in result["executables"]})
        rows.append(
            {
                "change": change.name,
                "description": change.description,
                **{f"{lvl}_status": status for lvl, status in levels.items()},
                **{f"{lvl}_reason": result["levels"][lvl]["reason"] for lvl in levels},
                "executables": len(result["executables"]),
                "compile_statuses": ",".join(compiles),
                "call_seconds": round(result["call_seconds"], 5),
                "as_expected": "yes" if not problem else f"no ({problem})",
            }
        )
        _say(
            f"{change.description[:56]:<56} {levels['trace']:>9} {levels['partition']:>10} "
            f"{levels['segments']:>9}  {len(result['executables'])}x {','.join(compiles):<8}"
            f"  {'yes' if not problem else 'NO'}"
        )
    path = out / "batched_changes.csv"
    _write_csv(path, rows)
    return path, all(r["as_expected"] == "yes" for r in rows)


def _say(text: str) -> None:
    print(text, flush=True)  # each line as it happens, also through a pipe


def _demo_model(args: argparse.Namespace) -> Any:
    from .models import get_model

    return get_model("transformer", layers=args.layers, seq=args.seq, width=args.width)


def _demo_graph(args: argparse.Namespace, out: Path) -> list[Path]:
    """The cluster graph of the built-in transformer: SVG and PNG (any machine), and DOT."""
    import mlcache_lab as mcl
    from mlcache_lab.partition import display

    model = _demo_model(args)
    graph = mcl.partition(model.apply, *model.example_args(2), batch_axes=model.batch_axes)
    kinds = [c.kind for c in graph.clusters]
    renderer = display.renderer()
    _say(
        f"\ncluster graph: {len(graph.clusters)} clusters ({kinds.count('batched')} batched, "
        f"{kinds.count('non_batched')} non-batched), {len(graph.dependencies)} dependencies; "
        + (
            "drawn by Graphviz"
            if renderer == "graphviz"
            else "drawn by the layered renderer (igraph + matplotlib: Graphviz's `dot` is "
            "not installed)"
        )
    )
    dot_path = out / "cluster_graph.dot"
    dot_path.write_text(graph.to_dot().source)
    svg_path = out / "cluster_graph.svg"
    svg_path.write_bytes(display.render(graph, "svg"))
    png_path = out / "cluster_graph.png"
    png_path.write_bytes(display.render(graph, "png"))
    return [dot_path, svg_path, png_path]


def _demo_schedule(args: argparse.Namespace, out: Path, store_dir: Path) -> list[Path]:
    """batched_jit over several batch sizes against jax.jit: seconds and compilations per call."""
    import jax

    import mlcache_lab as mcl

    model = _demo_model(args)
    params = model.init(jax.random.key(0))
    store = mcl.CacheStore(store_dir)
    batched = mcl.batched_jit(
        model.apply,
        batch_axes=model.batch_axes,
        policy="chunk",
        micro_batch=args.micro_batch,
        store=store,
    )
    plain = jax.jit(model.apply)
    seen: set[int] = set()
    rows = []
    _say(f"\nschedule: policy chunk, micro_batch {args.micro_batch}, against jax.jit")
    _say(f"{'batch':>6} {'batched_jit s':>14} {'compiles':>9} {'jax.jit s':>10} {'compiles':>9}")
    for size in args.sizes:
        (x,) = model.make_inputs(size, jax.random.key(size))
        t0 = time.perf_counter()
        jax.block_until_ready(batched(params, x))
        ours = time.perf_counter() - t0
        compiles = batched.last_timeline.compile_count()
        t0 = time.perf_counter()
        jax.block_until_ready(plain(params, x))
        theirs = time.perf_counter() - t0
        rows.append(
            {
                "batch_size": size,
                "batched_jit_seconds": round(ours, 5),
                "batched_jit_compilations": compiles,
                "jax_jit_seconds": round(theirs, 5),
                "jax_jit_compilations": int(size not in seen),
            }
        )
        seen.add(size)
        _say(
            f"{size:>6} {ours:14.4f} {compiles:9d} {theirs:10.4f} "
            f"{rows[-1]['jax_jit_compilations']:9d}"
        )
    csv_path = out / "schedule.csv"
    _write_csv(csv_path, rows)
    png = out / "schedule.png"
    _schedule_figure(rows).savefig(png, dpi=110)
    return [csv_path, png]


def _schedule_figure(rows: list[dict[str, Any]]) -> Any:
    """Seconds and XLA compilations per call, batched_jit against jax.jit, in call order."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 3.6), layout="tight")
    ax_t, ax_c = fig.subplots(1, 2)
    calls = range(len(rows))
    labels = [str(r["batch_size"]) for r in rows]
    for key, name in (("batched_jit", "batched_jit (chunk)"), ("jax_jit", "jax.jit")):
        ax_t.plot(calls, [r[f"{key}_seconds"] for r in rows], marker="o", label=name)
        ax_c.plot(calls, [r[f"{key}_compilations"] for r in rows], marker="o", label=name)
    for ax, label in ((ax_t, "seconds per call"), (ax_c, "XLA compilations per call")):
        ax.set_xticks(list(calls), labels)
        ax.set_xlabel("batch size, in call order")
        ax.set_ylabel(label)
        ax.legend()
    ax_c.set_ylim(bottom=0)
    ax_c.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: 0, 1, 2, never 0.25
    fig.suptitle("a schedule over several batch sizes: no new compilation per size")
    return fig


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _row(
    name: str, description: str, result: dict[str, Any], expected: dict[str, str] | None
) -> dict[str, Any]:
    report = result["report"]
    row: dict[str, Any] = {"change": name, "description": description}
    for lvl in (lvl for lvl in LEVELS if f"{lvl}_status" in report):
        row[f"{lvl}_status"] = report[f"{lvl}_status"]
        row[f"{lvl}_seconds"] = round(report[f"{lvl}_seconds"], 5)
        row[f"{lvl}_reason"] = report[f"{lvl}_reason"]
    row["call_seconds"] = round(result["call_seconds"], 5)
    row["process_seconds"] = round(result["process_seconds"], 5)
    if expected is None:
        row["as_expected"] = ""
    else:
        got = {lvl: row.get(f"{lvl}_status") for lvl in expected}
        row["as_expected"] = "yes" if got == expected else f"no (expected {expected})"
    return row


def _row_text(row: dict[str, Any]) -> str:
    # One column per level of the header; a level this call did not report shows "-".
    cells = " ".join(
        f"{row[f'{lvl}_status']:>8} {row[f'{lvl}_seconds']:8.3f}"
        if f"{lvl}_status" in row
        else f"{'-':>8} {'-':>8}"
        for lvl in LEVELS
    )
    return (
        f"{row['description'][:44]:<44} {cells} {row['call_seconds']:8.3f}  "
        f"{row['as_expected'][:3] or '-'}"
    )


def _plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    fig, ax = plt.subplots(figsize=(10, 4.5))
    labels = [r["change"] for r in rows]
    bottom = [0.0] * len(rows)
    from .viz.plots import level_colour

    drawn = [lvl for lvl in LEVELS if any(f"{lvl}_seconds" in r for r in rows)]
    for lvl in drawn:
        values = [r.get(f"{lvl}_seconds", 0.0) for r in rows]
        ax.bar(labels, values, bottom=bottom, label=lvl, color=level_colour(lvl))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, r in enumerate(rows):
        text = "/".join(r.get(f"{lvl}_status", "-")[0].upper() for lvl in drawn)
        ax.text(i, bottom[i], text, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds per level (first call)")
    ax.set_title("Cache levels after each pipeline change (M=miss, D=disk, B=bypassed)")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bench(args: argparse.Namespace) -> int:
    """Run a named study; write its CSV and PNG plots to the output folder."""
    from .experiments import studies

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    command = "mlcache-lab " + " ".join(args.argv)
    start = time.perf_counter()
    print(f"mlcache-lab bench {args.study}: {studies.STUDIES[args.study]}")
    if args.study in studies.ABLATIONS:
        written = studies.run_ablation(
            args.study,
            out,
            quick=args.quick,
            repeats=args.repeats,
            n_jobs=args.n_jobs,
            path=args.path,
            scheduler_address=args.scheduler_address,
            progress=not args.no_progress,
            command=command,
        )
    else:
        written = studies.run_benchmark(
            args.study, out, quick=args.quick, repeats=args.repeats, command=command
        )
    print(f"\n{time.perf_counter() - start:.1f} s; wrote to {out}:")
    for path in written:
        print(f"  {path.name}")
    return 0


def cache(args: argparse.Namespace) -> int:
    """Look at or manage a cache store."""
    import mlcache_lab as mcl

    path = Path(args.store).expanduser() if args.store else _default_store_root()
    if args.action != "clear" and not path.is_dir():
        print(f"no store at {path} (nothing cached yet); pass --store PATH for another one.")
        return 0
    store = mcl.CacheStore(path)
    if args.action == "clear":
        store.clear()
        print(f"cleared {path}")
        return 0
    if args.action == "prune":
        before = sum(v["bytes"] for v in store.stats().values())
        store.reduce_size(args.max_bytes)
        after = sum(v["bytes"] for v in store.stats().values())
        print(f"pruned {path}: {_size(before)} -> {_size(after)} (bound {_size(args.max_bytes)})")
        return 0
    stats = store.stats()
    print(f"store: {path}")
    print(f"{'level':<8} {'entries':>8} {'size':>10}")
    for level, s in stats.items():
        print(f"{level:<8} {s['entries']:>8} {_size(s['bytes']):>10}")
    total = sum(s["bytes"] for s in stats.values())
    print(f"{'total':<8} {sum(s['entries'] for s in stats.values()):>8} {_size(total):>10}")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


class _Parser(argparse.ArgumentParser):
    """argparse, with errors that name the command, the argument and the fix."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help`)\n")


def _positive(name: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a positive integer; got {text!r}"
            ) from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer; got {value}")
        return value

    return parse


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"--sizes must be positive batch sizes separated by commas, e.g. 1,5,8,13; got {text!r}"
        )
    return sizes


def build_parser() -> argparse.ArgumentParser:
    from .experiments.studies import STUDIES

    parser = _Parser(
        prog="mlcache-lab",
        description="Multi-level cached compilation and batch partitioning for JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser(
        "demo",
        help="the tour: cache changes, cluster graph, schedule, plots",
        description=demo.__doc__,
    )
    d.add_argument("--out", default="mlcache_lab_demo", help="output folder (CSV, PNG, SVG)")
    d.add_argument(
        "--store",
        default=None,
        help="cache directory (default: <$MLCACHE_LAB_DIR or ~/.cache/mlcache_lab>/demo)",
    )
    d.add_argument("--layers", type=_positive("--layers"), default=12)
    d.add_argument("--seq", type=_positive("--seq"), default=64)
    d.add_argument("--width", type=_positive("--width"), default=256)
    d.add_argument("--batch-size", type=_positive("--batch-size"), default=8)
    d.add_argument(
        "--sizes",
        type=_sizes,
        default=[1, 5, 8, 13, 21, 32],
        help="batch sizes the schedule runs, in order (default 1,5,8,13,21,32)",
    )
    d.add_argument(
        "--micro-batch",
        type=_positive("--micro-batch"),
        default=8,
        help="chunk size of the schedule (default 8)",
    )
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(run=demo)

    studies = "\n".join(f"  {name:<14} {text}" for name, text in STUDIES.items())
    b = sub.add_parser(
        "bench",
        help="run a named study: CSV + PNG plots",
        description=f"{bench.__doc__}\n\nstudies:\n{studies}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument(
        "study", choices=list(STUDIES), metavar="study", help=f"one of: {', '.join(STUDIES)}"
    )
    b.add_argument("--out", default="mlcache_lab_bench", help="output folder (CSV, PNG)")
    b.add_argument("--quick", action="store_true", help="tiny models, one repeat (smoke test)")
    b.add_argument(
        "--repeats",
        type=_positive("--repeats"),
        default=None,
        help="repeats per combination (default: the study's)",
    )
    b.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="ablations: runs at a time (default 1; -1: one per CPU)",
    )
    b.add_argument(
        "--path",
        default=None,
        help="ablations: study folder, for resuming (default under the cache dir)",
    )
    b.add_argument(
        "--scheduler-address",
        default=None,
        help="ablations: a Dask scheduler (tcp://host:port); --path must be shared",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(run=bench)

    c = sub.add_parser("cache", help="look at or manage a store", description=cache.__doc__)
    c.add_argument(
        "action",
        choices=["info", "clear", "prune"],
        help="info: entries and bytes per level; clear: delete everything; "
        "prune: evict least recently used entries down to --max-bytes",
    )
    c.add_argument(
        "--store",
        default=None,
        help="the store (default: $MLCACHE_LAB_DIR or ~/.cache/mlcache_lab)",
    )
    c.add_argument(
        "--max-bytes",
        type=_positive("--max-bytes"),
        default=None,
        help="prune: the bound in bytes, e.g. 1073741824 for 1 GiB",
    )
    c.set_defaults(run=cache)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    args.argv = argv
    if args.command == "cache" and args.action == "prune" and args.max_bytes is None:
        print(
            "mlcache-lab cache prune: --max-bytes is required; e.g. "
            "`mlcache-lab cache prune --max-bytes 1073741824` keeps at most 1 GiB.",
            file=sys.stderr,
        )
        return 2
    if (
        args.command == "bench"
        and args.n_jobs is not None
        and (args.n_jobs == 0 or args.n_jobs < -1)
    ):
        print(
            f"mlcache-lab bench: --n-jobs must be a positive integer or -1; got {args.n_jobs}.",
            file=sys.stderr,
        )
        return 2
    with _library_log_to_stdout():
        return int(args.run(args))


class _Stdout(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time (pytest's capture swaps it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ sets it
        pass


@contextlib.contextmanager
def _library_log_to_stdout() -> Iterator[None]:
    """The library reports through the ``mlcache_lab`` logger; the command line prints it."""
    logger = logging.getLogger("mlcache_lab")
    handler = _Stdout()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
