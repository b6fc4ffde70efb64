"""Plans run every policy on every model at every batch size, with bounded compilation."""

from __future__ import annotations

import gc
import itertools
import threading
import time

import jax
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.schedule import schedule, split_batch
from mlcache_lab.schedule.plan import WRONG_BATCH, _aligned_empty, _assemble, _when_ready

from .cases import all_cases, zoo_case

BATCH_SIZES = (1, 2, 3, 16, 17, 64)
CASES = all_cases()


def assert_close(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_policy_matches_the_function(name):
    fn, params, make = CASES[name]()
    g = mcl.partition(fn, params, *make(4, jax.random.key(1)), batch_axes=(None, 0))
    store = mcl.CacheStore(None)  # shared by the policies: chunk and buckets share programs
    for batch in BATCH_SIZES:
        inputs = make(batch, jax.random.key(batch))
        expected = fn(params, *inputs)
        for policy in ("whole", "chunk", "buckets"):
            plan = schedule(g, batch, policy, micro_batch=8, store=store)
            assert_close(plan.run(params, *inputs), expected)


def compile_counts(g, policy, sizes, **kw):
    store = mcl.CacheStore(None)
    fn, params, make = g
    graph = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    counts = []
    for batch in sizes:
        plan = schedule(graph, batch, policy, store=store, **kw)
        plan.run(params, *make(batch, jax.random.key(batch)))
        counts.append(plan.timeline.compile_count())
    return graph, counts


SIZES = (5, 16, 23, 64, 7, 33)


def test_chunk_compiles_once_then_never():
    _, counts = compile_counts(zoo_case("transformer"), "chunk", SIZES, micro_batch=16)
    assert counts[0] >= 1 and counts[1:] == [0] * (len(SIZES) - 1)


def test_whole_compiles_once_per_new_batch_size():
    _, counts = compile_counts(zoo_case("mlp"), "whole", (*SIZES, 16, 5))
    assert counts == [1] * len(SIZES) + [0, 0]


def test_buckets_compile_at_most_once_per_bucket_size():
    graph, counts = compile_counts(zoo_case("transformer"), "buckets", SIZES, micro_batch=16)
    split = sum(1 for c in graph.clusters if c.kind == "batched")
    buckets_used = {c.run_size for n in SIZES for c in split_batch(n, "buckets", 16)}
    assert sum(counts) <= split * len(buckets_used) + 1  # + the invariant segment
    assert counts[-1] == 0  # 33 = 32 + 1: both seen before


def test_mixing_segments_compile_per_batch_size_from_cached_stablehlo():
    fn, params, make = zoo_case("contrastive")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    schedule(g, 8, "chunk", 8, store=store).run(params, *make(8, jax.random.key(0)))
    plan = schedule(g, 11, "chunk", 8, store=store)
    plan.run(params, *make(11, jax.random.key(1)))
    compiled = [c for c in plan.timeline.compilations if c.compiled]
    assert compiled, plan.timeline
    for c in compiled:  # the lowering came from the cache: only the compile level ran
        assert c.statuses["lower"] == "memory"
    # A segment reading a [B, B] similarity is keyed on that shape at the trace level
    # (a miss per B whose lowering is found by content); the others were traced once.
    assert any(c.statuses["trace"] in ("bypassed", "memory") for c in compiled)
    assert {plan.segments[c.segment].mode for c in compiled} == {"whole"}


def test_padding_never_leaks_into_batch_statistics():
    fn, params, make = zoo_case("batchnorm_train")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    x = make(17, jax.random.key(3))
    plan = schedule(g, 17, "chunk", micro_batch=16, store=mcl.CacheStore(None))
    assert sum(c.padding for c in plan.chunks) == 15
    assert_close(plan.run(params, *x), fn(params, *x))


def test_timeline_records_runs_and_compilations():
    fn, params, make = zoo_case("mlp")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    plan = schedule(g, 37, "chunk", 16, store=mcl.CacheStore(None))
    plan.run(params, *make(37, jax.random.key(0)))
    split = [e for e in plan.timeline.executions if e.mode == "split"]
    assert [(e.start_row, e.size, e.run_size) for e in split] == [
        (0, 16, 16),
        (16, 16, 16),
        (32, 5, 16),
    ]
    assert all(0 <= e.start <= e.end <= plan.timeline.total_seconds for e in split)
    assert plan.timeline.compilations[0].statuses["compile"] == "miss"
    rows = plan.timeline.rows()
    assert rows[0]["compile_statuses"] and "clusters" in rows[0]
    assert "split" in str(plan.timeline) and "<table>" in plan.timeline._repr_html_()
    assert "3x16" not in repr(plan) or "11 rows padded" in repr(plan)
    assert "seg" in repr(plan) and "<table>" in plan._repr_html_()


def test_bad_arguments():
    fn, params, make = zoo_case("mlp")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    with pytest.raises(ValueError, match=r"Valid options for 'policy' are .*Got policy='fast'"):
        schedule(g, 8, "fast")
    with pytest.raises(ValueError, match=r"'micro_batch' must be an int >= 1. Got micro_batch=0"):
        schedule(g, 8, "chunk", 0)
    with pytest.raises(ValueError, match=r"'batch_size' must be a positive int. Got batch_size=0"):
        schedule(g, 0)
    with pytest.raises(ValueError, match=r"bucket_sizes=\(4, 8\) cannot add up to batch_size=37"):
        schedule(g, 37, "buckets", bucket_sizes=(4, 8))
    plan = schedule(g, 8, "chunk", 4, store=mcl.CacheStore(None))
    with pytest.raises(ValueError, match=WRONG_BATCH.split("{")[0].replace("(", r"\(")):
        plan.run(params, *make(9, jax.random.key(0)))


def test_split_batch_policies():
    assert [(c.start, c.size, c.run_size) for c in split_batch(37, "chunk", 16)] == [
        (0, 16, 16),
        (16, 16, 16),
        (32, 5, 16),
    ]
    assert [c.size for c in split_batch(37, "buckets", 32)] == [32, 4, 1]
    assert [c.size for c in split_batch(10, "buckets", bucket_sizes=(3, 4))] == [4, 3, 3]
    assert [c.size for c in split_batch(5, "whole")] == [5]
    assert split_batch(3, "chunk", 16)[0].padding == 13


@pytest.mark.parametrize("dtype", [np.float32, jax.numpy.bfloat16, np.int8, np.bool_])
@pytest.mark.parametrize("shape", [(0,), (1,), (3, 5), (2, 0, 7)])
def test_aligned_buffers_start_on_64_bytes(shape, dtype):
    buf = _aligned_empty(shape, dtype)
    assert buf.shape == shape and buf.dtype == np.dtype(dtype)
    assert buf.size == 0 or buf.ctypes.data % 64 == 0  # an empty one holds no data


def test_assembled_output_drops_padding_and_outlives_its_parts():
    chunks = split_batch(5, "chunk", 3)  # 3 + 2 (+1 padded)
    parts = [jax.numpy.arange(12.0).reshape(3, 4), jax.numpy.arange(12.0, 24.0).reshape(3, 4)]
    expected = np.arange(20.0).reshape(5, 4)
    out = _assemble(parts, 0, chunks, None)
    del parts
    gc.collect()
    assert isinstance(out, jax.Array)
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_array_equal(np.asarray(out + 1), expected + 1)  # usable by XLA


def test_graph_schedule_method_and_batched_jit():
    fn, params, make = zoo_case("transformer")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    plan = g.schedule(batch_size=37, policy="chunk", micro_batch=16, store=store)
    x = make(37, jax.random.key(5))
    assert_close(plan.run(params, *x), fn(params, *x))
    bf = mcl.batched_jit(fn, batch_axes=(None, 0), policy="chunk", micro_batch=16, store=store)
    for batch in (1, 37, 40):
        x = make(batch, jax.random.key(batch))
        assert_close(bf(params, *x), fn(params, *x))
    stats = bf.stats()
    assert stats["calls"] == 3 and stats["batch_sizes"] == [1, 37, 40]
    assert stats["compilations"] == 0  # the plan above compiled every segment already
    assert bf.last_plan.batch_size == 40 and "batched_jit" in repr(bf)


def test_concrete_graph_runs_whole_only():
    def hardcoded(w, x):  # pins the batch size: not shape-polymorphic
        return (x @ w).reshape(4, -1).sum(axis=1)

    w, x = jax.numpy.ones((3, 2)), jax.numpy.ones((4, 3))
    g = mcl.partition(hardcoded, w, x, batch_axes=(None, 0))
    assert not g.symbolic
    plan = g.schedule(batch_size=4, policy="whole", store=mcl.CacheStore(None))
    assert_close(plan.run(w, x), hardcoded(w, x))
    with pytest.raises(ValueError, match=r"policy='chunk' splits the batch, which needs a graph"):
        g.schedule(batch_size=4, policy="chunk")


def test_chunks_on_one_device_end_before_the_next_starts():
    fn, params, make = zoo_case("mlp")
    g = mcl.partition(fn, params, *make(4, jax.random.key(0)), batch_axes=(None, 0))
    plan = schedule(g, 40, "chunk", 8, store=mcl.CacheStore(None))
    plan.run(params, *make(40, jax.random.key(0)))
    split = [e for e in plan.timeline.executions if e.mode == "split"]
    assert len(split) == 5
    for a, b in itertools.pairwise(split):
        assert a.start < a.end <= b.start


class _Pending:
    """A result that is ready once its gate opens (what block_until_ready waits on)."""

    def __init__(self, fails: bool = False) -> None:
        self.gate, self.fails = threading.Event(), fails

    def block_until_ready(self):  # called by jax.block_until_ready
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fails:
            raise RuntimeError("execution failed")
        return self


def test_results_are_waited_for_off_the_dispatching_thread_in_order():
    t0 = time.perf_counter()
    first, failing, third = _Pending(), _Pending(fails=True), _Pending()
    ready = [_when_ready(None, r, t0) for r in (first, failing, third)]  # returns at once
    time.sleep(0.05)
    assert not any(r.done() for r in ready)
    opened = time.perf_counter() - t0
    for r in (third, failing, first):  # opened last first: still noted in dispatch order
        r.gate.set()
    assert opened <= ready[0].result() <= ready[2].result()
    with pytest.raises(RuntimeError, match="execution failed"):  # the caller gets the error
        ready[1].result()
