"""Where the notebooks are, and an environment in which kernels import this checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture
def kernel_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Small notebooks, and kernels that import this checkout (whatever is installed)."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + (os.pathsep + path if path else ""))
    monkeypatch.setenv("MLCACHE_LAB_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    return dict(os.environ)
