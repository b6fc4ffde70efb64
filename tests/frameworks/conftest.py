"""Framework tests: Keras on the JAX backend, a key file of their own, shared model builds."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(autouse=True)
def key_file(fresh_key_file):  # type: ignore[no-untyped-def]
    """Every test here signs with its own key file, never the user's."""
    return fresh_key_file
