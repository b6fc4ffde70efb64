"""Version skew and flags: an entry made under one setting is never served under another.

Each call runs in a fresh process (``child_process.skew``) against one store,
switching the setting back and forth: the first call under a setting must not
be served what the other setting made (a miss, saying which key component
changed), the result must equal ``jax.jit`` under that setting, and going back
must find the original entries again, untouched.
"""

from __future__ import annotations

import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from child_process import run, write_functions
from entry_tools import ARGS, entries, read_entry, write_entry

import mlcache_lab as mcl

pytestmark = pytest.mark.slow


@pytest.fixture
def setup(tmp_path):
    functions = str(write_functions(tmp_path / "functions"))
    return {"store": str(tmp_path / "store"), "functions": functions, "name": "shared"}


def call(setup, **env_or_version):
    version = env_or_version.pop("jaxlib_version", None)
    args = {**setup, "jaxlib_version": version}
    result = run("skew", args, env=env_or_version)
    assert result["max_abs_diff"] == 0.0, result  # always the right answer
    assert result["dtype"] == result["expected_dtype"], result
    return result


WARM = {"trace": "bypassed", "lower": "bypassed", "compile": "disk"}


def test_x64_flag(setup):
    base = call(setup, JAX_ENABLE_X64="0")
    wide = call(setup, JAX_ENABLE_X64="1")
    assert wide["dtype"] == "float64" and base["dtype"] == "float32"
    assert wide["statuses"]["trace"] == "miss" and wide["statuses"]["compile"] == "miss"
    assert "trace_context changed" in wide["reasons"]["trace"]
    assert wide["keys"]["compile"] != base["keys"]["compile"]
    assert call(setup, JAX_ENABLE_X64="0")["statuses"] == WARM
    assert call(setup, JAX_ENABLE_X64="1")["statuses"] == WARM


def test_xla_flags(setup):
    base = call(setup, XLA_FLAGS="")
    flagged = call(setup, XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    assert flagged["statuses"]["compile"] == "miss"
    assert "xla_flags changed" in flagged["reasons"]["compile"]
    assert flagged["keys"]["compile"] != base["keys"]["compile"]
    assert call(setup, XLA_FLAGS="")["statuses"] == WARM
    assert call(setup, XLA_FLAGS="--xla_cpu_enable_fast_math=false")["statuses"] == WARM


def test_jaxlib_version(setup):
    import jaxlib

    base = call(setup)
    other = call(setup, jaxlib_version="0.10.1")
    assert other["statuses"] == {"trace": "miss", "lower": "miss", "compile": "miss"}
    # The explain record is an entry of the other build too, so not even it is read.
    assert other["reasons"]["trace"] == "no earlier entry for this function at this level"
    assert all(other["keys"][lvl] != base["keys"][lvl] for lvl in other["keys"])
    assert call(setup)["statuses"] == WARM
    assert jaxlib.__version__ != "0.10.1"


def test_device_count_and_an_executable_for_other_devices(setup, tmp_path):
    """Two host devices change the compile key; their executable, moved under ours, is refused."""
    base = call(setup)
    two = call(setup, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert two["devices"] == 2 and two["statuses"]["compile"] == "miss"
    assert "device_kind changed" in two["reasons"]["compile"]
    # A writer holding our key moves the two-device executable under the one-device key.
    store = mcl.CacheStore(setup["store"])
    mine = store.lookup_chain("compile", base["keys"]["compile"]).content_key
    theirs = store.lookup_chain("compile", two["keys"]["compile"]).content_key
    root = store.path
    assert root is not None and mine and theirs
    header, payload, meta = read_entry(root / "compile" / "content" / theirs / "output.pkl")
    assert "x2" in pickle.loads(meta)["runtime"]
    write_entry(
        root / "compile" / "content" / mine / "output.pkl", {**header, "key": mine}, payload, meta
    )
    moved = call(setup)
    assert moved["statuses"]["compile"] == "miss"
    assert "executable built for" in moved["reasons"]["compile"]
    assert "x2" in moved["reasons"]["compile"]
    assert call(setup)["statuses"] == WARM  # regenerated


def test_lowering_platforms_are_kept_apart(tmp_path):
    store = mcl.CacheStore(tmp_path / "store")
    f = mcl.cached_jit(lambda w, x: jnp.tanh(x @ w), store=store)
    g = f.with_options(lowering_platforms=("cpu", "cuda"))
    np.testing.assert_allclose(f(*ARGS), g(*ARGS))
    assert g.last_report.status("lower") == "miss"
    assert "platforms changed" in g.last_report.reason("lower")
    assert len(entries(tmp_path / "store", "lower")) == 2
