"""Reductions over the batch run in rounds: per-chunk partials, masked padding, a combine."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.schedule import schedule

from . import bodies
from .cases import zoo_case

D = 3
W = jnp.asarray(np.random.default_rng(0).normal(size=(D, 2)), jnp.float32)


def batchnorm(w, x):  # type: ignore[no-untyped-def]
    m = jnp.mean(x, 0)
    v = jnp.mean((x - m) ** 2, 0)  # a second round: the variance reads the mean
    y = (x - m) / jnp.sqrt(v + 1e-5)
    return y @ w, m, v


def mse_grad(w, x):  # type: ignore[no-untyped-def]
    def loss(w):  # type: ignore[no-untyped-def]
        return jnp.mean((jnp.tanh(x @ w) - 0.5) ** 2)

    return jax.value_and_grad(loss)(w)


PROGRAMS = {
    "sum": lambda w, x: jnp.sum(x, 0),
    "mean": lambda w, x: jnp.mean(x, 0),
    "sum-all": lambda w, x: jnp.sum(jnp.sin(x) @ w),
    "max": lambda w, x: jnp.max(x, 0),
    "min": lambda w, x: jnp.min(x, axis=(0, 1)),
    "argmax": lambda w, x: jnp.argmax(x, 0),
    "argmin": lambda w, x: jnp.argmin(x[:, 1]),
    "argmax-ties": lambda w, x: jnp.argmax(jnp.floor(x), 0),  # equal values: the first wins
    "all-any": lambda w, x: (jnp.all(x > -1.5, 0), jnp.any(x > 1.5, 0)),
    "logsumexp": lambda w, x: jax.nn.logsumexp(x, axis=0),
    "scale-by-sum": lambda w, x: x * jnp.sum(x),  # batched work reads the combined sum
    "batchnorm": batchnorm,
    "weight-gradient": mse_grad,
    # sums over the batch inside control flow (tests/schedule/test_rounds_bodies.py)
    "cond-sum": lambda w, x: bodies.cond_sum(w, x),
    "scan-carry": lambda w, x: bodies.scan_carry(w, x),
    "while-sum": lambda w, x: bodies.while_sum(w, x),
    # an embedding's gradient: per-sample rows scattered into zeros at per-sample indices
    "scatter-add": lambda w, x: (
        jnp.zeros((5, D), x.dtype).at[(jnp.abs(x[:, 0]) * 3).astype(jnp.int32) % 5].add(jnp.sin(x))
    ),
}
SIZES = (1, 2, 3, 7, 16, 17)


def assert_close(a, b):  # type: ignore[no-untyped-def]
    # float32 partial sums of at most 17 O(1) terms: reassociation moves a sum by at
    # most n * eps * sum|x| ~ 17 * 1.2e-7 * 17 ~ 4e-5 in the worst case, about 1e-6
    # in practice; 1e-5 leaves room for the batch-norm's division by a small variance.
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if np.issubdtype(x.dtype, np.inexact):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(x, y)


def _x(n: int) -> jax.Array:
    return jax.random.normal(jax.random.key(n), (n, D))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_rounds_match_the_function_at_every_batch_size(name: str) -> None:
    fn = PROGRAMS[name]
    g = mcl.partition(fn, W, _x(4), batch_axes=(None, 0))
    assert any(c.kind == "reduces" for c in g.clusters), g
    store = mcl.CacheStore(None)
    reference = jax.jit(fn)
    for n in SIZES:
        x = _x(n)
        for policy in ("chunk", "buckets", "devices"):
            plan = schedule(g, n, policy, micro_batch=4, store=store)
            assert_close(plan.run(W, x), reference(W, x))


def test_padded_rows_are_masked_out_of_sums_maxima_and_argmax() -> None:
    # The last sample is the largest: its padding copies would change every result.
    def fn(w, x):  # type: ignore[no-untyped-def]
        return jnp.sum(x, 0), jnp.mean(x), jnp.argmax(x[:, 0]), jnp.argmin(-x[:, 0])

    g = mcl.partition(fn, W, _x(4), batch_axes=(None, 0))
    x = jnp.arange(7.0 * D).reshape(7, D)
    plan = schedule(g, 7, "chunk", micro_batch=4, store=mcl.CacheStore(None))
    assert sum(c.padding for c in plan.chunks) == 1
    (round_,) = [s for s in plan.segments if s.combines]
    assert round_.masked and "padded rows masked" in repr(plan)
    total, mean, top, bottom = plan.run(W, x)
    np.testing.assert_array_equal(total, np.asarray(x).sum(0))
    assert float(mean) == float(np.asarray(x).mean()) and int(top) == int(bottom) == 6


def test_buckets_pad_nothing_so_nothing_is_masked() -> None:
    g = mcl.partition(batchnorm, W, _x(4), batch_axes=(None, 0))
    plan = schedule(g, 7, "buckets", micro_batch=4, store=mcl.CacheStore(None))
    rounds = [s for s in plan.segments if s.combines]
    assert len(rounds) == 2 and not any(s.masked for s in rounds)
    assert all(c.padding == 0 for c in plan.chunks)
    assert_close(plan.run(W, _x(7)), batchnorm(W, _x(7)))


def test_batchnorm_runs_in_rounds_and_the_timeline_shows_them() -> None:
    g = mcl.partition(batchnorm, W, _x(4), batch_axes=(None, 0))
    assert g.counts()["reduces"] == 2  # the mean's sum, then the variance's sum
    plan = schedule(g, 10, "chunk", micro_batch=4, store=mcl.CacheStore(None))
    plan.run(W, _x(10))
    timeline = plan.timeline
    assert timeline is not None and timeline.rounds() == 2
    for r in range(2):
        modes = [e.mode for e in timeline.executions if e.round == r]
        assert modes == ["split", "split", "split", "combine"]  # 3 chunks, then the combine
    first_combine = next(i for i, e in enumerate(timeline.executions) if e.mode == "combine")
    later = [e.round for e in timeline.executions[first_combine + 1 :] if e.mode == "split"]
    assert later == [1, 1, 1, None, None, None]  # round 1, then the normalisation
    assert "2 rounds" in repr(timeline) and "round 1" in str(timeline)
    assert "round 0: split" in repr(plan) and "then combine (addx1)" in repr(plan)


@pytest.mark.parametrize(
    "name",
    [
        "batchnorm",
        "logsumexp",
        "scale-by-sum",
        "weight-gradient",
    ],
)
def test_rounds_compile_once_for_every_batch_size(name: str) -> None:
    fn = PROGRAMS[name]
    g = mcl.partition(fn, W, _x(4), batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    counts = []
    for n in (7, 17, 23, 64, 5):
        plan = schedule(g, n, "chunk", micro_batch=8, store=store)
        plan.run(W, _x(n))
        assert plan.timeline is not None
        counts.append(plan.timeline.compile_count())
    assert counts[0] >= 1 and counts[1:] == [0, 0, 0, 0], (counts, plan)
    assert not any(s.mode == "whole" for s in plan.segments), plan  # the 1/B is passed in


def test_the_mean_divides_by_the_true_batch_size() -> None:
    g = mcl.partition(PROGRAMS["mean"], W, _x(4), batch_axes=(None, 0))
    plan = schedule(g, 5, "chunk", micro_batch=4, store=mcl.CacheStore(None))
    once = [s for s in plan.segments if s.size_dims]
    assert once and all(s.mode == "once" for s in once)
    np.testing.assert_allclose(plan.run(W, jnp.ones((5, D))), np.ones(D), rtol=0, atol=0)


def test_batchnorm_zoo_model_in_rounds() -> None:
    fn, params, make = zoo_case("batchnorm_train")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    assert "reduces" in {c.category for c in g.clusters}
    x = make(19, jax.random.key(3))
    plan = schedule(g, 19, "chunk", micro_batch=8, store=mcl.CacheStore(None))
    out = plan.run(params, *x)
    assert_close(out, fn(params, *x))
    assert float(np.std(np.asarray(jax.tree.leaves(out)[0]))) > 0.1  # not degenerate


X64_SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import mlcache_lab as mcl
    from tests.schedule.test_rounds import PROGRAMS

    w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)))
    worst = 0.0
    for name, fn in sorted(PROGRAMS.items()):
        x4 = jax.random.normal(jax.random.key(0), (4, 3), jnp.float64)
        g = mcl.partition(fn, w, x4, batch_axes=(None, 0))
        for n in (1, 3, 7, 17, 64):
            x = jax.random.normal(jax.random.key(n), (n, 3), jnp.float64)
            plan = g.schedule(n, "chunk", micro_batch=5, store=mcl.CacheStore(None))
            for a, b in zip(jax.tree.leaves(plan.run(w, x)), jax.tree.leaves(fn(w, x))):
                a, b = np.asarray(a), np.asarray(b)
                assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype)
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=name)
                if np.issubdtype(a.dtype, np.floating):
                    worst = max(worst, float(np.max(np.abs(a - b), initial=0.0)))
    print("worst", worst)
    """
)


def test_float64_rounds_match_at_tight_tolerance() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", X64_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "worst" in done.stdout


def test_the_timeline_plot_shows_rounds_and_combines() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from mlcache_lab.viz.plots import MODE_COLOURS, timeline

    g = mcl.partition(batchnorm, W, _x(4), batch_axes=(None, 0))
    plan = schedule(g, 10, "chunk", micro_batch=4, store=mcl.CacheStore(None))
    plan.run(W, _x(10))
    ax = timeline(plan.timeline)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert any("round 0" in t for t in labels) and any("round 1" in t for t in labels)
    colours = {matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches}
    assert MODE_COLOURS["combine"] in colours


def test_explorer_notes_count_chunk_runs_and_say_partials_were_combined() -> None:
    from mlcache_lab.viz.explorer import cluster_notes

    g = mcl.partition(batchnorm, W, _x(4), batch_axes=(None, 0))
    plan = schedule(g, 10, "chunk", micro_batch=4, store=mcl.CacheStore(None))
    plan.run(W, _x(10))
    assert plan.timeline is not None
    notes = cluster_notes(plan.timeline)
    for c in g.clusters:
        if c.kind == "reduces":
            assert notes[c.id].startswith("ran 3× at 3×4 (2 rows padding)"), notes[c.id]
            assert "partials combined" in notes[c.id]
