"""Layers repeated back to back (a Python loop) are cut into blocks that share one program.

* :func:`find_blocks` finds the repeat of a looped model's layers, and none
  where there is none (a ``scan``, a short repeat, a stack of different layers);
* the plan's blocks share one program, so the compilations per size are the
  distinct programs, not the layers, and results equal ``jax.jit`` (on a
  non-degenerate reference) under ``chunk``, ``buckets`` and ``devices``, in
  the compiled run and the uncompiled reference alike, at new batch sizes
  without compiling (``devices``: tests/schedule/test_devices.py);
* ``share_blocks=False`` keeps one program, with the same results;
* the ``segments`` level keeps the sharing through encode/decode, and its key
  tells the two flavours apart;
* real models written with a loop over layers (Flax linen, Keras) share blocks
  too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Literal

import mlcache_lab as mcl
from mlcache_lab.models import get_model
from mlcache_lab.models.frameworks import check_nondegenerate
from mlcache_lab.schedule import schedule
from mlcache_lab.schedule.partitioned_levels import segments_config
from mlcache_lab.schedule.repeats import MIN_BLOCK_EQUATIONS, find_blocks
from mlcache_lab.schedule.segments import SegmentProgram, SegmentSet, _read_outside

SMALL = dict(vocab=32, seq=8, width=16, num_heads=2)
LAYERS = 4


def looped(layers: int = LAYERS) -> Any:
    return get_model("transformer", layers=layers, scan=False, **SMALL)


def graph_of(model: Any, batch: int = 3) -> Any:
    return mcl.partition(model.apply, *model.example_args(batch), batch_axes=model.batch_axes)


def split_eqns(graph: Any) -> tuple[list[Any], set[Any]]:
    """The equations of the graph's batched clusters, and what is read after them."""
    members = sorted(i for c in graph.clusters if c.kind == "batched" for i in c.equations)
    eqns = [graph.jaxpr.jaxpr.eqns[i] for i in members]
    return eqns, _read_outside(graph, frozenset(members))


def shared(plan: Any) -> tuple[int, int]:
    """(split segments, distinct programs among them)."""
    split = [s for s in plan.segments if s.mode == "split"]
    return len(split), len({id(s.program) for s in split})


def assert_close(got: Any, expected: Any) -> None:
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)


# ------------------------------------------------------------------ finding
def test_a_looped_model_repeats_once_per_layer() -> None:
    eqns, read = split_eqns(graph_of(looped(6)))
    blocks = find_blocks(eqns, read)
    assert blocks is not None and blocks.count == 6
    assert blocks.length >= MIN_BLOCK_EQUATIONS
    pieces = blocks.pieces(len(eqns))
    assert sum(len(p) for p in pieces) == len(eqns)  # the pieces cover every equation
    assert [p.start for p in pieces[1:]] == [p.stop for p in pieces[:-1]]


def test_scan_short_repeats_and_different_layers_are_not_blocks() -> None:
    scanned = get_model("transformer", layers=6, **SMALL)
    assert find_blocks(*split_eqns(graph_of(scanned))) is None  # one scan equation

    def chain(x: jax.Array) -> jax.Array:  # a repeat of 3 equations: cheaper fused
        for _ in range(30):
            x = jnp.tanh(x * 1.5 + 0.1)
        return x

    g = mcl.partition(chain, jnp.ones((3, 4)), batch_axes=0)
    assert find_blocks(*split_eqns(g)) is None

    def different(x: jax.Array, ws: list[jax.Array]) -> jax.Array:  # no layer twice
        acts = [jax.nn.gelu, jnp.tanh, jax.nn.relu, jax.nn.sigmoid]
        for w, act in zip(ws, acts, strict=True):
            h = x @ w
            h = (h - h.mean(-1, keepdims=True)) / (h.std(-1, keepdims=True) + 1e-5)
            x = x + act(h) @ w.T
        return x

    ws = [jnp.ones((4, 4)) * (i + 1) for i in range(4)]
    g = mcl.partition(different, jnp.ones((3, 4)), ws, batch_axes=(0, None))
    assert find_blocks(*split_eqns(g)) is None


def test_cuts_fall_where_fewest_values_cross() -> None:
    eqns, read = split_eqns(graph_of(looped(5)))
    blocks = find_blocks(eqns, read)
    assert blocks is not None
    made_before = set()
    crossing = []
    for cut in range(len(eqns) + 1):
        later = {v for e in eqns[cut:] for v in e.invars if not isinstance(v, Literal)} | read
        crossing.append(len({v for v in made_before if v in later}))
        if cut < len(eqns):
            made_before.update(eqns[cut].outvars)
    interior = blocks.cuts[1:-1]
    assert max(crossing[c] for c in interior) == 1  # the residual stream alone


# ------------------------------------------------------------------ running
@pytest.mark.parametrize("policy", ["chunk", "buckets"])
def test_blocks_share_one_program_and_match_jit(policy: str) -> None:
    model = looped()
    g = graph_of(model)
    store = mcl.CacheStore(None)
    compiled = []
    for batch in (7, 5, 12):
        args = model.example_args(batch, seed=batch)
        expected = jax.jit(model.apply)(*args)
        check_nondegenerate(expected, what=f"looped transformer at batch {batch}")
        plan = schedule(g, batch, policy, micro_batch=4, store=store)
        assert_close(plan.run(*args), expected)
        assert_close(plan.reference(*args), expected)
        compiled.append(plan.timeline.compile_count())
        pieces, programs = shared(plan)
        assert pieces >= LAYERS and programs <= pieces - LAYERS + 1, plan
    assert compiled[0] >= 1 and compiled[1:] == [0, 0]  # sizes seen: nothing new
    ran = {e.segment for e in plan.timeline.executions}
    assert {s.index for s in plan.segments} <= ran  # every block ran
    # One function per distinct program, not one per layer.
    assert len(plan.segment_set.functions) == len({id(s.program) for s in plan.segments})


def test_share_blocks_false_keeps_one_program_with_the_same_results() -> None:
    model = looped()
    g = graph_of(model)
    args = model.example_args(9, seed=1)
    plain = schedule(g, 9, "chunk", micro_batch=4, share_blocks=False)
    blocked = schedule(g, 9, "chunk", micro_batch=4)
    assert shared(plain) == (1, 1)
    assert shared(blocked)[0] > LAYERS
    np.testing.assert_array_equal(np.asarray(plain.run(*args)), np.asarray(blocked.run(*args)))
    with pytest.raises(ValueError, match=r"share_blocks.*Got share_blocks='yes'"):
        schedule(g, 9, "chunk", share_blocks="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Got share_blocks=1"):
        mcl.batched_jit(model.apply, batch_axes=model.batch_axes, share_blocks=1)


# ------------------------------------------------------------------ caching
def test_segments_level_keeps_the_sharing() -> None:
    g = graph_of(looped())
    segments = schedule(g, 5, "chunk", micro_batch=4).segment_set
    decoded = SegmentSet.decode(segments.encode())
    before = [id(s.program) for s in segments.segments]
    after = [id(s.program) for s in decoded.segments]
    # The same segments share programs after decoding as before.
    assert [before.index(i) for i in before] == [after.index(i) for i in after]
    assert len(set(after)) < len(after)
    # A shared program is stored once: copies of it would make the entry larger.
    copies = [
        dataclasses.replace(
            s,
            program=SegmentProgram(
                None,
                s.program.__name__,
                encoded=bytes(bytearray(s.program.encode())),
                fingerprint=s.program.__mlcache_fingerprint__(),
            ),
        )
        for s in segments.segments
    ]
    block = max(len(s.program.encode()) for s in segments.segments)
    unshared = len(SegmentSet(segments.boundary, copies).encode())
    assert len(segments.encode()) < unshared - block
    on = segments_config("chunk").as_dict()["policy"]
    off = segments_config("chunk", share_blocks=False).as_dict()["policy"]
    assert on != off


def test_a_warm_batched_jit_loads_one_block_executable(tmp_path) -> None:
    model = looped()
    args = model.example_args(6, seed=2)
    expected = jax.jit(model.apply)(*args)
    for _ in range(2):  # cold, then warm from disk in a new BatchedFunction
        bf = mcl.batched_jit(
            model.apply,
            batch_axes=model.batch_axes,
            micro_batch=4,
            store=mcl.CacheStore(tmp_path),
        )
        assert_close(bf(*args), expected)
    assert bf.last_report.status("segments") == "disk"
    loads = bf.last_timeline.compilations
    programs = {id(s.program) for s in bf.last_plan.segments}
    assert {c.statuses["compile"] for c in loads} == {"disk"}
    assert len(loads) == len(programs) < len(bf.last_plan.segments)


# ------------------------------------------------------------------ real models
def _linen_stack(layers: int) -> tuple[Any, Any, Any]:
    from flax import linen as nn

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            h = nn.SelfAttention(num_heads=2, qkv_features=x.shape[-1])(nn.LayerNorm()(x))
            x = x + h
            return x + nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(32)(nn.LayerNorm()(x))))

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            for _ in range(layers):
                x = Block()(x)
            return nn.Dense(4)(x)

    x = jax.random.normal(jax.random.key(0), (3, 8, 16))
    net = Stack()
    variables = net.init(jax.random.key(1), x)
    return net.apply, variables, lambda b: jax.random.normal(jax.random.key(b), (b, 8, 16))


def _keras_stack(layers: int) -> tuple[Any, Any, Any]:
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 16))
    h = inp
    for _ in range(layers):
        a = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(h, h)
        h = keras.layers.LayerNormalization()(keras.layers.Add()([h, a]))
        f = keras.layers.Dense(16)(keras.layers.Dense(32, activation="gelu")(h))
        h = keras.layers.LayerNormalization()(keras.layers.Add()([h, f]))
    model = keras.Model(inp, keras.layers.Dense(4)(h))
    weights = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
    )

    def apply(w: Any, x: Any) -> Any:
        out, _ = model.stateless_call(w[0], w[1], x)
        return out

    return apply, weights, lambda b: jax.random.normal(jax.random.key(b), (b, 8, 16))


@pytest.mark.parametrize("build", [_linen_stack, _keras_stack], ids=["linen", "keras"])
def test_real_looped_models_share_blocks(build) -> None:
    apply, params, make = build(3)
    g = mcl.partition(apply, params, make(3), batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    for policy in ("chunk", "buckets"):
        for batch in (7, 5):  # chunk: 2x4, then 2x4; buckets: 4+2+1, then 4+1
            x = make(batch)
            expected = jax.jit(apply)(params, x)
            check_nondegenerate(expected, what=f"{build.__name__} at batch {batch}")
            plan = schedule(g, batch, policy, micro_batch=4, store=store)
            assert_close(plan.run(params, x), expected)
            pieces, programs = shared(plan)
            assert pieces >= 3 and programs <= pieces - 2, plan
        assert plan.timeline.compile_count() == 0  # 5 after 7: sizes seen
