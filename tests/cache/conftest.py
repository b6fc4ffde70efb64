"""Every cache test signs with its own key file, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def key_file(tmp_path, monkeypatch):
    """A fresh key file location (created on first use), exported to child processes too."""
    path = tmp_path / "keys" / "hmac.key"
    monkeypatch.setenv("MLCACHE_LAB_KEY_FILE", str(path))
    monkeypatch.delenv("MLCACHE_LAB_UNSAFE_SKIP_VERIFY", raising=False)
    return path
