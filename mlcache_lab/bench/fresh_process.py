"""The harness of the fresh-process benchmarks (warm start, integrity).

Each such benchmark is one module run two ways: as a driver that spawns
``python -m <module> --child <variant> --workdir ... --layers ... --batch ...``
processes, alternating variants, and as that child, which prints one JSON
line of measurements. This module holds the spawning and the shared command
line, so each benchmark only says what its child measures and how to sum up.
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
) -> dict[str, Any]:
    """Run ``module``'s child for ``variant`` in a fresh process; its JSON result."""
    return run_json_child(
        module,
        ["--child", variant, "--workdir", workdir, "--layers", str(layers), "--batch", str(batch)],
        what=f"the {variant} process",
        env=env,
    )


def bench_main(
    argv: Sequence[str] | None,
    *,
    module: str,
    doc: str,
    variants: Sequence[str],
    defaults: Mapping[str, Any],
    child: Callable[[str, str, int, int], dict[str, Any]],
    run: Callable[[int, int, int, Path], list[dict[str, Any]]],
    summarize: Callable[[list[dict[str, Any]]], str],
) -> int:
    """The command line shared by the fresh-process benchmarks.

    ``defaults`` gives ``layers``, ``batch``, ``repeats`` and ``out``.
    """
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=defaults["layers"])
    parser.add_argument("--batch", type=int, default=defaults["batch"])
    parser.add_argument("--repeats", type=int, default=defaults["repeats"])
    parser.add_argument("--out", default=defaults["out"])
    parser.add_argument("--child", choices=list(variants), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.layers, args.batch)))
        return 0
    rows = run(args.layers, args.batch, args.repeats, Path(args.out))
    print(summarize(rows))
    print(f"wrote {args.out}")
    return 0
