"""matplotlib plots of what the toolkit measured: plan timelines, cache levels, compilations.

Each function draws on ``ax`` (a new figure's axes when None) and returns the
axes; it reads the objects it is given and computes nothing of its own.
matplotlib is imported inside the functions, so importing this module is cheap.

Every patch or line drawn for a datum carries a ``gid`` naming what it is
(``"execution"``, ``"compilation"``, ``"level:trace"``, ``"policy:chunk"``),
so a test (or a user) can find it again on the axes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..cache.store import LEVELS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..schedule.timeline import Timeline

__all__ = [
    "LEVEL_COLOURS",
    "MODE_COLOURS",
    "STATUS_COLOURS",
    "compilations",
    "level_colour",
    "levels",
    "status_text",
    "timeline",
]

# The same colours as the cluster graph: batched green, invariant grey, mixing orange.
MODE_COLOURS = {
    "split": "#6aa84f",
    "once": "#999999",
    "whole": "#e69138",
    "combine": "#3d85c6",  # a round's combine: blue, as reducing clusters are
}
STATUS_COLOURS = {"memory": "#2e7d32", "disk": "#1565c0", "miss": "#c62828", "bypassed": "#757575"}
LEVEL_COLOURS = {"trace": "#8e24aa", "lower": "#1e88e5", "compile": "#fb8c00"}
# A level without a colour of its own (the store grows levels) takes one of these, by position.
_SPARE_COLOURS = ("#00897b", "#6d4c41", "#d81b60", "#fdd835", "#3949ab", "#7cb342")
_STATUS_SHORT = {"memory": "mem", "disk": "disk", "miss": "miss", "bypassed": "–"}

NOT_A_TIMELINE = (
    "timeline() draws a Timeline (plan.timeline) or a Plan that has run. Got {got}. "
    "Fix: run the plan first, plan.run(*args), then viz.timeline(plan.timeline)."
)
NOT_LEVEL_ROWS = (
    "levels() draws StageReport objects or dicts with '<level>_seconds' and '<level>_status' "
    "keys for some of the levels {levels} (what StageReport.as_dict() gives). "
    "Row {index} is {got}. "
    "Fix: pass [f.last_report, ...] or [r.as_dict() for r in reports]."
)
NOT_COMPILATION_RESULTS = (
    "compilations() draws {{policy: [(batch_size, compilations), ...]}} or rows (dicts) with "
    "'policy', 'batch_size' and 'compilations' keys. Got {got}. Fix: e.g. "
    "{{'chunk': [(8, 2), (13, 0)], 'whole': [(8, 1), (13, 1)]}}."
)


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=figsize, layout="constrained")
    return new


def level_colour(level: str) -> str:
    """The colour that draws ``level`` in every plot (a spare one for a level without its own)."""
    if level in LEVEL_COLOURS:
        return LEVEL_COLOURS[level]
    spare = [lvl for lvl in LEVELS if lvl not in LEVEL_COLOURS]
    index = spare.index(level) if level in spare else len(spare)
    return _SPARE_COLOURS[index % len(_SPARE_COLOURS)]


def status_text(statuses: Mapping[str, str]) -> str:
    """Per-level statuses in a few characters, e.g. ``"–/disk/miss"``."""
    return "/".join(_STATUS_SHORT.get(s, s) for s in statuses.values())


# ------------------------------------------------------------------ timeline
def _as_timeline(obj: Any) -> Timeline:
    if hasattr(obj, "executions"):
        return obj  # type: ignore[no-any-return]
    inner = getattr(obj, "timeline", None)
    if inner is not None and hasattr(inner, "executions"):
        return inner  # type: ignore[no-any-return]
    raise ValueError(NOT_A_TIMELINE.format(got=_describe(obj)))


def _describe(obj: Any) -> str:
    text = repr(obj).splitlines()[0] if obj is not None else "None"
    return f"{type(obj).__name__} {text[:80]}"


def timeline(timeline: Any, ax: Axes | None = None, *, title: str | None = None) -> Axes:
    """A Gantt chart of one plan run: a row per segment (its clusters) and device.

    Bars span each execution's start to end (milliseconds since the run
    began), coloured by the segment's mode (split green, once grey, whole
    orange). Executions that caused a compilation are hatched over the time
    the executable took to get, outlined in the colour of the compile level's
    status (miss red, disk blue, memory green) and labelled with every level's
    status (``trace/lower/compile``).

    Args:
      timeline: a :class:`~mlcache_lab.Timeline`, or a :class:`~mlcache_lab.Plan`
        that has run (its ``.timeline``).
      ax: axes to draw on; a new figure when None.
      title: the axes title (default: counts and total time).

    Returns:
      The axes.

    Raises:
      ValueError: ``timeline`` is neither (or a plan that has not run).
    """
    from matplotlib.patches import Patch

    tl = _as_timeline(timeline)
    ax = _axes(ax, (9.0, 1.3 + 0.45 * max(2, len({(e.segment, e.device) for e in tl.executions}))))
    rows: dict[tuple[int, int | None], int] = {}
    names: list[str] = []
    for e in tl.executions:
        key = (e.segment, e.device)
        if key not in rows:
            rows[key] = len(rows)
            where = "" if e.device is None else f" dev {e.device}"
            where += "" if e.round is None else f" round {e.round}"
            names.append(f"seg {e.segment} [{'+'.join(map(str, e.clusters))}] {e.mode}{where}")
    modes_seen: dict[str, None] = {}
    for e in tl.executions:
        y = rows[(e.segment, e.device)]
        start, width = e.start * 1e3, max(e.end - e.start, 0.0) * 1e3
        modes_seen[e.mode] = None
        (bar,) = ax.barh(
            y,
            width,
            left=start,
            height=0.6,
            color=MODE_COLOURS.get(e.mode, "#cccccc"),
            edgecolor="black",
            linewidth=0.5,
            alpha=0.85,
        )
        bar.set_gid("execution")
        c = e.compilation
        if c is None:
            continue
        colour = STATUS_COLOURS.get(c.statuses.get("compile", ""), "black")
        (mark,) = ax.barh(
            y,
            min(c.seconds * 1e3, width) if width > 0 else 0.0,
            left=start,
            height=0.6,
            fill=False,
            hatch="///",
            edgecolor=colour,
            linewidth=1.5,
        )
        mark.set_gid("compilation")
        ax.annotate(
            status_text(c.statuses),
            (start, y - 0.32),
            fontsize=7,
            color=colour,
            ha="left",
            va="bottom",
        )
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(len(names) - 0.4, -0.6)  # first segment on top
    ax.set_xlabel("milliseconds since the run began")
    handles = [Patch(facecolor=MODE_COLOURS.get(m, "#cccccc"), label=m) for m in modes_seen]
    if tl.compilations:
        named = [lvl for lvl in LEVELS if any(lvl in c.statuses for c in tl.compilations)]
        handles.append(
            Patch(
                fill=False,
                hatch="///",
                edgecolor="black",
                label=f"compilation ({'/'.join(named)})",
            )
        )
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        title
        if title is not None
        else (
            f"{len(tl.executions)} executions, {len(tl.compilations)} cache lookups, "
            f"{tl.compile_count()} XLA compilations, {tl.total_seconds * 1e3:.1f} ms"
        ),
        fontsize=9,
    )
    return ax


# ------------------------------------------------------------------ levels
def _as_level_row(index: int, row: Any) -> Mapping[str, Any]:
    if hasattr(row, "as_dict") and callable(row.as_dict):
        row = row.as_dict()
    if not isinstance(row, Mapping) or not any(f"{lvl}_seconds" in row for lvl in LEVELS):
        keys = sorted(row) if isinstance(row, Mapping) else None
        got = f"a dict with keys {keys}" if keys is not None else _describe(row)
        raise ValueError(NOT_LEVEL_ROWS.format(levels=LEVELS, index=index, got=got))
    return row


def _level_row(
    row: Mapping[str, Any], drawn: Sequence[str]
) -> tuple[str | None, dict[str, float], dict[str, str]]:
    label = next(
        (str(row[k]) for k in ("label", "change", "scenario", "function") if k in row), None
    )
    # A level a row does not have (a jax.jit row next to ours) or did not time draws as 0 s.
    seconds = {lvl: float(row.get(f"{lvl}_seconds") or 0.0) for lvl in drawn}
    statuses = {lvl: str(row.get(f"{lvl}_status", "")) for lvl in drawn}
    return label, seconds, statuses


def levels(
    rows: Iterable[Any] | Mapping[str, Any],
    ax: Axes | None = None,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Axes:
    """Seconds per cache level, stacked, one bar per report; statuses written on top.

    Args:
      rows: :class:`~mlcache_lab.StageReport` s, or their ``as_dict()`` rows (any
        dict with ``trace_seconds``, ``trace_status``, ... keys, e.g. the rows of
        a results table), or a mapping ``{label: report}``.
      ax: axes to draw on; a new figure when None.
      labels: one label per bar (default: the mapping's keys, else each row's
        ``label``/``change``/``scenario``/``function`` entry, else its index).
      title: the axes title.

    Returns:
      The axes.

    Raises:
      ValueError: a row is neither a report nor such a dict, or ``labels`` has
        another length than ``rows``.
    """
    if isinstance(rows, Mapping) and not any(f"{lvl}_seconds" in rows for lvl in LEVELS):
        items = list(rows.values())
        labels = list(labels) if labels is not None else [str(k) for k in rows]
    else:
        items = [rows] if isinstance(rows, Mapping) else list(rows)
    checked = [_as_level_row(i, r) for i, r in enumerate(items)]
    # Every level of the store that some row has, in pipeline order.
    drawn = [lvl for lvl in LEVELS if any(f"{lvl}_seconds" in r for r in checked)]
    parsed = [_level_row(r, drawn) for r in checked]
    if labels is None:
        names = [p[0] if p[0] is not None else str(i) for i, p in enumerate(parsed)]
    else:
        names = [str(x) for x in labels]
        if len(names) != len(parsed):
            raise ValueError(
                f"'labels' must give one label per row: {len(parsed)} rows, got "
                f"{len(names)} labels ({names!r}). Fix: pass labels of length {len(parsed)}."
            )
    if len(set(names)) != len(names):  # bars are placed by position; labels may repeat
        names = [f"{n} ({i})" if names.count(n) > 1 else n for i, n in enumerate(names)]
    ax = _axes(ax, (max(4.0, 1.1 * len(parsed) + 2), 4.0))
    x = list(range(len(parsed)))
    bottom = [0.0] * len(parsed)
    for lvl in drawn:
        values = [p[1][lvl] for p in parsed]
        bars = ax.bar(x, values, bottom=bottom, label=lvl, color=level_colour(lvl), width=0.7)
        for bar in bars:
            bar.set_gid(f"level:{lvl}")
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for i, p in enumerate(parsed):
        if any(p[2].values()):
            ax.annotate(status_text(p[2]), (i, bottom[i]), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(
        x,
        names,
        rotation=30 if len(parsed) > 3 else 0,
        ha="right" if len(parsed) > 3 else "center",
        fontsize=8,
    )
    ax.set_ylabel("seconds per level")
    ax.margins(y=0.15)
    ax.legend(fontsize=8, title="level", title_fontsize=8)
    ax.set_xlabel(f"on top: the status of {'/'.join(drawn)}", fontsize=8)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


# ------------------------------------------------------------------ compilations
def _compilation_series(results: Any) -> dict[str, list[tuple[int, int]]]:
    if hasattr(results, "to_dict") and callable(results.to_dict):  # a pandas DataFrame
        results = results.to_dict("records")
    series: dict[str, list[tuple[int, int]]] = {}
    try:
        if isinstance(results, Mapping):
            for policy, points in results.items():
                series[str(policy)] = [(int(b), int(n)) for b, n in points]
        else:
            for row in results:
                series.setdefault(str(row["policy"]), []).append(
                    (int(row["batch_size"]), int(row["compilations"]))
                )
    except (KeyError, TypeError, ValueError):
        raise ValueError(NOT_COMPILATION_RESULTS.format(got=_describe(results))) from None
    if not series:
        raise ValueError(NOT_COMPILATION_RESULTS.format(got="nothing to draw (no rows)"))
    return series


def compilations(
    results: Any,
    ax: Axes | None = None,
    *,
    cumulative: bool = True,
    title: str | None = None,
) -> Axes:
    """XLA compilations against batch sizes, one line per policy.

    When every policy saw the same sequence of batch sizes, the x axis is
    that sequence in call order; otherwise it is the batch size itself.

    Args:
      results: ``{policy: [(batch_size, compilations), ...]}`` in call order,
        or rows (dicts, or a DataFrame) with ``policy``, ``batch_size`` and
        ``compilations`` columns, e.g. from ``batched_jit(...).stats()`` deltas.
      ax: axes to draw on; a new figure when None.
      cumulative: plot the running total (the default), else each call's count.
      title: the axes title.

    Returns:
      The axes.

    Raises:
      ValueError: ``results`` has neither form.
    """
    from matplotlib.ticker import MaxNLocator

    series = _compilation_series(results)
    ax = _axes(ax, (7.0, 3.8))
    sequences = {tuple(b for b, _ in points) for points in series.values()}
    in_call_order = len(sequences) == 1
    markers = "osD^v<>"
    for k, (policy, points) in enumerate(series.items()):
        counts = [n for _, n in points]
        if cumulative:
            counts = [sum(counts[: i + 1]) for i in range(len(counts))]
        if in_call_order:
            xs: list[float] = list(range(len(points)))
        else:
            order = sorted(range(len(points)), key=lambda i: points[i][0])
            xs = [points[i][0] for i in order]
            counts = [counts[i] for i in order]
        (line,) = ax.plot(
            xs,
            counts,
            marker=markers[k % len(markers)],
            markersize=7 - k,  # lines that coincide stay visible
            alpha=0.85,
            label=policy,
        )
        line.set_gid(f"policy:{policy}")
    if in_call_order:
        sizes = next(iter(sequences))
        ax.set_xticks(range(len(sizes)), [str(b) for b in sizes], fontsize=8)
        ax.set_xlabel("batch size (in call order)")
    else:
        ax.set_xlabel("batch size")
    ax.set_ylabel("XLA compilations" + (" so far" if cumulative else " per call"))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8, title="policy", title_fontsize=8)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax
