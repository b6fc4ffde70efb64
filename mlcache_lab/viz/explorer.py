"""Explorer: an ipywidgets panel to schedule a cluster graph at any batch size and see what ran.

``Explorer(g)`` (a :class:`~mlcache_lab.ClusterGraph`), ``Explorer(fn, *args,
batch_axes=...)`` or ``Explorer(model)`` (a built-in model) shows a batch-size
slider, a policy dropdown, a micro-batch slider and a Run button. Run makes the
plan (:func:`mlcache_lab.schedule`), runs it and shows the cluster graph
annotated with how often each cluster ran and at what size, the timeline plot,
the compilations the run caused with what every cache level did, and a
history of the runs so far: moving the slider and running again shows that a
new batch size compiles nothing new under ``chunk`` and ``buckets``.

Nothing a run does raises into the kernel: errors appear in the widget (and
in :attr:`Explorer.last_error`). ipywidgets, matplotlib and the graph's
renderer (Graphviz when its ``dot`` is installed, else igraph) are imported
when an Explorer is made, not when this module is.
"""

from __future__ import annotations

import collections
import html
import io
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .plots import STATUS_COLOURS

if TYPE_CHECKING:
    from ..cache.store import CacheStore
    from ..partition.graph import ClusterGraph
    from ..schedule.plan import Plan
    from ..schedule.timeline import Execution, Timeline

__all__ = ["Explorer", "ExplorerWarning", "annotated_dot", "cluster_notes"]

NOT_A_TARGET = (
    "Explorer expects a ClusterGraph (mcl.partition(fn, *args, batch_axes=...)), a function "
    "with example arguments and batch_axes, or a built-in model (get_model(name)). Got "
    "{got}. Fix: Explorer(g), Explorer(fn, *example_args, batch_axes=(None, 0)), or "
    "Explorer(get_model('mlp'))."
)
NO_ARGS = (
    "A function needs example arguments to be partitioned. Got Explorer({name}) with none. "
    "Fix: Explorer({name}, *example_args, batch_axes=...)."
)
GRAPH_WITH_ARGS = (
    "Explorer(g) takes the graph alone; its arguments come from the graph's argument shapes "
    "or from make_args. Got {n} extra positional arguments. Fix: Explorer(g, "
    "make_args=lambda batch_size: (params, x[:batch_size]))."
)
NO_ARG_SHAPES = (
    "The cluster graph {name} keeps no argument shapes, so the Explorer cannot make "
    "arguments for batch size {size}. Fix: Explorer(g, make_args=lambda batch_size: ...)."
)


# Widget HTML gets none of the notebook's table styles: a few of our own, scoped.
TABLE_STYLE = (
    "<style>.mcl-explorer table{border-collapse:collapse;font-size:12px;margin:4px 0}"
    ".mcl-explorer th,.mcl-explorer td{padding:1px 8px;border-bottom:1px solid #ddd;"
    "text-align:left}.mcl-explorer caption{text-align:left;font-weight:bold}</style>"
)


class ExplorerWarning(UserWarning):
    """The Explorer's notebook display fell back to text."""


# ------------------------------------------------------------------ annotations
def _runs_per_cluster(timeline: Timeline) -> dict[int, list[Execution]]:
    runs: dict[int, list[Execution]] = collections.defaultdict(list)
    for e in timeline.executions:
        for cid in e.clusters:
            runs[cid].append(e)
    return dict(runs)


def _sizes_text(executions: Sequence[Execution]) -> str:
    sizes = collections.Counter(e.run_size for e in executions)
    text = ", ".join(
        f"{n}×{size}" if n > 1 else str(size) for size, n in sorted(sizes.items(), reverse=True)
    )
    padding = sum(e.run_size - e.size for e in executions)
    return text + (f" ({padding} rows padding)" if padding else "")


def cluster_notes(timeline: Timeline) -> dict[int, str]:
    """Per cluster id: how many times it ran, at what sizes, and what compiling it took.

    E.g. ``"ran 3× at 2×16, 5 · XLA compiled 2"``, ``"ran 1× at 37 · executable from
    disk"`` or, for a batch-invariant cluster, ``"ran 1× (batch-invariant)"``.
    """
    notes = {}
    for cid, runs in _runs_per_cluster(timeline).items():
        executions = [e for e in runs if e.mode != "combine"]  # a round's combine: no run
        combined = len(executions) < len(runs)
        if all(e.mode == "once" for e in executions):  # no batch dimension: size is moot
            text = f"ran {len(executions)}× (batch-invariant)"
        else:
            text = f"ran {len(executions)}× at {_sizes_text(executions)}"
        outcomes = collections.Counter(
            "XLA compiled" if c.compiled else f"executable from {c.statuses.get('compile')}"
            for c in (e.compilation for e in executions)
            if c is not None
        )
        if outcomes:
            text += " · " + ", ".join(
                f"{what} {n}" if n > 1 else what for what, n in sorted(outcomes.items())
            )
        if combined:
            text += " · partials combined"
        notes[cid] = text
    return notes


def annotated_dot(graph: ClusterGraph, notes: Mapping[int, str]) -> Any:
    """``graph.to_dot()`` with ``notes[cluster_id]`` under each cluster's label, boxed in bold."""
    return graph.to_dot(annotations=notes)


def _graph_html(graph: ClusterGraph, notes: Mapping[int, str]) -> str:
    """The annotated graph as inline SVG, by whichever renderer is available (see display)."""
    from ..partition.display import INSTALL_HINT, svg

    try:
        return f"<div class='mcl-explorer-svg'>{svg(graph, annotations=notes)}</div>"
    except Exception as error:  # no renderer works: the source and a hint
        try:
            source = annotated_dot(graph, notes).source
        except Exception as exc:  # the graphviz package itself may be missing
            source = f"(no DOT source: {type(exc).__name__}: {exc})"
        return (
            f"<p><em>{html.escape(INSTALL_HINT)}</em> ({html.escape(type(error).__name__)}: "
            f"{html.escape(str(error))})</p><pre>{html.escape(source)}</pre>"
        )


def _status_cell(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "black")
    shown = f"hit ({status})" if status in ("memory", "disk") else status
    return f"<td style='color:{colour};font-weight:bold'>{html.escape(shown)}</td>"


def compilations_html(timeline: Timeline) -> str:
    """A table of the compilations a run caused, one column per cache level; hits as hits."""
    reused = sum(e.compilation is None for e in timeline.executions)
    comps = timeline.compilations
    note = (
        f"<p>{reused} of {len(timeline.executions)} executions reused an executable already "
        "loaded in this process (no cache lookup).</p>"
    )
    if not comps:
        return "<p><b>No compilations</b>: nothing new to trace, lower or compile.</p>" + note
    levels = list(comps[0].statuses)
    head = "".join(f"<th>{html.escape(lvl)}</th>" for lvl in levels)
    rows = []
    for c in comps:
        cells = "".join(_status_cell(c.statuses.get(lvl, "")) for lvl in levels)
        rows.append(
            f"<tr><td>{c.segment}</td><td>{'+'.join(map(str, c.clusters))}</td>"
            f"<td>{c.run_size}</td><td>{'-' if c.device is None else c.device}</td>{cells}"
            f"<td>{c.seconds * 1e3:.1f}</td><td>{'yes' if c.compiled else 'no'}</td></tr>"
        )
    return (
        f"<table class='mcl-explorer-compilations'><caption>{len(comps)} cache lookups, "
        f"{timeline.compile_count()} XLA compilations</caption>"
        f"<tr><th>segment</th><th>clusters</th><th>rows</th><th>device</th>{head}"
        f"<th>ms</th><th>XLA compiled</th></tr>{''.join(rows)}</table>" + note
    )


# ------------------------------------------------------------------ arguments
def _resize(leaves: list[Any], axes: Sequence[int | None], size: int) -> list[Any]:
    """Leaves with ``size`` samples along their batch axes (rows repeated as needed)."""
    import numpy as np

    out = []
    for x, axis in zip(leaves, axes, strict=True):
        if axis is None or np.ndim(x) <= axis:
            out.append(x)
            continue
        have = np.shape(x)[axis]
        out.append(np.take(np.asarray(x), np.arange(size) % have, axis=axis))
    return out


def _from_specs(specs: list[Any], axes: Sequence[int | None], size: int) -> list[Any]:
    """Arrays of the analysed shapes (``size`` samples): the values do not matter here."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = []
    for spec, axis in zip(specs, axes, strict=True):
        shape = list(spec.shape)
        if axis is not None and len(shape) > axis:
            shape[axis] = size
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.complexfloating):
            out.append((0.1 * rng.standard_normal(shape)).astype(dtype))
        else:
            out.append(np.zeros(shape, dtype))
    return out


# ------------------------------------------------------------------ the widget
class Explorer:
    """Schedule a cluster graph interactively and see what ran and what compiled.

    Args:
      target: a :class:`~mlcache_lab.ClusterGraph`; or a function, followed by
        its example arguments (``*args``) and ``batch_axes``; or a built-in
        :class:`~mlcache_lab.models.Model` (its ``apply``, ``batch_axes`` and
        inputs; ``*args`` optional).
      batch_axes: ``jax.vmap``-style ``in_axes`` for a function (a model's own
        by default).
      batch_size: the slider's first value (default: the graph's batch size).
      policy: ``"chunk"`` (default), ``"whole"``, ``"buckets"`` or ``"devices"``.
      micro_batch: the micro-batch slider's first value.
      bucket_sizes: passed to :func:`mlcache_lab.schedule` under ``buckets``.
      max_batch_size: the batch-size slider's maximum.
      store: the cache store for the executables (None: the default store).
      make_args: ``make_args(batch_size) -> args`` for a run; by default the
        example arguments repeated along the batch axes, or (for a graph alone)
        arrays of the analysed shapes.
      min_cluster_size: passed to :func:`mlcache_lab.partition`.

    Attributes:
      graph: the cluster graph; ``widget``: the ipywidgets box to display.
      batch_size, policy, micro_batch, run_button: the controls.
      last_plan: the last plan that ran; ``history``: one dict per run;
      last_error: the exception of the last failed run (None after a success).

    Raises:
      TypeError: ``target`` is none of the above.
      ValueError: a function without example arguments, or a graph with some.
    """

    def __init__(
        self,
        target: Any,
        *args: Any,
        batch_axes: Any = None,
        batch_size: int | None = None,
        policy: str = "chunk",
        micro_batch: int = 16,
        bucket_sizes: Sequence[int] | None = None,
        max_batch_size: int = 128,
        store: CacheStore | None = None,
        make_args: Callable[[int], Sequence[Any]] | None = None,
        min_cluster_size: int = 1,
    ) -> None:
        from ..models import Model
        from ..partition import partition
        from ..partition.graph import ClusterGraph
        from ..schedule.policies import POLICIES, validate

        validate(batch_size or 1, policy, micro_batch, bucket_sizes)
        self._example: tuple[Any, ...] | None = None
        if isinstance(target, ClusterGraph):
            if args:
                raise ValueError(GRAPH_WITH_ARGS.format(n=len(args)))
            graph = target
        elif isinstance(target, Model):
            model = target
            if args:  # the full argument tuple, as model.example_args gives it
                self._example = tuple(args)
            else:
                params = model.init(_key(0))
                self._example = (params, *model.make_inputs(8, _key(1)))
                if make_args is None:
                    make_args = lambda n: (params, *model.make_inputs(n, _key(1)))  # noqa: E731
            graph = partition(
                model.apply,
                *self._example,
                batch_axes=batch_axes if batch_axes is not None else model.batch_axes,
                min_cluster_size=min_cluster_size,
            )
        elif callable(target):
            if not args:
                name = getattr(target, "__name__", "fn")
                raise ValueError(NO_ARGS.format(name=name))
            self._example = tuple(args)
            graph = partition(
                target,
                *args,
                batch_axes=batch_axes if batch_axes is not None else 0,
                min_cluster_size=min_cluster_size,
            )
        else:
            raise TypeError(NOT_A_TARGET.format(got=f"{type(target).__name__} {target!r:.80}"))
        self.graph: ClusterGraph = graph
        self.store = store
        self.bucket_sizes = tuple(bucket_sizes) if bucket_sizes is not None else None
        self.make_args = make_args
        self.last_plan: Plan | None = None
        self.last_error: BaseException | None = None
        self.history: list[dict[str, Any]] = []
        self._build_widgets(
            batch_size or graph.batch_size, policy, micro_batch, max_batch_size, POLICIES
        )

    # -------------------------------------------------------------- widgets
    def _build_widgets(
        self,
        batch_size: int,
        policy: str,
        micro_batch: int,
        max_batch_size: int,
        policies: Sequence[str],
    ) -> None:
        import ipywidgets as w

        top = max(max_batch_size, batch_size)
        self.batch_size = w.IntSlider(
            value=batch_size,
            min=1,
            max=top,
            description="batch size",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.policy = w.Dropdown(options=list(policies), value=policy, description="policy")
        self.micro_batch = w.IntSlider(
            value=micro_batch,
            min=1,
            max=max(64, micro_batch),
            description="micro-batch",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.status = w.HTML("Press <b>Run</b> to schedule and run the graph.")
        self.error_view = w.HTML("")
        self.graph_view = w.HTML(self._initial_graph_html())
        self.timeline_view = w.Image(
            format="png", layout=w.Layout(width="auto", max_width="min(100%, 900px)")
        )
        self.compilations_view = w.HTML("")
        self.history_view = w.HTML("")
        for widget, name in (
            (self.batch_size, "batch-size"),
            (self.policy, "policy"),
            (self.micro_batch, "micro-batch"),
            (self.run_button, "run"),
            (self.status, "status"),
            (self.error_view, "error"),
            (self.graph_view, "graph"),
            (self.timeline_view, "timeline"),
            (self.compilations_view, "compilations"),
            (self.history_view, "history"),
        ):
            widget.add_class(f"mcl-explorer-{name}")
        self.run_button.on_click(lambda _button: self.run())
        self.policy.observe(lambda _change: self._policy_changed(), names="value")
        self._policy_changed()
        self.graph_view.layout = w.Layout(overflow="auto", max_width="100%")
        self.widget = w.VBox(
            [
                w.HTML(TABLE_STYLE),
                w.HBox([self.batch_size, self.policy, self.micro_batch, self.run_button]),
                self.status,
                self.error_view,
                self.graph_view,
                self.timeline_view,
                self.compilations_view,
                self.history_view,
            ]
        )
        self.widget.add_class("mcl-explorer")

    def _policy_changed(self) -> None:
        policy = self.policy.value
        self.micro_batch.disabled = policy == "whole"
        self.micro_batch.description = "largest bucket" if policy == "buckets" else "micro-batch"

    def _initial_graph_html(self) -> str:
        try:
            return _graph_html(self.graph, {})
        except Exception as error:  # the first picture must not stop the widget
            return f"<pre>{html.escape(repr(self.graph))}</pre><p>({html.escape(str(error))})</p>"

    # -------------------------------------------------------------- running
    def args_for(self, batch_size: int) -> tuple[Any, ...]:
        """The arguments a run at ``batch_size`` uses (see ``make_args``)."""
        import jax

        if self.make_args is not None:
            return tuple(self.make_args(batch_size))
        graph = self.graph
        axes = graph.in_batch_axes
        if self._example is not None:
            leaves, tree = jax.tree.flatten(self._example)
            return tuple(jax.tree.unflatten(tree, _resize(leaves, axes, batch_size)))
        if graph.arg_specs is None:
            raise ValueError(NO_ARG_SHAPES.format(name=graph.name, size=batch_size))
        specs, tree = jax.tree.flatten(graph.arg_specs)
        return tuple(jax.tree.unflatten(tree, _from_specs(specs, axes, batch_size)))

    def run(self) -> Plan | None:
        """Schedule and run at the controls' values, then show the results.

        What the Run button calls. Never raises: an error is shown in the widget,
        kept in :attr:`last_error`, and None is returned.
        """
        from ..schedule.plan import schedule

        batch_size, policy = int(self.batch_size.value), str(self.policy.value)
        micro_batch = int(self.micro_batch.value)
        self.run_button.disabled = True
        self.status.value = f"Running batch size {batch_size} under {policy!r}…"
        try:
            plan = schedule(
                self.graph,
                batch_size,
                policy,
                micro_batch,
                bucket_sizes=self.bucket_sizes,
                store=self.store,
            )
            plan.run(*self.args_for(batch_size))
            self._show(plan)
        except Exception as error:  # never into the kernel: into the widget
            self.last_error = error
            self.status.value = (
                f"<span class='mcl-explorer-failed' style='color:#c62828'>Run failed at batch "
                f"size {batch_size} under {html.escape(policy)!r}.</span>"
            )
            self.error_view.value = (
                f"<pre class='mcl-explorer-message' style='color:#c62828;white-space:pre-wrap'>"
                f"{html.escape(type(error).__name__)}: {html.escape(str(error))}</pre>"
            )
            return None
        finally:
            self.run_button.disabled = False
        self.last_error = None
        self.error_view.value = ""
        return plan

    def _show(self, plan: Plan) -> None:
        timeline = plan.timeline
        assert timeline is not None
        self.last_plan = plan
        self.history.append(
            {
                "run": len(self.history) + 1,
                "batch_size": plan.batch_size,
                "policy": plan.policy,
                "micro_batch": plan.micro_batch,
                "executions": len(timeline.executions),
                "cache_lookups": len(timeline.compilations),
                "compilations": timeline.compile_count(),
                "milliseconds": timeline.total_seconds * 1e3,
            }
        )
        self.graph_view.value = _graph_html(self.graph, cluster_notes(timeline))
        self.timeline_view.value = _timeline_png(timeline)
        self.compilations_view.value = compilations_html(timeline)
        self.history_view.value = self._history_html()
        last = self.history[-1]
        self.status.value = (
            f"<span class='mcl-explorer-done'>Run {last['run']}: batch size {plan.batch_size}, "
            f"{html.escape(plan.policy)}"
            + (f" (micro-batch {plan.micro_batch})" if plan.policy in ("chunk", "devices") else "")
            + f": {last['executions']} executions, <b>{last['compilations']} XLA "
            f"compilations</b>, {last['milliseconds']:.1f} ms.</span>"
        )

    def _history_html(self) -> str:
        cols = (
            "run",
            "batch_size",
            "policy",
            "micro_batch",
            "executions",
            "cache_lookups",
            "compilations",
            "milliseconds",
        )
        head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
        rows = "".join(
            "<tr>"
            + "".join(
                f"<td>{row[c]:.1f}</td>"
                if isinstance(row[c], float)
                else f"<td>{html.escape(str(row[c]))}</td>"
                for c in cols
            )
            + "</tr>"
            for row in self.history
        )
        return (
            f"<table class='mcl-explorer-history'><caption>runs so far</caption>"
            f"<tr>{head}</tr>{rows}</table>"
        )

    # -------------------------------------------------------------- display
    def __repr__(self) -> str:
        return (
            f"Explorer({self.graph.name}: batch size {self.batch_size.value}, policy "
            f"{self.policy.value!r}, micro-batch {self.micro_batch.value}; "
            f"{len(self.history)} runs)"
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        try:
            bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        except Exception as error:  # display must never raise
            warnings.warn(
                f"Could not display the Explorer as a widget ({type(error).__name__}: {error}); "
                "showing text instead. Fix: pip install ipywidgets jupyterlab_widgets.",
                ExplorerWarning,
                stacklevel=2,
            )
            bundle = {}
        bundle["text/plain"] = repr(self)
        return bundle


def _key(seed: int) -> Any:
    import jax

    return jax.random.key(seed)


def _timeline_png(timeline: Timeline) -> bytes:
    from matplotlib.figure import Figure

    from .plots import timeline as draw_timeline

    rows = len({(e.segment, e.device) for e in timeline.executions})
    fig = Figure(figsize=(7.0, 1.2 + 0.45 * max(2, rows)), layout="constrained")
    draw_timeline(timeline, fig.subplots())
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
