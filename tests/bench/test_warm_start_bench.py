"""The warm-start benchmark runs end to end: every variant computes the same output."""

from __future__ import annotations

import pytest

from mlcache_lab.bench import call_overhead, warm_start


@pytest.mark.slow
def test_warm_start_rows_and_summary(tmp_path):
    out = tmp_path / "warm_start.csv"
    rows = warm_start.run_benchmark(layers=1, batch=2, repeats=1, out=out)
    assert sorted(r["variant"] for r in rows) == sorted(warm_start.VARIANTS)
    ours = next(r for r in rows if r["variant"] == "mlcache_lab")
    assert ours["statuses"] == "bypassed/bypassed/disk"
    checksums = {round(r["checksum"], 3) for r in rows}
    assert len(checksums) == 1, rows  # the same program, whichever way it was loaded
    for r in rows:
        assert 0 < r["ready"] <= r["first_result"]
    text = out.read_text()
    assert text.startswith("# made by: python -m mlcache_lab.bench.warm_start")
    assert "ready: mlcache_lab / jax" in warm_start.summarize(rows)


def test_call_overhead_measures_both(tmp_path):
    rows = call_overhead.measure(calls=20, rounds=1)
    assert {r["implementation"] for r in rows} == {"jax.jit", "cached_jit"}
    assert all(r["median_us"] > 0 for r in rows)


def test_the_model_choices_are_the_builtin_and_every_framework_model():
    from mlcache_lab.models.frameworks import FRAMEWORK_MODELS

    assert set(warm_start.MODELS) == {warm_start.DEFAULT_MODEL, *FRAMEWORK_MODELS}
    with pytest.raises(ValueError, match=r"Valid options for 'model' are .*Got model='vgg'"):
        warm_start.run_benchmark(model="vgg")
