"""The model zoo and real flax.nnx / equinox.nn layers, checked numerically."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from mlcache_lab.models import available_models, get_model

from .ground_truth import partition_and_check

SMALL = {"transformer": dict(vocab=32, seq=8, width=16, layers=2, num_heads=2)}
EXPECTED = {
    # model -> categories that must appear among its clusters
    "mlp": {"batched"},
    "cnn": {"batched"},
    "transformer": {"batched"},
    "preprocess": {"batched", "invariant"},
    "batchnorm_train": {"batched", "mixes"},
    "contrastive": {"batched", "mixes"},
    "cumsum_batch": {"batched", "mixes"},
}


@pytest.mark.parametrize("name", available_models())
def test_zoo_model(name: str) -> None:
    model = get_model(name, **SMALL.get(name, {}))
    args = model.example_args(6)
    g = partition_and_check(model.apply, *args, batch_axes=model.batch_axes)
    assert EXPECTED.get(name, set()) <= {c.category for c in g.clusters}


def test_preprocess_weights_form_one_invariant_block_feeding_the_batch() -> None:
    model = get_model("preprocess")
    g = partition_and_check(model.apply, *model.example_args(4), batch_axes=model.batch_axes)
    dots = [i for i, e in enumerate(g.jaxpr.jaxpr.eqns) if e.primitive.name == "dot_general"]
    assert g.labels[dots[0]].category == "invariant"  # u @ v
    assert g.labels[dots[1]].kind == "batched"  # x @ w


def test_transformer_scan_is_batched() -> None:
    model = get_model("transformer", **SMALL["transformer"])
    g = partition_and_check(model.apply, *model.example_args(4), batch_axes=model.batch_axes)
    (scan,) = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "scan"
    ]
    assert scan.kind == "batched"


def _nnx_case(module: nnx.Module, x: jax.Array):  # type: ignore[no-untyped-def]
    graphdef, state = nnx.split(module)

    def apply(state, x):  # type: ignore[no-untyped-def]
        return nnx.merge(graphdef, state)(x)

    return apply, (state, x)


def _nnx_cases() -> dict:
    rngs = nnx.Rngs(0)
    k = jax.random.key(1)
    bn_eval = nnx.BatchNorm(3, rngs=rngs)
    bn_eval.eval()
    return {
        "Linear": (nnx.Linear(3, 5, rngs=rngs), jax.random.normal(k, (4, 3))),
        "Conv": (nnx.Conv(2, 4, (3, 3), rngs=rngs), jax.random.normal(k, (4, 6, 6, 2))),
        "LayerNorm": (nnx.LayerNorm(3, rngs=rngs), jax.random.normal(k, (4, 3))),
        "BatchNorm-train": (nnx.BatchNorm(3, rngs=rngs), jax.random.normal(k, (4, 3))),
        "BatchNorm-eval": (bn_eval, jax.random.normal(k, (4, 3))),
        "MultiHeadAttention": (
            nnx.MultiHeadAttention(num_heads=2, in_features=4, decode=False, rngs=rngs),
            jax.random.normal(k, (4, 5, 4)),
        ),
        "Embed": (nnx.Embed(10, 4, rngs=rngs), jax.random.randint(k, (4, 5), 0, 10)),
    }


@pytest.mark.parametrize("name", list(_nnx_cases()))
def test_flax_nnx_layer(name: str) -> None:
    module, x = _nnx_cases()[name]
    fn, args = _nnx_case(module, x)
    g = partition_and_check(fn, *args, batch_axes=(None, 0))
    categories = {c.category for c in g.clusters}
    if name == "BatchNorm-train":
        assert "mixes" in categories
    else:
        assert "mixes" not in categories, g


def _eqx_cases() -> dict:
    k = jax.random.key(2)
    mha = eqx.nn.MultiheadAttention(2, 4, key=k)
    return {
        "MLP": (
            eqx.nn.MLP(3, 2, 8, 2, key=k),
            lambda m, x: jax.vmap(m)(x),
            jax.random.normal(k, (4, 3)),
        ),
        "Conv2d": (
            eqx.nn.Conv2d(2, 4, 3, key=k),
            lambda m, x: jax.vmap(m)(x),
            jax.random.normal(k, (4, 2, 6, 6)),
        ),
        "MultiheadAttention": (
            mha,
            lambda m, x: jax.vmap(lambda t: m(t, t, t))(x),
            jax.random.normal(k, (4, 5, 4)),
        ),
    }


@pytest.mark.parametrize("name", list(_eqx_cases()))
def test_equinox_layer(name: str) -> None:
    module, call, x = _eqx_cases()[name]
    params, static = eqx.partition(module, eqx.is_array)

    def fn(params, x):  # type: ignore[no-untyped-def]
        return call(eqx.combine(params, static), x)

    g = partition_and_check(fn, params, x, batch_axes=(None, 0))
    assert {c.category for c in g.clusters} <= {"batched", "invariant"}
    assert jnp.shape(g.run(params, x)) == jnp.shape(fn(params, x))
