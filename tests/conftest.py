"""Shared fixtures: a PRNG key, a fresh on-disk store per test, small test functions."""

from __future__ import annotations

import jax
import pytest

import mlcache_lab as mcl


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture
def store(tmp_path) -> mcl.CacheStore:
    return mcl.CacheStore(tmp_path / "store")


@pytest.fixture(params=["graphviz", "layered"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each picture test once per renderer: Graphviz where `dot` is on PATH, and the layered
    renderer (igraph + matplotlib) everywhere, forced through $MLCACHE_LAB_RENDERER so that
    fresh processes (notebook kernels, the CLI) draw with it too."""
    import shutil

    from mlcache_lab.partition.display import RENDERER_ENV

    if request.param == "graphviz" and shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` is not on PATH; the layered case covers this machine")
    monkeypatch.setenv(RENDERER_ENV, request.param)
    return str(request.param)


@pytest.fixture
def fresh_key_file(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A fresh signing key file location (created on first use), exported to child processes."""
    path = tmp_path / "keys" / "hmac.key"
    monkeypatch.setenv("MLCACHE_LAB_KEY_FILE", str(path))
    monkeypatch.delenv("MLCACHE_LAB_UNSAFE_SKIP_VERIFY", raising=False)
    return path
