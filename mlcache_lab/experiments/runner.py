"""ex.run: every cell of a grid in fresh processes, in parallel, memoized so studies resume.

Each cell runs in ``<path>/runs/<cell id>/``: an empty store, the model module,
the scenario's setup calls and then the measured call, each a new Python
process (:func:`~mlcache_lab.experiments.calls.run_call`). Cells run through
``joblib.Parallel``: threads on one machine (the work is in the child
processes), ``loky`` worker processes, or a Dask cluster through joblib's
``dask`` backend, with ``path`` on a file system every worker shares.

A cell's row is memoized with ``joblib.Memory`` under ``<path>/memo``, keyed
by :meth:`Cell.key`: run the same grid again after an interruption and only
the unfinished cells run. Rows record the machine and how many cells were
running on it during the measured call; ``shares_core`` flags rows measured
while more cells ran than the host has CPUs.
"""

from __future__ import annotations

import datetime
import os
import shutil
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import joblib

from ..cache.store import LEVELS
from .calls import run_call
from .grid import Cell, Grid
from .machine import Concurrency, machine_info
from .results import Results

__all__ = ["BACKENDS", "default_path", "run"]

BACKENDS = ("threading", "loky", "dask")


def default_path(grid: Grid) -> Path:
    """``<$MLCACHE_LAB_DIR or ~/.cache/mlcache_lab>/studies/<study>``."""
    root = os.environ.get("MLCACHE_LAB_DIR") or "~/.cache/mlcache_lab"
    return Path(os.path.expanduser(root)) / "studies" / grid.study


def execute_cell(
    key: dict[str, Any], cell: Cell, root: str, n_jobs: int, keep_stores: bool, timeout: float
) -> dict[str, Any]:
    """Run one cell (setup calls, then the measured call) and return its row.

    ``key`` is what the memo hashes (``cell`` and the rest are ignored by it).
    """
    folder = Path(root, "runs", cell.id)
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted attempt left it half done
    folder.mkdir(parents=True)
    base = cell.base_call(str(folder / "store"), str(folder / "work"))
    factors = dict(cell.factors)
    concurrency = Concurrency(Path(root, "active"))
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with concurrency.running():
        for call in cell.scenario.setup(base, factors):
            run_call(call, timeout=timeout)
        measured = cell.scenario.measured(base, factors)
        before, load = concurrency.count(), _load()
        result = run_call(measured, timeout=timeout)
        after = concurrency.count()
    if not keep_stores:
        shutil.rmtree(folder, ignore_errors=True)
    return _row(cell, result, measured.spec.batch_size, max(before, after), n_jobs, load, started)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover
        return None


def _row(
    cell: Cell,
    result: dict[str, Any],
    batch_size: int,
    concurrent: int,
    n_jobs: int,
    load: float | None,
    started: str,
) -> dict[str, Any]:
    report = result["report"]
    row: dict[str, Any] = {
        "scenario": cell.scenario.name,
        "model": cell.model.label,
        "cache_levels": cell.cache_levels,
        "repeat": cell.repeat,
    }
    for name in sorted({f for s in (cell.scenario,) for f in s.factors}):
        row[name] = dict(cell.factors).get(name)
    row["batch_size"] = batch_size
    level_seconds = 0.0
    # The levels the call's report has (jax.jit's own stages are three, whatever the store has).
    reported = [lvl for lvl in LEVELS if f"{lvl}_status" in report]
    for lvl in reported:
        row[f"{lvl}_status"] = report[f"{lvl}_status"]
        seconds = report[f"{lvl}_seconds"]
        row[f"{lvl}_seconds"] = seconds
        level_seconds += seconds or 0.0
        row[f"{lvl}_reason"] = report[f"{lvl}_reason"]
    row["levels_seconds"] = level_seconds
    row["total_seconds"] = result["call_seconds"]
    row["setup_seconds"] = result.get("setup_seconds")
    row["process_seconds"] = result.get("process_seconds")
    for name in (
        "compilations",
        "compilation_seconds",
        "padded_rows",
        "calls",
        "samples",
        "max_abs_diff",
    ):
        if name in result:
            row[name] = result[name]
    expected = cell.scenario.expected(cell.cache_levels)
    if expected is None:
        row["expected"], row["as_expected"] = "", None
    else:
        row["expected"] = "/".join(expected[lvl] for lvl in LEVELS if lvl in expected)
        row["as_expected"] = all(
            report.get(f"{lvl}_status") == status for lvl, status in expected.items()
        )
    info = machine_info()
    row["n_jobs"] = n_jobs
    row["concurrent_runs"] = concurrent
    row["shares_core"] = concurrent > info["cpus"]
    row["load_avg_1m"] = load
    row.update(info)
    row["started"] = started
    row["run_id"] = cell.id
    return row


def _safe(
    memorized: Any, cell: Cell, root: str, n_jobs: int, keep_stores: bool, timeout: float
) -> tuple[Cell, dict[str, Any] | BaseException]:
    try:
        return cell, memorized(cell.key(), cell, root, n_jobs, keep_stores, timeout)
    except Exception as err:  # one failed cell must not lose the others' results
        return cell, err


def run(
    grid: Grid,
    *,
    n_jobs: int | None = None,
    backend: str | None = None,
    scheduler_address: str | None = None,
    path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    keep_stores: bool = False,
    timeout: float = 600.0,
    errors: str = "warn",
) -> Results:
    """Run every cell of ``grid``, each in fresh processes; finished cells are not rerun.

    Args:
      grid: the study.
      n_jobs: cells at a time (``-1``: one per CPU, or every Dask worker
        thread; default 1 locally, -1 on Dask). Cells that share a core are
        flagged in the table (``shares_core``); for timings to report, keep
        ``n_jobs`` at or below the CPUs.
      backend: ``"threading"`` (default: the work is in child processes),
        ``"loky"`` or ``"dask"``.
      scheduler_address: the Dask scheduler (e.g. ``"tcp://10.0.0.5:8786"``);
        implies ``backend="dask"``. ``path`` must then be on a file system every
        worker can reach at the same path.
      path: the study folder (memo, stores, markers); default
        :func:`default_path`.
      progress: show a tqdm progress bar.
      keep_stores: keep each cell's store and model module (for inspection).
      timeout: seconds allowed to each fresh process.
      errors: ``"warn"`` (failed cells are reported and left out; run again to
        retry them) or ``"raise"``.

    Returns:
      :class:`~mlcache_lab.experiments.results.Results`, one row per finished cell.
    """
    if not isinstance(grid, Grid):
        raise TypeError(f"run expects an ex.Grid. Got {grid!r}; build one with ex.Grid(...).")
    if scheduler_address is not None:
        backend = backend or "dask"
    backend = backend or "threading"
    if backend not in BACKENDS:
        raise ValueError(f"Valid options for 'backend' are {BACKENDS}. Got backend={backend!r}.")
    if backend == "dask" and scheduler_address is None:
        raise ValueError(
            "backend='dask' needs scheduler_address='tcp://host:port' (the scheduler of a "
            "running distributed cluster), and a 'path' all its workers share."
        )
    if errors not in ("warn", "raise"):
        raise ValueError(f"Valid options for 'errors' are ('warn', 'raise'). Got {errors!r}.")
    if n_jobs is None:
        n_jobs = -1 if backend == "dask" else 1
    if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"'n_jobs' must be a positive int or -1. Got n_jobs={n_jobs!r}.")
    root = Path(os.path.expanduser(os.fspath(path))) if path is not None else default_path(grid)
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    memory = joblib.Memory(root / "memo", verbose=0)
    memorized = memory.cache(
        execute_cell, ignore=["cell", "root", "n_jobs", "keep_stores", "timeout"]
    )
    cells = grid.cells()
    done = {c.id: c for c in cells if memorized.check_call_in_cache(c.key(), c, "", 0, False, 0)}
    todo = [c for c in cells if c.id not in done]
    rows: dict[str, dict[str, Any]] = {}
    for cell in done.values():
        rows[cell.id] = memorized(cell.key(), cell, str(root), n_jobs, keep_stores, timeout)
    failures: list[tuple[Cell, BaseException]] = []
    workers = n_jobs
    bar = _progress(len(cells), len(done), grid.study, progress)
    start = time.perf_counter()
    try:
        for cell, out in _dispatch(
            memorized, todo, root, n_jobs, backend, scheduler_address, keep_stores, timeout
        ):
            if isinstance(out, BaseException):
                if errors == "raise":
                    raise RuntimeError(f"cell {cell.label()} failed: {out}") from out
                failures.append((cell, out))
            else:
                rows[cell.id] = out
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(cell.label()[:40])
    finally:
        if bar is not None:
            bar.close()
    if failures:
        listing = "\n".join(f"  {c.label()}: {str(e).splitlines()[0]}" for c, e in failures[:10])
        warnings.warn(
            f"{len(failures)} of {len(cells)} runs failed and are not in the results; run the "
            f"same grid again to retry only them:\n{listing}",
            RuntimeWarning,
            stacklevel=2,
        )
    ordered = [rows[c.id] for c in cells if c.id in rows]
    return Results(
        ordered,
        study=grid.study,
        meta={
            "backend": backend,
            "n_jobs": workers,
            "path": str(root),
            "resumed": len(done),
            "seconds": round(time.perf_counter() - start, 1),
        },
    )


def _progress(total: int, initial: int, study: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=study, unit="run")


def _dispatch(
    memorized: Any,
    cells: list[Cell],
    root: Path,
    n_jobs: int,
    backend: str,
    scheduler_address: str | None,
    keep_stores: bool,
    timeout: float,
) -> Iterable[tuple[Cell, dict[str, Any] | BaseException]]:
    if not cells:
        return
    jobs = (
        joblib.delayed(_safe)(memorized, c, str(root), n_jobs, keep_stores, timeout) for c in cells
    )
    if backend != "dask":
        parallel = joblib.Parallel(n_jobs=n_jobs, backend=backend, return_as="generator_unordered")
        yield from parallel(jobs)
        return
    from distributed import Client

    with Client(scheduler_address) as client, joblib.parallel_config(backend="dask", client=client):
        yield from joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
