"""A plain multi-layer perceptron: every equation is per-sample."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ._registry import Model, register_model

__all__ = ["mlp"]


def mlp_apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """``x`` of shape ``[B, features]`` through ReLU layers; the last layer is linear."""
    for i, layer in enumerate(params):
        x = x @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            x = jax.nn.relu(x)
    return x


@register_model("mlp")
def mlp(*, features: int = 64, hidden: int = 128, depth: int = 3, classes: int = 10) -> Model:
    """An MLP ``features -> hidden x depth -> classes``."""
    sizes = [features] + [hidden] * depth + [classes]

    def init(key: jax.Array) -> Any:
        keys = jax.random.split(key, len(sizes) - 1)
        return [
            {
                "w": jax.random.normal(k, (m, n), jnp.float32) / math.sqrt(m),
                "b": jnp.zeros((n,), jnp.float32),
            }
            for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]

    def make_inputs(batch_size: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.normal(key, (batch_size, features), jnp.float32),)

    config = dict(features=features, hidden=hidden, depth=depth, classes=classes)
    return Model("mlp", mlp_apply, init, make_inputs, (None, 0), config)
