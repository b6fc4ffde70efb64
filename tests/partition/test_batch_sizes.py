"""Batch sizes: symbolic graphs at any size, the concrete fallback, chunked runs, the benchmark."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import jaxpr_as_fun

from mlcache_lab.bench.partition_scaling import main as bench_main
from mlcache_lab.bench.partition_scaling import make_program
from mlcache_lab.models import get_model
from mlcache_lab.partition import ClusterGraph, partition
from mlcache_lab.partition.api import BAD_SYMBOLIC, NOT_POLYMORPHIC
from mlcache_lab.partition.graph import BAD_BATCH_SIZE, CONCRETE_GRAPH, STRUCTURE_DIFFERS
from mlcache_lab.schedule import schedule
from mlcache_lab.schedule.plan import WRONG_BATCH

from .ground_truth import (
    assert_cluster_outputs_close,
    assert_tree_close,
    check_ground_truth,
    resize_args,
)


def _pattern(message: str) -> str:
    return re.escape(message.split("{")[0])


def f(w, x):  # type: ignore[no-untyped-def]
    h = jnp.tanh(x @ w) + jnp.arange(x.shape[0], dtype=x.dtype)[:, None]
    h = h.reshape(x.shape[0], 2, -1).sum(-1)
    return h - h.mean(0), jax.lax.scan(lambda c, s: (c * s + 1, None), h, jnp.ones(3))[0]


def hardcoded(w, x):  # type: ignore[no-untyped-def]
    """Not polymorphic: the batch size 6 is written into the program."""
    h = jnp.tanh(x @ w) + jnp.arange(6, dtype=x.dtype)[:, None]
    return h - h.mean(0), jnp.sin(h) * 2


W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
X = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)), jnp.float32)


def _x(n: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(n).normal(size=(n, 4)), jnp.float32)


def test_symbolic_graph_runs_at_batch_sizes_1_3_7() -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    assert g.symbolic and g.symbolic_reason == ""
    assert str(g.jaxpr.jaxpr.invars[1].aval.shape[0]) == "B"
    for n in (1, 3, 7):
        assert_tree_close(g.run(W, _x(n)), f(W, _x(n)))
        assert g.at_batch_size(n) is g
        assert g.batch_size_of(W, _x(n)) == n


@pytest.mark.parametrize("name", ["transformer", "batchnorm_train", "preprocess"])
def test_zoo_models_run_at_batch_sizes_1_3_7(name: str) -> None:
    small = {"transformer": dict(vocab=32, seq=8, width=16, layers=2, num_heads=2)}
    model = get_model(name, **small.get(name, {}))
    args = model.example_args(4)
    g = partition(model.apply, *args, batch_axes=model.batch_axes)
    assert g.symbolic, g.symbolic_reason
    for n in (1, 3, 7):
        resized = resize_args(g, args, n)
        assert_tree_close(g.run(*resized), model.apply(*resized))


def _whole(g: ClusterGraph, *args: object) -> dict:
    """Every cluster's inputs and outputs, each cluster run once on the whole batch."""
    return schedule(g, g.batch_size_of(*args), "whole", fuse=False).reference_values(*args)


@pytest.mark.parametrize(
    ("policy", "micro_batch", "bucket_sizes", "sizes"),
    [
        ("buckets", 16, (5, 1), [5, 1]),
        ("buckets", 16, (3,), [3, 3]),
        ("buckets", 16, (2,), [2, 2, 2]),
        ("buckets", 16, (1,), [1] * 6),
        ("chunk", 4, None, [4, 2]),  # the last chunk padded with 2 copies of its last row
        ("chunk", 5, None, [5, 1]),
    ],
)
def test_chunked_clusters_equal_whole_for_any_chunking(
    policy: str, micro_batch: int, bucket_sizes: tuple[int, ...] | None, sizes: list[int]
) -> None:
    """Through the one executor, a segment per cluster: chunks equal the whole batch."""
    g = partition(f, W, X, batch_axes=(None, 0))
    plan = schedule(g, 6, policy, micro_batch, bucket_sizes=bucket_sizes, fuse=False)
    assert [c.size for c in plan.chunks] == sizes
    assert len(plan.segments) == len(g.clusters)
    split = {cid for s in plan.segments if s.mode == "split" for cid in s.clusters}
    assert split == {c.id for c in g.clusters if c.kind in ("batched", "reduces")}
    assert_cluster_outputs_close(g, plan.reference_values(W, X), _whole(g, W, X), str(sizes))
    assert_tree_close(plan.reference(W, X), f(W, X))


def test_cluster_that_needs_the_batch_size() -> None:
    """``arange(B)`` touches no batched value, yet its shape is the batch size.

    It holds the rows' positions: batched, run per part of the batch from the
    part's first row (``start``).
    """
    g = partition(f, W, X, batch_axes=(None, 0), growth="plain")  # the iota alone
    (iota,) = [c for c in g.clusters if "iota" in c.primitives()]
    assert iota.category == "batched" and iota.needs_batch_size
    assert iota.inputs == () and iota.out_batch_axes == (0,)
    plan = schedule(g, 5, "whole", fuse=False)
    (segment,) = [s for s in plan.segments if s.clusters == (iota.id,)]
    carrier = segment.program.__mlcache_jaxpr__.jaxpr.invars[0].aval
    assert segment.carrier and str(carrier.shape[0]) == "B" and carrier.dtype == jnp.int8
    out = plan.reference_values(W, _x(5))[iota.outputs[0]]
    np.testing.assert_array_equal(out, np.arange(5.0, dtype=np.float32)[:, None])
    # Split into parts of 4 (the last padded), each part made from its first row on.
    plan = schedule(g, 6, "chunk", 4, fuse=False)
    (segment,) = [s for s in plan.segments if s.clusters == (iota.id,)]
    start = segment.program.__mlcache_jaxpr__.jaxpr.invars[-1].aval
    assert segment.mode == "split" and segment.offset
    assert start.shape == () and start.dtype == jnp.int32
    parts = plan.reference_values(W, X)[iota.outputs[0]]
    np.testing.assert_array_equal(parts, np.arange(6.0, dtype=np.float32)[:, None])
    assert_tree_close(plan.run(W, X), f(W, X))


def test_reference_checks_the_planned_batch_size() -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    plan = schedule(g, 4, "chunk", 2, fuse=False)
    with pytest.raises(ValueError, match=_pattern(WRONG_BATCH)) as info:
        plan.reference(W, X)
    assert "batch_size=4, but the arguments have 6 samples" in str(info.value)


def test_concrete_fallback_records_why_and_keeps_the_ground_truth() -> None:
    g = partition(hardcoded, W, X, batch_axes=(None, 0))
    assert not g.symbolic
    assert g.symbolic_reason.startswith("tracing with a symbolic batch dimension B failed: ")
    assert "incompatible shapes for broadcasting" in g.symbolic_reason
    assert all(isinstance(d, int) for v in g.jaxpr.jaxpr.invars for d in v.aval.shape)
    assert "concrete at batch size 6" in repr(g) and g.symbolic_reason in repr(g)
    check_ground_truth(g, W, X, reference=hardcoded(W, X))
    with pytest.raises(ValueError, match=_pattern(CONCRETE_GRAPH)):
        g.run(W, _x(3))


def test_a_reshape_that_pins_the_batch_size_falls_back() -> None:
    """jax's reshape does not check element counts: the trace must not be trusted."""

    def pinned(x):  # type: ignore[no-untyped-def]
        return jnp.sin(x.reshape(6, 2, 2)).sum(-1)

    g = partition(pinned, X)
    assert not g.symbolic
    assert "pins the batch size: reshape (B, 4) -> (6, 2, 2)" in g.symbolic_reason
    check_ground_truth(g, X, reference=pinned(X))


def test_symbolic_argument() -> None:
    with pytest.raises(ValueError, match=_pattern(NOT_POLYMORPHIC)) as info:
        partition(hardcoded, W, X, batch_axes=(None, 0), symbolic=True)
    assert "incompatible shapes" in str(info.value)
    g = partition(f, W, X, batch_axes=(None, 0), symbolic=False)
    assert not g.symbolic and "symbolic=False" in g.symbolic_reason
    check_ground_truth(g, W, X, reference=f(W, X))
    with pytest.raises(ValueError, match=_pattern(BAD_SYMBOLIC)):
        partition(f, W, X, batch_axes=(None, 0), symbolic="yes")  # type: ignore[arg-type]


def test_at_batch_size_repartitions_a_concrete_graph() -> None:
    g = partition(f, W, X, batch_axes=(None, 0), symbolic=False)
    for n in (2, 3, 7):  # at 1, a concrete analysis cannot tell the batch from broadcasting
        other = g.at_batch_size(n)
        assert other.batch_size == n and not other.symbolic
        assert other.symbolic_reason == g.symbolic_reason
        assert other.queue == g.queue and other.dependencies == g.dependencies
        assert [len(c) for c in other.clusters] == [len(c) for c in g.clusters]
        assert_tree_close(other.run(W, _x(n)), f(W, _x(n)))
        assert g.at_batch_size(n) is other  # kept
    assert g.at_batch_size(6) is g
    _check_resized_chunks(g, 6, [2, 4])
    _check_resized_chunks(g, 10, [7, 3])  # chunks larger than the analysed batch size too


def _check_resized_chunks(g: ClusterGraph, n: int, sizes: list[int]) -> None:
    """Cluster ``c`` of ``g.at_batch_size(k)`` on chunks of ``k`` equals cluster ``c`` at ``n``.

    The schedule runs a concrete graph whole only: here each chunk's cluster
    program is evaluated as the reference evaluates a concrete program.
    """
    big = g.at_batch_size(n)
    env = _whole(big, W, _x(n))
    for c in big.clusters:
        if c.kind != "batched":
            continue
        inputs = [env[v] for v in c.inputs]
        parts, start = [], 0
        for size in sizes:
            chunk = [
                x if a is None else jax.lax.slice_in_dim(x, start, start + size, axis=a)
                for x, a in zip(inputs, c.in_batch_axes, strict=True)
            ]
            parts.append(jaxpr_as_fun(g.at_batch_size(size).clusters[c.id].jaxpr)(*chunk))
            start += size
        for k, (v, a) in enumerate(zip(c.outputs, c.out_batch_axes, strict=True)):
            got = parts[0][k] if a is None else jnp.concatenate([p[k] for p in parts], axis=a)
            assert_tree_close(got, env[v])


def test_at_batch_size_refuses_another_clustering() -> None:
    def depends_on_size(x):  # type: ignore[no-untyped-def]
        return x * 2 if x.shape[0] > 3 else x - x.sum(0)

    g = partition(depends_on_size, X)
    assert not g.symbolic and "inconclusive" in g.symbolic_reason
    assert g.at_batch_size(5).counts() == g.counts()
    with pytest.raises(ValueError, match=_pattern(STRUCTURE_DIFFERS)) as info:
        g.at_batch_size(2)
    assert "inconclusive" in str(info.value)


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "3"])
def test_at_batch_size_bad_value(value: object) -> None:
    g = partition(hardcoded, W, X, batch_axes=(None, 0))
    with pytest.raises(ValueError, match=_pattern(BAD_BATCH_SIZE)):
        g.at_batch_size(value)  # type: ignore[arg-type]


def test_benchmark_program_and_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fn, args = make_program(8)
    g = partition(fn, *args, batch_axes=(None, 0))
    assert g.symbolic
    # the centring's mean: a reduction, then the division reading it
    assert {c.category for c in g.clusters} == {"batched", "invariant", "mixes", "reduces"}
    out = tmp_path / "scaling.csv"
    bench_main(["--out", str(out), "--repeats", "1", "--layers", "2", "4"])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# made by: python -m mlcache_lab.bench.partition_scaling")
    assert lines[1].startswith("equations,") and len(lines) == 4
