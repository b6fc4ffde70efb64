"""The results table: tidy rows, CSV round trip, summaries and plots (no processes)."""

from __future__ import annotations

import matplotlib.figure
import matplotlib.pyplot as plt
import pytest

from mlcache_lab import experiments as ex

SETTINGS = {
    "none": (("miss", 0.01), ("miss", 0.02), ("miss", 0.3)),
    "compile_only": (("miss", 0.01), ("miss", 0.02), ("disk", 0.01)),
    "all": (("bypassed", 0.0), ("bypassed", 0.0), ("disk", 0.005)),
}


def fake_rows():
    rows = []
    for repeat in range(3):
        for model in ("mlp", "transformer(layers=1)"):
            for setting, levels in SETTINGS.items():
                row = {
                    "scenario": "warm_process",
                    "model": model,
                    "cache_levels": setting,
                    "repeat": repeat,
                }
                for name, (status, seconds) in zip(
                    ("trace", "lower", "compile"), levels, strict=True
                ):
                    row[f"{name}_status"] = status
                    row[f"{name}_seconds"] = seconds * (1 + repeat / 10)
                    row[f"{name}_reason"] = "a reason, with a comma"
                row["total_seconds"] = sum(s for _, s in levels) + 0.01 * (repeat + 1)
                row["as_expected"] = True
                row["shares_core"] = False
                row["run_id"] = "0123456789012345"
                rows.append(row)
    rows.append(
        {
            **rows[0],
            "scenario": "serving_trace",
            "policy": "chunk",
            "micro_batch": 8,
            "compilations": 4,
            "trace_seconds": None,
            "lower_seconds": None,
            "compile_seconds": None,
            "trace_status": "memory:2 miss:1",
        }
    )
    return rows


def test_table_filters_groups_and_reports_columns():
    results = ex.Results(fake_rows(), study="fake")
    table = results.table
    assert len(table) == 19
    assert table.unique("cache_levels") == ["none", "compile_only", "all"]
    assert len(table.where(model="mlp", cache_levels="all")) == 3
    medians = table.median("total_seconds", ["cache_levels"])
    assert medians[("all",)] < medians[("compile_only",)] < medians[("none",)]
    with pytest.raises(KeyError, match="no column 'nope'"):
        table.column("nope")
    summary = results.summary()
    assert {r["statuses"] for r in summary if r["cache_levels"] == "all"} >= {
        "bypassed/bypassed/disk"
    }
    assert "<table>" in results._repr_html_()


def test_save_and_load_round_trip_with_types(tmp_path):
    results = ex.Results(fake_rows(), study="fake", meta={"n_jobs": 2, "backend": "threading"})
    path = results.save(tmp_path / "out" / "study.csv", command="pytest")
    text = path.read_text()
    assert text.startswith("# study: fake\n# run: ")
    assert "# made by: pytest" in text
    loaded = ex.load(path)
    assert loaded.study == "fake"
    assert loaded.table.columns == results.table.columns
    first = loaded.table[0]
    assert first["repeat"] == 0 and isinstance(first["total_seconds"], float)
    assert first["as_expected"] is True and first["run_id"] == "0123456789012345"
    assert first["trace_reason"] == "a reason, with a comma"
    assert loaded.table[-1]["trace_seconds"] is None


def test_plots_return_a_figure_with_one_axes_per_model():
    results = ex.Results(fake_rows(), study="fake")
    fig = ex.plot.levels(results)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 2
    plt.close(fig)
    fig = ex.plot.speedup(results, baseline="compile_only")
    assert len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "speed-up over compile_only"
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights[0] < 1.0 < heights[-1]  # 'none' is slower, 'all' faster than the baseline
    plt.close(fig)
    fig = ex.plot.serving(results)
    assert len(fig.axes) == 2
    fig.canvas.draw()  # ticks are placed at draw time: the compilation counts' are integers
    assert all(float(t).is_integer() for t in fig.axes[1].get_yticks())
    plt.close(fig)


def test_plots_say_what_is_wrong():
    results = ex.Results(fake_rows(), study="fake")
    with pytest.raises(ValueError, match="baseline='lower_compile' is not among"):
        ex.plot.speedup(results, baseline="lower_compile")
    with pytest.raises(TypeError, match=r"expected ex\.Results"):
        ex.plot.levels([1, 2])
    with pytest.raises(ValueError, match="no serving-trace runs"):
        ex.plot.serving(ex.Results(fake_rows()[:3]))
