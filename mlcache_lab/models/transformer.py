"""A decoder-only transformer whose layer stack runs under ``jax.lax.scan``, or in a loop.

Written to be shape-polymorphic in the batch dimension: nothing reads the batch
size as a Python int, so the model traces with a symbolic batch (``jax.export``).
With ``scan=False`` the layers run in a Python loop, each with its own
weights, so the jaxpr holds every layer (as Keras, Flax linen and Haiku models
written with a loop over layers do).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from ._registry import Model, register_model

__all__ = ["transformer", "transformer_apply", "transformer_init"]

Params = dict[str, Any]


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-5) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def attention(x: jax.Array, layer: Params, num_heads: int) -> jax.Array:
    seq, width = x.shape[-2], x.shape[-1]
    head = width // num_heads
    qkv = x @ layer["w_qkv"]  # [B, S, 3W]
    q, k, v = jnp.split(qkv, 3, axis=-1)

    def heads(t: jax.Array) -> jax.Array:  # [B, S, W] -> [B, H, S, D]
        return t.reshape((*t.shape[:-1], num_heads, head)).swapaxes(-2, -3)

    q, k, v = heads(q), heads(k), heads(v)
    logits = jnp.einsum("bhsd,bhtd->bhst", q, k) / math.sqrt(head)
    causal = jnp.tril(jnp.ones((seq, seq), dtype=bool))
    logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhst,bhtd->bhsd", probs, v).swapaxes(-2, -3)
    return out.reshape((*out.shape[:-2], width)) @ layer["w_out"]


def block(x: jax.Array, layer: Params, num_heads: int) -> jax.Array:
    x = x + attention(layer_norm(x, layer["ln1_scale"], layer["ln1_bias"]), layer, num_heads)
    h = layer_norm(x, layer["ln2_scale"], layer["ln2_bias"])
    h = jax.nn.gelu(h @ layer["w_up"] + layer["b_up"])
    return x + h @ layer["w_down"] + layer["b_down"]


def transformer_apply(params: Params, tokens: jax.Array, *, num_heads: int = 4) -> jax.Array:
    """Logits ``[B, S, vocab]`` for int32 ``tokens`` of shape ``[B, S]``.

    ``params["layers"]`` is one dict of stacked weights (run under ``scan``)
    or a list of one dict per layer (run in a Python loop).
    """
    seq = tokens.shape[-1]
    x = params["embed"][tokens] + params["pos"][:seq]

    def step(carry: jax.Array, layer: Params) -> tuple[jax.Array, None]:
        return block(carry, layer, num_heads), None

    if isinstance(params["layers"], list):
        for layer in params["layers"]:
            x = block(x, layer, num_heads)
    else:
        x, _ = jax.lax.scan(step, x, params["layers"])
    x = layer_norm(x, params["ln_f_scale"], params["ln_f_bias"])
    return x @ params["embed"].T


def transformer_init(
    key: jax.Array,
    *,
    vocab: int,
    seq: int,
    width: int,
    layers: int,
    mlp_ratio: int = 4,
    scan: bool = True,
) -> Params:
    """Parameters with a leading ``layers`` axis on every per-layer weight (for scan).

    With ``scan=False`` the same weights as a list of one dict per layer.
    """
    ks = jax.random.split(key, 6)
    hidden = mlp_ratio * width

    def dense(k: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        return jax.random.normal(k, shape, jnp.float32) / math.sqrt(shape[-2])

    params = {
        "embed": jax.random.normal(ks[0], (vocab, width), jnp.float32) * 0.02,
        "pos": jax.random.normal(ks[1], (seq, width), jnp.float32) * 0.02,
        "layers": {
            "w_qkv": dense(ks[2], (layers, width, 3 * width)),
            "w_out": dense(ks[3], (layers, width, width)),
            "w_up": dense(ks[4], (layers, width, hidden)),
            "b_up": jnp.zeros((layers, hidden), jnp.float32),
            "w_down": dense(ks[5], (layers, hidden, width)),
            "b_down": jnp.zeros((layers, width), jnp.float32),
            "ln1_scale": jnp.ones((layers, width), jnp.float32),
            "ln1_bias": jnp.zeros((layers, width), jnp.float32),
            "ln2_scale": jnp.ones((layers, width), jnp.float32),
            "ln2_bias": jnp.zeros((layers, width), jnp.float32),
        },
        "ln_f_scale": jnp.ones((width,), jnp.float32),
        "ln_f_bias": jnp.zeros((width,), jnp.float32),
    }
    if not scan:
        stacked = params["layers"]
        params["layers"] = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(layers)]
    return params


@register_model("transformer")
def transformer(
    *,
    vocab: int = 512,
    seq: int = 64,
    width: int = 256,
    layers: int = 12,
    num_heads: int = 4,
    scan: bool = True,
) -> Model:
    """The built-in transformer: 12 layers, sequence 64, width 256 by default.

    ``scan=False`` runs the layers in a Python loop instead of ``lax.scan``
    (the same weights, one dict per layer), so the jaxpr grows with the depth.
    """
    if width % num_heads:
        raise ValueError(
            f"'width' must be a multiple of 'num_heads'. Got width={width}, "
            f"num_heads={num_heads}; pick num_heads dividing width."
        )
    if not isinstance(scan, bool):
        raise ValueError(
            f"'scan' must be True (layers under lax.scan) or False (a Python loop over "
            f"layers). Got scan={scan!r}."
        )

    def apply(params: Params, tokens: jax.Array) -> jax.Array:
        return transformer_apply(params, tokens, num_heads=num_heads)

    def init(key: jax.Array) -> Params:
        return transformer_init(key, vocab=vocab, seq=seq, width=width, layers=layers, scan=scan)

    def make_inputs(batch_size: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.randint(key, (batch_size, seq), 0, vocab, dtype=jnp.int32),)

    config = dict(vocab=vocab, seq=seq, width=width, layers=layers, num_heads=num_heads, scan=scan)
    return Model("transformer", apply, init, make_inputs, (None, 0), config)
