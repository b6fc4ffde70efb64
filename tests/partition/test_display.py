"""Text summary, Graphviz view, and the never-raising notebook display."""

from __future__ import annotations

import graphviz
import jax.numpy as jnp
import pytest

from mlcache_lab.partition import DisplayWarning, partition
from mlcache_lab.partition.display import INSTALL_HINT


@pytest.fixture
def graph():  # type: ignore[no-untyped-def]
    def f(w, x):  # type: ignore[no-untyped-def]
        h = jnp.tanh(x @ (w * 2))
        return h - h.mean(0)

    return partition(f, jnp.ones((3, 3)), jnp.ones((4, 3)), batch_axes=(None, 0))


def test_repr_summarises_clusters(graph) -> None:  # type: ignore[no-untyped-def]
    text = repr(graph)
    assert text.startswith("ClusterGraph(f: ")
    assert "symbolic batch B (example 4)" in text and "not symbolic" not in text
    assert "(needs B)" in text  # the mean's 1/B
    assert f"{len(graph.clusters)} clusters" in text
    for c in graph.clusters:
        assert f"#{c.id} " in text
    assert "reduce_sum" in text and "dot_general" in text
    assert str(graph) == text


def test_to_dot_has_a_node_per_cluster_and_an_edge_per_dependency(graph) -> None:  # type: ignore[no-untyped-def]
    dot = graph.to_dot()
    assert isinstance(dot, graphviz.Digraph)
    for c in graph.clusters:
        assert f"c{c.id} [" in dot.source
    for a, b in graph.dependencies:
        assert f"c{a} -> c{b}" in dot.source
    assert 'label="f32[B,3]"' in dot.source  # the batched activations, batch dim as B
    assert 'label="f32[3,3]"' in dot.source  # the invariant w * 2


def test_concrete_graph_shows_why_and_still_labels_the_batch_dim() -> None:
    def f(w, x):  # type: ignore[no-untyped-def]
        h = jnp.tanh(x @ (w * 2)) + jnp.ones((4, 1))  # the batch size, hardcoded
        return h - h.mean(0)

    g = partition(f, jnp.ones((3, 3)), jnp.ones((4, 3)), batch_axes=(None, 0))
    text = repr(g)
    assert "concrete at batch size 4" in text
    assert f"  not symbolic: {g.symbolic_reason}" in text
    assert 'label="f32[B,3]"' in g.to_dot().source


def test_mimebundle_is_svg_when_graphviz_works(graph) -> None:  # type: ignore[no-untyped-def]
    try:
        graphviz.Digraph().pipe(format="svg")
    except graphviz.ExecutableNotFound:
        pytest.skip("Graphviz `dot` is not installed")
    bundle = graph._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"]
    assert bundle["text/plain"] == repr(graph)
    assert "<svg" in graph._repr_html_()


@pytest.mark.parametrize(
    "error", [graphviz.ExecutableNotFound(["dot"]), RuntimeError("dot crashed")]
)
def test_display_falls_back_to_dot_source_and_warns(graph, monkeypatch, error) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.setattr(graphviz.Digraph, "pipe", broken)
    with pytest.warns(DisplayWarning, match="Install Graphviz"):
        bundle = graph._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert bundle["text/plain"] == repr(graph)
    assert "digraph" in bundle["text/html"] and INSTALL_HINT.split(":")[0] in bundle["text/html"]
    with pytest.warns(DisplayWarning):
        assert "digraph" in graph._repr_html_()
