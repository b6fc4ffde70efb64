"""Warm start of batched_jit in a fresh process, against cached_jit and JAX's persistent cache.

Five kinds of fresh process, alternating in one run (``--repeats`` rounds, the
order rotated each round), each timing its first call from just before it
(imports, building the model and its arguments excluded, identically for all):

* ``chunk``: ``batched_jit(apply, policy="chunk", micro_batch=16)``, warm store
  (``--micro-batch``, 16 by default);
* ``buckets``: ``batched_jit(apply, policy="buckets", micro_batch=16)``, warm store;
* ``chunk_one_program``: ``chunk`` with ``share_blocks=False``, the ablation
  of repeated blocks (:mod:`mlcache_lab.schedule.repeats`): the batched work
  stays one program;
* ``cached_jit``: ``cached_jit(apply, batch_axes=...)``, warm store;
* ``jax``: ``jax.jit(apply)`` with JAX's persistent compilation cache warm.

The first round (each variant's cold start, into empty caches) is kept
as ``repeat = -1`` and reported apart. Each reports ``first_result`` (the
first call's result is ready) and where
the time went: ``resolve`` (for ``batched_jit``: looking up
trace/partition/segments; for ``cached_jit``: its levels, the executable's
load included), ``load`` (finding and loading every segment's executable),
``execute`` (for ``cached_jit``: its first execution; for ``batched_jit``:
the executions' spans on the timeline, which include the loading that did not
happen while an earlier chunk ran: chunks are dispatched without waiting for
the one before), ``glue`` (slicing, padding, assembling between them), the
rows its executables were built for (``run_sizes``) and the level statuses.

Models (``--model``): ``transformer``, the built-in one (its layers under
``lax.scan``, ``--layers`` deep, 12 by default), and ``transformer_loop``, the
same blocks with the layers in a Python loop (``get_model("transformer",
scan=False)``), so the jaxpr grows with the depth (48 layers: the case where
tracing and analysis cost most, and where ``batched_jit`` cuts the layers into
blocks that share one program, :mod:`mlcache_lab.schedule.repeats`). Batch
37 by default: under ``chunk`` 16+16+5 (padded to 16: 48 rows computed for
37), under ``buckets`` 16+16+4+1. The summary gives the rows ``chunk``
computes, since its first executions scale with them: ``--micro-batch 19``
runs 19+18, one padded row.

Run: ``python -m mlcache_lab.bench.batched_warm_start --model transformer --layers 12
--repeats 7`` (and with ``--micro-batch 19``) and ``python -m
mlcache_lab.bench.batched_warm_start --model transformer_loop --layers 48 --repeats 5``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .fresh_process import bench_main, round_order, spawn_child, write_csv

MODULE = "mlcache_lab.bench.batched_warm_start"

__all__ = ["main", "run_benchmark", "summarize"]

VARIANTS = ("chunk", "buckets", "cached_jit", "jax", "chunk_one_program")
BATCHED = {"chunk": ("chunk", True), "buckets": ("buckets", True)}
BATCHED["chunk_one_program"] = ("chunk", False)  # (policy, share_blocks)
MODELS = ("transformer", "transformer_loop")
MICRO_BATCH = 16  # --micro-batch's default


def _build(model: str, layers: int, batch: int) -> tuple[Any, tuple[Any, ...], Any]:
    """``(apply, args, batch_axes)`` of ``model`` at ``batch``."""
    from mlcache_lab.models import get_model

    built = get_model("transformer", layers=layers, scan=model == "transformer")
    return built.apply, built.example_args(batch), built.batch_axes


def _child(
    variant: str,
    workdir: str,
    layers: int,
    batch: int,
    model: str = MODELS[0],
    micro_batch: int = MICRO_BATCH,
) -> dict[str, Any]:
    import jax

    if variant == "jax":
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax-cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import mlcache_lab as mcl

    apply, args, batch_axes = _build(model, layers, batch)
    args = jax.block_until_ready(args)
    result: dict[str, Any] = {"variant": variant, "model": model}
    store = os.path.join(workdir, "store")
    t0 = time.perf_counter()
    if variant in BATCHED:
        policy, share_blocks = BATCHED[variant]
        bf = mcl.batched_jit(
            apply,
            batch_axes=batch_axes,
            policy=policy,
            micro_batch=micro_batch,
            store=mcl.CacheStore(store),
            share_blocks=share_blocks,
        )
        out = jax.block_until_ready(bf(*args))
        result["first_result"] = time.perf_counter() - t0
        report, timeline = bf.last_report, bf.last_timeline
        assert report is not None  # narrowing: a call sets it
        result["resolve"] = report.total_seconds
        result["load"] = sum(c.seconds for c in timeline.compilations)
        result["run"] = timeline.total_seconds
        # Chunks are dispatched without waiting: a later size's executable loads while
        # the chunk before runs, so spans hold only the loading that was not hidden.
        calls = sum(e.end - e.start for e in timeline.executions)
        result["execute"] = calls
        result["glue"] = timeline.total_seconds - calls
        result["executables"] = len(timeline.compilations)
        sizes = sorted({c.run_size for c in timeline.compilations})
        result["run_sizes"] = " ".join(map(str, sizes))
        compiles = sorted({c.statuses["compile"] for c in timeline.compilations})
        result["statuses"] = "/".join(report.statuses().values()) + " compile:" + ",".join(compiles)
    elif variant == "cached_jit":
        f = mcl.cached_jit(apply, store=mcl.CacheStore(store), batch_axes=batch_axes)
        out = jax.block_until_ready(f(*args))
        result["first_result"] = time.perf_counter() - t0
        assert f.last_report is not None
        result["resolve"] = f.last_report.total_seconds
        result["execute"] = result["first_result"] - result["resolve"]
        result["statuses"] = "/".join(f.last_report.statuses().values())
    else:
        compiled = jax.jit(apply).trace(*args).lower().compile()
        out = jax.block_until_ready(compiled(*args))
        result["first_result"] = time.perf_counter() - t0
        result["statuses"] = "jax persistent cache"
    result["checksum"] = float(jax.numpy.sum(jax.numpy.abs(jax.tree_util.tree_leaves(out)[0])))
    return result


def _spawn(
    variant: str, workdir: str, layers: int, batch: int, model: str, micro_batch: int
) -> dict[str, Any]:
    options = {"micro_batch": micro_batch}
    return spawn_child(MODULE, variant, workdir, layers, batch, model=model, options=options)


def run_benchmark(
    layers: int = 12,
    batch: int = 37,
    repeats: int = 5,
    out: Path | None = None,
    model: str = MODELS[0],
    micro_batch: int = MICRO_BATCH,
) -> list[dict[str, Any]]:
    """Warm every cache once, then ``repeats`` rounds of the variants, rotated each round.

    Raises:
      ValueError: ``model`` is not one of :data:`MODELS`, or ``batch`` or ``micro_batch``
        is not a positive int.
    """
    if model not in MODELS:
        raise ValueError(f"Valid options for 'model' are {list(MODELS)}. Got model={model!r}.")
    from mlcache_lab.schedule.policies import validate

    validate(batch, "chunk", micro_batch, None)  # before any process starts
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlcache-batched-warm-") as workdir:
        for variant in VARIANTS:  # cold: each writes its own entries
            row = _spawn(variant, workdir, layers, batch, model, micro_batch)
            row.update(repeat=-1, layers=layers, batch=batch, micro_batch=micro_batch)
            rows.append(row)
        for repeat in range(repeats):
            for variant in round_order(VARIANTS, repeat):
                row = _spawn(variant, workdir, layers, batch, model, micro_batch)
                row.update(repeat=repeat, layers=layers, batch=batch, micro_batch=micro_batch)
                rows.append(row)
    if out is not None:
        _write(rows, out, layers, batch, repeats, model, micro_batch)
    return rows


FIELDS = ["variant", "model", "repeat", "layers", "batch", "micro_batch", "first_result"]
FIELDS += ["resolve"]
FIELDS += ["load", "execute", "glue", "run", "executables", "run_sizes", "statuses", "checksum"]


def _write(
    rows: list[dict[str, Any]],
    out: Path,
    layers: int,
    batch: int,
    repeats: int,
    model: str,
    micro_batch: int,
) -> None:
    command = (
        f"python -m {MODULE} --model {model} --layers {layers} --batch {batch} "
        f"--micro-batch {micro_batch} --repeats {repeats} --out {out}"
    )
    write_csv(out, rows, command, FIELDS)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Medians per variant, the ratios against the targets, and where batched_jit's time goes."""
    cold = {r["variant"]: r["first_result"] for r in rows if r["repeat"] == -1}
    warm = [r for r in rows if r["repeat"] != -1]

    def med(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in warm if r["variant"] == variant and key in r)

    first = rows[0]
    batch, micro = first["batch"], first["micro_batch"]
    padded = -(-batch // micro) * micro
    lines = [
        f"model: {first['model']}, {first['layers']} layers, batch {batch}, micro_batch {micro}: "
        f"chunk computes {padded} rows ({padded / batch:.3f} x the batch), buckets {batch}"
    ]
    lines.append(
        f"{'variant':<18} {'cold s':>8} {'first result s':>15} {'resolve s':>10} {'load s':>8} "
        f"{'execute s':>10} {'glue s':>8} {'executables':>12}"
    )
    for v in VARIANTS:
        parts = [f"{v:<18} {cold.get(v, float('nan')):8.3f} {med(v, 'first_result'):15.4f}"]
        parts.append(f"{med(v, 'resolve'):10.4f}" if v != "jax" else " " * 10)
        parts.append(f"{med(v, 'load'):8.4f}" if v in BATCHED else " " * 8)
        parts.append(f"{med(v, 'execute'):10.4f}" if v != "jax" else " " * 10)
        if v in BATCHED:
            parts.append(f"{med(v, 'glue'):8.4f} {int(med(v, 'executables')):12d}")
        lines.append(" ".join(parts).rstrip())
    ours = med("cached_jit", "first_result")
    jax_ = med("jax", "first_result")
    for v, target in (("chunk", 1.05), ("buckets", 1.25), ("chunk_one_program", 1.05)):
        took = med(v, "first_result")
        lines.append(
            f"{v}: / cached_jit = {took / ours:.3f} (target <= {target}), / jax = "
            f"{took / jax_:.3f}; resolve {med(v, 'resolve'):.4f} s, loading "
            f"{med(v, 'load'):.4f} s over {int(med(v, 'executables'))} executables, first "
            f"executions with the loading not hidden behind them {med(v, 'execute'):.4f} s "
            f"(cached_jit's, loading excluded: {med('cached_jit', 'execute'):.4f} s), glue "
            f"{med(v, 'glue'):.4f} s"
        )
    statuses = sorted({f"{r['variant']}: {r['statuses']}" for r in warm})
    lines.append("statuses (warm): " + "; ".join(statuses))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        argv,
        module=MODULE,
        doc=__doc__ or "",
        variants=VARIANTS,
        defaults={
            "layers": 12,
            "batch": 37,
            "repeats": 5,
            "out": "data/batched_warm_start.csv",
            "model": MODELS[0],
        },
        child=_child,
        run=run_benchmark,
        summarize=summarize,
        models=MODELS,
        options={"micro_batch": MICRO_BATCH},
    )


if __name__ == "__main__":
    sys.exit(main())
