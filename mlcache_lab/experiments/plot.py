"""Plots of a study (matplotlib): seconds per cache level, and speed-up over a baseline.

Every function takes :class:`~mlcache_lab.experiments.results.Results` (or a
loaded CSV), draws medians over repeats (error bars: the spread from the
lowest to the highest repeat) and returns the ``matplotlib.figure.Figure``;
``fig.axes`` holds one axes per model. Nothing is computed that the table
does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..cache.store import LEVELS
from ..viz.plots import level_colour
from .levels import ALL_SETTINGS
from .results import Results, Table

__all__ = ["levels", "serving", "speedup"]

EXECUTE_COLOUR = "#9e9e9e"
SETTING_COLOURS = {
    "none": "#c62828",
    "compile_only": "#fb8c00",
    "lower_compile": "#1e88e5",
    "all": "#2e7d32",
    "jax_persistent": "#616161",
}
_LETTER = {"miss": "M", "disk": "D", "memory": "m", "bypassed": "B"}


def _pyplot() -> Any:
    # Imported here: plotting is optional for running a study. Without a display
    # matplotlib falls back to a non-interactive backend by itself.
    import matplotlib.pyplot as plt

    return plt


def _table(results: Results | Table) -> Table:
    table = results.table if isinstance(results, Results) else results
    if not isinstance(table, Table):
        raise TypeError(
            f"expected ex.Results (from ex.run or ex.load). Got {type(results).__name__}."
        )
    if "total_seconds" not in table.columns or not len(table):
        raise ValueError("the results hold no runs with 'total_seconds' to plot")
    return table


def _order(values: Sequence[Any], known: Sequence[Any]) -> list[Any]:
    return [v for v in known if v in values] + [v for v in values if v not in known]


def _change_rows(table: Table) -> Table:
    """Runs of single-call scenarios (serving traces have their own plot)."""
    rows = [
        r
        for r in table.rows
        if any(isinstance(r.get(f"{lvl}_seconds"), int | float) for lvl in LEVELS)
    ]
    if not rows:
        raise ValueError("the results hold no single-call scenarios (only serving traces?)")
    return Table(rows, table.columns)


def _levels_of(table: Table) -> list[str]:
    """The store's levels these results have columns for, in pipeline order."""
    return [lvl for lvl in LEVELS if f"{lvl}_seconds" in table.columns]


def levels(results: Results | Table, *, models: Sequence[str] | None = None) -> Any:
    """Per scenario and cache-level setting: median seconds of each level, stacked.

    Bars are grouped by scenario, one per setting; the stack shows the seconds
    of each cache level the results have (trace, lower, compile, ...) and the
    rest of the first call (execution), and the letters above give the
    statuses (M miss, D disk, B bypassed).
    """
    plt = _pyplot()
    table = _change_rows(_table(results))
    drawn = _levels_of(table)
    model_names = list(models) if models else table.unique("model")
    scenarios = table.unique("scenario")
    settings = _order(table.unique("cache_levels"), ALL_SETTINGS)
    fig, axes = plt.subplots(
        len(model_names),
        1,
        figsize=(max(8.0, 1.3 * len(scenarios) * len(settings) / 2.5), 3.8 * len(model_names)),
        squeeze=False,
    )
    width = 0.8 / len(settings)
    for ax, model in zip(axes[:, 0], model_names, strict=True):
        sub = table.where(model=model)
        for j, setting in enumerate(settings):
            for i, scenario in enumerate(scenarios):
                cell = sub.where(scenario=scenario, cache_levels=setting)
                if not len(cell):
                    continue
                x = i + (j - (len(settings) - 1) / 2) * width
                bottom = 0.0
                parts = [(lvl, cell.median(f"{lvl}_seconds", [])) for lvl in drawn]
                total = cell.median("total_seconds", []).get((), 0.0)
                for lvl, med in parts:
                    value = med.get((), 0.0)
                    ax.bar(
                        x,
                        value,
                        width,
                        bottom=bottom,
                        color=level_colour(lvl),
                        edgecolor=SETTING_COLOURS.get(setting, "black"),
                        linewidth=1.2,
                    )
                    bottom += value
                ax.bar(
                    x,
                    max(total - bottom, 0.0),
                    width,
                    bottom=bottom,
                    color=EXECUTE_COLOUR,
                    edgecolor=SETTING_COLOURS.get(setting, "black"),
                    linewidth=1.2,
                )
                letters = "".join(
                    _LETTER.get(str(cell[0].get(f"{lvl}_status")), "?") for lvl in drawn
                )
                ax.text(
                    x,
                    max(total, bottom),
                    f"{letters}\n{setting}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                )
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=25, ha="right")
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{model}: first call in a fresh process", fontsize=10)
        ax.margins(y=0.35)
    colours = [*map(level_colour, drawn), EXECUTE_COLOUR]
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours]
    axes[0, 0].legend(handles, [*drawn, "execution + other"], loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def speedup(
    results: Results | Table, baseline: str = "compile_only", *, models: Sequence[str] | None = None
) -> Any:
    """Per scenario: median total seconds of ``baseline`` / of each setting (higher is faster).

    Error bars span the ratios of the slowest and fastest repeat of the setting.
    """
    plt = _pyplot()
    table = _change_rows(_table(results))
    if baseline not in table.unique("cache_levels"):
        raise ValueError(
            f"baseline={baseline!r} is not among the settings of these results "
            f"({table.unique('cache_levels')}); pick one of them."
        )
    model_names = list(models) if models else table.unique("model")
    scenarios = table.unique("scenario")
    settings = [s for s in _order(table.unique("cache_levels"), ALL_SETTINGS) if s != baseline]
    fig, axes = plt.subplots(
        len(model_names),
        1,
        figsize=(max(7.0, 1.1 * len(scenarios)), 3.4 * len(model_names)),
        squeeze=False,
    )
    width = 0.8 / max(len(settings), 1)
    for ax, model in zip(axes[:, 0], model_names, strict=True):
        sub = table.where(model=model)
        base = sub.median("total_seconds", ["scenario", "cache_levels"])
        for j, setting in enumerate(settings):
            xs, ys, lo, hi = [], [], [], []
            for i, scenario in enumerate(scenarios):
                b = base.get((scenario, baseline))
                times = [
                    t
                    for t in sub.where(scenario=scenario, cache_levels=setting).column(
                        "total_seconds"
                    )
                    if t
                ]
                if b is None or not times:
                    continue
                med = base[(scenario, setting)]
                xs.append(i + (j - (len(settings) - 1) / 2) * width)
                ys.append(b / med)
                lo.append(b / med - b / max(times))
                hi.append(b / min(times) - b / med)
            ax.bar(
                xs,
                ys,
                width,
                yerr=[lo, hi],
                capsize=2,
                label=setting,
                color=SETTING_COLOURS.get(setting),
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(scenarios)), scenarios, rotation=25, ha="right")
        ax.set_ylabel(f"speed-up over {baseline}")
        ax.set_title(f"{model}: first call, median over repeats (log scale)", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def serving(results: Results | Table) -> Any:
    """Serving-trace runs: seconds and XLA compilations per policy and micro-batch."""
    plt = _pyplot()
    table = _table(results)
    rows = [r for r in table.rows if r.get("compilations") is not None and r.get("policy")]
    if not rows:
        raise ValueError("the results hold no serving-trace runs (scenario 'serving_trace')")
    sub = Table(rows, table.columns)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    keys = ["scenario", "cache_levels", "policy"]
    for group in sorted(sub.median("total_seconds", keys)):
        part = sub.where(**dict(zip(keys, group, strict=True)))
        sizes = sorted(set(part.column("micro_batch")))
        secs = part.median("total_seconds", ["micro_batch"])
        comps = part.median("compilations", ["micro_batch"])
        label = " ".join(map(str, group))
        ax_t.plot(sizes, [secs[(m,)] for m in sizes], marker="o", label=label)
        ax_c.plot(sizes, [comps[(m,)] for m in sizes], marker="o", label=label)
    ax_t.set_xlabel("micro_batch")
    ax_t.set_ylabel("seconds to serve the trace (median)")
    from matplotlib.ticker import MaxNLocator

    ax_c.set_xlabel("micro_batch")
    ax_c.set_ylabel("XLA compilations")
    ax_c.set_ylim(bottom=0)
    ax_c.yaxis.set_major_locator(MaxNLocator(integer=True))  # a count: 0, 1, 2, not 0.25
    ax_t.set_xscale("log", base=2)
    ax_c.set_xscale("log", base=2)
    ax_t.legend(fontsize=7)
    fig.suptitle("serving trace in a fresh process: policy x micro_batch")
    fig.tight_layout()
    return fig
