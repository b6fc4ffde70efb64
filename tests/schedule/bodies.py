"""Programs that sum over the batch inside ``cond``, ``scan`` and ``while`` bodies.

Shared by ``test_rounds.py`` (every program against ``jax.jit`` at many batch
sizes and policies, and in float64) and ``test_rounds_bodies.py`` (labels).
Each takes ``w: [3, 2]`` and ``x: [B, 3]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def cond_sum(w: jax.Array, x: jax.Array) -> jax.Array:
    """A batch-invariant predicate; both branches sum over the batch into output 0."""
    return lax.cond(
        w[0, 0] > 0,
        lambda x: jnp.sum(x, 0) * 2.0,
        lambda x: jnp.sum(jnp.sin(x) @ w, 0).sum() * jnp.ones(3, x.dtype),
        x,
    )


def scan_carry(w: jax.Array, x: jax.Array) -> jax.Array:
    """A scan over time whose body adds a sum over the batch into its carry."""
    xs = jnp.stack([x, 2 * x, jnp.sin(x)])  # [T, B, 3]

    def body(acc: jax.Array, xt: jax.Array) -> tuple[jax.Array, None]:
        return acc + jnp.tanh(xt @ w).sum(0), None

    return lax.scan(body, jnp.zeros(2, x.dtype), xs)[0]


def while_sum(w: jax.Array, x: jax.Array) -> jax.Array:
    """A while with a batch-invariant trip count, accumulating a sum over the batch."""
    n = (w[0, 0] > 0).astype(jnp.int32) + 2
    return lax.fori_loop(0, n, lambda i, a: a + jnp.sum(x * i, 0), jnp.zeros(3, x.dtype))
