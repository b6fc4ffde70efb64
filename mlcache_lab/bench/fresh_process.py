"""Fresh Python processes that report one JSON line: the one way this package starts them.

Every measurement of a cold or warm start needs a new process: the
fresh-process benchmarks here, the pipeline changes and the ablation runs of
:mod:`mlcache_lab.experiments` all start one with :func:`run_json_child`.

The benchmarks among them (warm start, integrity) are one module run two
ways: as a driver that spawns ``python -m <module> --child <variant>
--workdir ... --layers ... --batch ...`` processes (plus ``--model ...`` for a
benchmark that takes one), alternating variants, and as that child, which
prints one JSON line of measurements. :func:`spawn_child` and
:func:`bench_main` hold the spawning and the shared command line,
:func:`round_order` the order of the variants in each round, so each
benchmark only says what its child measures and how to sum up;
:func:`write_csv` writes every benchmark's results under the command that made them.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["bench_main", "run_json_child", "spawn_child", "write_csv"]


def run_json_child(
    module: str,
    args: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """``python -m module *args`` in a new process; the dict its last stdout line holds.

    Args:
      module: the module to run (its ``__main__`` prints the JSON line last).
      args: its command-line arguments.
      what: names the process in the error message (``"the jax process"``).
      env: the child's environment (default: this process's).
      timeout: seconds before the child is killed (``subprocess.TimeoutExpired``).

    Raises:
      RuntimeError: the child exited non-zero, or printed no JSON line last; the
        message starts with ``what`` and ends with the child's stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise RuntimeError(
            f"{what} printed no JSON line last (got {lines[-1][:200]!r}):\n{proc.stderr[-4000:]}"
        ) from None
    if not isinstance(result, dict):
        raise RuntimeError(f"{what} printed {type(result).__name__}, not a JSON object, last")
    return result


def round_order(variants: Sequence[str], repeat: int) -> tuple[str, ...]:
    """The variants in the order round ``repeat`` runs them: rotated by one each round.

    Over ``len(variants)`` rounds every variant runs once at every position, so
    a drift of the machine within a round (caches, clocks, the processes before)
    falls on all of them alike, not always on the same one.
    """
    shift = repeat % len(variants)
    return tuple(variants[shift:]) + tuple(variants[:shift])


def spawn_child(
    module: str,
    variant: str,
    workdir: str,
    layers: int,
    batch: int,
    env: Mapping[str, str] | None = None,
    model: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``module``'s child for ``variant`` in a fresh process; its JSON result.

    ``options``: the benchmark's own options (:func:`bench_main`'s ``options``), by name.
    """
    args = ["--child", variant, "--workdir", workdir, "--layers", str(layers)]
    args += ["--batch", str(batch)] + ([] if model is None else ["--model", model])
    for name, value in (options or {}).items():
        args += [_flag(name), str(value)]
    return run_json_child(
        module,
        args,
        what=f"the {variant} process" + ("" if model is None else f" ({model})"),
        env=env,
    )


def bench_main(
    argv: Sequence[str] | None,
    *,
    module: str,
    doc: str,
    variants: Sequence[str],
    defaults: Mapping[str, Any],
    child: Callable[..., dict[str, Any]],
    run: Callable[..., list[dict[str, Any]]],
    summarize: Callable[[list[dict[str, Any]]], str],
    models: Sequence[str] = (),
    options: Mapping[str, int] | None = None,
) -> int:
    """The command line shared by the fresh-process benchmarks.

    ``defaults`` gives ``layers``, ``batch``, ``repeats`` and ``out`` (and
    ``model`` when ``models`` lists the choices of a ``--model`` option, which
    then reaches ``child`` and ``run`` as the keyword ``model``). ``options``:
    the benchmark's own integer options and their defaults (``{"micro_batch":
    16}`` is ``--micro-batch``), which reach ``child`` and ``run`` as keywords.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=defaults["layers"])
    parser.add_argument("--batch", type=int, default=defaults["batch"])
    parser.add_argument("--repeats", type=int, default=defaults["repeats"])
    parser.add_argument("--out", default=defaults["out"])
    if models:
        parser.add_argument(
            "--model",
            choices=list(models),
            default=defaults["model"],
            help="the model each process builds (its build time is not measured)",
        )
    for name, default in (options or {}).items():
        parser.add_argument(_flag(name), type=int, default=default, dest=name)
    parser.add_argument("--child", choices=list(variants), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    extra: dict[str, Any] = {"model": args.model} if models else {}
    extra.update({name: getattr(args, name) for name in options or {}})
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.layers, args.batch, **extra)))
        return 0
    rows = run(args.layers, args.batch, args.repeats, Path(args.out), **extra)
    print(summarize(rows))
    print(f"wrote {args.out}")
    return 0


def _flag(option: str) -> str:
    """The command-line flag of a keyword option: ``micro_batch`` is ``--micro-batch``."""
    return "--" + option.replace("_", "-")


def write_csv(
    path: Path, rows: list[dict[str, Any]], command: str, fields: list[str] | None = None
) -> None:
    """``rows`` as CSV under a comment line naming the command that made them.

    ``fields``: the columns, in order (other keys of the rows are left out);
    default: the first row's keys.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fh.write(f"# made by: {command}\n")
        writer = csv.DictWriter(fh, fieldnames=fields or list(rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
