"""Real-framework models keep the partition's promises: right results, no new compilations.

Every model of :mod:`mlcache_lab.models.frameworks` (Keras, dm-haiku, flax.linen,
flax.nnx, equinox, an optax training step) is partitioned and scheduled at the
default settings:

* ``partition(...).run`` (the clusters in queue order, through the schedule's
  uncompiled reference mode) equals ``jax.jit`` (on a non-degenerate reference);
* ``batched_jit`` under ``chunk`` and ``buckets`` equals ``jax.jit`` at several
  batch sizes and compiles nothing at a new batch size whose chunk or bucket
  sizes were already seen;
* an inference model has at most :data:`MAX_CLUSTERS` clusters.

The optax training step reduces over the batch (its loss is a mean), so it
compiles per batch size until reductions are split into per-chunk partials;
it is held to the results only. ``keras_resnet50`` is left to the benchmarks
(it takes half a minute to build). Each model is built once per process.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.models.frameworks import FRAMEWORK_MODELS, check_nondegenerate, framework_model

MAX_CLUSTERS = 12
TRAINING = {"optax_train_step"}
SLOW = {"keras_mobilenet"}  # a Keras application: 50-120 s to build on a loaded machine
NAMES = [
    pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
    for n in FRAMEWORK_MODELS
    if n != "keras_resnet50"
]
MICRO_BATCH = 4  # chunk size; the largest bucket (buckets 4, 2, 1)
# Batch sizes: chunk warms up at 3 (one padded chunk of 4), then 7 and 6 reuse it;
# buckets warm up at 7 (4+2+1), then 3 (2+1) and 6 (4+2) reuse them.
ORDER = {"chunk": (3, 7, 6), "buckets": (7, 3, 6)}


@pytest.fixture(scope="module")
def references() -> dict[tuple[str, int], tuple[Any, Any]]:
    """``(args, jax.jit(apply)(*args))`` per (model, batch size), made on demand."""
    return {}


def _args_and_reference(
    references: dict[tuple[str, int], tuple[Any, Any]], name: str, batch: int
) -> tuple[Any, Any]:
    key = (name, batch)
    if key not in references:
        model = framework_model(name)
        args = model.example_args(batch, seed=batch)
        expected = jax.jit(model.apply)(*args)
        if name in TRAINING:  # new parameters and a loss: no batch axis to vary along
            assert max(float(np.max(np.abs(y))) for y in jax.tree.leaves(expected)) > 1e-3
        else:
            check_nondegenerate(expected, what=f"{name} at batch {batch}")
        references[key] = (args, expected)
    return references[key]


def assert_close(got: Any, expected: Any) -> None:
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-5 * max(scale, 1.0))


@pytest.mark.parametrize("name", NAMES)
def test_partition_runs_like_jit_in_few_clusters(name, references) -> None:
    model = framework_model(name)
    args, expected = _args_and_reference(references, name, 3)
    graph = mcl.partition(model.apply, *args, batch_axes=model.batch_axes)
    assert graph.symbolic, graph.symbolic_reason
    assert_close(graph.run(*args), expected)
    if name not in TRAINING:
        assert len(graph.clusters) <= MAX_CLUSTERS, repr(graph)
        # No batch-sized work is left for the whole batch: it all runs per chunk.
        assert all(c.category != "mixes" for c in graph.clusters), repr(graph)


@pytest.mark.parametrize("policy", ["chunk", "buckets"])
@pytest.mark.parametrize("name", NAMES)
def test_batched_jit_compiles_nothing_at_a_new_size_of_seen_chunks(
    name, policy, references
) -> None:
    model = framework_model(name)
    bf = mcl.batched_jit(
        model.apply,
        batch_axes=model.batch_axes,
        policy=policy,
        micro_batch=MICRO_BATCH,
        store=mcl.CacheStore(None),
    )
    compilations = []
    for batch in ORDER[policy]:
        args, expected = _args_and_reference(references, name, batch)
        assert_close(bf(*args), expected)
        compilations.append(bf.stats()["compilations"])
    if name not in TRAINING:
        # After the first size every chunk or bucket size has been seen.
        assert compilations[1:] == [compilations[0]] * 2, (compilations, bf.last_plan)
        assert {e.mode for e in bf.last_plan.timeline.executions} <= {"split", "once"}
