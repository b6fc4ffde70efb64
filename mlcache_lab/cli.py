"""The ``mlcache-lab`` command line: ``demo`` runs the cache tour on the built-in transformer."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

LEVELS = ("trace", "lower", "compile")


def _default_store_root() -> Path:
    return Path(os.path.expanduser(os.environ.get("MLCACHE_LAB_DIR") or "~/.cache/mlcache_lab"))


def demo(args: argparse.Namespace) -> int:
    """Each pipeline change of the cache table in fresh processes; a table, a CSV and a plot."""
    from .stages.changes import CHANGES, CallSpec, run_change

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    store_root = Path(args.store).expanduser() if args.store else _default_store_root() / "demo"
    if store_root.exists():
        shutil.rmtree(store_root)  # the tour starts cold, every time
    config = (("layers", args.layers), ("seq", args.seq), ("width", args.width))
    print(
        f"mlcache-lab demo: built-in transformer ({args.layers} layers, sequence {args.seq}, "
        f"width {args.width}), batch {args.batch_size}"
    )
    print(f"store: {store_root}  (each change starts from a store warmed by the base call)\n")
    header = f"{'change':<44} " + " ".join(f"{lvl:>17}" for lvl in LEVELS) + "   call s  ok"
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for change in CHANGES:
        spec = CallSpec(
            store=str(store_root / change.name),
            workdir=str(out / "work"),
            model="transformer",
            config=config,
            batch_size=args.batch_size,
        )
        base, changed = run_change(change, spec)
        if not rows:
            rows.append(_row("cold", "cold start (empty store)", base, None))
            _print_row(rows[-1])
        rows.append(_row(change.name, change.description, changed, change.expected))
        _print_row(rows[-1])
    csv_path = out / "cache_changes.csv"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png = _plot(rows, out / "cache_changes.png")
    ok = all(r["as_expected"] in ("yes", "") for r in rows)
    print(
        f"\n{len(rows)} runs in fresh processes, {time.perf_counter() - start:.1f} s; "
        f"every row as expected: {'yes' if ok else 'NO'}"
    )
    print(f"wrote {csv_path}" + (f" and {png}" if png else ""))
    return 0 if ok else 1


def _row(
    name: str, description: str, result: dict[str, Any], expected: dict[str, str] | None
) -> dict[str, Any]:
    report = result["report"]
    row: dict[str, Any] = {"change": name, "description": description}
    for lvl in LEVELS:
        row[f"{lvl}_status"] = report[f"{lvl}_status"]
        row[f"{lvl}_seconds"] = round(report[f"{lvl}_seconds"], 5)
        row[f"{lvl}_reason"] = report[f"{lvl}_reason"]
    row["call_seconds"] = round(result["call_seconds"], 5)
    row["process_seconds"] = round(result["process_seconds"], 5)
    if expected is None:
        row["as_expected"] = ""
    else:
        got = {lvl: row[f"{lvl}_status"] for lvl in LEVELS}
        row["as_expected"] = "yes" if got == expected else f"no (expected {expected})"
    return row


def _print_row(row: dict[str, Any]) -> None:
    cells = " ".join(f"{row[f'{lvl}_status']:>8} {row[f'{lvl}_seconds']:8.3f}" for lvl in LEVELS)
    print(
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
    colours = {"trace": "#8e24aa", "lower": "#1e88e5", "compile": "#fb8c00"}
    for lvl in LEVELS:
        values = [r[f"{lvl}_seconds"] for r in rows]
        ax.bar(labels, values, bottom=bottom, label=lvl, color=colours[lvl])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, r in enumerate(rows):
        text = "/".join(r[f"{lvl}_status"][0].upper() for lvl in LEVELS)
        ax.text(i, bottom[i], text, ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("seconds per level (first call)")
    ax.set_title("Cache levels after each pipeline change (M=miss, D=disk, B=bypassed)")
    ax.legend()
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlcache-lab",
        description="Multi-level cached compilation and batch partitioning for JAX.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser(
        "demo", help="the cache tour on the built-in transformer", description=demo.__doc__
    )
    d.add_argument("--out", default="mlcache_lab_demo", help="output folder (CSV, PNG)")
    d.add_argument(
        "--store",
        default=None,
        help="cache directory (default: <$MLCACHE_LAB_DIR or ~/.cache/mlcache_lab>/demo)",
    )
    d.add_argument("--layers", type=int, default=12)
    d.add_argument("--seq", type=int, default=64)
    d.add_argument("--width", type=int, default=256)
    d.add_argument("--batch-size", type=int, default=8)
    d.set_defaults(run=demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in ("layers", "seq", "width", "batch_size"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            print(f"mlcache-lab: {flag} must be a positive integer; got {value}.", file=sys.stderr)
            return 2
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
