"""A layered drawing of a directed acyclic graph with what pip installs: igraph + matplotlib.

This is the cluster graph's renderer when Graphviz's ``dot`` program is not
installed (see :mod:`.display`, which decides what to draw; this module only
draws boxes, labelled edges and a legend). The picture follows Graphviz's
``dot`` algorithm, a Sugiyama-style layered layout:

1. *Layers.* Each node goes one layer below its lowest producer (longest
   path), then as low as its consumers allow, so a node that only feeds the
   bottom of the graph sits next to what it feeds. Each edge gets a label
   node in the half-layer above its consumer: labels take room like boxes do
   and never overlap one another (what ``dot`` does with edge labels too).
2. *Order within layers.* igraph's ``layout_sugiyama`` (the barycenter
   heuristic; long edges become chains of dummy nodes) orders every layer to
   reduce crossings.
3. *Coordinates.* igraph places nodes as points; ours are boxes of measured
   text. Each layer keeps igraph's order while the boxes are spread to their
   widths by an exact least-squares placement (isotonic regression with
   minimal gaps), then a few sweeps pull every node and dummy towards its
   neighbours so long edges run straight.
4. *Drawing.* Rounded boxes, text measured with matplotlib's own renderer,
   edges as vertical-tangent Bézier curves through their dummies, saved as
   SVG (text kept as text) or PNG from the same figure.

Why igraph: a compiled, maintained library with wheels for every platform,
whose Sugiyama layout is well tested; the pure-Python alternative (grandalf)
has had no release since 2023 and is slow beyond a few hundred nodes.
"""

from __future__ import annotations

import dataclasses
import graphlib
import io
import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["Edge", "Layout", "Node", "draw", "layout"]

FORMATS = ("svg", "png")
FONT_SIZE = 10.0  # points, as the Graphviz view
EDGE_FONT_SIZE = 9.0
LINE = 1.25  # line height, in font sizes
PAD_X, PAD_Y = 7.0, 5.0  # text to box border
GAP = 14.0  # between neighbours in a layer
LAYER_GAP = 20.0  # between layers: room for the curves
DUMMY_HALF = 3.0  # half the room a long edge takes where it crosses a layer
MARGIN = 10.0
SWEEPS = 8
MAX_PNG_PIXELS = 25_000_000  # a PNG larger than this is drawn at a lower resolution
PNG_DPI = 144.0


@dataclasses.dataclass(frozen=True)
class Node:
    """A box: centred ``header`` lines, left-aligned ``body`` lines, a centred ``note``.

    ``bold`` draws the border twice as thick (the Explorer's annotated clusters).
    """

    key: str
    header: tuple[str, ...]
    fill: str
    body: tuple[str, ...] = ()
    note: tuple[str, ...] = ()
    bold: bool = False


@dataclasses.dataclass(frozen=True)
class Edge:
    """An arrow from node ``tail`` to node ``head`` (keys), labelled with ``label`` lines."""

    tail: str
    head: str
    label: tuple[str, ...] = ()


@dataclasses.dataclass
class _Item:
    """One thing a layer holds: a box, an edge label, or a dummy where a long edge passes."""

    layer: int
    order: float  # igraph's x: the order within the layer
    left: float  # extent left of the anchor (the x an edge passes through)
    right: float
    height: float
    weight: float
    x: float = 0.0


class _Measure:
    """Text widths in points, unhinted (the outlines' own metrics): right at any resolution."""

    def __init__(self) -> None:
        from matplotlib.font_manager import FontProperties
        from matplotlib.textpath import TextToPath

        self._paths = TextToPath()
        self._props = {
            size: FontProperties(family="sans-serif", size=size)
            for size in (FONT_SIZE, EDGE_FONT_SIZE)
        }
        self._cache: dict[tuple[str, float], float] = {}

    def width(self, text: str, size: float = FONT_SIZE) -> float:
        if not text:
            return 0.0
        key = (text, size)
        if key not in self._cache:
            w, _, _ = self._paths.get_text_width_height_descent(
                text, self._props[size], ismath=False
            )
            self._cache[key] = float(w)
        return self._cache[key]


def _box_lines(node: Node) -> list[tuple[str, str]]:
    """(alignment, text) per line: header centred, a blank, body left, note centred."""
    lines = [("center", line) for line in node.header]
    if node.body:
        lines += [("center", ""), *(("left", line) for line in node.body)]
    lines += [("center", line) for line in node.note]
    return lines


def _layers(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Longest-path ranks, then each node as low as its consumers allow."""
    consumers: list[list[int]] = [[] for _ in range(n)]
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for i in range(n):
        sorter.add(i)
    for a, b in edges:
        consumers[a].append(b)
        sorter.add(b, a)
    try:  # any topological order gives the same ranks
        order = list(sorter.static_order())
    except graphlib.CycleError as err:
        raise ValueError(
            f"The layered renderer draws acyclic graphs; this one has a cycle through "
            f"{len(err.args[1]) - 1} nodes. Fix: render it with Graphviz (to_dot())."
        ) from None
    rank = [0] * n
    for i in order:
        for j in consumers[i]:
            rank[j] = max(rank[j], rank[i] + 1)
    for i in reversed(order):
        if consumers[i]:
            rank[i] = min(rank[j] for j in consumers[i]) - 1
    return rank


def _isotonic(targets: list[float], weights: list[float]) -> list[float]:
    """The non-decreasing sequence closest to ``targets`` (weighted least squares): PAVA."""
    blocks: list[list[float]] = []  # [weighted sum, weight, count]
    for t, w in zip(targets, weights, strict=True):
        blocks.append([t * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, wt, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += wt
            blocks[-1][2] += c
    out: list[float] = []
    for s, w, c in blocks:
        out += [s / w] * int(c)
    return out


def _place(row: list[_Item], targets: list[float]) -> None:
    """Anchors as close to ``targets`` as the items' extents and :data:`GAP` allow, in order."""
    offsets = [0.0]
    for a, b in itertools.pairwise(row):
        offsets.append(offsets[-1] + a.right + GAP + b.left)
    shifted = _isotonic(
        [t - o for t, o in zip(targets, offsets, strict=True)], [i.weight for i in row]
    )
    for item, z, o in zip(row, shifted, offsets, strict=True):
        item.x = z + o


def _pull(item: _Item, neighbours: list[float]) -> float:
    """Where the sweeps want an item: dummies and labels on their edge, boxes halfway there."""
    if not neighbours:
        return item.x
    mean = sum(neighbours) / len(neighbours)
    return mean if item.weight > 1 else (item.x + mean) / 2


def _curve(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], list[Any]]:
    """Path vertices and codes: a vertical-tangent cubic between successive points."""
    from matplotlib.path import Path

    verts = [points[0]]
    codes: list[Any] = [Path.MOVETO]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 == x1:
            verts.append((x1, y1))
            codes.append(Path.LINETO)
            continue
        dy = (y1 - y0) / 2
        verts += [(x0, y0 + dy), (x1, y1 - dy), (x1, y1)]
        codes += [Path.CURVE4] * 3
    return verts, codes


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where everything goes, in points from the top-left corner (y grows downwards).

    Attributes:
      width, height: the graph's extent, legend excluded.
      boxes: per node, ``(x0, y0, width, height)`` of its box.
      labels: per edge, ``(x0, y0, width, height)`` of its label's text.
      paths: per edge, the points its curve passes, from the tail's box to the head's.
    """

    width: float
    height: float
    boxes: list[tuple[float, float, float, float]]
    labels: list[tuple[float, float, float, float]]
    paths: list[list[tuple[float, float]]]


def _check(nodes: Sequence[Node], edges: Sequence[Edge]) -> list[tuple[int, int]]:
    index = {node.key: i for i, node in enumerate(nodes)}
    for e in edges:
        for end in (e.tail, e.head):
            if end not in index:
                raise ValueError(
                    f"Edge {e.tail!r} -> {e.head!r} names {end!r}, which is no node's key. "
                    f"Fix: add a Node(key={end!r}, ...) or drop the edge."
                )
    return [(index[e.tail], index[e.head]) for e in edges]


def layout(nodes: Sequence[Node], edges: Sequence[Edge]) -> Layout:
    """The layered layout of an acyclic graph (see the module docstring for the steps).

    Raises:
      ValueError: an edge naming no node, or a cycle.
    """
    import igraph

    pairs = _check(nodes, edges)
    measure = _Measure()
    line_h, edge_line_h = FONT_SIZE * LINE, EDGE_FONT_SIZE * LINE

    # Items: boxes 0..n-1, then one label per edge; layers doubled to make room for labels.
    items: list[_Item] = []
    for node in nodes:
        lines = _box_lines(node)
        width = max((measure.width(t) for _, t in lines), default=0.0) + 2 * PAD_X
        items.append(_Item(0, 0.0, width / 2, width / 2, len(lines) * line_h + 2 * PAD_Y, 1.0))
    rank = _layers(len(nodes), pairs)
    for item, r in zip(items, rank, strict=True):
        item.layer = 2 * r
    graph_edges: list[tuple[int, int]] = []
    for (a, b), edge in zip(pairs, edges, strict=True):
        width = max((measure.width(t, EDGE_FONT_SIZE) for t in edge.label), default=0.0)
        label = len(items)
        # The edge passes on the label's left; its text stands to the right.
        items.append(
            _Item(
                2 * rank[b] - 1,
                0.0,
                DUMMY_HALF,
                width + 2 * DUMMY_HALF,
                len(edge.label) * edge_line_h,
                2.0,
            )
        )
        graph_edges += [(a, label), (label, b)]

    # igraph orders the layers (and routes the long edges through dummies).
    g = igraph.Graph(n=len(items), edges=graph_edges, directed=True)
    sugiyama = g.layout_sugiyama(layers=[it.layer for it in items], maxiter=200)
    for item, (x, _) in zip(items, sugiyama.coords, strict=True):
        item.order = float(x)
    chains: list[list[int]] = []  # per graph edge: its items from tail to head
    for (a, b), controls in zip(graph_edges, sugiyama.edge_routing, strict=True):
        chain = [a]
        for x, y in controls:
            chain.append(len(items))
            items.append(_Item(round(y), float(x), DUMMY_HALF, DUMMY_HALF, 0.0, 2.0))
        chains.append([*chain, b])

    rows: dict[int, list[int]] = {}
    for k, item in enumerate(items):
        rows.setdefault(item.layer, []).append(k)
    layers = sorted(rows)
    for layer in layers:
        rows[layer].sort(key=lambda k: items[k].order)
    widths = sorted(it.left + it.right for it in items[: len(nodes)])
    unit = (widths[len(widths) // 2] if widths else 0.0) + GAP
    for layer in layers:
        row = [items[k] for k in rows[layer]]
        _place(row, [it.order * unit for it in row])
    up: list[list[int]] = [[] for _ in items]
    down: list[list[int]] = [[] for _ in items]
    for chain in chains:
        for a, b in itertools.pairwise(chain):
            down[a].append(b)
            up[b].append(a)
    for _ in range(SWEEPS):  # pull towards neighbours: downwards, then upwards
        for sweep, neighbours in ((layers[1:], up), (layers[-2::-1], down)):
            for layer in sweep:
                row = [items[k] for k in rows[layer]]
                targets = [
                    _pull(it, [items[j].x for j in neighbours[k]])
                    for k, it in zip(rows[layer], row, strict=True)
                ]
                _place(row, targets)

    # Vertical: a band per non-empty layer, as tall as its tallest item.
    band = {layer: max(items[k].height for k in rows[layer]) for layer in layers}
    top: dict[int, float] = {}
    y = MARGIN
    for layer in layers:
        top[layer] = y
        y += band[layer] + LAYER_GAP
    height = y - LAYER_GAP + MARGIN if layers else 2 * MARGIN
    left = min((it.x - it.left for it in items), default=0.0)
    for it in items:
        it.x += MARGIN - left
    width = max((it.x + it.right for it in items), default=MARGIN) + MARGIN

    def y0(it: _Item) -> float:  # items sit in the middle of their band
        return top[it.layer] + (band[it.layer] - it.height) / 2

    boxes = [(it.x - it.left, y0(it), it.left + it.right, it.height) for it in items[: len(nodes)]]
    labels = [
        (it.x + 2 * DUMMY_HALF, y0(it), it.right - 2 * DUMMY_HALF, it.height)
        for it in items[len(nodes) : len(nodes) + len(edges)]
    ]

    # Edges leave a box's bottom and enter the next one's top, spread along the border.
    vias = [chains[2 * e][1:] + chains[2 * e + 1][1:-1] for e in range(len(edges))]
    outgoing: dict[int, list[int]] = {}
    incoming: dict[int, list[int]] = {}
    for e, (a, b) in enumerate(pairs):
        outgoing.setdefault(a, []).append(e)
        incoming.setdefault(b, []).append(e)

    def ports(groups: dict[int, list[int]], pick: int) -> dict[int, float]:
        out = {}
        for node, members in groups.items():
            it = items[node]
            span = (it.left + it.right) * 0.6
            ordered = sorted(members, key=lambda e: items[vias[e][pick]].x)
            for k, e in enumerate(ordered):
                out[e] = it.x - span / 2 + span * (k + 1) / (len(members) + 1)
        return out

    starts, ends = ports(outgoing, 0), ports(incoming, -1)
    paths = []
    for e, (a, b) in enumerate(pairs):
        tail, head = items[a], items[b]
        # Straight out of a box to the edge of its band (a taller box may stand beside it),
        # straight down where it passes a label's text or (a dummy) a whole band: the
        # curves bend only between layers, where nothing stands.
        points = [
            (starts[e], boxes[a][1] + boxes[a][3]),
            (starts[e], top[tail.layer] + band[tail.layer]),
        ]
        for k in vias[e]:
            it = items[k]
            half = (it.height if it.height else band[it.layer]) / 2
            middle = top[it.layer] + band[it.layer] / 2
            points += [(it.x, middle - half), (it.x, middle + half)]
        points += [(ends[e], top[head.layer]), (ends[e], boxes[b][1])]
        paths.append([p for k, p in enumerate(points) if k == 0 or p != points[k - 1]])
    return Layout(width, height, boxes, labels, paths)


def draw(
    nodes: Sequence[Node],
    edges: Sequence[Edge],
    legend: Sequence[tuple[str, str]] = (),
    legend_note: str = "",
    format: str = "svg",
) -> bytes:
    """The graph drawn in layers, top to bottom, as SVG (UTF-8) or PNG bytes.

    Args:
      nodes: the boxes; their keys name them in ``edges``.
      edges: the arrows; the graph must be acyclic.
      legend: ``(fill colour, text)`` swatches drawn under the graph.
      legend_note: a line of text after the swatches.
      format: ``"svg"`` or ``"png"``.

    Raises:
      ValueError: an unknown format, an edge naming no node, or a cycle.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    if format not in FORMATS:
        raise ValueError(
            f"Valid options for 'format' are {FORMATS}. Got format={format!r} instead."
        )
    where = layout(nodes, edges)
    measure = _Measure()
    line_h, edge_line_h = FONT_SIZE * LINE, EDGE_FONT_SIZE * LINE
    legend_h = line_h + 2 * PAD_Y + MARGIN if legend or legend_note else 0.0
    legend_w = (
        2 * MARGIN
        + sum(2 * line_h + measure.width(text, EDGE_FONT_SIZE) + GAP for _, text in legend)
        + measure.width(legend_note, EDGE_FONT_SIZE)
    )
    width = max(where.width, legend_w if legend_h else 0.0)
    height = where.height + legend_h

    fig = Figure(figsize=(width / 72, height / 72), dpi=72)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()

    def text(x: float, y: float, s: str, size: float, ha: str = "left") -> None:
        ax.text(
            x,
            y,
            s,
            ha=ha,
            va="center_baseline",
            fontsize=size,
            zorder=3,
            family="sans-serif",
            parse_math=False,
            clip_on=False,
        )

    for node, (x0, y0, w, h) in zip(nodes, where.boxes, strict=True):
        box = FancyBboxPatch(
            (x0, y0),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=5",
            facecolor=node.fill,
            edgecolor="black",
            linewidth=2.0 if node.bold else 1.0,
            zorder=2,
            clip_on=False,
        )
        box.set_gid(f"node-{node.key}")
        ax.add_patch(box)
        for k, (align, line) in enumerate(_box_lines(node)):
            if line:
                x = x0 + PAD_X if align == "left" else x0 + w / 2
                text(x, y0 + PAD_Y + (k + 0.5) * line_h, line, FONT_SIZE, align)
    for edge, points, (x0, y0, _, _) in zip(edges, where.paths, where.labels, strict=True):
        verts, codes = _curve(points)
        arrow = FancyArrowPatch(
            path=Path(verts, codes),
            arrowstyle="-|>,head_length=6,head_width=3",
            mutation_scale=1,
            linewidth=1.0,
            color="black",
            shrinkA=0,
            shrinkB=0,
            zorder=1,
            clip_on=False,
        )
        arrow.set_gid(f"edge-{edge.tail}-{edge.head}")
        ax.add_patch(arrow)
        for k, line in enumerate(edge.label):
            text(x0, y0 + (k + 0.5) * edge_line_h, line, EDGE_FONT_SIZE)
    if legend_h:
        x = MARGIN
        y_mid = where.height + PAD_Y + line_h / 2
        for fill, meaning in legend:
            ax.add_patch(
                FancyBboxPatch(
                    (x, y_mid - line_h / 2),
                    1.6 * line_h,
                    line_h,
                    boxstyle="round,pad=0,rounding_size=3",
                    facecolor=fill,
                    edgecolor="black",
                    linewidth=0.8,
                    clip_on=False,
                )
            )
            x += 2 * line_h
            text(x, y_mid, meaning, EDGE_FONT_SIZE)
            x += measure.width(meaning, EDGE_FONT_SIZE) + GAP
        text(x, y_mid, legend_note, EDGE_FONT_SIZE)
    return _save(fig, format, width, height)


def _save(fig: Any, format: str, width: float, height: float) -> bytes:
    import matplotlib

    buf = io.BytesIO()
    if format == "svg":
        # Text stays text (searchable, small); fixed ids make the output reproducible.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "mlcache_lab"}):
            fig.savefig(buf, format="svg", metadata={"Date": None})
        # matplotlib's `*{...}` style rule would restyle every SVG of a page it is inlined in.
        return re.sub(rb"<style[^>]*>\*\{[^}]*\}</style>", b"", buf.getvalue(), count=1)
    else:
        pixels = (width / 72) * (height / 72) * PNG_DPI**2
        dpi = PNG_DPI if pixels <= MAX_PNG_PIXELS else PNG_DPI * math.sqrt(MAX_PNG_PIXELS / pixels)
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
