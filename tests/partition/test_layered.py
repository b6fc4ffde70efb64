"""The layered renderer's layout: nothing overlaps, edges run downwards, big graphs stay legible."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest

from mlcache_lab.partition import display, layered, partition

Box = tuple[float, float, float, float]


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _check_legible(where: layered.Layout, nodes: list[layered.Node]) -> None:
    rects = where.boxes + where.labels
    for a, b in itertools.combinations(rects, 2):
        assert not _overlap(a, b), (a, b)
    for x0, y0, w, h in rects:
        assert x0 >= 0 and x0 + w <= where.width and y0 >= 0 and y0 + h <= where.height
    for box, node in zip(where.boxes, nodes, strict=True):  # room for every line
        assert box[3] >= layered.FONT_SIZE * len(node.header + node.body + node.note)
    for path in where.paths:
        ys = [y for _, y in path]
        assert ys == sorted(ys)  # downwards only: producers above their consumers


def _cnn(layers: int):  # type: ignore[no-untyped-def]
    """Conv + batch-norm (training mode: mixes samples) blocks: a real model's graph."""
    flax = pytest.importorskip("flax.linen")

    class CNN(flax.Module):
        @flax.compact
        def __call__(self, x):  # type: ignore[no-untyped-def]
            for _ in range(layers):
                x = flax.Conv(4, (3, 3))(x)
                x = flax.relu(flax.BatchNorm(use_running_average=False)(x))
            return flax.Dense(3)(x.mean((1, 2)))

    model, x = CNN(), jnp.ones((4, 8, 8, 3))
    variables = model.init(jax.random.key(0), x)

    def apply(variables, x):  # type: ignore[no-untyped-def]
        return model.apply(variables, x, mutable=["batch_stats"])[0]

    # The patent's plain growth: many clusters, the hardest layout to keep legible.
    return partition(apply, variables, x, batch_axes=(None, 0), growth="plain")


@pytest.mark.parametrize("detail", ["clusters", "equations"])
def test_a_real_models_graph_lays_out_without_overlaps(detail: str) -> None:
    g = _cnn(6)
    assert len(g.clusters) >= 30
    notes = display._check(g, detail, None)
    nodes, edges = display._boxes(g, detail, notes), display._edges(g)
    where = layered.layout(nodes, edges)
    _check_legible(where, nodes)
    assert len(where.paths) == len(g.dependencies)
    rows = {round(y) for _, y, _, _ in where.boxes}
    assert len(rows) >= 12  # layered top to bottom, not one row


def test_every_producer_is_drawn_above_its_consumers() -> None:
    g = _cnn(2)
    notes = display._check(g, "clusters", None)
    where = layered.layout(display._boxes(g, "clusters", notes), display._edges(g))
    for a, b in g.dependencies:
        assert where.boxes[a][1] + where.boxes[a][3] < where.boxes[b][1]


def test_graphs_without_edges_or_nodes_and_bad_input() -> None:
    lone = [layered.Node("a", ("alone",), "#ffffff")]
    assert layered.draw(lone, []).startswith(b"<?xml")
    assert layered.draw([], [], [("#ffffff", "nothing")], "note", format="png")[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"names 'b', which is no node's key"):
        layered.draw(lone, [layered.Edge("a", "b")])
    two = [*lone, layered.Node("b", ("b",), "#ffffff")]
    with pytest.raises(ValueError, match="has a cycle through 2 nodes"):
        layered.draw(two, [layered.Edge("a", "b"), layered.Edge("b", "a")])
    with pytest.raises(ValueError, match=r"Valid options for 'format' are \('svg', 'png'\)"):
        layered.draw(lone, [], format="jpg")
