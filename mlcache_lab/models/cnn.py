"""A small convolutional classifier (NHWC): conv, ReLU, average pooling, dense head."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ._registry import Model, register_model

__all__ = ["cnn"]


def cnn_apply(params: dict[str, Any], images: jax.Array) -> jax.Array:
    """Logits ``[B, classes]`` for ``images`` of shape ``[B, H, W, C]``."""
    x = images
    for layer in params["convs"]:
        x = jax.lax.conv_general_dilated(
            x, layer["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = jax.nn.relu(x + layer["b"])
        x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
    x = x.reshape(x.shape[0], -1)
    return x @ params["head"]["w"] + params["head"]["b"]


@register_model("cnn")
def cnn(
    *, size: int = 16, channels: int = 3, width: int = 8, depth: int = 2, classes: int = 10
) -> Model:
    """``depth`` conv blocks of ``width`` channels on ``size x size`` images."""

    def init(key: jax.Array) -> dict[str, Any]:
        keys = jax.random.split(key, depth + 1)
        convs, cin = [], channels
        for k in keys[:depth]:
            w = jax.random.normal(k, (3, 3, cin, width), jnp.float32) / math.sqrt(9 * cin)
            convs.append({"w": w, "b": jnp.zeros((width,), jnp.float32)})
            cin = width
        flat = (size // 2**depth) ** 2 * width
        head = {
            "w": jax.random.normal(keys[-1], (flat, classes), jnp.float32) / math.sqrt(flat),
            "b": jnp.zeros((classes,), jnp.float32),
        }
        return {"convs": convs, "head": head}

    def make_inputs(batch_size: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.normal(key, (batch_size, size, size, channels), jnp.float32),)

    config = dict(size=size, channels=channels, width=width, depth=depth, classes=classes)
    return Model("cnn", cnn_apply, init, make_inputs, (None, 0), config)
