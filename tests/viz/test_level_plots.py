"""The level plots follow the store's LEVELS: a level the store gains is drawn without edits."""

from __future__ import annotations

import re
from typing import Any

import matplotlib
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from mlcache_lab import viz
from mlcache_lab.cache import LEVELS
from mlcache_lab.viz import plots

matplotlib.use("Agg")

GROWN = (*LEVELS, "partition", "segments")  # what the partitioned path adds to the store


def _bars(ax: Any, level: str) -> list[Any]:
    return [p for p in ax.patches if p.get_gid() == f"level:{level}"]


def _row(label: str, levels: dict[str, tuple[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"label": label}
    for level, (status, seconds) in levels.items():
        row[f"{level}_status"], row[f"{level}_seconds"] = status, seconds
    return row


def test_new_levels_are_drawn_in_pipeline_order_with_colours_of_their_own(monkeypatch):
    monkeypatch.setattr(plots, "LEVELS", GROWN)
    partitioned = _row("batched", {lvl: ("disk", 0.1) for lvl in GROWN})
    jitted = _row("jit", {lvl: ("miss", 0.2) for lvl in LEVELS})  # has no partition levels
    ax = viz.levels([partitioned, jitted], Figure().subplots())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(GROWN)
    assert [b.get_height() for b in _bars(ax, "segments")] == pytest.approx([0.1, 0.0])
    assert [b.get_y() for b in _bars(ax, "partition")] == pytest.approx([0.3, 0.6])
    assert ax.texts[0].get_text() == "/".join(["disk"] * len(GROWN))
    colours = {to_hex(_bars(ax, lvl)[0].get_facecolor()) for lvl in GROWN}
    assert len(colours) == len(GROWN)
    assert plots.level_colour("compile") == plots.LEVEL_COLOURS["compile"]


def test_only_the_levels_the_rows_have_are_drawn():
    rows = [_row("a", {"trace": ("miss", 0.5), "compile": ("miss", 1.0)})]
    ax = viz.levels(rows, Figure().subplots())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["trace", "compile"]
    assert ax.get_xlabel() == "on top: the status of trace/compile"
    assert _bars(ax, "lower") == []


def test_a_row_with_no_level_of_the_store_is_refused():
    with pytest.raises(ValueError, match=f"some of the levels {re.escape(str(LEVELS))}"):
        viz.levels([{"warmup_seconds": 1.0}], Figure().subplots())
