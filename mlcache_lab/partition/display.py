"""Text and picture views of a :class:`ClusterGraph`; display never raises.

In a notebook the graph shows itself as SVG. Two renderers draw it, with the
same look (colours by category, a legend, edge labels, annotations):

* ``"graphviz"``: Graphviz's ``dot`` program, when it is installed (its
  layout is the best);
* ``"layered"``: :mod:`.layered`, a Sugiyama-style layered layout from igraph
  drawn with matplotlib: what pip installs, on every machine.

:func:`renderer` says which one draws (``"auto"``: Graphviz when ``dot`` is on
``PATH``; ``$MLCACHE_LAB_RENDERER`` or the ``renderer`` argument force one),
:func:`render` draws SVG or PNG bytes. ``to_dot(detail="equations")`` lists
every cluster's equations too, and ``annotations`` add a line per cluster
(what a schedule ran there). Edges are labelled with the shapes they carry,
the batch dimension shown as ``B`` (a symbolic graph's shapes have it already;
a concrete graph's batch axes are written as ``B`` too), so a picture reads
the same at every batch size. When no renderer works, the display warns
(:class:`DisplayWarning`) and shows the plain-text summary and the DOT source.
"""

from __future__ import annotations

import dataclasses
import html as html_lib
import os
import shutil
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from jax.extend.core import Literal

from . import layered
from .dims import format_shape

if TYPE_CHECKING:
    from .cluster import Cluster
    from .graph import ClusterGraph

__all__ = [
    "CATEGORIES",
    "RENDERERS",
    "RENDERER_ENV",
    "Category",
    "DisplayWarning",
    "legend",
    "mimebundle",
    "render",
    "renderer",
    "summary",
    "svg",
    "to_dot",
]

INSTALL_HINT = (
    "Cluster graphs are drawn by Graphviz's `dot` program when it is installed "
    "(`apt-get install graphviz`, `brew install graphviz` or `conda install graphviz`), "
    "otherwise by igraph and matplotlib: `pip install igraph matplotlib`."
)


@dataclasses.dataclass(frozen=True)
class Category:
    """How a cluster category looks: its fill colour, that colour's name, what it means."""

    fill: str
    colour: str
    meaning: str


# One line per cluster category: colours, legends and both renderers read this table.
CATEGORIES: dict[str, Category] = {
    "batched": Category("#b7e1cd", "green", "batched (any slice of the batch)"),
    "invariant": Category("#e0e0e0", "grey", "invariant (no sample)"),
    "mixes": Category("#f9cb9c", "orange", "mixes samples"),
    "reduces": Category("#a4c2f4", "blue", "reduces over the batch (per-chunk partials + combine)"),
}
UNKNOWN_FILL = "white"
EDGES_NOTE = "edges: shapes, batch dimension B"
RENDERER_ENV = "MLCACHE_LAB_RENDERER"
RENDERERS = ("auto", "graphviz", "layered")
FORMATS = ("svg", "png")
MAX_LISTED = 30
MAX_EDGE_SHAPES = 3
MAX_EQUATIONS = 12
DETAILS = ("clusters", "equations")


def legend() -> str:
    """The legend line: ``green: batched (...)   grey: ...   edges: shapes, batch dimension B``."""
    return "   ".join([*(f"{c.colour}: {c.meaning}" for c in CATEGORIES.values()), EDGES_NOTE])


class DisplayWarning(UserWarning):
    """The rich display fell back (Graphviz failing, or no renderer working)."""


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


def _check(
    graph: ClusterGraph, detail: str, annotations: Mapping[int, str] | None
) -> dict[int, str]:
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
    return notes


def _boxes(graph: ClusterGraph, detail: str, notes: Mapping[int, str]) -> list[layered.Node]:
    """What each renderer draws per cluster: the same lines, colours and bold borders."""
    boxes = []
    for c in graph.clusters:
        header = [f"#{c.id} {c.category}", f"{len(c)} eqns: {_main_primitives(c)}"]
        if c.category == "mixes":
            header.append(c.reason.removeprefix("mixes: ")[:60])
        if c.needs_batch_size:
            header.append("needs B")
        category = CATEGORIES.get(c.category)
        boxes.append(
            layered.Node(
                key=f"c{c.id}",
                header=tuple(header),
                fill=category.fill if category else UNKNOWN_FILL,
                body=tuple(_equation_lines(graph, c)) if detail == "equations" else (),
                note=tuple(notes[c.id].split("\n")) if c.id in notes else (),
                bold=c.id in notes,
            )
        )
    return boxes


def _edges(graph: ClusterGraph) -> list[layered.Edge]:
    return [
        layered.Edge(f"c{a}", f"c{b}", tuple(edge_label(graph, a, b).split("\n")))
        for a, b in graph.dependencies
    ]


def to_dot(
    graph: ClusterGraph,
    detail: str = "clusters",
    annotations: Mapping[int, str] | None = None,
) -> Any:
    """The cluster graph as a ``graphviz.Digraph``: one box per cluster, edges = dependencies.

    Colours by category (:data:`CATEGORIES`: batched green, invariant grey,
    mixes orange). Each box says its id, category, number of equations and main
    primitives (and, for a mixing cluster, which primitive mixes over which
    axis); each edge the shapes it carries, the batch dimension shown as ``B``.
    The layered renderer draws the same boxes and labels.

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
      ImportError: the ``graphviz`` Python package is missing.
    """
    import graphviz

    notes = _check(graph, detail, annotations)
    dot = graphviz.Digraph(
        name=graph.name,
        graph_attr={
            "rankdir": "TB",
            "label": legend(),
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
    for box in _boxes(graph, detail, notes):
        label = "\n".join(box.header)
        if box.body:
            label += "\n\n" + "".join(f"{line}\\l" for line in box.body)
        if box.note:
            label += "\n" + "\n".join(box.note)
        attrs = {"fillcolor": box.fill}
        if box.bold:
            attrs["penwidth"] = "2"
        dot.node(box.key, label, **attrs)
    for edge in _edges(graph):
        dot.edge(edge.tail, edge.head, label="\n".join(edge.label))
    return dot


def renderer(requested: str | None = None) -> str:
    """The renderer that draws cluster graphs: ``"graphviz"`` or ``"layered"``.

    Args:
      requested: ``"auto"`` (Graphviz when its ``dot`` program is on ``PATH``,
        else the layered renderer), ``"graphviz"`` or ``"layered"``. None:
        ``$MLCACHE_LAB_RENDERER``, else ``"auto"``.

    Raises:
      ValueError: an unknown renderer (argument or environment variable).
    """
    return _resolve(_requested(requested))


def _requested(requested: str | None) -> str:
    choice = requested or os.environ.get(RENDERER_ENV) or "auto"
    if choice not in RENDERERS:
        where = "renderer" if requested else f"${RENDERER_ENV}"
        raise ValueError(
            f"Valid options for {where} are {RENDERERS}. Got {choice!r} instead. "
            f"Fix: e.g. {RENDERER_ENV}=layered, or unset it for 'auto'."
        )
    return choice


def _resolve(choice: str) -> str:
    if choice == "auto":
        return "graphviz" if shutil.which("dot") else "layered"
    return choice


def render(
    graph: ClusterGraph,
    format: str = "svg",
    *,
    detail: str = "clusters",
    annotations: Mapping[int, str] | None = None,
    renderer: str | None = None,
) -> bytes:
    """The cluster graph drawn as SVG or PNG bytes, by :func:`renderer`'s choice.

    Under ``"auto"``, a Graphviz that fails warns (:class:`DisplayWarning`) and
    the layered renderer draws instead; a renderer asked for by name raises.

    Args:
      graph: the cluster graph.
      format: ``"svg"`` or ``"png"``.
      detail, annotations: as for :func:`to_dot`.
      renderer: ``"auto"``, ``"graphviz"`` or ``"layered"`` (see :func:`renderer`).

    Raises:
      ValueError: an unknown format, detail, renderer or annotated cluster.
    """
    if format not in FORMATS:
        raise ValueError(
            f"Valid options for 'format' are {FORMATS}. Got format={format!r} instead."
        )
    notes = _check(graph, detail, annotations)
    choice = _requested(renderer)
    if _resolve(choice) == "graphviz":
        try:
            return bytes(to_dot(graph, detail, notes).pipe(format=format))
        except Exception as error:
            if choice == "graphviz":
                raise
            warnings.warn(
                f"Graphviz could not draw the cluster graph ({type(error).__name__}: {error}); "
                "drawing it with the layered renderer instead.",
                DisplayWarning,
                stacklevel=2,
            )
    swatches = [(c.fill, c.meaning) for c in CATEGORIES.values()]
    return layered.draw(
        _boxes(graph, detail, notes), _edges(graph), swatches, EDGES_NOTE, format=format
    )


def svg(
    graph: ClusterGraph,
    *,
    detail: str = "clusters",
    annotations: Mapping[int, str] | None = None,
    renderer: str | None = None,
) -> str:
    """:func:`render` as SVG text from its ``<svg`` tag on: no XML prolog, ready to inline."""
    text = render(graph, "svg", detail=detail, annotations=annotations, renderer=renderer)
    decoded = text.decode("utf-8")
    return decoded[decoded.find("<svg") :]


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
        f"Could not draw the cluster graph ({type(error).__name__}: {error}); "
        "showing its summary and DOT source instead. " + INSTALL_HINT,
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


def mimebundle(graph: ClusterGraph) -> dict[str, str]:
    """SVG and text (one picture: no HTML copy); if nothing can draw, HTML with the DOT source."""
    text = summary(graph)
    try:
        return {"image/svg+xml": svg(graph), "text/plain": text}
    except Exception as error:  # display must never raise
        return {"text/html": _fallback(graph, error), "text/plain": text}
