"""The jaxpr codec: round trips real programs, refuses what it cannot persist."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.extend.core import jaxpr_as_fun

from mlcache_lab.cache.jaxpr_codec import (
    JaxprCodecError,
    canonical_jaxpr,
    decode_jaxpr,
    encode_jaxpr,
)
from mlcache_lab.models import get_model


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))


def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME")


PROGRAMS = {
    "relu_custom_jvp": (lambda x: jax.nn.relu(x) * 2, (jnp.ones((3, 4)),)),
    "custom_vjp": (lambda x: clip_gradient(x) + 1, (jnp.ones(3),)),
    "gather_embed": (lambda e, t: e[t], (jnp.ones((10, 4)), jnp.array([[1, 2], [3, 4]]))),
    "conv": (conv, (jnp.ones((1, 2, 5, 5)), jnp.ones((3, 2, 3, 3)))),
    "while": (
        lambda x: jax.lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 1, c[1] * 2), (0, x))[1],
        (jnp.ones(2),),
    ),
    "cond": (lambda p, x: jax.lax.cond(p, jnp.sin, jnp.cos, x), (True, jnp.ones(3))),
    "sort_topk": (lambda x: (jnp.sort(x), jax.lax.top_k(x, 2)[0]), (jnp.arange(5.0),)),
    "cumsum_iota": (lambda x: jnp.cumsum(x) + jnp.arange(x.shape[0]), (jnp.ones(4),)),
    "rng": (lambda k: jax.random.normal(k, (3,)), (jax.random.key(1),)),
    "closed_constant": (lambda x: x + np.arange(3.0, dtype=np.float32), (jnp.ones(3),)),
}


def run(closed, *args):
    return jaxpr_as_fun(closed)(*jax.tree.leaves(args))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_round_trip_runs_the_same(name):
    fn, args = PROGRAMS[name]
    closed = canonical_jaxpr(jax.make_jaxpr(fn)(*args))
    decoded = decode_jaxpr(encode_jaxpr(closed))
    assert str(decoded.jaxpr) == str(closed.jaxpr)
    expected = jax.tree.leaves(fn(*args))
    got = run(decoded, *args)
    for a, b in zip(got, expected, strict=True):
        if jnp.issubdtype(b.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_symbolic_batch_transformer_round_trip():
    model = get_model("transformer", layers=2, seq=8, width=16, vocab=32)
    params, tokens = model.example_args(2)
    (b,) = export.symbolic_shape("B")
    specs = (
        jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params),
        jax.ShapeDtypeStruct((b, 8), jnp.int32),
    )
    closed = canonical_jaxpr(jax.jit(model.apply).trace(*specs).jaxpr)
    decoded = decode_jaxpr(encode_jaxpr(closed))
    assert "B" in str(decoded.jaxpr)
    exp = export.export(jax.jit(jaxpr_as_fun(decoded)))(
        *[jax.ShapeDtypeStruct(a.shape, a.dtype) for a in decoded.in_avals]
    )
    out = exp.call(*jax.tree.leaves((params, tokens)))[0]
    np.testing.assert_allclose(out, model.apply(params, tokens), rtol=1e-5, atol=1e-5)


def test_encoding_is_deterministic_and_ignores_source_lines():
    def f(x):
        return jnp.tanh(x) * 2

    def g(x):

        return jnp.tanh(x) * 2  # same program, another line

    x = jnp.ones(3)
    a = encode_jaxpr(canonical_jaxpr(jax.make_jaxpr(f)(x)))
    b = encode_jaxpr(canonical_jaxpr(jax.make_jaxpr(g)(x)))
    assert a == b


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:-7],
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:4] + bytes([99]) + d[5:],
        lambda d: d[:5] + bytes(reversed(d[5:])),
        lambda d: b"",
    ],
)
def test_damaged_bytes_raise_codec_error(damage):
    data = encode_jaxpr(canonical_jaxpr(jax.make_jaxpr(jnp.sin)(jnp.ones(2))))
    with pytest.raises(JaxprCodecError):
        decode_jaxpr(damage(data))


def test_foreign_pickle_is_refused_without_running_it():
    import pickle

    payload = b"MLCJ\x01" + pickle.dumps(print)
    with pytest.raises(JaxprCodecError, match=r"refusing to load builtins\.print"):
        decode_jaxpr(payload)


def test_unencodable_param_is_reported():
    callback = jax.pure_callback  # host callbacks hold Python callables

    def f(x):
        return callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    with pytest.raises(JaxprCodecError):
        encode_jaxpr(canonical_jaxpr(jax.make_jaxpr(f)(jnp.ones(2))))


def test_closed_over_jax_array_constant_persists():
    w = jnp.arange(3.0) * 2
    closed = canonical_jaxpr(
        jax.make_jaxpr(lambda x: x * w + jnp.asarray([1.0, 2.0, 3.0]))(jnp.ones(3))
    )
    decoded = decode_jaxpr(encode_jaxpr(closed))
    np.testing.assert_allclose(run(decoded, jnp.ones(3))[0], w + jnp.asarray([1.0, 2.0, 3.0]))
