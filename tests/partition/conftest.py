"""Shared fixtures for the partition tests (helpers live in ``ground_truth.py``)."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def key() -> jax.Array:
    """A PRNG key."""
    return jax.random.key(0)
