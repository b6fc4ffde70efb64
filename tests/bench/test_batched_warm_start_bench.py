"""The batched warm-start benchmark runs end to end: every variant computes the same output,
and every warm batched_jit process bypasses all but loading its executables."""

from __future__ import annotations

import pytest

from mlcache_lab.bench import batched_warm_start


@pytest.mark.slow
def test_batched_warm_start_rows_and_summary(tmp_path):
    out = tmp_path / "batched.csv"
    rows = batched_warm_start.run_benchmark(layers=1, batch=5, repeats=1, out=out, micro_batch=2)
    assert sorted({r["variant"] for r in rows}) == sorted(batched_warm_start.VARIANTS)
    assert len(rows) == 2 * len(batched_warm_start.VARIANTS)  # a cold round and a warm one
    assert {round(r["checksum"], 2) for r in rows} != {0.0}
    assert len({round(r["checksum"], 2) for r in rows}) == 1, rows
    for r in rows:
        assert r["micro_batch"] == 2 and r["first_result"] > 0
        if r["variant"] in batched_warm_start.BATCHED and r["repeat"] == 0:
            assert r["statuses"] == "bypassed/bypassed/disk compile:disk", r
    warm = [r for r in rows if r["repeat"] == 0 and r["variant"] in batched_warm_start.BATCHED]
    sizes = {r["variant"]: set(r["run_sizes"].split()) for r in warm}
    assert "2" in sizes["chunk"] and "1" not in sizes["chunk"]  # 2 + 2 + 2, one row padded
    assert {"2", "1"} <= sizes["buckets"]  # 2 + 2 + 1: --micro-batch 2 reached the children
    text = out.read_text()
    assert text.startswith("# made by: python -m mlcache_lab.bench.batched_warm_start")
    assert "--micro-batch 2" in text.splitlines()[0]
    summary = batched_warm_start.summarize(rows)
    assert "chunk computes 6 rows (1.200 x the batch)" in summary
    assert "chunk: / cached_jit = " in summary


def test_bad_arguments_are_named_before_any_process_starts():
    with pytest.raises(ValueError, match=r"'micro_batch' must be an int >= 1\. Got micro_batch=0"):
        batched_warm_start.run_benchmark(micro_batch=0)
    with pytest.raises(ValueError, match=r"Valid options for 'model' are .*Got model='vgg'"):
        batched_warm_start.run_benchmark(model="vgg")
