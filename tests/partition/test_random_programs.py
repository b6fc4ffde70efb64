"""Random programs from the listed primitives: the ground truth must hold for all.

Hypothesis builds a program step by step on concrete arrays (so shapes are
known), each step a closure over its drawn parameters; the function replays
the closures. The batch axis of the input is drawn too, so it is not always 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings

from .ground_truth import partition_and_check

B = 4
Step = Callable[[list[Any]], Any]


def _float(v: Any) -> bool:
    return jnp.issubdtype(v.dtype, jnp.floating)


def _pick(data: st.DataObject, pool: list[Any], ok: Callable[[Any], bool]) -> int | None:
    choices = [i for i, v in enumerate(pool) if ok(v)]
    return data.draw(st.sampled_from(choices)) if choices else None


def draw_step(data: st.DataObject, pool: list[Any]) -> Step | None:
    """One random step reading the pool, or ``None`` if the drawn op does not apply."""
    op = data.draw(st.sampled_from(OPS))
    i = _pick(data, pool, lambda v: v.ndim >= 1)
    if i is None:
        return None
    v = pool[i]
    ax = data.draw(st.integers(0, v.ndim - 1))
    if op == "unary":
        fn = data.draw(st.sampled_from([jnp.sin, jnp.tanh, jnp.abs, jnp.negative]))
        if _float(v):
            return lambda p: fn(p[i])
        return lambda p: (p[i] * 7 + 3) % 11 - (p[i] >> 1)
    if op == "binary":
        j = _pick(data, pool, lambda u: u.shape == v.shape and u.dtype == v.dtype)
        assert j is not None
        fn2 = data.draw(st.sampled_from([jnp.add, jnp.multiply, jnp.maximum, jnp.subtract]))
        return lambda p: jnp.where(p[i] > p[j], fn2(p[i], p[j]), p[j])
    if op == "matmul" and _float(v) and v.shape[-1] == 5:
        return lambda p: jnp.tanh(p[i] @ p[1])
    if op == "reduce":
        keep = data.draw(st.booleans())
        fn = data.draw(st.sampled_from([jnp.sum, jnp.max]))
        return lambda p: fn(p[i], axis=ax, keepdims=keep)
    if op == "cumsum":
        return lambda p: jnp.cumsum(p[i], axis=ax)
    if op == "sort":
        return lambda p: jnp.sort(p[i], axis=ax)
    if op == "argsort":
        return lambda p: jnp.argsort(p[i], axis=ax)
    if op == "transpose":
        perm = data.draw(st.permutations(range(v.ndim)))
        return lambda p: jnp.transpose(p[i], perm)
    if op == "reshape" and v.ndim >= 2:
        k = data.draw(st.integers(0, v.ndim - 2))
        shape = (*v.shape[:k], v.shape[k] * v.shape[k + 1], *v.shape[k + 2 :])
        return lambda p: p[i].reshape(shape)
    if op == "broadcast":
        return lambda p: jnp.expand_dims(p[i], ax) * jnp.ones((2,) + (1,) * (v.ndim - ax), v.dtype)
    if op == "concatenate":
        return lambda p: jnp.concatenate([p[i], p[i] * 2], axis=ax)
    if op == "slice" and v.shape[ax] >= 2:
        start = data.draw(st.integers(0, 1))
        return lambda p: jax.lax.slice_in_dim(p[i], start, v.shape[ax], axis=ax)
    if op == "dynamic_slice":
        size = data.draw(st.sampled_from([1, v.shape[ax]]))
        return lambda p: jax.lax.dynamic_slice_in_dim(p[i], p[3], size, axis=ax)
    if op == "pad":
        return lambda p: jnp.pad(p[i], [(1, 0) if d == ax else (0, 0) for d in range(v.ndim)])
    if op == "lookup" and not _float(v):
        return lambda p: p[2][jnp.abs(p[i]) % 7]
    if op == "take":
        index = jnp.asarray(
            data.draw(st.lists(st.integers(0, v.shape[ax] - 1), min_size=1, max_size=3)), jnp.int32
        )
        return lambda p: jnp.take(p[i], index, axis=ax)
    if op == "argmax" and _float(v):
        return lambda p: jnp.argmax(p[i], axis=ax).astype(jnp.int32)
    if op == "top_k" and _float(v):
        return lambda p: jax.lax.top_k(p[i], 1)[0]
    if op == "promote":
        return lambda p: (
            p[i]
            + jnp.expand_dims(
                jnp.arange(v.shape[ax], dtype=v.dtype), tuple(d for d in range(v.ndim) if d != ax)
            )
        )
    if op == "zeros_like":
        return lambda p: jnp.zeros_like(p[i]).at[...].add(p[i])
    if op == "contract" and _float(v):
        return lambda p: jnp.tensordot(p[i], p[i], axes=([ax], [ax]))
    if op == "convert":
        dtype = jnp.int32 if _float(v) else jnp.float32
        return lambda p: jnp.floor(p[i] * 3).astype(dtype) if _float(v) else p[i].astype(dtype)
    if op == "scan" and _float(v):
        steps = jnp.array([1.0, 0.5], v.dtype)
        return lambda p: jax.lax.scan(lambda c, s: (jnp.sin(c) * s, c.sum()), p[i], steps)[0]
    if op == "cond":
        return lambda p: jax.lax.cond(p[3] > 0, lambda t: t * 2, lambda t: t - 1, p[i])
    if op == "jit":
        return lambda p: jax.jit(lambda t: t * 2 + 1)(p[i])
    if op == "checkpoint" and _float(v):
        return lambda p: jax.checkpoint(lambda t: jnp.sin(t) * t)(p[i])
    return None


OPS = [
    "unary",
    "binary",
    "matmul",
    "reduce",
    "cumsum",
    "sort",
    "argsort",
    "transpose",
    "reshape",
    "broadcast",
    "concatenate",
    "slice",
    "dynamic_slice",
    "pad",
    "lookup",
    "take",
    "argmax",
    "top_k",
    "promote",
    "zeros_like",
    "contract",
    "convert",
    "scan",
    "cond",
    "jit",
    "checkpoint",
]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.data())
def test_random_program_ground_truth(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    axis = data.draw(st.integers(0, 2), label="batch axis of x")
    shape = [3, 5]
    shape.insert(axis, B)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, 5)) / 3, jnp.float32)
    table = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 7, size=(B, 3)), jnp.int32)
    args = [x, w, table, jnp.int32(1), ids]
    pool = list(args)
    steps: list[Step] = []
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        step = draw_step(data, pool)
        if step is not None:
            pool.append(step(pool))
            steps.append(step)

    def program(*inputs: Any) -> list[Any]:
        values = list(inputs)
        for step in steps:
            values.append(step(values))
        return values[len(inputs) :] or [values[0] * 1]

    partition_and_check(program, *args, batch_axes=(axis, None, None, None, 0))
