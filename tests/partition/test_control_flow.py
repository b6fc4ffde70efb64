"""scan / while / cond and inlined calls: labels and the numerical ground truth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlcache_lab.partition import inline_calls, partition

from .ground_truth import partition_and_check

X = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
W = jnp.asarray(np.random.default_rng(2).normal(size=(5, 3, 3)), jnp.float32)


def _label(g, prim):  # type: ignore[no-untyped-def]
    (lab,) = [
        lab for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True) if e.primitive.name == prim
    ]
    return lab


def test_scan_over_layers_with_batched_carry() -> None:
    def f(ws, x):  # type: ignore[no-untyped-def]
        return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), h.sum(-1)), x, ws)

    g = partition_and_check(f, W, X, batch_axes=(None, 0))
    lab = _label(g, "scan")
    assert lab.kind == "batched" and lab.out_batch_axes == (0, 1)


@pytest.mark.parametrize("hardcoded", [False, True])
def test_scan_carry_becomes_batched_and_its_zero_init_is_promoted(hardcoded: bool) -> None:
    def f(ws, x):  # type: ignore[no-untyped-def]
        acc0 = jnp.zeros((4, 3)) if hardcoded else jnp.zeros((x.shape[0], 3))
        return jax.lax.scan(lambda acc, w: (acc + x @ w, None), acc0, ws)[0]

    g = partition_and_check(f, W, X, batch_axes=(None, 0))
    assert g.symbolic != hardcoded
    lab = _label(g, "scan")
    assert lab.kind == "batched" and lab.in_batch_axes[-2] == 0
    (zeros,) = [c for c in g.clusters if "broadcast_in_dim" in c.primitives()]
    if hardcoded:  # concrete: the zeros are invariant work, promoted to the batch axis
        assert zeros.category == "invariant" and zeros.out_batch_axes == (0,)
    else:  # zeros((B, 3)) holds the same rows at any batch size: made per chunk, with the scan
        assert zeros.kind == "batched" and "scan" in zeros.primitives()
        assert not zeros.needs_batch_size


def test_scan_body_that_mixes_samples() -> None:
    def f(ws, x):  # type: ignore[no-untyped-def]
        return jax.lax.scan(lambda h, w: (h @ w - (h @ w).mean(0), None), x, ws)[0]

    g = partition_and_check(f, W, X, batch_axes=(None, 0))
    lab = _label(g, "scan")
    assert lab.category == "mixes" and "reduce_sum" in lab.reason


def test_scan_over_the_batch_axis_mixes() -> None:
    g = partition_and_check(lambda x: jax.lax.scan(lambda c, r: (c + r, c), 0.0 * x[0], x), X)
    assert _label(g, "scan").category == "mixes"


def test_while_with_counter_condition_is_batched() -> None:
    def f(n, x):  # type: ignore[no-untyped-def]
        return jax.lax.fori_loop(0, n, lambda i, h: jnp.sin(h) + i, x)

    g = partition_and_check(f, jnp.int32(3), X, batch_axes=(None, 0))
    assert _label(g, "while").kind == "batched"


def test_while_condition_on_batched_values_mixes() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return jax.lax.while_loop(lambda h: jnp.max(h) < 10.0, lambda h: h * 2 + 1, x)

    g = partition_and_check(f, jnp.abs(X))
    lab = _label(g, "while")
    assert lab.category == "mixes" and "condition" in lab.reason


def test_cond_with_unbatched_predicate() -> None:
    def f(p, x):  # type: ignore[no-untyped-def]
        return jax.lax.cond(p > 0, lambda h: jnp.sin(h), lambda h: jnp.zeros_like(h), x)

    g = partition_and_check(f, jnp.float32(1.0), X, batch_axes=(None, 0))
    lab = _label(g, "cond")
    assert lab.kind == "batched" and lab.out_batch_axes == (0,)
    partition_and_check(f, jnp.float32(-1.0), X, batch_axes=(None, 0))


def test_cond_branch_that_mixes() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return jax.lax.cond(True, lambda h: h - h.mean(0), lambda h: h, x)

    g = partition_and_check(f, X)
    assert _label(g, "cond").category == "mixes"


def test_calls_are_inlined_so_clusters_can_split_them() -> None:
    @jax.jit
    def inner(x):  # type: ignore[no-untyped-def]
        return jnp.sin(x) - jnp.sin(x).mean(0)

    @jax.checkpoint
    def remat(x):  # type: ignore[no-untyped-def]
        return jnp.cos(x) * 2

    def f(x):  # type: ignore[no-untyped-def]
        return remat(jax.nn.relu(inner(x)))

    g = partition_and_check(f, X, growth="plain")
    names = {e.primitive.name for e in g.jaxpr.jaxpr.eqns}
    assert not names & {"jit", "remat2", "custom_jvp_call", "closed_call"}
    assert {c.category for c in g.clusters} == {"batched", "invariant", "mixes", "reduces"}
    # The only invariant work is the mean's 1/B: it needs the batch size, nothing else.
    for c in g.clusters:
        if c.category == "invariant":
            assert c.needs_batch_size and "dim_as_value" in c.primitives()


def test_inline_inside_scan_body_and_closed_constants() -> None:
    const = np.arange(3.0, dtype=np.float32)

    def f(ws, x):  # type: ignore[no-untyped-def]
        step = jax.jit(lambda h, w: jax.nn.gelu(h @ w + const))
        return jax.lax.scan(lambda h, w: (step(h, w), None), x, ws)[0]

    closed = jax.make_jaxpr(f)(W, X)
    flat = inline_calls(closed)
    body = flat.jaxpr.eqns[-1].params["jaxpr"]
    assert all(e.primitive.name != "jit" for e in body.jaxpr.eqns)
    out = jax.core.eval_jaxpr(flat.jaxpr, flat.consts, W, X)[0]
    np.testing.assert_allclose(out, f(W, X), rtol=1e-6)
    partition_and_check(f, W, X, batch_axes=(None, 0))


def test_custom_vjp_call_is_inlined() -> None:
    @jax.custom_vjp
    def g(x):  # type: ignore[no-untyped-def]
        return x * 3

    g.defvjp(lambda x: (g(x), None), lambda _, ct: (ct * 3,))
    graph = partition(lambda x: g(x) + 1, X)
    assert all(e.primitive.name != "custom_vjp_call" for e in graph.jaxpr.jaxpr.eqns)
    partition_and_check(lambda x: g(x) + 1, X)
