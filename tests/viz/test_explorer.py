"""The Explorer: runs a schedule from its controls, shows what ran, never raises into the kernel."""

from __future__ import annotations

import html

import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab import viz
from mlcache_lab.models import get_model
from mlcache_lab.partition import display, layered
from mlcache_lab.partition.display import INSTALL_HINT

from .conftest import example_args, mixing_fn


def _explorer(graph: mcl.ClusterGraph, **kwargs) -> viz.Explorer:  # type: ignore[no-untyped-def]
    kwargs.setdefault("store", mcl.CacheStore(None))
    kwargs.setdefault("make_args", example_args)
    return viz.Explorer(graph, **kwargs)


def test_run_shows_the_annotated_graph_timeline_and_compilations(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    e = _explorer(graph, batch_size=37, micro_batch=16)
    plan = e.run_button.click() or e.last_plan  # the button runs it
    assert e.last_error is None and plan is not None
    assert (plan.batch_size, plan.policy, plan.micro_batch) == (37, "chunk", 16)
    view = html.unescape(e.graph_view.value)  # Graphviz's SVG writes "-" as "&#45;"
    assert "<svg" in view and "<?xml" not in view and "<!DOCTYPE" not in view
    split = [s for s in plan.segments if s.mode == "split"]
    for s in split:
        for cid in s.clusters:
            assert viz.cluster_notes(plan.timeline)[cid].startswith(
                "ran 3× at 3×16 (11 rows padding)"
            )
    assert "ran 3× at 3×16 (11 rows padding)" in view
    assert "batch-invariant" in view  # the weight preprocessing cluster ran once
    assert e.timeline_view.value[:8] == b"\x89PNG\r\n\x1a\n"
    comps = e.compilations_view.value
    assert f"{plan.timeline.compile_count()} XLA compilations" in comps
    assert comps.count(">miss<") == 3 * len(plan.timeline.compilations)
    assert "XLA compilations</b>" in e.status.value and "Run 1: batch size 37" in e.status.value
    assert e.history[-1]["compilations"] == plan.timeline.compile_count() > 0


def test_a_new_batch_size_compiles_nothing_new_for_batched_segments(graph) -> None:  # type: ignore[no-untyped-def]
    for policy, first, second in (("chunk", 37, 20), ("buckets", 12, 4)):
        e = _explorer(graph, policy=policy, batch_size=first, micro_batch=16)
        e.run()
        e.batch_size.value = second
        plan = e.run()
        assert plan is not None and plan.batch_size == second
        # Only the segment that mixes samples (compiled per batch size) compiles again.
        compiled = {c.segment for c in plan.timeline.compilations if c.compiled}
        assert all(plan.segments[i].mode == "whole" for i in compiled), policy
        # (the mix, and the invariant work on B such as a mean's 1/B, each once at most)
        whole = sum(s.mode == "whole" for s in plan.segments)
        assert e.history[-1]["compilations"] == len(compiled) <= whole
        assert f"Run 2: batch size {second}" in e.status.value


def test_a_purely_batched_model_compiles_nothing_at_a_new_batch_size() -> None:
    e = viz.Explorer(get_model("mlp", features=8, hidden=8, depth=2), store=mcl.CacheStore(None))
    e.batch_size.value = 37
    e.run()
    e.batch_size.value = 21
    plan = e.run()
    assert plan is not None and plan.timeline.compile_count() == 0
    assert "<b>0 XLA compilations</b>" in e.status.value
    assert "No compilations" in e.compilations_view.value
    assert [h["batch_size"] for h in e.history] == [37, 21]
    assert "ran 2× at 2×16 (11 rows padding)" in html.unescape(e.graph_view.value)


def test_hits_are_shown_as_hits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = mcl.CacheStore(tmp_path / "store")
    first = viz.Explorer(mixing_fn, *example_args(4), batch_axes=(None, 0), store=store)
    first.batch_size.value = 9
    assert first.run() is not None
    # A new graph of the same function: new executables, found in the store's levels.
    again = viz.Explorer(mixing_fn, *example_args(4), batch_axes=(None, 0), store=store)
    again.batch_size.value = 9
    plan = again.run()
    assert plan is not None and plan.timeline.compile_count() == 0
    assert len(plan.timeline.compilations) > 0
    assert "hit (memory)" in again.compilations_view.value or "hit (disk)" in (
        again.compilations_view.value
    )
    assert ">miss<" not in again.compilations_view.value
    assert "executable from" in html.unescape(again.graph_view.value)


def test_errors_appear_in_the_widget_and_clear_on_success(graph) -> None:  # type: ignore[no-untyped-def]
    def make_args(n: int):  # type: ignore[no-untyped-def]
        if n == 13:
            raise RuntimeError("no data for 13 rows")
        return example_args(n)

    e = _explorer(graph, make_args=make_args, batch_size=13)
    e.run_button.click()  # would raise into the kernel if the callback raised
    assert isinstance(e.last_error, RuntimeError)
    assert "RuntimeError: no data for 13 rows" in e.error_view.value
    assert "Run failed at batch size 13" in e.status.value
    assert not e.run_button.disabled and e.history == []
    e.batch_size.value = 12
    assert e.run() is not None
    assert e.last_error is None and e.error_view.value == ""


def test_bad_bucket_sizes_are_an_error_in_the_widget(graph) -> None:  # type: ignore[no-untyped-def]
    e = _explorer(graph, policy="buckets", bucket_sizes=(4, 8), batch_size=6)
    assert e.run() is None
    assert "cannot add up to batch_size=6" in e.error_view.value


def test_controls_follow_the_policy(graph) -> None:  # type: ignore[no-untyped-def]
    e = _explorer(graph)
    assert e.policy.options == ("whole", "chunk", "buckets", "devices")
    e.policy.value = "whole"
    assert e.micro_batch.disabled
    e.policy.value = "buckets"
    assert not e.micro_batch.disabled and e.micro_batch.description == "largest bucket"
    e.micro_batch.value = 8
    e.batch_size.value = 13
    plan = e.run()
    assert plan is not None and [c.run_size for c in plan.chunks] == [8, 4, 1]


def test_arguments_for_any_batch_size() -> None:
    model = get_model("mlp", features=8, hidden=8, depth=2)
    e = viz.Explorer(model, store=mcl.CacheStore(None))
    _params, x = e.args_for(5)
    assert x.shape == (5, 8)
    w, xs = viz.Explorer(mixing_fn, *example_args(4), batch_axes=(None, 0)).args_for(10)
    np.testing.assert_array_equal(xs[4:8], example_args(4)[1])  # rows repeated
    g = mcl.partition(mixing_fn, *example_args(4), batch_axes=(None, 0))
    w, xs = viz.Explorer(g).args_for(7)  # from the graph's argument shapes
    assert (w.shape, xs.shape, xs.dtype) == ((3, 3), (7, 3), np.float32)


def test_bad_targets_say_what_to_pass(graph) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=r"Got int 3\. Fix: Explorer\(g\)"):
        viz.Explorer(3)
    with pytest.raises(ValueError, match=r"Got Explorer\(mixing_fn\) with none"):
        viz.Explorer(mixing_fn)
    with pytest.raises(ValueError, match="takes the graph alone"):
        viz.Explorer(graph, jnp.ones(3))
    with pytest.raises(ValueError, match="Valid options for 'policy'"):
        viz.Explorer(graph, policy="fast")


def test_when_nothing_can_draw_the_graph_shows_its_source_and_a_hint(graph, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'igraph'")

    monkeypatch.setattr(display.shutil, "which", lambda name: None)  # no `dot` either
    monkeypatch.delenv(display.RENDERER_ENV, raising=False)
    monkeypatch.setattr(layered, "draw", broken)
    e = _explorer(graph, batch_size=5)
    view = html.unescape(e.graph_view.value)
    assert INSTALL_HINT in view and "digraph" in view and "No module named 'igraph'" in view
    assert e.run() is not None  # a run still works and shows the annotated source
    view = html.unescape(e.graph_view.value)
    assert "ran 1×" in view and "<svg" not in view


def test_displays_as_a_widget_and_falls_back_to_text(graph, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    e = _explorer(graph)
    bundle = e._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert (
        bundle["text/plain"]
        == repr(e)
        == ("Explorer(mixing_fn: batch size 4, policy 'chunk', micro-batch 16; 0 runs)")
    )

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no widget manager")

    monkeypatch.setattr(type(e.widget), "_repr_mimebundle_", broken)
    with pytest.warns(viz.ExplorerWarning, match="no widget manager"):
        bundle = e._repr_mimebundle_()
    assert bundle == {"text/plain": repr(e)}
