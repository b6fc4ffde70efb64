"""Bad input gets an error that names the argument, the value and the fix."""

from __future__ import annotations

import os
import warnings

import jax.numpy as jnp
import pytest

import mlcache_lab as mcl


def f(w, x):
    return x @ w


# Errors jax.jit also raises are JAX's own, word for word: cached_jit is a drop-in.
def test_non_array_leaf(store):
    cf = mcl.cached_jit(f, store=store)
    with pytest.raises(
        TypeError,
        match=r"(?s)Error interpreting argument to .* as an abstract array.*of type <class 'str'> "
        r"and was passed to the function at path x.*static_argnums or static_argnames",
    ):
        cf(jnp.eye(2), "tokens")


def test_unhashable_static_argument(store):
    cf = mcl.cached_jit(lambda x, shape: x.reshape(shape), store=store, static_argnums=(1,))
    with pytest.raises(ValueError, match=r"Non-hashable static arguments are not supported.*list"):
        cf(jnp.ones(4), [2, 2])


def test_static_argnums_out_of_range():
    with pytest.raises(
        ValueError, match=r"static_argnums=\(3,\), but only accepts 2 positional arguments"
    ):
        mcl.cached_jit(f, static_argnums=(3,))


def test_bad_argnums_type():
    with pytest.raises(TypeError, match=r"'str' object cannot be interpreted as an integer"):
        mcl.cached_jit(f, donate_argnums=("x",))


def test_unknown_argname():
    with pytest.raises(ValueError, match=r"invalid argnames \{'y'\} in static_argnames"):
        mcl.cached_jit(f, static_argnames="y")


def test_static_and_donated_at_once():
    with pytest.raises(ValueError, match=r"cannot intersect.*\{'w'\}"):
        mcl.cached_jit(f, static_argnums=0, donate_argnums=0)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (3, r"Expected a callable value, got 3"),
        (staticmethod(f), r"staticmethod arguments are not supported"),
        ((lambda: (yield 1)), r"Expected a function, got a generator function"),
    ],
    ids=["not-callable", "staticmethod", "generator"],
)
def test_rejected_functions(fn, message):
    with pytest.raises(TypeError, match=message):
        mcl.cached_jit(fn)


def test_batch_axes_wrong_length(store):
    cf = mcl.cached_jit(f, store=store, batch_axes=(None, 0, 0))
    with pytest.raises(
        ValueError,
        match=r"'batch_axes' must be .* one entry per positional "
        r"argument \(2\).*Got batch_axes=\(None, 0, 0\)",
    ):
        cf(jnp.eye(2), jnp.ones((3, 2)))


def test_batch_axes_structure_mismatch(store):
    cf = mcl.cached_jit(lambda p, x: x @ p["w"], store=store, batch_axes=({"v": None}, 0))
    with pytest.raises(
        ValueError,
        match=r"batch_axes\[0\]=\{'v': None\} does not match the "
        r"structure of argument 0",
    ):
        cf({"w": jnp.eye(2)}, jnp.ones((3, 2)))


def test_batch_axis_past_rank(store):
    cf = mcl.cached_jit(f, store=store, batch_axes=(None, 2))
    with pytest.raises(
        ValueError,
        match=r"axis 2 for args\[1\] of shape \(3, 2\), which "
        r"has rank 2. Fix: use an axis in \[-2, 2\)",
    ):
        cf(jnp.eye(2), jnp.ones((3, 2)))


def test_batch_sizes_disagree(store):
    cf = mcl.cached_jit(lambda x, y: x + y, store=store, batch_axes=(0, 0))
    with pytest.raises(ValueError, match=r"batched arguments disagree on the batch size"):
        cf(jnp.ones((3, 2)), jnp.ones((4, 2)))


def test_static_argument_cannot_be_batched(store):
    cf = mcl.cached_jit(lambda x, n: x * n, store=store, static_argnums=(1,), batch_axes=(0, 0))
    with pytest.raises(ValueError, match=r"batch_axes\[1\]=0 but argument 1 is static"):
        cf(jnp.ones((3, 2)), 2)


def test_bad_store_and_options():
    with pytest.raises(TypeError, match=r"'store' must be a mlcache_lab.CacheStore"):
        mcl.cached_jit(f, store="/tmp/x")
    with pytest.raises(TypeError, match=r"'compiler_options' must be a mapping"):
        mcl.cached_jit(f, compiler_options=["O0"])
    with pytest.raises(TypeError, match=r"write \('cpu',\)"):
        mcl.cached_jit(f, lowering_platforms="cpu")
    with pytest.raises(ValueError, match=r"'max_bytes' must be a positive int"):
        mcl.CacheStore(None, max_bytes=-1)
    with pytest.raises(TypeError, match=r"'path' must be a directory path or None"):
        mcl.CacheStore(3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_store_warns_once_and_runs(tmp_path):  # pragma: no cover - as non-root
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.warns(mcl.CacheWarning, match="cannot be written"):
        store = mcl.CacheStore(locked / "store")
    cf = mcl.cached_jit(f, store=store)
    assert cf(jnp.eye(2), jnp.ones((1, 2))).shape == (1, 2)


def test_store_path_that_is_a_file_warns_once_and_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(mcl.CacheWarning, match="cannot be written.*running uncached"):
        store = mcl.CacheStore(blocker / "store")
    assert not store.on_disk
    cf = mcl.cached_jit(f, store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for batch in (1, 2, 3):
            assert cf(jnp.eye(2), jnp.ones((batch, 2))).shape == (batch, 2)
