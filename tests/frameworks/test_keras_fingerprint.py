"""A Keras model's fingerprint follows its architecture and weights, never its layers' names.

Keras numbers auto-generated names per process: a model built after another
one has ``dense_7`` where a fresh process has ``dense_3``. The same
architecture with the same weights must fingerprint the same at every nesting
level (Sequential in functional, functional in Sequential, graph operations
that are not layers), and a real change must differ, with a miss reason that
names the option.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.cache.fingerprint import fingerprint_function

keras = pytest.importorskip("keras")


def nested(units: int = 8, activation: str = "relu", names: str | None = None) -> keras.Model:
    """Functional model holding a Sequential that holds a functional block, plus a keras.ops add."""

    def name(n: str) -> str | None:
        return None if names is None else f"{names}_{n}"

    block_in = keras.Input((units,))
    block_out = keras.layers.Dense(units, activation=activation, name=name("inner"))(block_in)
    block = keras.Model(block_in, block_out, name=name("block"))
    stack = keras.Sequential(
        [keras.Input((units,)), block, keras.layers.Dense(units, name=name("after"))],
        name=name("stack"),
    )
    inp = keras.Input((4,), name=name("input"))
    h = keras.layers.Dense(units, activation=activation, name=name("first"))(inp)
    out = keras.ops.add(stack(h), h)
    return keras.Model(inp, keras.layers.Dense(3, name=name("head"))(out), name=name("model"))


def applying(model):
    def apply(params, x):
        return model.stateless_call(params[0], params[1], x)[0]

    return apply


def params_of(model):
    return (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )


def same_weights(model, like):
    for variable, source in zip(model.variables, like.variables, strict=True):
        variable.assign(source.value)
    return model


def sublayer(model, *path: int):
    """The layer at ``path``, by the positions a fingerprint names (InputLayers counted)."""
    for i in path:
        model = list(model._flatten_layers(include_self=False, recursive=False))[i]
    return model


def layer_names(model) -> list[str]:
    return [layer.name for layer in model._flatten_layers(include_self=False, recursive=True)]


def test_auto_generated_names_at_every_level_change_nothing():
    first = nested()
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(2)])  # unrelated
    second = same_weights(nested(), first)
    # The counters moved on: every generated name differs, at every level.
    assert not set(layer_names(first)) & set(layer_names(second))
    a, b = fingerprint_function(applying(first)), fingerprint_function(applying(second))
    assert a.reliable, a.notes
    assert a.digest == b.digest
    assert a.parts == b.parts


def test_names_given_by_the_user_change_nothing():
    first = nested(names="mine")
    second = same_weights(nested(names="theirs"), first)
    assert layer_names(first) != layer_names(second)
    assert fingerprint_function(applying(first)).digest == (
        fingerprint_function(applying(second)).digest
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # The inner block's Dense, two levels down: its option is named.
        ({"activation": "tanh"}, ".layers[1].layers[1].config['activation']"),
        ({"units": 6}, ".layers[1].layers[1].config['units']"),
    ],
    ids=["activation", "units"],
)
def test_a_config_change_in_a_nested_model_is_a_miss_that_names_it(tmp_path, change, fragment):
    store = mcl.CacheStore(tmp_path / "store")
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    before, after = nested(), nested(**change)
    old = mcl.cached_jit(applying(before), store=store)(params_of(before), x)

    f = mcl.cached_jit(applying(after), store=store)
    out = f(params_of(after), x)
    reason = f.last_report.reason("trace")
    assert f.last_report.status("trace") == "miss"
    # The Sequential is the outer model's layer 2, the block its layer 1 (after its input).
    assert f"<closure model>.layers[2]{fragment}" in reason, reason
    np.testing.assert_allclose(out, after.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(out, old)


def test_a_weight_assigned_in_place_is_a_miss_for_a_model_called_directly(tmp_path):
    model = nested()
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    def predict(x):
        return model(x)  # reads its own weights: constants of the program

    store = mcl.CacheStore(tmp_path / "store")
    y0 = mcl.cached_jit(predict, store=store)(x)
    kernel = sublayer(model, 2, 1, 1).kernel  # the block's Dense, two levels down
    kernel.assign(kernel.value + 0.5)
    edited = mcl.cached_jit(predict, store=store)
    y1 = edited(x)
    assert edited.last_report.status("trace") == "miss"
    assert ".layers[2].layers[1].layers[1].variables['0:kernel']" in (
        edited.last_report.reason("trace")
    )
    np.testing.assert_allclose(y1, np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y1, y0)


def test_the_wiring_is_part_of_the_fingerprint():
    """Two models of the same layers, wired differently, differ."""

    def wired(skip: bool) -> keras.Model:
        inp = keras.Input((4,))
        a = keras.layers.Dense(4)
        b = keras.layers.Dense(4)
        h = a(inp)
        out = b(keras.ops.add(h, inp) if skip else h)
        return keras.Model(inp, out)

    plain, skipped = wired(False), wired(True)
    skipped = same_weights(skipped, plain)
    assert fingerprint_function(applying(plain)).digest != (
        fingerprint_function(applying(skipped)).digest
    )
