"""Framework tests: Keras on the JAX backend, a key file of their own, shared model builds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch):
    """A fresh signing key file location, exported to child processes too."""
    path = tmp_path / "keys" / "hmac.key"
    monkeypatch.setenv("MLCACHE_LAB_KEY_FILE", str(path))
    monkeypatch.delenv("MLCACHE_LAB_UNSAFE_SKIP_VERIFY", raising=False)
    return path
