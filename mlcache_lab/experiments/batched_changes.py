"""Pipeline changes on the partitioned path: ``batched_jit``'s rows of the behaviour table.

Each call runs in a fresh process, as :mod:`mlcache_lab.experiments.changes` runs
``cached_jit``'s rows: the base call warms the store once, then every changed
call runs in a new process against a copy of that warm store (so rows do not
warm each other). A call reports the statuses of ``batched_jit``'s levels
(:data:`~mlcache_lab.cache.store.PARTITIONED_LEVELS`) and, per executable
its plan needed, the statuses of that segment's trace/lower/compile.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from typing import Any

from ..bench.fresh_process import run_json_child
from .calls import MODULE_NAME, CallSpec, write_model_module

__all__ = ["BATCHED_CHANGES", "BatchedChange", "BatchedSpec", "run_batched_changes"]


@dataclasses.dataclass(frozen=True)
class BatchedSpec:
    """One call of ``batched_jit(apply)`` in a fresh process.

    Attributes:
      store: the cache directory.
      workdir: where the model module is written.
      model, config: a built-in model and its keyword arguments.
      body: which version of ``apply`` (see :data:`mlcache_lab.experiments.calls.BODIES`).
      batch_size: the inputs' batch size.
      policy, micro_batch, min_cluster_size: ``batched_jit``'s options.
      compiler_options: ``batched_jit``'s XLA options, as pairs (JSON-friendly).
    """

    store: str
    workdir: str
    model: str = "mlp"
    config: tuple[tuple[str, Any], ...] = ()
    body: str = "base"
    batch_size: int = 37
    policy: str = "chunk"
    micro_batch: int = 16
    min_cluster_size: int = 1
    compiler_options: tuple[tuple[str, Any], ...] = ()

    def replace(self, **changes: Any) -> BatchedSpec:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class BatchedChange:
    """A row: how the call changes, and what ``batched_jit``'s levels must do.

    Attributes:
      name, description: the row's id and its text in the table.
      changes: the fields of :class:`BatchedSpec` the changed call sets.
      expected: the status of each of trace, partition and segments; a
        missing level is not pinned.
      executables: what the executables the plan needs do: ``"loaded"``
        (every one from disk), ``"new sizes"`` (compiled only at run sizes the
        base call did not compile for), ``"recompiled"`` (every one compiled
        again from its segment's StableHLO found on disk), ``"any"`` (not
        pinned: a new clustering may or may not change the segment programs).
    """

    name: str
    description: str
    changes: tuple[tuple[str, Any], ...]
    expected: dict[str, str]
    executables: str = "loaded"


BATCHED_CHANGES: tuple[BatchedChange, ...] = (
    BatchedChange(
        "nothing",
        "batched_jit: nothing (new process, warm store)",
        (),
        {"trace": "bypassed", "partition": "bypassed", "segments": "disk"},
    ),
    BatchedChange(
        "policy_buckets",
        "batched_jit: policy chunk -> buckets",
        (("policy", "buckets"),),
        {"trace": "bypassed", "partition": "disk", "segments": "miss"},
        "new sizes",
    ),
    BatchedChange(
        "micro_batch",
        "batched_jit: new micro_batch",
        (("micro_batch", 8),),
        {"trace": "bypassed", "partition": "bypassed", "segments": "disk"},
        "new sizes",
    ),
    BatchedChange(
        "compiler_option",
        "batched_jit: compiler option",
        (("compiler_options", (("xla_backend_optimization_level", 0),)),),
        {"trace": "bypassed", "partition": "bypassed", "segments": "disk"},
        "recompiled",
    ),
    BatchedChange(
        "min_cluster_size",
        "batched_jit: new min_cluster_size",
        (("min_cluster_size", 3),),
        {"trace": "disk", "partition": "miss"},
        "any",
    ),
    BatchedChange(
        "code_edit_same_jaxpr",
        "batched_jit: code edit that leaves the jaxpr the same",
        (("body", "same_jaxpr"),),
        {"trace": "miss", "partition": "disk", "segments": "disk"},
    ),
    BatchedChange(
        "new_batch_size",
        "batched_jit: new batch size under chunk",
        (("batch_size", 45),),
        {"trace": "bypassed", "partition": "bypassed", "segments": "disk"},
    ),
)


def run_fresh_batched(spec: BatchedSpec, *, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``spec`` in a new Python process; what it reports (see :func:`_child`)."""
    write_model_module(
        CallSpec(spec.store, spec.workdir, spec.model, spec.config, spec.body)  # the module only
    )
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    return run_json_child(
        "mlcache_lab.experiments.batched_changes",
        [json.dumps(dataclasses.asdict(spec))],
        what="the fresh batched_jit process",
        env=env,
        timeout=timeout,
    )


def run_batched_changes(
    spec: BatchedSpec, changes: tuple[BatchedChange, ...] = BATCHED_CHANGES
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Warm a store with ``spec`` once; each change runs on its own copy of it.

    Returns the base call's report and each change's, by name.
    """
    base = run_fresh_batched(spec)
    out = {}
    for change in changes:
        store = f"{spec.store}-{change.name}"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(spec.store, store)
        changed = spec.replace(store=store, workdir=f"{spec.workdir}-{change.name}")
        out[change.name] = run_fresh_batched(changed.replace(**dict(change.changes)))
    return base, out


def check_row(change: BatchedChange, base: dict[str, Any], changed: dict[str, Any]) -> str:
    """``""`` when ``changed`` is what ``change`` expects; otherwise what differs."""
    got = {level: changed["levels"][level]["status"] for level in change.expected}
    if got != change.expected:
        return f"levels {got}, expected {change.expected}"
    if changed["max_abs_diff"] > 1e-5:
        return f"results differ from jax.jit by {changed['max_abs_diff']}"
    compiled = [c for c in changed["executables"] if c["compile"] == "miss"]
    if change.executables == "any":
        return ""
    if change.executables == "loaded":
        if compiled or any(c["compile"] != "disk" for c in changed["executables"]):
            return f"executables not all loaded from disk: {changed['executables']}"
        return ""
    if change.executables == "recompiled":
        every = changed["executables"]
        if not every or any(c["compile"] != "miss" or c["lower"] != "disk" for c in every):
            return f"executables not all compiled again from a cached lowering: {every}"
        return ""
    base_sizes = {c["run_size"] for c in base["executables"]}
    again = [c for c in compiled if c["run_size"] in base_sizes]
    if not compiled or again:
        return f"compiled {compiled}; at sizes the base call had compiled for: {again}"
    return ""


def _child(spec_json: str) -> dict[str, Any]:
    import time

    start = time.perf_counter()
    spec = BatchedSpec(**json.loads(spec_json))
    sys.path.insert(0, spec.workdir)
    import importlib

    import jax
    import numpy as np

    import mlcache_lab as mcl

    module = importlib.import_module(MODULE_NAME)
    model = module.MODEL
    args = model.example_args(spec.batch_size)
    bf = mcl.batched_jit(
        module.apply,
        batch_axes=model.batch_axes,
        policy=spec.policy,
        micro_batch=spec.micro_batch,
        min_cluster_size=spec.min_cluster_size,
        compiler_options=dict(spec.compiler_options) or None,
        store=mcl.CacheStore(spec.store),
    )
    t_call = time.perf_counter()
    out = jax.block_until_ready(bf(*args))
    call_seconds = time.perf_counter() - t_call
    report = bf.last_report
    timeline = bf.last_timeline
    assert report is not None  # narrowing: a call sets it
    expected = jax.jit(module.apply)(*args)
    return {
        "call_seconds": call_seconds,
        "process_seconds": time.perf_counter() - start,
        "levels": {
            level: {"status": lvl.status, "reason": lvl.reason, "seconds": lvl.seconds}
            for level, lvl in report.levels.items()
        },
        "executables": [
            {"segment": c.segment, "run_size": c.run_size, **c.statuses}
            for c in timeline.compilations
        ],
        "max_abs_diff": float(
            max(
                np.max(np.abs(np.asarray(a) - np.asarray(b)))
                for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True)
            )
        ),
    }


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1])))
