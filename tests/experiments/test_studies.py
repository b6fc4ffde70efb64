"""The benchmark studies measure through the benchmarks' own functions, not their command lines."""

from __future__ import annotations

import csv

import pytest

from mlcache_lab.bench import serving_trace
from mlcache_lab.experiments import studies


def test_every_benchmark_study_is_listed_with_a_description():
    assert set(studies.BENCHMARKS) == {"warm_start", "serving_trace"}
    assert set(studies.STUDIES) == set(studies.ABLATIONS) | set(studies.BENCHMARKS)


def test_quick_settings_shrink_the_trace_and_keep_the_rest():
    full, quick = serving_trace.settings(), serving_trace.settings(quick=True)
    assert full == serving_trace.DEFAULTS
    assert set(quick) == set(full)
    assert quick["calls"] < full["calls"] and quick["layers"] < full["layers"]
    assert quick["seed"] == full["seed"]


@pytest.mark.slow
def test_serving_study_writes_the_rows_the_benchmark_measures(tmp_path, quick_serving):
    written = studies.run_benchmark(
        "serving_trace", tmp_path, quick=True, repeats=2, command="mlcache-lab bench x"
    )
    # The benchmark's own measurement, on its quick settings but the repeats asked for (the
    # rows are quick_serving_rows': serving_trace.run on these settings, 3 steady repeats).
    assert quick_serving == [
        {
            **serving_trace.settings(quick=True),
            "steady_repeats": 2,
            "policies": serving_trace.DEFAULT_POLICIES,
        }
    ]
    names = sorted(p.name for p in written)
    assert names == ["serving_steady.csv", "serving_trace.csv", "serving_trace.png"]
    with (tmp_path / "serving_trace.csv").open() as fh:
        assert fh.readline() == "# made by: mlcache-lab bench x\n"
        rows = list(csv.DictReader(fh))
    variants = [r["variant"] for r in rows]
    assert variants[:3] == ["jax.jit", "jax.jit+pad2", "jax.export"] and variants[-1] == "floor"
    assert {name for name, _ in serving_trace.DEFAULT_POLICIES} <= set(variants)
    plain = next(r for r in rows if r["variant"] == "jax.jit")
    assert int(plain["calls"]) == serving_trace.settings(quick=True)["calls"]
    with (tmp_path / "serving_steady.csv").open() as fh:
        fh.readline()
        steady = list(csv.DictReader(fh))
    assert [r["variant"] for r in steady] == [
        "jax.jit",
        *(n for n, _ in serving_trace.DEFAULT_POLICIES),
    ]
    assert (tmp_path / "serving_trace.png").stat().st_size > 0
