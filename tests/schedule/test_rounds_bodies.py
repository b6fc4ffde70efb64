"""Sums over the batch inside control flow: which split (``reduces``) and which cannot (``mixes``).

The programs that split are run against ``jax.jit`` at batch sizes 1..64 under
every policy, and in float64, through ``test_rounds.PROGRAMS``; here: their
labels, the reasons of those that cannot split, and that those still run right.
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
from mlcache_lab.partition.analysis import NOT_ZEROS

from . import bodies

W = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)), jnp.float32)


def _x(n: int) -> jax.Array:
    return jax.random.normal(jax.random.key(n), (n, 3))


def _label(fn: Callable[..., Any], primitive: str) -> Any:
    g = mcl.partition(fn, W, _x(4), batch_axes=(None, 0))
    (label,) = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == primitive
    ]
    return label


@pytest.mark.parametrize(
    ("fn", "primitive", "reason"),
    [
        (bodies.cond_sum, "cond", "cond branches sum over the batch axis into outputs [0]"),
        (bodies.scan_carry, "scan", "scan body sums over the batch axis into carries [0]"),
        (bodies.while_sum, "while", "while body sums over the batch axis into carries [2]"),
    ],
    ids=["cond", "scan-carry", "while"],
)
def test_sums_in_bodies_reduce(fn: Callable[..., Any], primitive: str, reason: str) -> None:
    label = _label(fn, primitive)
    assert label.kind == "reduces", label.reason
    assert reason in label.reason and label.reason.endswith("combined across chunks by add")
    bf = mcl.batched_jit(
        fn, batch_axes=(None, 0), policy="chunk", micro_batch=4, store=mcl.CacheStore(None)
    )
    counts = []
    for n in (5, 9, 3, 17):
        np.testing.assert_allclose(bf(W, _x(n)), jax.jit(fn)(W, _x(n)), rtol=1e-5, atol=1e-5)
        counts.append(bf.stats()["compilations"])
    assert counts == [counts[0]] * 4  # nothing runs at the whole batch


def _while_on_a_sum(w: jax.Array, x: jax.Array) -> Any:
    def cond(s: Any) -> jax.Array:
        return s[1] < 10.0

    def body(s: Any) -> Any:
        return s[0] + 1, s[1] + jnp.abs(x[:, 0]).sum() + 0.5

    return lax.while_loop(cond, body, (0, jnp.float32(0.0)))


def _while_reducing_in_its_condition(w: jax.Array, x: jax.Array) -> Any:
    def cond(s: Any) -> jax.Array:
        return s[1].sum() < 10.0  # s[1] is batched: the condition sums over samples

    return lax.while_loop(cond, lambda s: (s[0] + 1, s[1] + jnp.abs(s[1]) + 0.1), (0, x))


def _scan_from_ones(w: jax.Array, x: jax.Array) -> jax.Array:
    xs = jnp.stack([x, 2 * x])
    return lax.scan(lambda acc, xt: (acc + xt.sum(0), None), jnp.ones(3), xs)[0]


def _cond_max_or_min(w: jax.Array, x: jax.Array) -> jax.Array:
    return lax.cond(w[0, 0] > 0, lambda x: x.max(0), lambda x: x.min(0), x)


def _cond_sums_one_branch(w: jax.Array, x: jax.Array) -> jax.Array:
    return lax.cond(w[0, 0] > 0, lambda x: x.sum(0), lambda x: jnp.ones(3), x)


def _scan_sum_read_nonlinearly(w: jax.Array, x: jax.Array) -> jax.Array:
    xs = jnp.stack([x, 2 * x])
    return lax.scan(lambda acc, xt: (acc * xt.sum(0), None), jnp.zeros(3), xs)[0]


@pytest.mark.parametrize(
    ("fn", "primitive", "why"),
    [
        (_while_on_a_sum, "while", "while condition reads carry 1, a sum over the batch"),
        (
            _while_reducing_in_its_condition,
            "while",
            "while condition reduce_sum reduces over the batch axis 0: the trip count depends "
            "on every sample",
        ),
        (_scan_from_ones, "scan", NOT_ZEROS.format(name="scan", k=0)[:65]),
        (_cond_max_or_min, "cond", "does not reach the outputs as a plain sum"),
        (_cond_sums_one_branch, "cond", "cond branches sum over the batch into different outputs"),
        (_scan_sum_read_nonlinearly, "scan", "does not reach the outputs as a plain sum"),
    ],
    ids=["while-on-a-sum", "while-cond-reduces", "scan-from-ones", "cond-max", "cond-one", "mul"],
)
def test_what_cannot_split_mixes_and_says_why(
    fn: Callable[..., Any], primitive: str, why: str
) -> None:
    label = _label(fn, primitive)
    assert label.kind == "non_batched" and label.category == "mixes"
    assert why in label.reason, label.reason
    g = mcl.partition(fn, W, _x(4), batch_axes=(None, 0))
    for n in (3, 9):
        plan = g.schedule(n, "chunk", micro_batch=4, store=mcl.CacheStore(None))
        for a, b in zip(
            jax.tree.leaves(plan.run(W, _x(n))), jax.tree.leaves(jax.jit(fn)(W, _x(n))), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
