"""Text summary, DOT, both renderers' pictures, and the never-raising notebook display."""

from __future__ import annotations

import html
import re
import sys
import xml.etree.ElementTree as ET

import graphviz
import jax.numpy as jnp
import pytest

from mlcache_lab.partition import DisplayWarning, display, layered, partition
from mlcache_lab.partition.display import CATEGORIES, INSTALL_HINT, RENDERER_ENV, Category

PNG = b"\x89PNG\r\n\x1a\n"


def svg_lines(svg: str) -> list[str]:
    """The text of every ``<text>`` element: one line of a label each, in both renderers."""
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


@pytest.fixture
def graph():  # type: ignore[no-untyped-def]
    def f(w, x):  # type: ignore[no-untyped-def]
        h = jnp.tanh(x @ (w * 2))
        return h - h.mean(0)

    return partition(f, jnp.ones((3, 3)), jnp.ones((4, 3)), batch_axes=(None, 0))


@pytest.fixture
def no_dot(monkeypatch):  # type: ignore[no-untyped-def]
    """A machine without Graphviz's `dot`, whatever this one has."""
    monkeypatch.delenv(RENDERER_ENV, raising=False)
    monkeypatch.setattr(display.shutil, "which", lambda name: None)


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


def test_concrete_graph_shows_why_and_still_labels_the_batch_dim(renderer) -> None:  # type: ignore[no-untyped-def]
    def f(w, x):  # type: ignore[no-untyped-def]
        h = jnp.tanh(x @ (w * 2)) + jnp.ones((4, 1))  # the batch size, hardcoded
        return h - h.mean(0)

    g = partition(f, jnp.ones((3, 3)), jnp.ones((4, 3)), batch_axes=(None, 0))
    text = repr(g)
    assert "concrete at batch size 4" in text
    assert f"  not symbolic: {g.symbolic_reason}" in text
    assert 'label="f32[B,3]"' in g.to_dot().source
    assert "f32[B,3]" in svg_lines(display.svg(g))


def test_the_picture_shows_every_cluster_edge_colour_and_the_legend(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    bundle = graph._repr_mimebundle_()
    assert set(bundle) == {"image/svg+xml", "text/plain"}  # one picture, no HTML copy of it
    assert not hasattr(graph, "_repr_html_")
    assert bundle["text/plain"] == repr(graph)
    svg = bundle["image/svg+xml"]
    assert svg.startswith("<svg")  # no XML prolog: the Explorer inlines it in HTML
    lines = svg_lines(svg)
    for c in graph.clusters:
        assert f"#{c.id} {c.category}" in lines
    # the mean's sum reduces; the division after it reads the combined value (mixes)
    assert {c.category for c in graph.clusters} == {"batched", "invariant", "mixes", "reduces"}
    assert "f32[B,3]" in lines and "f32[3,3]" in lines  # edge labels, batch dimension B
    assert any("reads values computed across samples" in line for line in lines)  # why it mixes
    assert any("batched (any slice of the batch)" in line for line in lines)  # the legend
    assert any("mixes samples" in line for line in lines)
    assert any("reduces over the batch" in line for line in lines)
    for category in CATEGORIES.values():
        assert category.fill in svg.lower()
    assert not re.search(r"stroke-width(: |=\")2\b", svg)  # nothing annotated: no bold box


def test_annotations_go_under_the_label_in_a_bold_box(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    batched = next(c.id for c in graph.clusters if c.kind == "batched")
    source = graph.to_dot(annotations={batched: "ran 3× at 3×16"}).source
    line = next(x for x in source.split("\tc")[1:] if x.startswith(f"{batched} ["))
    assert "ran 3× at 3×16" in line and "penwidth=2" in line
    assert source.count("penwidth") == 1
    svg = display.svg(graph, annotations={batched: "ran 3× at 3×16"})
    assert "ran 3× at 3×16" in svg_lines(svg)
    assert len(re.findall(r"stroke-width(: |=\")2\b", svg)) == 1
    with pytest.raises(ValueError, match=r"'annotations' name clusters \[99\]"):
        graph.to_dot(annotations={99: "x"})
    with pytest.raises(ValueError, match=r"'annotations' name clusters \[99\]"):
        display.render(graph, annotations={99: "x"})


def test_detail_equations_lists_each_clusters_equations(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    plain = graph.to_dot().source
    detailed = graph.to_dot(detail="equations").source
    assert "dot_general(f32[B,3], f32[3,3]) -> f32[B,3]\\l" in detailed
    assert "reduce_sum(f32[B,3]) -> f32[3]\\l" in detailed
    assert "mul(f32[3,3], 2.0) -> f32[3,3]\\l" in detailed  # literals by value
    assert "->" not in plain.replace(" -> c", "")  # no equations at the default detail
    lines = svg_lines(display.svg(graph, detail="equations"))
    assert "dot_general(f32[B,3], f32[3,3]) -> f32[B,3]" in lines
    assert "mul(f32[3,3], 2.0) -> f32[3,3]" in lines
    assert not any("->" in x for x in svg_lines(display.svg(graph)))
    with pytest.raises(ValueError, match=r"Valid options for 'detail' are \('clusters', "):
        graph.to_dot(detail="eqns")
    with pytest.raises(ValueError, match=r"Valid options for 'detail' are \('clusters', "):
        display.render(graph, detail="eqns")


def test_png_too(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    png = display.render(graph, "png")
    assert png[:8] == PNG and len(png) > 5000
    with pytest.raises(ValueError, match=r"Valid options for 'format' are \('svg', 'png'\)"):
        display.render(graph, "pdf")


def test_long_clusters_list_their_first_equations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(display, "MAX_EQUATIONS", 2)

    def f(x):  # type: ignore[no-untyped-def]
        return jnp.sin(jnp.cos(jnp.tanh(jnp.exp(x))))

    g = partition(f, jnp.ones((4, 3)), batch_axes=0)
    source = g.to_dot(detail="equations").source
    assert "exp(f32[B,3]) -> f32[B,3]\\l" in source and "sin(" not in source
    assert "... 2 more equations" in source


def test_a_category_is_one_entry_of_one_table(graph, renderer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A new cluster kind needs one line in CATEGORIES: colours and legends follow."""
    monkeypatch.setitem(CATEGORIES, "mixes", Category("#123abc", "teal", "mixes (a test)"))
    svg = display.svg(graph)
    assert "#123abc" in svg.lower()
    assert any("mixes (a test)" in line for line in svg_lines(svg))
    assert "teal: mixes (a test)" in display.legend() == graph.to_dot().graph_attr["label"]
    assert 'fillcolor="#123abc"' in graph.to_dot().source


def test_auto_takes_graphviz_when_dot_is_on_path_else_the_layered_renderer(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(RENDERER_ENV, raising=False)
    monkeypatch.setattr(display.shutil, "which", lambda name: None)
    assert display.renderer() == "layered"
    monkeypatch.setattr(display.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert display.renderer() == display.renderer("auto") == "graphviz"
    assert display.renderer("layered") == "layered"
    monkeypatch.setenv(RENDERER_ENV, "layered")
    assert display.renderer() == "layered"
    monkeypatch.setenv(RENDERER_ENV, "svg")
    with pytest.raises(ValueError, match=r"\$MLCACHE_LAB_RENDERER are \('auto', .* Got 'svg'"):
        display.renderer()
    with pytest.raises(ValueError, match=r"Valid options for renderer .* Got 'dot'"):
        display.renderer("dot")


def test_without_dot_the_display_is_a_picture_and_warns_nothing(graph, no_dot, recwarn) -> None:  # type: ignore[no-untyped-def]
    bundle = graph._repr_mimebundle_()
    assert "#0 invariant" in svg_lines(bundle["image/svg+xml"])
    assert not recwarn.list


@pytest.mark.parametrize(
    "error", [graphviz.ExecutableNotFound(["dot"]), RuntimeError("dot crashed")]
)
def test_a_failing_graphviz_warns_and_the_layered_renderer_draws(graph, monkeypatch, error) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise error

    monkeypatch.delenv(RENDERER_ENV, raising=False)
    monkeypatch.setattr(display.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(graphviz.Digraph, "pipe", broken)
    with pytest.warns(DisplayWarning, match="drawing it with the layered renderer instead"):
        bundle = graph._repr_mimebundle_()
    assert "#0 invariant" in svg_lines(bundle["image/svg+xml"])
    with pytest.raises(type(error)):  # asked for by name: no silent substitute
        display.render(graph, renderer="graphviz")


def test_when_nothing_can_draw_the_display_is_text_dot_source_and_a_hint(
    graph, no_dot, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'igraph'")

    monkeypatch.setattr(layered, "draw", broken)
    with pytest.warns(DisplayWarning, match="Could not draw the cluster graph .*igraph"):
        bundle = graph._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert bundle["text/plain"] == repr(graph)
    assert "digraph" in bundle["text/html"] and "pip install igraph" in bundle["text/html"]
    assert html.escape(INSTALL_HINT) in bundle["text/html"]


def test_without_the_graphviz_package_the_layered_renderer_still_draws(
    graph, no_dot, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "graphviz", None)  # import graphviz raises ImportError
    bundle = graph._repr_mimebundle_()
    assert "#0 invariant" in svg_lines(bundle["image/svg+xml"])
    with pytest.raises(ImportError):
        graph.to_dot()
