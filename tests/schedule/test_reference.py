"""The executor's reference mode: the plan's segments evaluated uncompiled, the tests' oracle."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import check_jaxpr, jaxpr_as_fun

import mlcache_lab as mcl
from mlcache_lab.partition.dims import jaxpr_mentions_batch
from mlcache_lab.schedule import schedule
from mlcache_lab.schedule.plan import BAD_FUSE
from mlcache_lab.schedule.reference import NO_BATCH_SIZE, ReferenceFunction, concrete_program


def _pattern(message: str) -> str:
    return re.escape(message.split("{")[0])


def assert_close(a, b):  # type: ignore[no-untyped-def]
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-5)


def f(w, x):  # type: ignore[no-untyped-def]
    """A shape read from B, a reshape, a scan, and reductions over the batch."""
    h = jnp.tanh(x @ w) + jnp.arange(x.shape[0], dtype=x.dtype)[:, None]
    h = h.reshape(x.shape[0], 2, -1).sum(-1)
    carry = jax.lax.scan(lambda c, s: (c * s + 1, None), h, jnp.ones(3))[0]
    return h - h.mean(0), carry, h.max(0), jnp.argmax(h, axis=0), (h * h).sum()


W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)


def _x(n: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(n).normal(size=(n, 4)), jnp.float32)


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    return mcl.partition(f, W, _x(6), batch_axes=(None, 0))


def test_concrete_program_evaluates_the_symbolic_jaxpr_at_a_size(graph) -> None:  # type: ignore[no-untyped-def]
    assert jaxpr_mentions_batch(graph.jaxpr.jaxpr)
    at3 = concrete_program(graph.jaxpr, 3)
    check_jaxpr(at3.jaxpr)  # nested jaxprs (the scan's body) are consistent too
    assert not jaxpr_mentions_batch(at3.jaxpr)
    assert [tuple(v.aval.shape) for v in at3.jaxpr.invars] == [(4, 6), (3, 4)]
    assert "dim_as_value" not in {e.primitive.name for e in at3.jaxpr.eqns}  # now a literal
    assert_close(list(jaxpr_as_fun(at3)(W, _x(3))), list(f(W, _x(3))))
    assert concrete_program(at3, 5) is at3  # nothing symbolic left to evaluate


@pytest.mark.parametrize(
    ("policy", "micro_batch", "fuse"),
    [
        ("whole", 16, True),
        ("chunk", 4, True),  # 7 = 4 + 3: a padded chunk, masked out of the reductions
        ("chunk", 4, False),
        ("buckets", 4, True),
        ("devices", 4, True),
    ],
)
def test_reference_equals_run_and_the_function(graph, policy, micro_batch, fuse) -> None:  # type: ignore[no-untyped-def]
    plan = schedule(graph, 7, policy, micro_batch, store=mcl.CacheStore(None), fuse=fuse)
    expected = f(W, _x(7))
    assert_close(plan.reference(W, _x(7)), expected)
    assert_close(plan.run(W, _x(7)), expected)


def test_reference_compiles_no_segment_and_keeps_the_timeline(graph, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = mcl.CacheStore(tmp_path / "store")
    plan = schedule(graph, 7, "chunk", 4, store=store)
    plan.reference(W, _x(7))
    assert plan.timeline is None  # the record of plan.run only
    assert all(s["entries"] == 0 for s in store.stats().values())
    plan.run(W, _x(7))
    assert plan.timeline is not None and plan.timeline.compile_count() >= 1
    assert any(s["entries"] > 0 for s in store.stats().values())


def test_reference_values_hold_every_cluster_boundary(graph) -> None:  # type: ignore[no-untyped-def]
    plan = schedule(graph, 5, "chunk", 2, fuse=False)
    assert [s.clusters for s in plan.segments] == [(cid,) for cid in graph.queue]
    values = plan.reference_values(W, _x(5))
    for c in graph.clusters:
        assert set(c.inputs) | set(c.outputs) <= set(values)
    assert_close(graph.outputs(values), f(W, _x(5)))


def test_graph_run_is_the_reference_in_queue_order(graph) -> None:  # type: ignore[no-untyped-def]
    plan = schedule(graph, 3, "whole", fuse=False)
    assert [s.clusters for s in plan.segments] == [(cid,) for cid in graph.queue]
    assert_close(graph.run(W, _x(3)), plan.reference(W, _x(3)))


@pytest.mark.parametrize("value", [0, 1, "no", None])
def test_bad_fuse(graph, value) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=_pattern(BAD_FUSE)) as info:
        schedule(graph, 4, "chunk", fuse=value)
    assert f"fuse={value!r}" in str(info.value)


def test_a_program_with_b_and_no_batched_argument_is_a_bug_reported_as_such(graph) -> None:  # type: ignore[no-untyped-def]
    plan = schedule(graph, 4, "whole")
    (segment,) = plan.segments
    blind = ReferenceFunction(segment.program, [None] * len(segment.batch_axes))
    with pytest.raises(RuntimeError, match=_pattern(NO_BATCH_SIZE)):
        blind(W, _x(4))


def test_per_sample_prng_keys_split_into_padded_chunks() -> None:
    """Typed keys cannot go through NumPy: the executor slices and pads them in JAX."""

    def noise(keys):  # type: ignore[no-untyped-def]
        return jax.vmap(lambda k: jax.random.normal(k, (3,)))(keys)

    keys = jax.random.split(jax.random.key(0), 7)
    g = mcl.partition(noise, keys[:4])
    plan = schedule(g, 7, "chunk", 4, store=mcl.CacheStore(None))  # 4 + 3, padded by 1
    assert_close(plan.run(keys), noise(keys))
    assert_close(plan.reference(keys), noise(keys))
