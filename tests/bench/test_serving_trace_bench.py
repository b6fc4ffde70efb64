"""The serving-trace benchmark runs end to end on a tiny model and writes its tables.

The measurement itself runs once per session (``quick_serving_rows``, which the serving
study's test reads too); the command line's test replays it.
"""

from __future__ import annotations

import csv

import pytest

from mlcache_lab.bench import serving_trace


def test_trace_is_log_uniform_and_deterministic():
    sizes = serving_trace.serving_trace(64, 512, 2026)
    assert sizes == serving_trace.serving_trace(64, 512, 2026)
    assert len(sizes) == 64 and min(sizes) >= 1 and max(sizes) <= 512
    assert sum(s < 23 for s in sizes) > 16  # log-uniform: many small batches


@pytest.mark.slow
def test_quick_run_writes_both_tables(tmp_path, capsys, quick_serving):
    out = tmp_path / "serving_trace.csv"
    assert serving_trace.main(["--quick", "--out", str(out)]) == 0
    # The rows are quick_serving_rows': serving_trace.run on exactly these settings.
    assert quick_serving == [
        {**serving_trace.settings(quick=True), "policies": serving_trace.DEFAULT_POLICIES}
    ]
    with out.open() as fh:
        assert fh.readline().startswith("# made by: python -m mlcache_lab.bench.serving_trace")
        rows = list(csv.DictReader(fh))
    names = [r["variant"] for r in rows]
    assert names[:3] == ["jax.jit", "jax.jit+pad2", "jax.export"] and names[-1] == "floor"
    plain = next(r for r in rows if r["variant"] == "jax.jit")
    assert int(plain["compilations"]) == int(plain["distinct_sizes"])
    for r in rows:
        if r["variant"].startswith("chunk"):
            assert int(r["compilations"]) <= 2  # the invariant segment and the split one
    assert (tmp_path / "serving_steady.csv").exists()
    assert "best policy:" in capsys.readouterr().out
