"""Cheap batch-invariant work runs inside the chunk program that reads it.

A weight transposed for tied embeddings, or a bias broadcast to its rank, is a
batch-invariant cluster of its own. As a ``once`` segment it would be one more
executable per call: loaded, run and waited for before the first chunk, its
result written out whole. Folded into the split segment that reads it, it
costs one pass over values that program reads anyway. Work that is not cheap
(a ``dot_general``), that is an output, or that two split runs read, stays
``once``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.schedule.segments import CHEAP_PRIMITIVES

RNG = np.random.default_rng(0)
P = {
    "emb": RNG.normal(size=(6, 4)).astype(np.float32),
    "w": RNG.normal(size=(4, 4)).astype(np.float32),
}


def tied(p: Any, x: jax.Array) -> jax.Array:  # logits against the embedding, transposed
    return jnp.tanh(x @ p["w"]) @ p["emb"].T


def preprocessed(p: Any, x: jax.Array) -> jax.Array:  # a dot on weights: not cheap
    return jnp.tanh(x @ (p["w"] @ p["w"].T))


def returned(
    p: Any, x: jax.Array
) -> tuple[jax.Array, jax.Array]:  # the invariant value is an output
    wt = p["w"].T * 2.0
    return jnp.tanh(x @ wt), wt


def read_twice(p: Any, x: jax.Array) -> jax.Array:  # two split runs, a sort over samples between
    wt = p["w"].T + 1.0
    return jnp.tanh(jnp.sort(jnp.tanh(x @ wt), axis=0) @ wt)


def _x(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).normal(size=(batch, 4)).astype(np.float32)


def _modes(fn: Any) -> list[str]:
    g = mcl.partition(fn, P, _x(11), batch_axes=(None, 0))
    return [s.mode for s in g.schedule(batch_size=11, policy="chunk", micro_batch=4).segments]


def test_the_cheap_primitives_are_layout_and_elementwise_work_without_randomness() -> None:
    assert {"transpose", "broadcast_in_dim", "iota", "add", "mul"} <= CHEAP_PRIMITIVES
    assert (
        not {"dot_general", "sort", "reduce_sum", "random_bits", "threefry2x32"} & CHEAP_PRIMITIVES
    )


@pytest.mark.parametrize("policy", ["chunk", "buckets"])
def test_a_transposed_weight_runs_inside_the_chunk_program(policy: str) -> None:
    g = mcl.partition(tied, P, _x(11), batch_axes=(None, 0))
    assert sorted(c.kind for c in g.clusters) == ["batched", "non_batched"]  # the transpose alone
    assert [s.mode for s in g.schedule(batch_size=11, policy=policy, micro_batch=4).segments] == [
        "split"
    ]
    bf = mcl.batched_jit(
        tied, batch_axes=(None, 0), policy=policy, micro_batch=4, store=mcl.CacheStore(None)
    )
    for batch in (11, 7):
        x = _x(batch)
        want = np.asarray(jax.jit(tied)(P, x))
        assert want.std(axis=0).min() > 0.1 and np.abs(want).max() > 0.1  # not degenerate
        np.testing.assert_allclose(bf(P, x), want, rtol=1e-5, atol=1e-6)
    # one executable per chunk or bucket size, none for the transpose
    assert bf.stats()["compilations"] == (1 if policy == "chunk" else 3)


@pytest.mark.parametrize(
    ("fn", "modes"),
    [
        (preprocessed, ["once", "split"]),
        (returned, ["once", "split"]),
        (read_twice, ["once", "split", "whole", "split"]),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_work_that_is_not_cheap_returned_or_read_by_two_runs_stays_once(
    fn: Any, modes: list[str]
) -> None:
    assert _modes(fn) == modes
    bf = mcl.batched_jit(
        fn, batch_axes=(None, 0), policy="chunk", micro_batch=4, store=mcl.CacheStore(None)
    )
    x = _x(11)
    for got, want in zip(
        jax.tree.leaves(bf(P, x)), jax.tree.leaves(jax.jit(fn)(P, x)), strict=True
    ):
        assert np.asarray(want).std() > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
