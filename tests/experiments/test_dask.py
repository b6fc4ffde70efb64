"""The same runs on a real Dask cluster (distributed.LocalCluster, two workers, loopback)."""

from __future__ import annotations

import pytest

from mlcache_lab import experiments as ex

distributed = pytest.importorskip("distributed")


# distributed may warn while its workers stop (sockets, semaphores); only this test allows it.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::UserWarning:distributed.*")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:distributed.*")
@pytest.mark.slow
def test_runs_on_a_local_dask_cluster_with_a_shared_store_path(tmp_path):
    grid = ex.Grid(
        models=["mlp"],
        scenarios=["warm_process"],
        cache_levels=["compile_only", "all"],
        repeats=1,
        name="dask",
    )
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        results = ex.run(
            grid,
            scheduler_address=cluster.scheduler_address,
            path=tmp_path / "study",
            progress=False,
        )
    rows = {r["cache_levels"]: r for r in results.table}
    assert set(rows) == {"compile_only", "all"}
    assert rows["compile_only"]["compile_status"] == "disk"
    assert (rows["all"]["trace_status"], rows["all"]["compile_status"]) == ("bypassed", "disk")
    assert all(r["as_expected"] for r in results.table)
    assert results.meta["backend"] == "dask"
    # The memo lives on the shared path: the study resumes without the cluster.
    again = ex.run(grid, path=tmp_path / "study", progress=False)
    assert again.meta["resumed"] == 2
    assert again.table.column("started") == results.table.column("started")
