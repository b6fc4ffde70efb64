"""Benchmark: batch analysis + clustering time against jaxpr size (equations).

Run ``python -m mlcache_lab.bench.partition_scaling``; it writes
``data/partition_scaling.csv`` (the first line says which command made it).

The programs are unrolled residual MLP stacks: per layer a matmul, bias,
activation and residual add (batched), a weight rescaling (invariant), and
every fourth layer a batch-norm-like centring over the batch (mixes), so all
three kinds of clusters and many cluster boundaries appear. Timed separately:

* ``analysis``: :func:`mlcache_lab.partition.analyze` on the inlined jaxpr,
  traced with the symbolic batch dimension ``B`` as :func:`partition` does;
* ``clustering``: growing clusters and building their runnable jaxprs;
* ``partition``: the whole :func:`partition` call including tracing with
  ``jax.make_jaxpr`` and inlining, for reference (a partition lowers
  nothing: the schedule lowers its segments, so no lowering is timed).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mlcache_lab.partition import analyze, partition
from mlcache_lab.partition.api import cluster_plan, trace
from mlcache_lab.partition.cluster import build_clusters

__all__ = ["main", "make_program", "measure"]

EQNS_PER_LAYER = 8  # approximate; the measured count is written to the CSV


def make_program(layers: int, width: int = 8) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A program of about ``EQNS_PER_LAYER * layers`` equations and its example args."""

    def program(ws: jax.Array, x: jax.Array) -> jax.Array:
        h = x
        for i in range(layers):
            w = ws[i % ws.shape[0]] * 0.5
            h = h + jnp.tanh(h @ w + 0.1)
            if i % 4 == 3:
                h = h - h.mean(axis=0)
        return h

    ws = jnp.ones((4, width, width), jnp.float32) / width
    x = jnp.ones((4, width), jnp.float32)
    return program, (ws, x)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure(layers: int, repeats: int = 5) -> dict[str, Any]:
    """Timings (best of ``repeats``, seconds) for one program size."""
    fn, args = make_program(layers)
    axes = [None, 0]
    closed, _, _ = trace(fn, args, axes)  # symbolic batch B, as partition() traces
    n_eqns = len(closed.jaxpr.eqns)
    analysis = analyze(closed.jaxpr, axes)
    t_analysis = _best(lambda: analyze(closed.jaxpr, axes), repeats)

    def clustering() -> None:
        plan = cluster_plan(closed, analysis)
        build_clusters(closed, analysis, plan, 4)

    t_cluster = _best(clustering, repeats)
    plan = cluster_plan(closed, analysis)
    t_partition = _best(lambda: partition(fn, *args, batch_axes=(None, 0)), max(1, repeats // 2))
    return {
        "equations": n_eqns,
        "clusters": len(plan.members),
        "analysis_s": round(t_analysis, 5),
        "clustering_s": round(t_cluster, 5),
        "analysis_plus_clustering_s": round(t_analysis + t_cluster, 5),
        "partition_total_s": round(t_partition, 5),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure sizes up to 10,000 equations and write the CSV."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/partition_scaling.csv")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, nargs="*",
                        default=[13, 38, 125, 250, 625, 1250])  # fmt: skip
    ns = parser.parse_args(argv)
    rows = [measure(n, ns.repeats) for n in ns.layers]
    out = pathlib.Path(ns.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        f.write(
            f"# made by: python -m mlcache_lab.bench.partition_scaling "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()
            + f" | jax {jax.__version__}, Python {platform.python_version()}, "
            f"{platform.machine()}, best of {ns.repeats}\n"
        )
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(row)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
