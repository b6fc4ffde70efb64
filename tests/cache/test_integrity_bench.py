"""The integrity benchmark runs end to end (one round) and summarizes its rows."""

from __future__ import annotations

import pytest

from mlcache_lab.bench import integrity


@pytest.mark.slow
def test_integrity_benchmark_rows_and_summary(tmp_path):
    out = tmp_path / "integrity.csv"
    rows = integrity.run_benchmark(layers=1, batch=2, repeats=1, out=out)
    assert sorted(r["variant"] for r in rows) == ["unverified", "verified"]
    assert all(r["statuses"] == integrity.WARM for r in rows)
    assert len({round(r["checksum"], 3) for r in rows}) == 1  # the same executable either way
    assert all(r["hmac_seconds"] > 0 and r["entry_bytes"] > 0 for r in rows)
    assert out.read_text().startswith("# made by: python -m mlcache_lab.bench.integrity")
    summary = integrity.summarize(rows)
    assert "ready: verified - unverified" in summary and "HMAC alone" in summary
