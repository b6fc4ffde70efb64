"""A small graph, scheduled and run once cold and once warm, for the viz tests."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl


def mixing_fn(w: Any, x: Any) -> Any:
    """Batched work, batch-invariant work on ``w`` (a product: not cheap enough to run per
    chunk, see tests/schedule/test_fold.py), and a running sum over the batch.

    The running sum mixes samples (it runs whole, compiled per batch size); a mean
    would be a reduction, run in rounds (see tests/schedule/test_rounds.py).
    """
    h = jnp.tanh(x @ (w @ w.T * 0.5))
    return h - jnp.cumsum(h, axis=0) / 4.0


def example_args(batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(batch_size)
    return (
        rng.standard_normal((3, 3)).astype(np.float32),
        rng.standard_normal((batch_size, 3)).astype(np.float32),
    )


@pytest.fixture(scope="module")
def graph() -> mcl.ClusterGraph:
    return mcl.partition(mixing_fn, *example_args(4), batch_axes=(None, 0))


@pytest.fixture(scope="module")
def memory_store() -> mcl.CacheStore:
    return mcl.CacheStore(None)


@pytest.fixture(scope="module")
def cold_and_warm(graph: mcl.ClusterGraph, memory_store: mcl.CacheStore) -> tuple[Any, Any]:
    """Two chunk plans on one graph: 37 rows (compiles), then 20 rows (compiles nothing)."""
    cold = mcl.schedule(graph, 37, "chunk", 16, store=memory_store)
    cold.run(*example_args(37))
    warm = mcl.schedule(graph, 20, "chunk", 16, store=memory_store)
    warm.run(*example_args(20))
    return cold, warm
