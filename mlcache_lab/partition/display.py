"""Text and Graphviz views of a :class:`ClusterGraph`; display never raises.

In a notebook the graph shows itself as SVG rendered by Graphviz's ``dot``;
``to_dot(detail="equations")`` lists every cluster's equations too, and
``annotations`` add a line per cluster (what a schedule ran there).
Edges are labelled with the shapes they carry, the batch dimension shown as
``B`` (a symbolic graph's shapes have it already; a concrete graph's batch axes
are written as ``B`` too), so a picture reads the same at every batch size.
When ``dot`` is missing or fails, the display warns (:class:`DisplayWarning`)
and shows the DOT source with a one-line hint to install Graphviz, and the
plain-text summary.
"""

from __future__ import annotations

import html as html_lib
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jax.extend.core import Literal

from .dims import format_shape

if TYPE_CHECKING:
    from .cluster import Cluster
    from .graph import ClusterGraph

__all__ = ["DisplayWarning", "html", "mimebundle", "summary", "to_dot"]

INSTALL_HINT = (
    "Install Graphviz to see this graph as a picture: `apt-get install graphviz` or "
    "`conda install graphviz` (the `dot` program), plus `pip install graphviz`."
)
COLORS = {"batched": "#b7e1cd", "invariant": "#e0e0e0", "mixes": "#f9cb9c", "reduces": "#a4c2f4"}
MAX_LISTED = 30
MAX_EDGE_SHAPES = 3
MAX_EQUATIONS = 12
DETAILS = ("clusters", "equations")
LEGEND = (
    "green: batched (any slice of the batch)   grey: invariant (no sample)   "
    "orange: mixes samples   blue: reduces over the batch (per-chunk partials + combine)   "
    "edges: shapes, batch dimension B"
)


class DisplayWarning(UserWarning):
    """The rich display fell back to text (Graphviz missing or failing)."""


def _main_primitives(cluster: Cluster, k: int = 3) -> str:
    return ", ".join(f"{name}×{n}" for name, n in cluster.primitives().most_common(k))


def summary(graph: ClusterGraph) -> str:
    """A readable multi-line summary: clusters, kinds, sizes, main primitives."""
    counts = graph.counts()
    batch = (
        f"symbolic batch B (example {graph.batch_size})"
        if graph.symbolic
        else f"concrete at batch size {graph.batch_size}"
    )
    head = (
        f"ClusterGraph({graph.name}: {len(graph.labels)} equations, {batch}, "
        f"{len(graph.clusters)} clusters: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ")"
    )
    lines = [head]
    if not graph.symbolic:
        lines.append(f"  not symbolic: {graph.symbolic_reason}")
    lines += [
        "  queue: "
        + " -> ".join(map(str, graph.queue[:MAX_LISTED]))
        + (" ..." if len(graph.queue) > MAX_LISTED else ""),
    ]
    for cid in graph.queue[:MAX_LISTED]:
        c = graph.clusters[cid]
        detail = _main_primitives(c) if c.category != "mixes" else c.reason
        if c.needs_batch_size:
            detail += "  (needs B)"
        lines.append(
            f"  #{c.id:<3} {c.category:<9} {len(c):>5} eqns  "
            f"{len(c.inputs)} in / {len(c.outputs)} out  {detail}"
        )
    if len(graph.clusters) > MAX_LISTED:
        lines.append(f"  ... {len(graph.clusters) - MAX_LISTED} more clusters")
    return "\n".join(lines)


def to_dot(
    graph: ClusterGraph,
    detail: str = "clusters",
    annotations: Mapping[int, str] | None = None,
) -> Any:
    """The cluster graph as a ``graphviz.Digraph``: one box per cluster, edges = dependencies.

    Colours: batched green, invariant grey (non-batched, touches no sample),
    mixes orange (non-batched, combines samples). Each box says its id,
    category, number of equations and main primitives (and, for a mixing
    cluster, which primitive mixes over which axis); each edge the shapes it
    carries, the batch dimension shown as ``B``.

    Args:
      graph: the cluster graph.
      detail: ``"clusters"`` (the default) or ``"equations"``: every box also
        lists its equations, ``primitive(input shapes) -> output shapes``
        (the first :data:`MAX_EQUATIONS`).
      annotations: ``{cluster_id: text}`` added under a cluster's label, boxed
        in bold (the Explorer writes how often each cluster ran and at what size).

    Raises:
      ValueError: an unknown ``detail``, or annotations for clusters the graph
        does not have.
    """
    import graphviz

    if detail not in DETAILS:
        raise ValueError(
            f"Valid options for 'detail' are {DETAILS}. Got detail={detail!r} instead."
        )
    notes = dict(annotations or {})
    unknown = sorted(set(notes) - {c.id for c in graph.clusters})
    if unknown:
        raise ValueError(
            f"'annotations' name clusters {unknown}, but {graph.name} has clusters "
            f"0..{len(graph.clusters) - 1}. Fix: key the annotations by Cluster.id."
        )
    dot = graphviz.Digraph(
        name=graph.name,
        graph_attr={
            "rankdir": "TB",
            "label": LEGEND,
            "labelloc": "b",
            "fontname": "Helvetica",
            "fontsize": "9",
        },
        node_attr={
            "shape": "box",
            "style": "filled,rounded",
            "fontname": "Helvetica",
            "fontsize": "10",
        },
        edge_attr={"fontname": "Helvetica", "fontsize": "9"},
    )
    for c in graph.clusters:
        label = f"#{c.id} {c.category}\n{len(c)} eqns: {_main_primitives(c)}"
        if c.category == "mixes":
            label += "\n" + c.reason.removeprefix("mixes: ")[:60]
        if c.needs_batch_size:
            label += "\nneeds B"
        attrs = {"fillcolor": COLORS.get(c.category, "white")}
        if detail == "equations":
            label += "\n\n" + "".join(f"{line}\\l" for line in _equation_lines(graph, c))
        if c.id in notes:
            label += "\n" + notes[c.id]
            attrs["penwidth"] = "2"
        dot.node(f"c{c.id}", label, **attrs)
    for a, b in graph.dependencies:
        dot.edge(f"c{a}", f"c{b}", label=edge_label(graph, a, b))
    return dot


def _var_text(graph: ClusterGraph, v: Any) -> str:
    if isinstance(v, Literal):
        return str(v.val)
    return format_shape(v.aval, None if graph.symbolic else graph.analysis.axes.get(v))


def _equation_lines(graph: ClusterGraph, cluster: Cluster) -> list[str]:
    """``primitive(input shapes) -> output shapes`` per equation, batch dimension as ``B``."""
    eqns = graph.jaxpr.jaxpr.eqns
    lines = []
    for i in cluster.equations[:MAX_EQUATIONS]:
        eqn = eqns[i]
        ins = ", ".join(_var_text(graph, v) for v in eqn.invars)
        outs = ", ".join(_var_text(graph, v) for v in eqn.outvars)
        lines.append(f"{eqn.primitive.name}({ins}) -> {outs}")
    if len(cluster) > MAX_EQUATIONS:
        lines.append(f"... {len(cluster) - MAX_EQUATIONS} more equations")
    return lines


def edge_label(graph: ClusterGraph, producer: int, consumer: int) -> str:
    """The shapes cluster ``producer`` hands to ``consumer``: ``f32[B,4]\nf32[4]``."""
    made = set(graph.clusters[producer].outputs)
    shapes = [
        format_shape(v.aval, None if graph.symbolic else graph.analysis.axes.get(v))
        for v in graph.clusters[consumer].inputs
        if v in made
    ]
    more = len(shapes) - MAX_EDGE_SHAPES
    return "\n".join(shapes[:MAX_EDGE_SHAPES] + ([f"+{more} more"] if more > 0 else []))


def _fallback(graph: ClusterGraph, error: BaseException) -> str:
    warnings.warn(
        f"Could not render the cluster graph with Graphviz ({type(error).__name__}: {error}); "
        "showing its DOT source instead. " + INSTALL_HINT,
        DisplayWarning,
        stacklevel=3,
    )
    try:
        source = graph.to_dot().source
    except Exception as exc:  # the graphviz package itself may be missing
        source = f"(no DOT source: {type(exc).__name__}: {exc})"
    return (
        f"<p><em>{html_lib.escape(INSTALL_HINT)}</em></p>"
        f"<pre>{html_lib.escape(summary(graph))}</pre>"
        f"<pre>{html_lib.escape(source)}</pre>"
    )


def _svg(graph: ClusterGraph) -> str:
    return graph.to_dot().pipe(format="svg").decode("utf-8")


def mimebundle(graph: ClusterGraph) -> dict[str, str]:
    """SVG and text; on any rendering failure, HTML with the DOT source and text."""
    text = summary(graph)
    try:
        return {"image/svg+xml": _svg(graph), "text/plain": text}
    except Exception as error:  # display must never raise
        return {"text/html": _fallback(graph, error), "text/plain": text}


def html(graph: ClusterGraph) -> str:
    """The SVG inline in HTML; on any rendering failure, the DOT source and a hint."""
    try:
        svg = _svg(graph)
        return svg[svg.find("<svg") :]  # no XML prolog inside HTML
    except Exception as error:  # display must never raise
        return _fallback(graph, error)
