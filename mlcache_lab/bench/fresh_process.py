"""The harness of the fresh-process benchmarks (warm start, integrity).

Each such benchmark is one module run two ways: as a driver that spawns
``python -m <module> --child <variant> --workdir ... --layers ... --batch ...``
processes (plus ``--model ...`` for a benchmark that takes one), alternating
variants, and as that child, which prints one JSON line of measurements.
This module holds the spawning and the shared command line, so each
benchmark only says what its child measures and how to sum up.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..stages.processes import run_json_child

__all__ = ["bench_main", "spawn_child"]


def spawn_child(
    module: str,
    variant: str,
    workdir: str,
    layers: int,
    batch: int,
    env: Mapping[str, str] | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Run ``module``'s child for ``variant`` in a fresh process; its JSON result."""
    args = [
        "--child",
        variant,
        "--workdir",
        workdir,
        "--layers",
        str(layers),
        "--batch",
        str(batch),
    ]
    return run_json_child(
        module,
        args + ([] if model is None else ["--model", model]),
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
) -> int:
    """The command line shared by the fresh-process benchmarks.

    ``defaults`` gives ``layers``, ``batch``, ``repeats`` and ``out`` (and
    ``model`` when ``models`` lists the choices of a ``--model`` option, which
    then reaches ``child`` and ``run`` as the keyword ``model``).
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
    parser.add_argument("--child", choices=list(variants), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    extra = {"model": args.model} if models else {}
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.layers, args.batch, **extra)))
        return 0
    rows = run(args.layers, args.batch, args.repeats, Path(args.out), **extra)
    print(summarize(rows))
    print(f"wrote {args.out}")
    return 0
