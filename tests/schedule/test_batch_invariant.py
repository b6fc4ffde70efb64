"""Batch-sized values made from no sample run per chunk: a new batch size compiles nothing.

A bias broadcast to ``y.shape`` or a causal mask built from ``x.shape`` carries
the batch dimension without depending on a sample. They used to run at the
whole batch, compiling once per batch size (the issue's repro printed
compilations 2 3 4 5); they run with the batched work at the chunk or bucket
size now. An ``iota`` along the batch (row ``i`` holds ``i``) depends on where
a chunk starts, so it still runs, and compiles, at the whole batch: correct
results, pinned here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import mlcache_lab as mcl

RNG = np.random.default_rng(0)
P = {
    "w": RNG.normal(size=(3, 4)).astype(np.float32),
    "b": RNG.normal(size=(4,)).astype(np.float32),
}


def bias_broadcast(p: Any, x: jax.Array) -> jax.Array:  # the repro
    y = x @ p["w"]
    return jnp.tanh(y + jnp.broadcast_to(p["b"], y.shape))


def causal_attention(p: Any, x: jax.Array) -> jax.Array:
    """Self-attention over ``x: [B, T, 3]`` with a causal mask built from ``x.shape``."""
    b, t, _ = x.shape
    q, k = x @ p["w"], x @ p["w"] + p["b"]
    row = lax.broadcasted_iota(jnp.int32, (b, t, t), 1)
    col = lax.broadcasted_iota(jnp.int32, (b, t, t), 2)
    scores = jnp.where(row >= col, jnp.einsum("btd,bsd->bts", q, k), -1e9)
    return jnp.einsum("bts,bsd->btd", jax.nn.softmax(scores, axis=-1), q)


def iota_over_batch(p: Any, x: jax.Array) -> jax.Array:
    position = jnp.arange(x.shape[0], dtype=jnp.float32)[:, None]
    return jnp.tanh(x @ p["w"] + p["b"]) * position


def _inputs(fn: Callable[..., Any], batch: int) -> np.ndarray:
    shape = (batch, 5, 3) if fn is causal_attention else (batch, 3)
    return np.random.default_rng(batch).normal(size=shape).astype(np.float32)


def _compilations(fn: Callable[..., Any], policy: str, sizes: tuple[int, ...]) -> list[int]:
    bf = mcl.batched_jit(
        fn, batch_axes=(None, 0), policy=policy, micro_batch=8, store=mcl.CacheStore(None)
    )
    counts = []
    for batch in sizes:
        x = _inputs(fn, batch)
        np.testing.assert_allclose(bf(P, x), jax.jit(fn)(P, x), rtol=1e-5, atol=1e-6)
        counts.append(bf.stats()["compilations"])
    return counts


@pytest.mark.parametrize("fn", [bias_broadcast, causal_attention], ids=lambda f: f.__name__)
def test_a_new_batch_size_of_seen_chunks_compiles_nothing(fn) -> None:
    counts = _compilations(fn, "chunk", (3, 5, 9, 17))
    assert counts == [counts[0]] * 4  # was 2 3 4 5: one more per batch size
    g = mcl.partition(fn, P, _inputs(fn, 4), batch_axes=(None, 0))
    modes = {s.mode for s in g.schedule(batch_size=5, policy="chunk", micro_batch=8).segments}
    assert modes <= {"split", "once"}  # nothing at the whole batch
    made = {
        e.primitive.name
        for lab, e in zip(g.labels, g.jaxpr.jaxpr.eqns, strict=True)
        if "made per chunk" in lab.reason
    }
    assert made == (
        {"iota", "broadcast_in_dim"} if fn is causal_attention else {"broadcast_in_dim"}
    )


def test_buckets_compile_each_bucket_size_once() -> None:
    # 7 = 4+2+1 warms every bucket of micro_batch=4; then 3, 6 and 5 reuse them.
    bf = mcl.batched_jit(
        causal_attention,
        batch_axes=(None, 0),
        policy="buckets",
        micro_batch=4,
        store=mcl.CacheStore(None),
    )
    counts = []
    for batch in (7, 3, 6, 5):
        x = _inputs(causal_attention, batch)
        np.testing.assert_allclose(bf(P, x), jax.jit(causal_attention)(P, x), rtol=1e-5, atol=1e-6)
        counts.append(bf.stats()["compilations"])
    assert counts == [counts[0]] * 4  # 3 bucket sizes and the once segment, at the first call


def test_plain_growth_keeps_the_broadcast_next_to_its_consumer() -> None:
    g = mcl.partition(
        bias_broadcast, P, _inputs(bias_broadcast, 4), batch_axes=(None, 0), growth="plain"
    )
    assert g.growth == "plain" and [c.kind for c in g.clusters] == ["batched", "batched"]
    (seed,) = (c for c in g.clusters if c.needs_batch_size)  # the broadcast alone: needs B
    assert [e.primitive.name for e in seed.jaxpr.jaxpr.eqns] == ["broadcast_in_dim"]
    counts = _compilations(bias_broadcast, "chunk", (3, 5, 9))
    assert counts == [counts[0]] * 3


def test_an_iota_along_the_batch_runs_at_the_whole_batch() -> None:
    g = mcl.partition(iota_over_batch, P, _inputs(iota_over_batch, 4), batch_axes=(None, 0))
    (whole,) = (c for c in g.clusters if "iota" in c.primitives())
    assert whole.category == "invariant" and "iota" in whole.primitives()
    counts = _compilations(iota_over_batch, "chunk", (3, 5, 9))
    assert counts[1] > counts[0] and counts[2] > counts[1]  # the iota's segment, per B


def test_a_reduction_over_a_broadcast_mixes() -> None:
    def f(p: Any, x: jax.Array) -> jax.Array:
        ones = jnp.ones((x.shape[0], 4))
        return x @ p["w"] + ones.sum(0)  # ones.sum(0) is B: the whole batch's size

    g = mcl.partition(f, P, _inputs(f, 4), batch_axes=(None, 0))
    assert any(c.category == "mixes" for c in g.clusters)
    for batch in (3, 5):
        x = _inputs(f, batch)
        plan = g.schedule(batch_size=batch, policy="chunk", micro_batch=2)
        np.testing.assert_allclose(plan.run(P, x), f(P, x), rtol=1e-5)


def test_bad_growth_names_the_options() -> None:
    with pytest.raises(ValueError, match=r"'growth' are \('gather', 'plain'\)\. Got growth='x'"):
        mcl.partition(
            bias_broadcast, P, _inputs(bias_broadcast, 2), batch_axes=(None, 0), growth="x"
        )
    with pytest.raises(ValueError, match=r"Got growth='x'"):
        mcl.batched_jit(bias_broadcast, batch_axes=(None, 0), growth="x")
