"""The training trace benchmark: its trace and summary (the run itself is a benchmark)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from mlcache_lab.bench.training_trace import (
    _peak_rss_kb,
    _reset_peak_rss,
    summarize,
    training_trace,
)


def test_trace_is_deterministic_and_in_range() -> None:
    sizes = training_trace(32, 8, 256, seed=2026)
    assert sizes == training_trace(32, 8, 256, seed=2026)
    assert len(sizes) == 32 and min(sizes) >= 8 and max(sizes) <= 256
    assert len(set(sizes)) > 16  # many distinct sizes: what makes jax.jit recompile
    assert sizes != training_trace(32, 8, 256, seed=1)


def test_summary_reports_ratios_and_memory() -> None:
    trace = [
        {"variant": "jax.jit", "seconds": 10.0, "compilations": 28},
        {"variant": "chunk-32", "seconds": 4.0, "compilations": 5},
    ]
    steady = [
        {"variant": "jax.jit", "batch": 256, "median_seconds": 0.1, "ratio_to_jit": 1.0},
        {"variant": "chunk-32", "batch": 256, "median_seconds": 0.11, "ratio_to_jit": 1.1},
    ]
    memory = [
        {
            "variant": "jax.jit",
            "steady_peak_rss_mb": 800.0,
            "max_rss_mb": 900.0,
            "device_peak_mb": "",
        },
        {
            "variant": "chunk-32",
            "steady_peak_rss_mb": 650.0,
            "max_rss_mb": 700.0,
            "device_peak_mb": 12.5,
        },
    ]
    text = summarize(trace, steady, memory)
    assert "chunk-32" in text and "0.400" in text and "1.100 x jax.jit" in text
    assert "steady peak RSS 650.0 MB (process peak 700.0 MB), device peak 12.5 MB" in text


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux")
def test_the_peak_rss_reset_forgets_an_earlier_peak() -> None:
    before = _peak_rss_kb()
    assert before is not None
    big = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    peak = _peak_rss_kb()
    assert peak is not None and peak >= before
    del big
    assert _reset_peak_rss()
    after = _peak_rss_kb()
    assert after is not None and after < peak - 32 * 1024  # the 64 MiB peak is forgotten
