"""Property: any sequence of calls gives what jax.jit gives for the same sequence.

The in-process fast path must never serve an executable to a call that
jax.jit would trace anew: a sequence of calls varies argument types, dtypes,
shapes and weak types, static values equal in value but not in type, JAX's
config contexts and the enclosing transformation. Every result (value, dtype,
weak type, shape) or error type must be jax.jit's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import mlcache_lab as mcl

INPUTS: dict[str, Callable[[], Any]] = {
    "py-int": lambda: 3,
    "py-float": lambda: 2.5,
    "py-bool": lambda: True,
    "np-i32[3]": lambda: np.arange(3, dtype=np.int32),
    "np-f32[3]": lambda: np.linspace(0.5, 1.5, 3, dtype=np.float32),
    "np-i64[3]": lambda: np.arange(3, dtype=np.int64),
    "jnp-f32[2]": lambda: jnp.array([1.5, -2.0]),
    "jnp-f32[2,2]": lambda: jnp.array([[1.0, 2.0], [3.0, 4.0]]),
    "jnp-weak-f32[]": lambda: jnp.asarray(1.25),  # a weakly typed array
    "jnp-i32[2]": lambda: jnp.array([2, 5], dtype=jnp.int32),
}
STATICS = [1, True, 1.0, 2, 2.0]  # equal values of different types among them


@contextlib.contextmanager
def config_context(name: str) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        if name == "x64":
            stack.enter_context(jax.enable_x64(True))
        elif name == "rank-raise":
            stack.enter_context(jax.numpy_rank_promotion("raise"))
        elif name == "precision-highest":
            stack.enter_context(jax.default_matmul_precision("highest"))
        elif name == "default-device":
            stack.enter_context(jax.default_device(jax.devices()[-1]))
        yield


def body(x: Any, s: Any) -> Any:
    # Broadcasts x against a rank-1 constant (rank promotion), multiplies by a
    # static (its type decides the dtype), and contracts (matmul precision).
    y = x * s + jnp.ones(2, dtype=jnp.asarray(x).dtype)[:, None]
    return y, jnp.sum(y * y)


def axis_body(x: Any, s: Any) -> Any:
    return x * s * lax.axis_size("i")


def run(
    fn: Callable[..., Any], axis_fn: Callable[..., Any], call: tuple[str, Any, str, str]
) -> Any:
    """One call of the sequence, under its context and transformation."""
    make, static, context, transform = call
    x = INPUTS[make]()
    with config_context(context):
        if transform == "none":
            return fn(x, static)
        if transform.startswith("axis-size-"):  # the program reads the enclosing axis size
            n = int(transform.rsplit("-", 1)[1])
            return jax.vmap(lambda: axis_fn(x, static), axis_name="i", axis_size=n, out_axes=None)()
        if transform == "vmap":
            return jax.vmap(lambda b: fn(b, static))(jnp.stack([jnp.asarray(x)] * 2))
        if transform == "outer-jit":
            return jax.jit(lambda v: fn(v, static))(x)
        raise AssertionError(transform)


def outcome(thunk: Callable[[], Any]) -> Any:
    try:
        out = thunk()
    except Exception as err:  # the error's type must be the same as jax.jit's
        return ("raised", type(err))
    leaves = jax.tree_util.tree_leaves(out)
    return [
        (str(leaf.dtype), getattr(leaf, "weak_type", None), np.shape(leaf), np.asarray(leaf))
        for leaf in leaves
    ]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return len(a) == len(b) and all(
        x[:3] == y[:3] and np.array_equal(x[3], y[3], equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


FIELDS = (
    sorted(INPUTS),
    STATICS,
    ["none", "x64", "rank-raise", "precision-highest", "default-device"],
    ["none", "axis-size-2", "axis-size-3", "vmap", "outer-jit"],
)


@st.composite
def call_sequences(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Calls that each change one thing of the one before: the fast path's hard cases."""
    call = [draw(st.sampled_from(choices)) for choices in FIELDS]
    sequence = [tuple(call)]
    for _ in range(draw(st.integers(1, 6))):
        field = draw(st.integers(0, len(FIELDS) - 1))
        call[field] = draw(st.sampled_from(FIELDS[field]))
        sequence.append(tuple(call))
    return sequence


@settings(max_examples=40, deadline=None, derandomize=True)
@given(call_sequences())
def test_fast_path_agrees_with_jax_jit(sequence):
    store = mcl.CacheStore(None)
    cached = mcl.cached_jit(body, static_argnums=1, store=store)
    cached_axis = mcl.cached_jit(axis_body, static_argnums=1, store=store)
    ref = jax.jit(body, static_argnums=1)
    ref_axis = jax.jit(axis_body, static_argnums=1)
    for call in sequence:
        got = outcome(lambda c=call: run(cached, cached_axis, c))
        want = outcome(lambda c=call: run(ref, ref_axis, c))
        assert same(got, want), (call, got, want)
