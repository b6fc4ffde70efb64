"""Per-call overhead on a cache hit, in one process: cached_jit against jax.jit.

A tiny function (``x + 1`` on 8 floats) is called ``--calls`` times per round
by each of ``jax.jit`` and ``cached_jit`` (in-memory store, fast path),
alternating over ``--rounds`` rounds; the median microseconds per call of each
go to ``data/call_overhead.csv``. A larger pytree argument (the 2-layer
transformer's parameters) shows what flattening many leaves adds.

Run: ``python -m mlcache_lab.bench.call_overhead [--calls 5000] [--rounds 9]``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]


def measure(calls: int = 5000, rounds: int = 9) -> list[dict[str, Any]]:
    """Median µs per call for each (case, implementation)."""
    import jax
    import jax.numpy as jnp

    import mlcache_lab as mcl
    from mlcache_lab.models import get_model

    model = get_model("transformer", layers=2, seq=8, width=16, vocab=32)
    cases: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "tiny (x + 1, 1 leaf)": (lambda x: x + 1, (jnp.ones(8),)),
        "transformer params (12 leaves)": (model.apply, model.example_args(2)),
    }
    rows = []
    for case, (fn, args) in cases.items():
        impls: dict[str, Callable[..., Any]] = {
            "jax.jit": jax.jit(fn),
            "cached_jit": mcl.cached_jit(fn, store=mcl.CacheStore(None)),
        }
        for impl in impls.values():
            jax.block_until_ready(impl(*args))
        samples: dict[str, list[float]] = {name: [] for name in impls}
        n = calls if "tiny" in case else max(calls // 20, 10)
        for _ in range(rounds):
            for name, impl in impls.items():
                seconds = timeit.timeit(functools.partial(impl, *args), number=n)
                samples[name].append(seconds / n * 1e6)
        for name, values in samples.items():
            rows.append(
                {
                    "case": case,
                    "implementation": name,
                    "calls": n,
                    "rounds": rounds,
                    "median_us": round(statistics.median(values), 3),
                    "min_us": round(min(values), 3),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcache_lab.bench.call_overhead", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", default="data/call_overhead.csv")
    args = parser.parse_args(argv)
    rows = measure(args.calls, args.rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        fh.write(
            f"# made by: python -m mlcache_lab.bench.call_overhead --calls {args.calls} "
            f"--rounds {args.rounds}\n"
        )
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(f"{row['case']:<32} {row['implementation']:<11} {row['median_us']:9.2f} µs/call")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
