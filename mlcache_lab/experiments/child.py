"""The fresh process of one :class:`~mlcache_lab.experiments.calls.Call`; prints one JSON line.

Run as ``python -m mlcache_lab.experiments.child '<call as JSON>'``. What it
prints, besides ``process_seconds`` (from the start of this module to the
end) and ``setup_seconds`` (imports, model, inputs: the same for every
setting, and not part of the measured call):

* a ``cached_jit`` program: ``call_seconds`` (first call until its result is
  ready: the cache levels plus the first execution) and ``report``, per level
  ``<level>_status``/``_seconds``/``_reason``. With the ``jax_persistent``
  setting the call is ``jax.jit(apply).trace(...).lower(...).compile(...)``
  with JAX's persistent compilation cache in the cell's store: trace and lower
  always run (``miss``), compile is ``disk`` when JAX's monitoring events
  report a cache hit during ``compile()``.
* a ``serving`` program: ``call_seconds`` (the whole trace), ``compilations``
  (XLA compilations), ``compilation_seconds``, ``padded_rows`` and per level a
  count of each status over the segments' compilations.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

from ..cache.store import LEVELS  # noqa: E402

__all__ = ["main"]

_CACHE_HIT = "/jax/compilation_cache/cache_hits"


def _use_jax_cache(directory: str) -> None:
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    # Cache every executable, however small or fast to compile, as the store does.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(text: str) -> dict[str, Any]:
    from .calls import MODULE_NAME, Call
    from .levels import CACHE_LEVELS, JAX_PERSISTENT

    call = Call.from_json(text)
    spec = call.spec
    if call.cache_levels == JAX_PERSISTENT:
        _use_jax_cache(os.path.join(spec.store, "jax"))
    import jax
    import numpy as np

    import mlcache_lab as mcl

    for name in call.imports:
        importlib.import_module(name)
    sys.path.insert(0, spec.workdir)
    module = importlib.import_module(MODULE_NAME)
    model = module.MODEL
    result: dict[str, Any] = {"batch_size": spec.batch_size}
    store = None
    if call.cache_levels != JAX_PERSISTENT:
        store = mcl.CacheStore(spec.store, levels=CACHE_LEVELS[call.cache_levels])

    if call.program == "serving":
        assert store is not None
        result.update(_serve(call, module.apply, model, store))
    else:
        args = jax.block_until_ready(model.example_args(spec.batch_size))
        ref_args = jax.tree.map(np.array, args) if call.verify else None
        result["setup_seconds"] = time.perf_counter() - _T0
        if store is None:
            out = _jax_jit(call, module.apply, args, result)
        else:
            out = _cached_jit(call, module.apply, args, store, result)
        if call.verify:
            assert ref_args is not None
            expected = jax.jit(module.apply)(*ref_args)
            result["max_abs_diff"] = float(np.max(np.abs(np.asarray(out) - np.asarray(expected))))
    result["process_seconds"] = time.perf_counter() - _T0
    return result


def _cached_jit(call: Any, apply: Any, args: Any, store: Any, result: dict[str, Any]) -> Any:
    import jax

    import mlcache_lab as mcl

    spec = call.spec
    f = mcl.cached_jit(
        apply,
        store=store,
        batch_axes=tuple(spec.batch_axes) if spec.batch_axes is not None else None,
        compiler_options=dict(spec.compiler_options) or None,
        lowering_platforms=tuple(spec.lowering_platforms) if spec.lowering_platforms else None,
        donate_argnums=tuple(spec.donate_argnums),
    )
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    result["call_seconds"] = time.perf_counter() - t0
    assert f.last_report is not None
    report = f.last_report.as_dict()
    result["report"] = {
        f"{lvl}_{field}": report[f"{lvl}_{field}"]
        for lvl in LEVELS
        if f"{lvl}_status" in report
        for field in ("status", "seconds", "reason")
    }
    return out


def _jax_jit(call: Any, apply: Any, args: Any, result: dict[str, Any]) -> Any:
    """The same call through ``jax.jit``'s stages, with JAX's persistent cache."""
    import jax

    spec = call.spec
    events: list[str] = []

    def listen(event: str, **kwargs: str | int) -> None:
        events.append(event)

    jax.monitoring.register_event_listener(listen)
    lowering: dict[str, Any] = {}
    if spec.lowering_platforms:
        lowering["lowering_platforms"] = tuple(spec.lowering_platforms)
    t0 = time.perf_counter()
    traced = jax.jit(apply, donate_argnums=tuple(spec.donate_argnums)).trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower(**lowering)
    t2 = time.perf_counter()
    events.clear()
    compiled = lowered.compile(compiler_options=dict(spec.compiler_options) or None)
    t3 = time.perf_counter()
    hit = _CACHE_HIT in events
    out = jax.block_until_ready(compiled(*args))
    result["call_seconds"] = time.perf_counter() - t0
    result["report"] = {
        "trace_status": "miss",
        "trace_seconds": t1 - t0,
        "trace_reason": "jax.jit traces in every new process",
        "lower_status": "miss",
        "lower_seconds": t2 - t1,
        "lower_reason": "jax.jit lowers in every new process",
        "compile_status": "disk" if hit else "miss",
        "compile_seconds": t3 - t2,
        "compile_reason": (
            "JAX's persistent cache hit" if hit else "not in JAX's persistent cache"
        ),
    }
    return out


def _serve(call: Any, apply: Any, model: Any, store: Any) -> dict[str, Any]:
    import collections

    import jax

    import mlcache_lab as mcl

    params = model.init(jax.random.key(0))
    inputs = {n: model.make_inputs(n, jax.random.key(n)) for n in sorted(set(call.sizes))}
    jax.block_until_ready((params, inputs))
    bf = mcl.batched_jit(
        apply,
        batch_axes=model.batch_axes,
        policy=call.policy,
        micro_batch=call.micro_batch,
        store=store,
    )
    setup = time.perf_counter() - _T0
    compilations = 0
    compile_seconds = 0.0
    counts: dict[str, collections.Counter[str]] = {lvl: collections.Counter() for lvl in LEVELS}
    t0 = time.perf_counter()
    for n in call.sizes:
        jax.block_until_ready(bf(params, *inputs[n]))
        timeline = bf.last_timeline
        compilations += timeline.compile_count()
        for c in timeline.compilations:
            compile_seconds += c.seconds
            for lvl in LEVELS:
                counts[lvl][c.statuses.get(lvl, "bypassed")] += 1
    seconds = time.perf_counter() - t0
    stats = bf.stats()
    report: dict[str, Any] = {}
    for lvl in LEVELS:
        report[f"{lvl}_status"] = " ".join(f"{k}:{v}" for k, v in sorted(counts[lvl].items()))
        report[f"{lvl}_seconds"] = None
        report[f"{lvl}_reason"] = ""
    return {
        "setup_seconds": setup,
        "call_seconds": seconds,
        "compilations": compilations,
        "compilation_seconds": compile_seconds,
        "padded_rows": stats.get("padded_rows", 0),
        "calls": len(call.sizes),
        "samples": sum(call.sizes),
        "report": report,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
