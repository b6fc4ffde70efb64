"""Models that mix samples, so that part of them cannot be split by batch.

* ``batchnorm_train``: batch-norm with statistics of the current batch (training
  mode) between two dense layers.
* ``contrastive``: in-batch contrastive logits ``z @ z.T`` and their loss per
  sample, as in SimCLR/CLIP.
* ``cumsum_batch``: a running sum over the batch (a causal "memory" across
  samples), followed by per-sample layers.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ._registry import Model, register_model

__all__ = ["batchnorm_train", "contrastive", "cumsum_batch"]


def _dense(key: jax.Array, m: int, n: int) -> dict[str, jax.Array]:
    return {
        "w": jax.random.normal(key, (m, n), jnp.float32) / math.sqrt(m),
        "b": jnp.zeros((n,), jnp.float32),
    }


def _init(features: int, hidden: int, out: int) -> Any:
    def init(key: jax.Array) -> dict[str, Any]:
        k1, k2 = jax.random.split(key)
        return {"l1": _dense(k1, features, hidden), "l2": _dense(k2, hidden, out)}

    return init


def _inputs(features: int) -> Any:
    def make_inputs(batch_size: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.normal(key, (batch_size, features), jnp.float32),)

    return make_inputs


def batchnorm_train_apply(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """Dense, batch-norm with the batch's mean and variance, ReLU, dense."""
    h = x @ params["l1"]["w"] + params["l1"]["b"]
    mean = h.mean(axis=0)
    var = h.var(axis=0)
    h = jax.nn.relu((h - mean) * jax.lax.rsqrt(var + 1e-5))
    return h @ params["l2"]["w"] + params["l2"]["b"]


def contrastive_apply(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """Per-sample InfoNCE loss of in-batch logits ``z @ z.T / t`` (positives on the diagonal)."""
    z = jnp.tanh(x @ params["l1"]["w"] + params["l1"]["b"]) @ params["l2"]["w"]
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    logits = z @ z.T / 0.1
    return jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits)


def cumsum_batch_apply(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """Dense, running mean over the batch, dense."""
    h = jnp.tanh(x @ params["l1"]["w"] + params["l1"]["b"])
    count = jnp.arange(1, h.shape[0] + 1, dtype=h.dtype)[:, None]
    h = jnp.cumsum(h, axis=0) / count
    return h @ params["l2"]["w"] + params["l2"]["b"]


@register_model("batchnorm_train")
def batchnorm_train(*, features: int = 16, hidden: int = 32, classes: int = 10) -> Model:
    """Batch-norm in training mode: mixes samples through the batch statistics."""
    config = dict(features=features, hidden=hidden, classes=classes)
    return Model(
        "batchnorm_train",
        batchnorm_train_apply,
        _init(features, hidden, classes),
        _inputs(features),
        (None, 0),
        config,
    )


@register_model("contrastive")
def contrastive(*, features: int = 16, hidden: int = 32, embed: int = 8) -> Model:
    """In-batch contrastive loss: mixes samples through ``z @ z.T``."""
    config = dict(features=features, hidden=hidden, embed=embed)
    return Model(
        "contrastive",
        contrastive_apply,
        _init(features, hidden, embed),
        _inputs(features),
        (None, 0),
        config,
    )


@register_model("cumsum_batch")
def cumsum_batch(*, features: int = 16, hidden: int = 32, classes: int = 10) -> Model:
    """A running mean over the batch: mixes samples through ``cumsum``."""
    config = dict(features=features, hidden=hidden, classes=classes)
    return Model(
        "cumsum_batch",
        cumsum_batch_apply,
        _init(features, hidden, classes),
        _inputs(features),
        (None, 0),
        config,
    )
