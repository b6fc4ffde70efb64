"""Random programs mixing batched work and reductions: chunked == whole at every batch size.

Hypothesis draws a program as a list of steps over a pool of values: batched
``[B, 4]`` values (per-sample work: unary maps, a matmul with a weight, sums of
two values, a value centred or scaled by a reduction of another) and
unbatched ``[4]``/``[4, 4]`` values (reductions over the batch: sum, mean, max,
min, logsumexp, a contraction of two batched values, argmax; and work on them).
Batched work reading reductions forces rounds. The plan under ``chunk`` (padded
last chunk) and ``buckets`` must equal ``jax.jit(fn)`` at batch sizes 1, 2, 3,
7, 16, 17 and 64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings

import mlcache_lab as mcl

SIZES = (1, 2, 3, 7, 16, 17, 64)
F = 4
W = jnp.asarray(np.random.default_rng(1).normal(size=(F, F)) / 2, jnp.float32)

Step = Callable[[list[Any]], Any]

# kind of each value in the pool: "b" batched [B, F], "v" unbatched [F], "m" unbatched [F, F]
REDUCTIONS: dict[str, Callable[[Any], Any]] = {
    "sum": lambda h: jnp.sum(h, 0),
    "mean": lambda h: jnp.mean(h, 0),
    "max": lambda h: jnp.max(h, 0),
    "min": lambda h: jnp.min(h, 0),
    "logsumexp": lambda h: jax.nn.logsumexp(h, axis=0),
}


@st.composite
def programs(draw: st.DrawFn) -> tuple[list[Step], list[str]]:
    kinds = ["b", "m"]  # the input x and the weight
    steps: list[Step] = []
    for _ in range(draw(st.integers(2, 7))):
        batched = [i for i, k in enumerate(kinds) if k == "b"]
        vectors = [i for i, k in enumerate(kinds) if k == "v"]
        op = draw(
            st.sampled_from(
                ["unary", "matmul", "add", "reduce", "contract", "centre", "scale", "vector"]
            )
        )
        i = draw(st.sampled_from(batched))
        if op == "unary":
            fn = draw(st.sampled_from([jnp.sin, jnp.tanh, jnp.abs]))
            steps.append(lambda p, i=i, fn=fn: fn(p[i]))
            kinds.append("b")
        elif op == "matmul":
            steps.append(lambda p, i=i: p[i] @ p[1])
            kinds.append("b")
        elif op == "add":
            j = draw(st.sampled_from(batched))
            steps.append(lambda p, i=i, j=j: p[i] + p[j])
            kinds.append("b")
        elif op == "reduce":
            name = draw(st.sampled_from(sorted(REDUCTIONS)))
            steps.append(lambda p, i=i, r=REDUCTIONS[name]: r(p[i]))
            kinds.append("v")
        elif op == "contract":  # a weight gradient: sum over samples of outer products
            j = draw(st.sampled_from(batched))
            steps.append(lambda p, i=i, j=j: p[i].T @ p[j] / 8.0)
            kinds.append("m")
        elif op == "centre" and vectors:  # batched work reading a reduction: a new round
            j = draw(st.sampled_from(vectors))
            steps.append(lambda p, i=i, j=j: p[i] - p[j])
            kinds.append("b")
        elif op == "scale":
            steps.append(lambda p, i=i: p[i] / (1.0 + jnp.abs(jnp.mean(p[i]))))
            kinds.append("b")
        elif op == "vector" and vectors:
            j = draw(st.sampled_from(vectors))
            steps.append(lambda p, j=j: jnp.tanh(p[j] @ p[1]))
            kinds.append("v")
    return steps, kinds


def _program(steps: list[Step]) -> Callable[..., Any]:
    def fn(w: Any, x: Any) -> Any:
        pool = [x, w]
        for step in steps:
            pool.append(step(pool))
        return pool[2:], jnp.argmax(pool[-1].reshape(pool[-1].shape[0], -1)[:, 0])

    return fn


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(programs())
def test_random_programs_with_reductions_chunked_equal_whole(program: Any) -> None:
    steps, kinds = program
    fn = _program(steps)
    x4 = jax.random.normal(jax.random.key(0), (4, F))
    g = mcl.partition(fn, W, x4, batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    reference = jax.jit(fn)
    for n in SIZES:
        x = jax.random.normal(jax.random.key(n), (n, F))
        expected = reference(W, x)
        for policy in ("chunk", "buckets"):
            out = g.schedule(n, policy, micro_batch=4, store=store).run(W, x)
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
                a, b = np.asarray(a), np.asarray(b)
                assert a.shape == b.shape and a.dtype == b.dtype
                if np.issubdtype(a.dtype, np.floating):
                    # float32 partial sums of up to 64 terms, through a few layers
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=str(kinds))
                else:
                    np.testing.assert_array_equal(a, b, err_msg=str(kinds))
