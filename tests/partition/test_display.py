"""Text summary, Graphviz view, and the never-raising notebook display."""

from __future__ import annotations

import graphviz
import jax.numpy as jnp
import pytest

from mlcache_lab.partition import DisplayWarning, display, partition
from mlcache_lab.partition.display import COLORS, INSTALL_HINT


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


def test_colours_tell_batched_invariant_and_mixing_apart(graph) -> None:  # type: ignore[no-untyped-def]
    source = graph.to_dot().source
    for c in graph.clusters:
        line = next(x for x in source.split("\tc")[1:] if x.startswith(f"{c.id} ["))
        assert f'fillcolor="{COLORS[c.category]}"' in line
        assert f"#{c.id} {c.category}" in line
    assert len({COLORS[k] for k in ("batched", "invariant", "mixes", "reduces")}) == 4
    # the mean's sum reduces; the division after it reads the combined value (mixes)
    assert {c.category for c in graph.clusters} == {"batched", "invariant", "mixes", "reduces"}
    assert "reads values computed across samples" in source  # why it mixes
    assert "green: batched" in source and "orange: mixes samples" in source  # the legend
    assert "blue: reduces over the batch" in source


def test_detail_equations_lists_each_clusters_equations(graph) -> None:  # type: ignore[no-untyped-def]
    plain = graph.to_dot().source
    detailed = graph.to_dot(detail="equations").source
    assert "dot_general(f32[B,3], f32[3,3]) -> f32[B,3]\\l" in detailed
    assert "reduce_sum(f32[B,3]) -> f32[3]\\l" in detailed
    assert "mul(f32[3,3], 2.0) -> f32[3,3]\\l" in detailed  # literals by value
    assert "->" not in plain.replace(" -> c", "")  # no equations at the default detail
    with pytest.raises(ValueError, match=r"Valid options for 'detail' are \('clusters', "):
        graph.to_dot(detail="eqns")


def test_long_clusters_list_their_first_equations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(display, "MAX_EQUATIONS", 2)

    def f(x):  # type: ignore[no-untyped-def]
        return jnp.sin(jnp.cos(jnp.tanh(jnp.exp(x))))

    g = partition(f, jnp.ones((4, 3)), batch_axes=0)
    source = g.to_dot(detail="equations").source
    assert "exp(f32[B,3]) -> f32[B,3]\\l" in source and "sin(" not in source
    assert "... 2 more equations" in source


def test_annotations_go_under_the_label_in_a_bold_box(graph) -> None:  # type: ignore[no-untyped-def]
    batched = next(c.id for c in graph.clusters if c.kind == "batched")
    source = graph.to_dot(annotations={batched: "ran 3× at 3×16"}).source
    line = next(x for x in source.split("\tc")[1:] if x.startswith(f"{batched} ["))
    assert "ran 3× at 3×16" in line and "penwidth=2" in line
    assert source.count("penwidth") == 1
    with pytest.raises(ValueError, match=r"'annotations' name clusters \[99\]"):
        graph.to_dot(annotations={99: "x"})


def test_html_is_svg_without_an_xml_prolog(graph) -> None:  # type: ignore[no-untyped-def]
    try:
        graphviz.Digraph().pipe(format="svg")
    except graphviz.ExecutableNotFound:
        pytest.skip("Graphviz `dot` is not installed")
    assert graph._repr_html_().startswith("<svg")


def test_without_the_graphviz_package_the_display_is_text_and_a_hint(graph, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sys

    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz raises ImportError
    with pytest.warns(DisplayWarning, match="Install Graphviz"):
        bundle = graph._repr_mimebundle_()
    assert bundle["text/plain"] == repr(graph)
    assert "no DOT source: ModuleNotFoundError" in bundle["text/html"]
    assert INSTALL_HINT.split(":")[0] in bundle["text/html"]
