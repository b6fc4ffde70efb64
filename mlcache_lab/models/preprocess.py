"""A model whose weights are preprocessed on every call: a batch-invariant cluster.

The weight matrix is built from a low-rank factorisation and normalised per
column, then applied to the batch. The preprocessing touches no batched value,
so partitioning puts it in an ``invariant`` cluster a scheduler can run once.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ._registry import Model, register_model

__all__ = ["preprocess"]


def preprocess_apply(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """``x [B, features]`` through a weight rebuilt from ``u @ v`` and column-normalised."""
    w = params["u"] @ params["v"]
    w = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    w = w * jax.nn.softplus(params["scale"])
    return jnp.tanh(x @ w + params["b"]) @ params["head"]


@register_model("preprocess")
def preprocess(*, features: int = 32, rank: int = 8, hidden: int = 64, classes: int = 10) -> Model:
    """Low-rank weight ``features x hidden`` of rank ``rank``, then a linear head."""

    def init(key: jax.Array) -> dict[str, Any]:
        ku, kv, kh = jax.random.split(key, 3)
        return {
            "u": jax.random.normal(ku, (features, rank), jnp.float32) / math.sqrt(features),
            "v": jax.random.normal(kv, (rank, hidden), jnp.float32) / math.sqrt(rank),
            "scale": jnp.zeros((hidden,), jnp.float32),
            "b": jnp.zeros((hidden,), jnp.float32),
            "head": jax.random.normal(kh, (hidden, classes), jnp.float32) / math.sqrt(hidden),
        }

    def make_inputs(batch_size: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.normal(key, (batch_size, features), jnp.float32),)

    config = dict(features=features, rank=rank, hidden=hidden, classes=classes)
    return Model("preprocess", preprocess_apply, init, make_inputs, (None, 0), config)
