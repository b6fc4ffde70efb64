"""Every object a notebook shows has a text repr and a rich one, and neither raises."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import pytest

import mlcache_lab as mcl
from mlcache_lab.schedule import Timeline

from .conftest import example_args


def _both(obj: Any) -> tuple[str, str]:
    text = repr(obj)
    rich = obj._repr_html_() if hasattr(obj, "_repr_html_") else ""
    if hasattr(obj, "_repr_mimebundle_"):
        rich += str(obj._repr_mimebundle_())
    return text, rich


def test_reports_plans_and_timelines_show_as_text_and_html(graph, renderer) -> None:  # type: ignore[no-untyped-def]
    f = mcl.cached_jit(lambda x: jnp.cos(x) + 1, store=mcl.CacheStore(None))
    f(jnp.ones(3))
    cold = f.last_report
    f(jnp.ones(3))
    fast = f.last_report
    plan = mcl.schedule(graph, 9, "chunk", 4, store=mcl.CacheStore(None))
    unrun_text, unrun_html = _both(plan)  # before a run: no timeline yet
    assert "last run" not in unrun_text and "<table>" in unrun_html
    plan.run(*example_args(9))
    for obj in (cold, fast, plan, plan.timeline, Timeline(), graph):
        text, rich = _both(obj)
        assert text and rich, type(obj).__name__
    assert "fast path" in fast._repr_html_()
    assert "hit" in plan.timeline._repr_html_()  # executions that reused an executable


@pytest.mark.parametrize("policy", ["whole", "chunk", "buckets", "devices"])
def test_plan_reprs_for_every_policy(graph, policy: str) -> None:  # type: ignore[no-untyped-def]
    plan = mcl.schedule(graph, 7, policy, 4, store=mcl.CacheStore(None))
    text, rich = _both(plan)
    assert f"policy={policy!r}" in text and "<caption>" in rich
