"""Warm start in a fresh process: cached_jit with a warm store against JAX's persistent cache.

Three kinds of fresh process, alternating in one run (``--repeats`` rounds, the
order rotated each round):

* ``mlcache_lab``: ``cached_jit(model.apply, store=warm store)``, first call;
* ``jax``: ``jax.jit(model.apply)`` with JAX's persistent compilation cache
  warm (``jax_persistent_cache_min_compile_time_secs=0``): trace, lower, then
  compile (a cache hit) and the first execution;
* ``floor``: only ``deserialize_and_load`` of a serialized executable and one
  execution: no library can start faster than this.

Each process reports, from just before its first call (imports, building the
model and its arguments excluded, identically for all three: building a Keras
model is the user's cost whichever library compiles it): ``ready`` (the
executable is loaded) and ``first_result`` (the first call's result is ready),
plus ``second_call``. For mlcache_lab, the first call includes fingerprinting
the function (for a closed-over Keras model: hashing its weights). Results go
to ``data/warm_start.csv`` and a summary with medians and the ratios the issue
targets is printed.

``--model`` picks the model: the built-in ``transformer`` (``--layers``
deep), or one of :data:`~mlcache_lab.models.frameworks.FRAMEWORK_MODELS`
(``keras_resnet50``: Keras ResNet50 at 64x64 through ``stateless_call``;
``haiku_resnet18``), built with its default configuration.

Run: ``python -m mlcache_lab.bench.warm_start [--layers 48] [--repeats 7]``, or
``python -m mlcache_lab.bench.warm_start --model keras_resnet50 --repeats 5
--out data/warm_start_keras_resnet50.csv``.
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

MODULE = "mlcache_lab.bench.warm_start"

__all__ = ["main", "run_benchmark"]

VARIANTS = ("mlcache_lab", "jax", "floor")
DEFAULT_MODEL = "transformer"
# Listed here, not imported: the driver never builds a model, only its children do.
MODELS = (
    DEFAULT_MODEL,
    "equinox_mlp",
    "haiku_convbn",
    "haiku_mlp",
    "haiku_resnet18",
    "keras_attention",
    "keras_mobilenet",
    "keras_resnet50",
    "keras_sequential",
    "linen_cnn",
    "linen_transformer",
    "nnx_closed",
    "nnx_split",
    "optax_train_step",
)


def _build(model: str, layers: int) -> Any:
    if model == DEFAULT_MODEL:
        from mlcache_lab.models import get_model

        return get_model(DEFAULT_MODEL, layers=layers)
    from mlcache_lab.models.frameworks import framework_model

    return framework_model(model)


def _child(
    variant: str, workdir: str, layers: int, batch: int, model: str = DEFAULT_MODEL
) -> dict[str, Any]:
    t_process = time.perf_counter()
    if model.startswith("keras"):
        os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax

    if variant == "jax":
        jax.config.update("jax_compilation_cache_dir", os.path.join(workdir, "jax-cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import mlcache_lab as mcl

    built = _build(model, layers)
    args = jax.block_until_ready(built.example_args(batch))
    leaves = jax.tree_util.tree_leaves(args)
    setup = time.perf_counter() - t_process
    result: dict[str, Any] = {"variant": variant, "model": model, "setup_seconds": setup}

    call: Any
    t0 = time.perf_counter()
    if variant == "mlcache_lab":
        f = mcl.cached_jit(built.apply, store=mcl.CacheStore(os.path.join(workdir, "store")))
        out = jax.block_until_ready(f(*args))
        t1 = time.perf_counter()
        assert f.last_report is not None
        result["ready"] = f.last_report.total_seconds
        result["statuses"] = "/".join(f.last_report.statuses().values())
        call = f
    elif variant == "jax":
        compiled = jax.jit(built.apply).trace(*args).lower().compile()
        result["ready"] = time.perf_counter() - t0
        out = jax.block_until_ready(compiled(*args))
        t1 = time.perf_counter()
        call = compiled
    else:
        import pickle

        from jax.experimental import serialize_executable

        data = Path(workdir, "executable.pkl").read_bytes()
        payload, in_tree, out_tree = pickle.loads(data)
        compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
        result["ready"] = time.perf_counter() - t0
        out = jax.block_until_ready(compiled(*leaves))
        t1 = time.perf_counter()

        def call(*a: Any) -> Any:  # type: ignore[misc]
            return compiled(*jax.tree_util.tree_leaves(a))

    result["first_result"] = t1 - t0
    t2 = time.perf_counter()
    jax.block_until_ready(call(*args))
    result["second_call"] = time.perf_counter() - t2
    result["checksum"] = float(jax.numpy.sum(jax.numpy.abs(jax.tree_util.tree_leaves(out)[0])))
    return result


def _spawn(variant: str, workdir: str, layers: int, batch: int, model: str) -> dict[str, Any]:
    return spawn_child(
        MODULE, variant, workdir, layers, batch, model=None if model == DEFAULT_MODEL else model
    )


def _prepare(workdir: str, layers: int, batch: int, model: str) -> None:
    """Warm both caches in fresh processes; copy our executable out for the floor.

    The floor loads the very executable mlcache_lab serves (read from its
    store), so the difference between the two is mlcache_lab's own overhead.
    """
    import mlcache_lab as mcl

    _spawn("mlcache_lab", workdir, layers, batch, model)
    _spawn("jax", workdir, layers, batch, model)
    (entry,) = Path(workdir, "store", "compile", "content").glob("*/output.pkl")
    store = mcl.CacheStore(Path(workdir, "store"))  # entries are signed: read them verified
    Path(workdir, "executable.pkl").write_bytes(store.read_payload("compile", entry.parent.name))


def run_benchmark(
    layers: int = 48,
    batch: int = 8,
    repeats: int = 7,
    out: Path | None = None,
    model: str = DEFAULT_MODEL,
) -> list[dict[str, Any]]:
    """Alternate the three variants ``repeats`` times; rows of measurements.

    Raises:
      ValueError: ``model`` is not one of :data:`MODELS`.
    """
    if model not in MODELS:
        raise ValueError(
            f"Valid options for 'model' are {list(MODELS)}. Got model={model!r} instead."
        )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlcache-warm-start-") as workdir:
        _prepare(workdir, layers, batch, model)
        for repeat in range(repeats):
            for variant in round_order(VARIANTS, repeat):
                row = _spawn(variant, workdir, layers, batch, model)
                row.update(repeat=repeat, layers=layers, batch=batch)
                rows.append(row)
    if out is not None:
        _write(rows, out, layers, batch, repeats, model)
    return rows


FIELDS = ["variant", "model", "repeat", "layers", "batch", "ready", "first_result"]
FIELDS += ["second_call", "setup_seconds", "statuses", "checksum"]


def _write(
    rows: list[dict[str, Any]], out: Path, layers: int, batch: int, repeats: int, model: str
) -> None:
    option = "" if model == DEFAULT_MODEL else f" --model {model} --out {out}"
    command = (
        f"python -m mlcache_lab.bench.warm_start --layers {layers} "
        f"--batch {batch} --repeats {repeats}{option}"
    )
    write_csv(out, rows, command, FIELDS)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Medians per variant and the ratios against the targets."""
    med = {
        v: {
            k: statistics.median(r[k] for r in rows if r["variant"] == v)
            for k in ("ready", "first_result", "second_call")
        }
        for v in VARIANTS
    }
    models = sorted({r.get("model", DEFAULT_MODEL) for r in rows})
    lines = [f"model: {', '.join(models)}"]
    lines.append(f"{'variant':<12} {'ready s':>9} {'first result s':>15} {'second call s':>14}")
    for v in VARIANTS:
        m = med[v]
        lines.append(
            f"{v:<12} {m['ready']:9.4f} {m['first_result']:15.4f} {m['second_call']:14.4f}"
        )
    ours, jax_, floor = med["mlcache_lab"], med["jax"], med["floor"]
    ready = ours["ready"] / jax_["ready"]
    first = ours["first_result"] / jax_["first_result"]
    over_floor = ours["first_result"] / floor["first_result"]
    lines += [
        f"ready: mlcache_lab / jax = {ready:.3f} (target <= 0.6)",
        f"first result: mlcache_lab / jax = {first:.3f} (target <= 0.9)",
        f"first result: mlcache_lab / floor = {over_floor:.3f} (target <= 1.05)",
    ]
    statuses = {r["statuses"] for r in rows if r["variant"] == "mlcache_lab"}
    lines.append(f"mlcache_lab statuses (trace/lower/compile): {sorted(statuses)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        argv,
        module=MODULE,
        doc=__doc__ or "",
        variants=VARIANTS,
        defaults={
            "layers": 48,
            "batch": 8,
            "repeats": 7,
            "out": "data/warm_start.csv",
            "model": DEFAULT_MODEL,
        },
        child=_child,
        run=run_benchmark,
        summarize=summarize,
        models=MODELS,
    )


if __name__ == "__main__":
    sys.exit(main())
