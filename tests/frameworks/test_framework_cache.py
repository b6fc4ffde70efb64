"""cached_jit on other frameworks' models: same values as jax.jit, warm starts, honest misses.

Every model here closes over a framework object (a Keras model, a haiku
transform, a linen or nnx module, an optax optimizer): its fingerprint must be
reliable (a warm process bypasses tracing), and any edit a user makes (a layer
option, a closed-over weight, a hyperparameter) must be a miss whose reason
names what changed, never a stale hit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.models.frameworks import FRAMEWORK_MODELS, check_nondegenerate, framework_model

LEVELS = ("trace", "lower", "compile")
REPO = Path(__file__).resolve().parents[2]
# ResNet50 takes half a minute to build here: it is the benchmark's, not the tests'.
MODELS = tuple(n for n in FRAMEWORK_MODELS if n != "keras_resnet50")


def check_reference(name, y) -> None:
    """A reference must not be degenerate; a training step's is its new parameters.

    (Adam's second moments after one step are ~1e-5 by construction.)
    """
    check_nondegenerate(y[1][0] if name == "optax_train_step" else y, what=name)


def allclose_tree(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(leaves_a, leaves_b, strict=True)
    )


@pytest.mark.parametrize("name", MODELS)
def test_equals_jax_jit_with_a_reliable_fingerprint(name):
    model = framework_model(name)
    args = model.example_args(4)
    reference = jax.jit(model.apply)(*args)
    check_reference(name, reference)

    f = mcl.cached_jit(model.apply, store=mcl.CacheStore(None))
    assert f.fingerprint.reliable, f.fingerprint.notes
    out = f(*args)
    assert allclose_tree(out, reference)
    assert f.last_report.statuses() == {lvl: "miss" for lvl in LEVELS}


# (model, edited config, a fragment of the trace-level reason naming the edit)
CHANGES = [
    ("keras_sequential", {"activation": "tanh"}, "config['activation']"),
    ("keras_attention", {"heads": 4}, "config['num_heads']"),
    ("haiku_mlp", {"activation": "tanh"}, "forward.<closure act>"),
    ("haiku_convbn", {"eps": 1e-3}, "forward.<closure eps>"),
    ("linen_cnn", {"eps": 1e-3}, "<closure module>.epsilon"),
    ("linen_transformer", {"causal": False}, "<closure module>.causal"),
    ("nnx_closed", {"weight_shift": 0.5}, "<closure net>.state['linear2.kernel"),
    ("nnx_split", {"width": 16}, "<closure graphdef>"),
    ("equinox_mlp", {"activation": "tanh"}, "<closure static>"),
    ("optax_train_step", {"learning_rate": 1e-2}, "<closure tx>"),
]


@pytest.mark.parametrize(("name", "config", "fragment"), CHANGES, ids=[c[0] for c in CHANGES])
def test_an_edit_is_a_miss_that_names_it_and_gives_the_new_values(tmp_path, name, config, fragment):
    store = mcl.CacheStore(tmp_path / "store")
    before, after = framework_model(name), framework_model(name, **config)
    args_before, args_after = before.example_args(4), after.example_args(4)
    old = mcl.cached_jit(before.apply, store=store)(*args_before)

    f = mcl.cached_jit(after.apply, store=store)
    assert f.fingerprint.reliable, f.fingerprint.notes
    out = f(*args_after)
    report = f.last_report
    assert report.status("trace") == "miss"
    assert report.reason("trace").startswith("function "), report.reason("trace")
    assert fragment in report.reason("trace"), report.reason("trace")
    reference = jax.jit(after.apply)(*args_after)
    check_reference(name, reference)
    assert allclose_tree(out, reference)
    assert not allclose_tree(out, old)  # the new values, not the old program's


def test_a_keras_model_called_directly_keys_on_the_weights_it_reads(tmp_path):
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="tanh")])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    def predict(x):
        return model(x)  # reads the model's own variables: constants of the program

    store = mcl.CacheStore(tmp_path / "store")
    first = mcl.cached_jit(predict, store=store)
    y0 = first(x)
    check_nondegenerate(y0)
    again = mcl.cached_jit(predict, store=store)
    again(x)
    assert again.last_report.statuses() == {
        "trace": "bypassed",
        "lower": "bypassed",
        "compile": "memory",
    }

    kernel = model.layers[-1].kernel
    kernel.assign(kernel.value + 0.5)
    edited = mcl.cached_jit(predict, store=store)
    y1 = edited(x)
    assert edited.last_report.status("trace") == "miss"
    assert "variables['0:kernel']" in edited.last_report.reason("trace")
    np.testing.assert_allclose(y1, np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(y1, y0)


def run_child(store: Path, names: tuple[str, ...]) -> dict:
    import json

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            # As in pytest's configuration: the frameworks' deprecations are not ours.
            "-W",
            "ignore::DeprecationWarning",
            str(Path(__file__).with_name("fresh_child.py")),
            str(store),
            *names,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_fresh_process_on_a_warm_store_bypasses_trace_and_lower(tmp_path):
    store = tmp_path / "store"
    cold = run_child(store, MODELS)  # fills the store
    warm = run_child(store, MODELS)
    for name in MODELS:
        assert cold[name]["statuses"] == {lvl: "miss" for lvl in LEVELS}, (name, cold[name])
        assert warm[name]["statuses"] == {
            "trace": "bypassed",
            "lower": "bypassed",
            "compile": "disk",
        }, (name, warm[name])
        assert warm[name]["output"] == cold[name]["output"], name
