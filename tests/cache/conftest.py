"""Every cache test signs with its own key file, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def key_file(fresh_key_file):  # type: ignore[no-untyped-def]
    """Every test here signs with its own key file, never the user's."""
    return fresh_key_file
