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
