"""The matplotlib plots draw one mark per datum, with the values they were given."""

from __future__ import annotations

from typing import Any

import matplotlib
import pytest
from matplotlib.figure import Figure

import mlcache_lab as mcl
from mlcache_lab import viz
from mlcache_lab.stages.report import LevelReport, StageReport

matplotlib.use("Agg")


def _axes() -> Any:
    return Figure().subplots()


def _patches(ax: Any, gid: str) -> list[Any]:
    return [p for p in ax.patches if p.get_gid() == gid]


def test_timeline_draws_every_execution_and_marks_compilations(cold_and_warm) -> None:  # type: ignore[no-untyped-def]
    cold, _ = cold_and_warm
    tl = cold.timeline
    ax = viz.timeline(tl, _axes())
    bars = _patches(ax, "execution")
    runs = sum(3 if s.mode == "split" else 1 for s in cold.segments)  # 37 rows: 3 chunks of 16
    assert len(bars) == len(tl.executions) == runs
    for bar, e in zip(bars, tl.executions, strict=True):
        assert bar.get_x() == pytest.approx(e.start * 1e3)
        assert bar.get_width() == pytest.approx((e.end - e.start) * 1e3)
    marks = _patches(ax, "compilation")
    assert len(marks) == len(tl.compilations) > 0
    assert all(m.get_hatch() == "///" for m in marks)
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("miss/miss/miss") == len(tl.compilations)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        f"seg {s.index} [{'+'.join(map(str, s.clusters))}] {s.mode}" for s in cold.segments
    ]
    assert f"{tl.compile_count()} XLA compilations" in ax.get_title()


def test_timeline_of_a_new_batch_size_marks_only_the_whole_segment(cold_and_warm) -> None:  # type: ignore[no-untyped-def]
    _, warm = cold_and_warm
    ax = viz.timeline(warm, _axes())  # a Plan that has run stands for its timeline
    assert len(_patches(ax, "execution")) == len(warm.timeline.executions)
    # Under chunk, only the segment that mixes samples ("whole", compiled per batch size)
    # compiles again at 20 rows: its trace and lower levels hit memory.
    whole = [e for e in warm.timeline.executions if e.mode == "whole"]
    assert [e.compilation is not None for e in warm.timeline.executions] == [
        e.mode == "whole" for e in warm.timeline.executions
    ]
    marks = _patches(ax, "compilation")
    assert len(marks) == len(whole) == 1
    assert [t.get_text() for t in ax.texts] == ["–/mem/miss"]
    assert f"{warm.timeline.compile_count()} XLA compilations" in ax.get_title()


def test_timeline_rejects_a_plan_that_has_not_run(graph) -> None:  # type: ignore[no-untyped-def]
    plan = mcl.schedule(graph, 5, "chunk", 4, store=mcl.CacheStore(None))
    with pytest.raises(ValueError, match=r"run the plan first, plan.run\(\*args\)"):
        viz.timeline(plan, _axes())
    with pytest.raises(ValueError, match="Got int 3"):
        viz.timeline(3)


def _report(name: str, statuses: tuple[str, str, str], seconds: tuple[float, ...]) -> StageReport:
    levels = {
        lvl: LevelReport(status=s, seconds=t)
        for lvl, s, t in zip(("trace", "lower", "compile"), statuses, seconds, strict=True)
    }
    return StageReport(name, levels, total_seconds=sum(seconds))


def test_levels_stacks_seconds_per_level_with_statuses_on_top() -> None:
    cold = _report("cold", ("miss", "miss", "miss"), (0.2, 0.3, 1.0))
    warm = _report("warm", ("bypassed", "bypassed", "disk"), (0.0, 0.0, 0.05))
    ax = viz.levels([cold, warm.as_dict()], _axes(), labels=["cold", "warm"])
    trace, lower, compile_ = (_patches(ax, f"level:{lvl}") for lvl in ("trace", "lower", "compile"))
    assert [b.get_height() for b in trace] == pytest.approx([0.2, 0.0])
    assert [b.get_height() for b in lower] == pytest.approx([0.3, 0.0])
    assert [b.get_y() for b in compile_] == pytest.approx([0.5, 0.0])
    assert [b.get_height() for b in compile_] == pytest.approx([1.0, 0.05])
    assert [t.get_text() for t in ax.texts] == ["miss/miss/miss", "–/–/disk"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cold", "warm"]


def test_levels_takes_real_reports_and_a_mapping() -> None:
    import jax.numpy as jnp

    f = mcl.cached_jit(lambda x: jnp.sin(x) * 2, store=mcl.CacheStore(None))
    f(jnp.ones(3))
    first = f.last_report
    f(jnp.ones(4))
    ax = viz.levels({"3 rows": first, "4 rows": f.last_report}, _axes())
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3 rows", "4 rows"]
    heights = [b.get_height() for b in _patches(ax, "level:compile")]
    assert heights == pytest.approx([first.seconds("compile"), f.last_report.seconds("compile")])


def test_levels_says_what_rows_it_needs() -> None:
    with pytest.raises(ValueError, match=r"Row 1 is a dict with keys \['x'\]"):
        viz.levels([_report("a", ("miss",) * 3, (1, 1, 1)), {"x": 1}], _axes())
    with pytest.raises(ValueError, match="one label per row: 1 rows, got 2 labels"):
        viz.levels([_report("a", ("miss",) * 3, (1, 1, 1))], _axes(), labels=["a", "b"])


def test_compilations_plots_running_totals_per_policy_in_call_order() -> None:
    results = {"whole": [(8, 1), (13, 1), (8, 0)], "chunk": [(8, 2), (13, 0), (8, 0)]}
    ax = viz.compilations(results, _axes())
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert list(lines["policy:whole"].get_ydata()) == [1, 2, 2]
    assert list(lines["policy:chunk"].get_ydata()) == [2, 2, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["8", "13", "8"]
    per_call = viz.compilations(results, _axes(), cumulative=False)
    assert list(per_call.get_lines()[0].get_ydata()) == [1, 1, 0]
    assert_integer_ticks(per_call)  # counts of 0 and 1: ticks 0, 1, never 0.25


def assert_integer_ticks(ax: Any) -> None:
    ax.figure.canvas.draw()  # ticks are placed at draw time
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_compilations_takes_rows_and_sorts_by_batch_size_when_sequences_differ() -> None:
    rows = [
        {"policy": "whole", "batch_size": 16, "compilations": 1},
        {"policy": "whole", "batch_size": 4, "compilations": 1},
        {"policy": "buckets", "batch_size": 4, "compilations": 1},
    ]
    ax = viz.compilations(rows, _axes())
    whole = next(x for x in ax.get_lines() if x.get_gid() == "policy:whole")
    assert list(whole.get_xdata()) == [4, 16]
    assert list(whole.get_ydata()) == [2, 1]  # running totals in call order, then sorted
    assert ax.get_xlabel() == "batch size"


def test_compilations_says_what_it_needs() -> None:
    with pytest.raises(ValueError, match="'policy', 'batch_size' and 'compilations' keys"):
        viz.compilations([{"policy": "chunk"}], _axes())
    with pytest.raises(ValueError, match="no rows"):
        viz.compilations([], _axes())


def test_without_axes_a_new_pyplot_figure_is_made(cold_and_warm) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.pyplot as plt

    try:
        for ax in (
            viz.timeline(cold_and_warm[0].timeline),
            viz.levels([_report("a", ("miss",) * 3, (1, 1, 1))]),
            viz.compilations({"chunk": [(8, 1)]}),
        ):
            assert ax.figure in [plt.figure(n) for n in plt.get_fignums()]
    finally:
        plt.close("all")
