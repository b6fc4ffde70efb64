"""CacheStore(levels=...): levels turned off always run; nothing bypasses them.

A second ``CacheStore`` on the same directory stands for a fresh process (its
in-process layer is empty), as in ``test_cached_jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl

LEVELS = ("trace", "lower", "compile")


def affine(params, x):
    return jnp.tanh(x @ params["w"] + params["b"])


def affine_renamed_intermediate(params, x):
    y = x @ params["w"] + params["b"]
    return jnp.tanh(y)


@pytest.fixture
def args(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (6, 3)), "b": jnp.zeros(3)}, jax.random.normal(k2, (5, 6))


def second_process(tmp_path, levels, fn=affine, **options):
    """A new store object on the same directory: what a fresh process sees."""
    return mcl.cached_jit(fn, store=mcl.CacheStore(tmp_path / "s", levels=levels), **options)


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ((), ("miss", "miss", "miss")),
        (("compile",), ("miss", "miss", "disk")),
        (("lower", "compile"), ("miss", "disk", "disk")),
        (LEVELS, ("bypassed", "bypassed", "disk")),
    ],
    ids=["none", "compile_only", "lower_compile", "all"],
)
def test_each_level_adds_a_hit_in_a_new_process(tmp_path, args, levels, expected):
    first = second_process(tmp_path, levels)
    first(*args)
    assert first.last_report.statuses() == dict.fromkeys(LEVELS, "miss")
    again = second_process(tmp_path, levels)
    out = again(*args)
    assert tuple(again.last_report.statuses().values()) == expected
    np.testing.assert_array_equal(np.asarray(out), np.asarray(jax.jit(affine)(*args)))
    for level in LEVELS:
        if level not in levels:
            assert "is off in this store" in again.last_report.reason(level)


def test_levels_that_are_off_write_nothing(tmp_path, args):
    store = mcl.CacheStore(tmp_path / "s", levels=("compile",))
    mcl.cached_jit(affine, store=store)(*args)
    stats = store.stats()
    assert stats["trace"]["entries"] == stats["lower"]["entries"] == 0
    assert stats["trace"]["bytes"] == stats["lower"]["bytes"] == 0
    assert stats["compile"]["entries"] == 1
    # JAX's persistent cache keeps executables by content only: no chain pointers.
    assert not list((tmp_path / "s" / "compile" / "chain").glob("*/output.pkl"))
    nothing = mcl.CacheStore(tmp_path / "n", levels=())
    mcl.cached_jit(affine, store=nothing)(*args)
    assert all(v["entries"] == 0 and v["bytes"] == 0 for v in nothing.stats().values())


def test_compile_only_misses_on_a_compiler_option_and_says_why(tmp_path, args):
    second_process(tmp_path, ("compile",))(*args)
    changed = second_process(
        tmp_path, ("compile",), compiler_options={"xla_backend_optimization_level": 0}
    )
    changed(*args)
    assert changed.last_report.statuses() == dict.fromkeys(LEVELS, "miss")
    assert changed.last_report.reason("compile").startswith("compiler_options changed")
    assert "trace and lower levels before it are off" in changed.last_report.reason("compile")


def test_compile_only_hits_after_an_edit_that_keeps_the_jaxpr(tmp_path, args):
    second_process(tmp_path, ("compile",))(*args)
    edited = second_process(tmp_path, ("compile",), fn=affine_renamed_intermediate)
    edited(*args)
    assert edited.last_report.statuses() == {"trace": "miss", "lower": "miss", "compile": "disk"}


def test_a_full_store_reads_what_a_compile_only_store_wrote(tmp_path, args):
    second_process(tmp_path, ("compile",))(*args)
    full = second_process(tmp_path, LEVELS)
    full(*args)
    # No chain entries were written, so trace and lower run; compile is found by content.
    assert full.last_report.statuses() == {"trace": "miss", "lower": "miss", "compile": "disk"}


def test_in_process_layer_respects_levels(args):
    store = mcl.CacheStore(None, levels=("lower", "compile"))
    mcl.cached_jit(affine, store=store)(*args)
    g = mcl.cached_jit(affine, store=store)
    g(*args)
    assert g.last_report.statuses() == {"trace": "miss", "lower": "memory", "compile": "memory"}


def test_bad_levels_name_the_argument_and_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"Valid options for 'levels' are subsets of"):
        mcl.CacheStore(tmp_path / "s", levels=("compile", "link"))
    with pytest.raises(TypeError, match=r"write e.g. levels=\('compile',\)"):
        mcl.CacheStore(tmp_path / "s", levels="compile")


def test_levels_are_kept_in_pipeline_order_and_shown(tmp_path):
    store = mcl.CacheStore(tmp_path / "s", levels=["compile", "trace"])
    assert store.levels == ("trace", "compile")
    assert store.caches("trace") and not store.caches("lower")
    assert "levels=('trace', 'compile')" in repr(store)
    assert "levels=" not in repr(mcl.CacheStore(tmp_path / "t"))
