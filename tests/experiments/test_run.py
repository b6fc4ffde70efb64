"""ex.run end to end: fresh processes, JAX's own cache as the reference, resuming, serving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlcache_lab import experiments as ex
from mlcache_lab.experiments.machine import Concurrency, cpus

# The stages jax.jit has too: what compile_only and JAX's own cache are compared on.
JIT_STAGES = ("trace", "lower", "compile")


def statuses(row):
    return tuple(row[f"{lvl}_status"] for lvl in JIT_STAGES)


@pytest.mark.slow
def test_compile_only_behaves_like_jax_persistent_cache(tmp_path):
    grid = ex.Grid(
        models=["mlp"],
        scenarios=["warm_process", "code_edit_same_jaxpr", "compiler_option"],
        cache_levels=["compile_only", "jax_persistent"],
        repeats=1,
        name="parity",
    )
    results = ex.run(grid, n_jobs=2, path=tmp_path / "study", progress=False)
    assert len(results) == 6
    by = {(r["scenario"], r["cache_levels"]): r for r in results.table}
    for scenario in ("warm_process", "code_edit_same_jaxpr", "compiler_option"):
        ours, jax_cache = by[(scenario, "compile_only")], by[(scenario, "jax_persistent")]
        assert statuses(ours) == statuses(jax_cache), (ours, jax_cache)
    assert statuses(by[("warm_process", "jax_persistent")]) == ("miss", "miss", "disk")
    assert statuses(by[("compiler_option", "compile_only")]) == ("miss", "miss", "miss")
    assert all(r["as_expected"] for r in results.table)
    for row in results.table:
        assert row["n_jobs"] == 2 and row["cpus"] == cpus()
        assert 1 <= row["concurrent_runs"] <= 2
        assert row["shares_core"] == (row["concurrent_runs"] > row["cpus"])
        assert row["host"] and row["jax"] and row["total_seconds"] > 0
    # Stores are removed after each run unless asked to keep them.
    assert not list(Path(tmp_path / "study" / "runs").glob("*/store"))


class FailsOnce(ex.Scenario):
    """Fails before any process starts the first time (an interrupted study), then runs."""

    name = "fails_once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, base, factors):
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("interrupted")
        return []


@pytest.mark.slow
def test_an_interrupted_study_resumes_without_repeating_finished_runs(tmp_path):
    grid = ex.Grid(
        models=["mlp"],
        scenarios=["cold", FailsOnce(str(tmp_path / "marker"))],
        cache_levels=["none", "all"],
        repeats=1,
        name="resume",
    )
    # The first fails_once cell to start fails; the other runs.
    with pytest.warns(RuntimeWarning, match=r"1 of 4 runs failed .*\n  fails_once mlp "):
        first = ex.run(grid, n_jobs=2, path=tmp_path / "study", progress=False)
    assert sorted(r["scenario"] for r in first.table) == ["cold", "cold", "fails_once"]
    second = ex.run(grid, n_jobs=2, path=tmp_path / "study", progress=False)
    assert second.meta["resumed"] == 3
    assert len(second) == 4
    again = {r["run_id"]: r["started"] for r in second.table}
    assert all(again[r["run_id"]] == r["started"] for r in first.table)
    with pytest.raises(RuntimeError, match="cell fails_once mlp all #0 failed"):
        other = ex.Grid(
            models=["mlp"],
            scenarios=[FailsOnce(str(tmp_path / "other"))],
            cache_levels=["all"],
            repeats=1,
        )
        ex.run(other, path=tmp_path / "study2", progress=False, errors="raise")


@pytest.mark.slow
def test_serving_trace_with_policy_and_micro_batch_as_factors(tmp_path):
    tiny = ex.ServingTrace("serving_tiny", calls=4, max_batch=12, seed=3)
    grid = ex.Grid(
        models=["mlp"],
        scenarios=[tiny],
        cache_levels=["all"],
        repeats=1,
        factors={"policy": ["whole", "chunk"], "micro_batch": [4]},
    )
    results = ex.run(grid, n_jobs=2, path=tmp_path / "study", progress=False)
    rows = {r["policy"]: r for r in results.table}
    sizes = tiny.measured(grid.cells()[0].base_call("s", "w"), {}).sizes
    for row in rows.values():
        assert row["calls"] == 4 and row["samples"] == sum(sizes)
        assert row["micro_batch"] == 4
        assert "miss:" in row["compile_status"]
    # A cold store: the monolithic schedule compiles once per distinct batch size at least.
    assert rows["whole"]["compilations"] >= len(set(sizes))
    fig = ex.plot.serving(results)
    assert len(fig.axes) == 2


def test_concurrency_counts_live_runs_and_drops_dead_markers(tmp_path):
    counter = Concurrency(tmp_path)
    with counter.running():
        assert counter.count() == 1
        with counter.running():
            assert counter.count() == 2
        dead = tmp_path / f"{counter.host}.999999999.abc"
        dead.touch()
        assert counter.count() == 1
        assert not dead.exists()
    assert counter.count() == 0


def test_run_rejects_bad_arguments(tmp_path):
    grid = ex.Grid(repeats=1)
    with pytest.raises(ValueError, match=r"Valid options for 'backend'"):
        ex.run(grid, backend="mpi", path=tmp_path)
    with pytest.raises(ValueError, match=r"needs scheduler_address="):
        ex.run(grid, backend="dask", path=tmp_path)
    with pytest.raises(ValueError, match=r"'n_jobs' must be a positive int or -1"):
        ex.run(grid, n_jobs=0, path=tmp_path)
    with pytest.raises(TypeError, match=r"run expects an ex\.Grid"):
        ex.run(["cold"], path=tmp_path)
