"""Named studies for ``mlcache-lab bench <study>``: ablation grids, and the two benchmarks.

Each ablation study is a :class:`~mlcache_lab.experiments.grid.Grid` plus the
plots drawn from its results; ``quick`` shrinks it (tiny models, one repeat)
for tests and smoke runs. ``warm_start`` and ``serving_trace`` call the
measuring functions of :mod:`mlcache_lab.bench` (the same ones their command
lines call) and plot the rows they return.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .grid import Grid, ModelSpec
from .levels import ALL_SETTINGS

__all__ = ["ABLATIONS", "BENCHMARKS", "STUDIES", "ablation_grid"]

# What a study found, at INFO: the CLI shows it; a notebook or script opts in with logging.
log = logging.getLogger(__name__)

CHANGE_SCENARIOS = [
    "cold",
    "warm_process",
    "compiler_option",
    "lowering_option",
    "code_edit_same_jaxpr",
    "code_edit",
    "new_batch_size",
    "new_batch_size_batch_axes",
]


@dataclasses.dataclass(frozen=True)
class Ablation:
    """A named grid: what it shows, its full and quick versions, and its plots."""

    description: str
    grid: Callable[[bool, int | None], Grid]
    plots: tuple[str, ...]


def _small_transformer(quick: bool) -> ModelSpec:
    if quick:
        return ModelSpec("transformer", layers=1, seq=8, width=16)
    return ModelSpec("transformer", layers=4, seq=32, width=128)


def _small_cnn(quick: bool) -> ModelSpec:
    return ModelSpec("cnn") if not quick else ModelSpec("mlp")


def _levels_grid(quick: bool, repeats: int | None) -> Grid:
    return Grid(
        models=[_small_transformer(quick)] + ([] if quick else [_small_cnn(quick)]),
        scenarios=CHANGE_SCENARIOS[:3] if quick else CHANGE_SCENARIOS,
        cache_levels=list(ALL_SETTINGS),
        repeats=repeats or (1 if quick else 5),
        name="ablation_levels" + ("_quick" if quick else ""),
    )


def _parity_grid(quick: bool, repeats: int | None) -> Grid:
    return Grid(
        models=[_small_transformer(quick)],
        scenarios=["warm_process", "code_edit_same_jaxpr"]
        + ([] if quick else ["compiler_option", "code_edit", "new_batch_size"]),
        cache_levels=["compile_only", "jax_persistent"],
        repeats=repeats or (1 if quick else 5),
        name="jax_parity" + ("_quick" if quick else ""),
    )


def _batch_grid(quick: bool, repeats: int | None) -> Grid:
    from .scenarios import ServingTrace

    trace = ServingTrace("serving_trace", calls=4 if quick else 16, max_batch=12 if quick else 64)
    warm = ServingTrace(
        "serving_trace_warm", calls=4 if quick else 16, max_batch=12 if quick else 64, warm=True
    )
    return Grid(
        models=[_small_transformer(quick)],
        scenarios=[trace] if quick else [trace, warm],
        cache_levels=["all"] if quick else ["compile_only", "all"],
        factors={
            "policy": ["whole", "chunk"] if quick else ["whole", "chunk", "buckets"],
            "micro_batch": [4] if quick else [8, 16, 32],
        },
        repeats=repeats or (1 if quick else 3),
        name="batch_sizes" + ("_quick" if quick else ""),
    )


ABLATIONS: dict[str, Ablation] = {
    "ablation": Ablation(
        "every pipeline change x every cache-level setting (and JAX's cache), transformer + cnn",
        _levels_grid,
        ("levels", "speedup"),
    ),
    "jax_parity": Ablation(
        "compile_only against jax.jit with JAX's persistent cache, same scenarios",
        _parity_grid,
        ("levels", "speedup"),
    ),
    "batch_sizes": Ablation(
        "the serving trace through batched_jit: policy x micro_batch x cache levels",
        _batch_grid,
        ("serving",),
    ),
}
BENCHMARKS = {
    "warm_start": "fresh-process warm start: cached_jit vs JAX's persistent cache vs the floor",
    "serving_trace": "a serving trace at varying batch sizes: jax.jit variants vs batched_jit",
}
STUDIES = {**{k: v.description for k, v in ABLATIONS.items()}, **BENCHMARKS}


def ablation_grid(name: str, quick: bool = False, repeats: int | None = None) -> Grid:
    """The grid of the named ablation study."""
    return ABLATIONS[name].grid(quick, repeats)


def run_ablation(
    name: str,
    out: Path,
    *,
    quick: bool,
    repeats: int | None,
    n_jobs: int | None,
    path: str | None,
    scheduler_address: str | None,
    progress: bool,
    command: str,
) -> list[Path]:
    """Run the named grid; write ``<name>.csv`` and one PNG per plot into ``out``."""
    import matplotlib.pyplot as plt

    from . import plot
    from .runner import run

    grid = ablation_grid(name, quick, repeats)
    results = run(
        grid, n_jobs=n_jobs, path=path, scheduler_address=scheduler_address, progress=progress
    )
    written = [results.save(out / f"{grid.study}.csv", command=command)]
    for kind in ABLATIONS[name].plots:
        if kind == "speedup":
            fig = plot.speedup(results, baseline="compile_only")
        else:
            fig = getattr(plot, kind)(results)
        png = out / f"{grid.study}_{kind}.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        written.append(png)
    unexpected = [r for r in results.table if r.get("as_expected") is False]
    for row in results.summary():
        factors = " ".join(f"{k}={row[k]}" for k in ("policy", "micro_batch") if k in row)
        log.info(
            "  %-26s %-24s %-15s %s %-24s %9.4f s",
            row["scenario"],
            row["model"][:24],
            row["cache_levels"],
            factors,
            row["statuses"],
            row["median_total_seconds"],
        )
    log.info("%d runs; %d with statuses other than expected", len(results), len(unexpected))
    return written


def run_benchmark(
    name: str, out: Path, *, quick: bool, repeats: int | None, command: str = ""
) -> list[Path]:
    """Measure ``warm_start`` or ``serving_trace`` (:mod:`mlcache_lab.bench`); CSVs + PNG.

    The study calls the very functions the benchmark's command line calls
    (``run_benchmark``, ``run``) and draws the rows they return.
    """
    import matplotlib.pyplot as plt

    csv_path = out / f"{name}.csv"
    if name == "warm_start":
        from ..bench import warm_start

        rows = warm_start.run_benchmark(
            layers=2 if quick else 48, repeats=repeats or (2 if quick else 7), out=csv_path
        )
        written = [csv_path]
        fig = _warm_start_figure(rows)
    else:
        from ..bench import serving_trace

        knobs = serving_trace.settings(quick)
        if repeats is not None:
            knobs["steady_repeats"] = repeats
        rows, steady = serving_trace.run(**knobs, policies=serving_trace.DEFAULT_POLICIES)
        made_by = command or f"mlcache-lab bench {name}" + (" --quick" if quick else "")
        written = serving_trace.write_results(csv_path, rows, steady, made_by)
        fig = _serving_figure(rows)
    fig.tight_layout()
    png = csv_path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return [*written, png]


def _warm_start_figure(rows: list[dict[str, Any]]) -> Any:
    """Median seconds until the executable is ready and until the first result, per variant."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    for k, key in enumerate(("ready", "first_result")):
        med = [statistics.median(r[key] for r in rows if r["variant"] == v) for v in variants]
        ax.bar([i + (k - 0.5) * 0.4 for i in range(len(variants))], med, 0.4, label=key)
    ax.set_xticks(range(len(variants)), variants)
    ax.set_ylabel("seconds in a fresh process (median)")
    ax.set_title("warm start: executable ready / first result")
    ax.legend()
    return fig


def _serving_figure(rows: list[dict[str, Any]]) -> Any:
    """Seconds to serve the trace per variant, with its compilations written on each bar."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([r["variant"] for r in rows], [r["seconds"] for r in rows], color="#1e88e5")
    for i, r in enumerate(rows):
        text = f"{r['compilations']} compiles"
        ax.text(i, r["seconds"], text, ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("seconds to serve the trace")
    ax.set_title("serving trace: every variant from a cold start")
    plt.setp(ax.get_xticklabels(), rotation=25, ha="right")
    return fig
