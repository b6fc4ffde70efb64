"""Batch-sized values made from no sample run per chunk: a new batch size compiles nothing.

A bias broadcast to ``y.shape`` or a causal mask built from ``x.shape`` carries
the batch dimension without depending on a sample. They used to run at the
whole batch, compiling once per batch size (the issue's repro printed
compilations 2 3 4 5); they run with the batched work at the chunk or bucket
size now. An ``iota`` along the batch (row ``i`` holds ``i``, a sample's
position) runs per chunk too: the chunk's first row is passed in and added, so
it compiles nothing new either, padded rows get the positions they would have,
and reductions and argmax over positions equal ``jax.jit``.
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


def test_an_iota_along_the_batch_runs_per_chunk_from_its_first_row() -> None:
    g = mcl.partition(iota_over_batch, P, _inputs(iota_over_batch, 4), batch_axes=(None, 0))
    ((cluster, eqn),) = [
        (c, e) for c in g.clusters for e in c.jaxpr.jaxpr.eqns if e.primitive.name == "iota"
    ]
    assert cluster.kind == "batched"
    label = g.labels[g.jaxpr.jaxpr.eqns.index(eqn)]
    assert label.reason.startswith("batched: iota along the batch axis makes each row's position")
    plan = g.schedule(batch_size=17, policy="chunk", micro_batch=8)
    assert {s.mode for s in plan.segments} <= {"split", "once"}
    (split,) = (s for s in plan.segments if s.mode == "split")
    assert split.offset and split.batch_axes[-1] is None
    counts = _compilations(iota_over_batch, "chunk", (3, 5, 9, 17))
    assert counts == [counts[0]] * 4  # was one more per batch size (the iota's segment at B)


def test_padded_rows_get_their_positions_and_are_dropped() -> None:
    def positions(p: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        del p
        row = lax.broadcasted_iota(jnp.int32, x.shape, 0)
        return row, (row * x).sum()  # the padded rows' positions must not reach the sum

    g = mcl.partition(positions, P, _inputs(positions, 4), batch_axes=(None, 0))
    plan = g.schedule(batch_size=11, policy="chunk", micro_batch=4)  # 3 chunks, 1 row padded
    x = _inputs(positions, 11)
    rows, total = plan.run(P, x)
    np.testing.assert_array_equal(rows, np.broadcast_to(np.arange(11)[:, None], (11, 3)))
    np.testing.assert_allclose(total, (np.arange(11)[:, None] * x).sum(), rtol=1e-5)
    (split,) = (s for s in plan.segments if s.mode == "split")
    assert split.offset and split.masked and split.combines
    starts = [e.start_row for e in plan.timeline.executions if e.mode == "split"]
    assert starts == [0, 4, 8]


def _odd_samples(p: Any, x: jax.Array) -> jax.Array:
    """Per-sample masks: every other sample negated, every third one scaled."""
    ids = jnp.arange(x.shape[0])[:, None]
    y = jnp.tanh(x @ p["w"] + p["b"])
    return jnp.where(ids % 2 == 1, -y, y) * (1 + ids % 3)


def _position_at_least_feature(p: Any, x: jax.Array) -> jax.Array:
    """``row_ids[:, None] >= col_ids[None, :]``, rows the samples, columns the features."""
    row_ids = jnp.arange(x.shape[0])
    col_ids = jnp.arange(4)
    return jnp.where(row_ids[:, None] >= col_ids[None, :], x @ p["w"], 0.0)


def _argmax_near_a_position(p: Any, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """argmax/argmin over the batch of position-derived scores (chunk indices are offset)."""
    pos = lax.broadcasted_iota(jnp.float32, (x.shape[0],), 0)
    score = -((pos - 5.3) ** 2) + 0.01 * jnp.tanh(x @ p["w"]).sum(1)
    return jnp.argmax(score), jnp.argmin(score + pos), (score * pos).max()


def _positions_in_a_mean(p: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A mean over samples weighted by position: a round, padded rows masked."""
    pos = jnp.arange(x.shape[0], dtype=jnp.float32)[:, None]
    h = jnp.tanh(x @ p["w"]) * (pos + 1.0)
    return h.mean(0), h - h.mean(0)


MASKS = [_odd_samples, _position_at_least_feature, _argmax_near_a_position, _positions_in_a_mean]
SIZES = (1, 2, 3, 7, 16, 17, 64)


@pytest.mark.parametrize("policy", ["chunk", "buckets", "devices"])
@pytest.mark.parametrize("fn", MASKS, ids=lambda f: f.__name__.strip("_"))
def test_iota_derived_masks_equal_jit_and_compile_once_per_chunk_size(fn, policy) -> None:
    bf = mcl.batched_jit(
        fn, batch_axes=(None, 0), policy=policy, micro_batch=8, store=mcl.CacheStore(None)
    )
    counts = []
    for batch in SIZES:
        x = _inputs(fn, batch)
        got, want = bf(P, x), jax.jit(fn)(P, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        counts.append(bf.stats()["compilations"])
    # chunk/devices: one chunk size (8); buckets of 8, 4, 2, 1: all seen by B=16.
    settled = 1 if policy != "buckets" else SIZES.index(16)
    assert counts[settled:] == [counts[settled]] * (len(SIZES) - settled), counts
    g = mcl.partition(fn, P, _inputs(fn, 4), batch_axes=(None, 0))
    modes = {s.mode for s in g.schedule(batch_size=17, policy=policy, micro_batch=8).segments}
    assert "whole" not in modes


def test_an_iota_along_the_batch_inside_a_loop_body_mixes() -> None:
    def f(p: Any, x: jax.Array) -> jax.Array:
        def body(_: Any, h: jax.Array) -> jax.Array:
            return jnp.tanh(h + jnp.arange(h.shape[0], dtype=h.dtype)[:, None])

        return lax.fori_loop(0, 2, body, x @ p["w"])

    g = mcl.partition(f, P, _inputs(f, 4), batch_axes=(None, 0))
    (loop,) = (lab for lab in g.labels if lab.category == "mixes")
    assert "iota along the batch axis (row positions) inside a loop body" in loop.reason
    for batch in (3, 9):
        x = _inputs(f, batch)
        plan = g.schedule(batch_size=batch, policy="chunk", micro_batch=4)
        np.testing.assert_allclose(plan.run(P, x), jax.jit(f)(P, x), rtol=1e-5, atol=1e-6)


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
