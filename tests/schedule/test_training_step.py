"""An optax training step (flax MLP, value_and_grad, adam) under batched_jit equals jax.jit."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mlcache_lab as mcl


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(32)(x))
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(4)(x)


MODEL = MLP()
TX = optax.adam(1e-2)


def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = MODEL.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array) -> Any:
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = TX.update(grads, opt_state, params)
    return loss, optax.apply_updates(params, updates), opt_state


def _batch(n: int) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(n), (n, 8))
    return x, jax.random.randint(jax.random.key(n + 1), (n,), 0, 4)


@pytest.fixture(scope="module")
def state() -> tuple[Any, Any]:
    params = MODEL.init(jax.random.key(0), jnp.ones((1, 8)))
    return params, TX.init(params)


def test_gradients_are_reductions_and_the_update_runs_once_after_the_combine(state) -> None:  # type: ignore[no-untyped-def]
    params, opt_state = state
    g = mcl.partition(train_step, params, opt_state, *_batch(16), batch_axes=(None, None, 0, 0))
    truly_mixing = [lab for lab in g.labels if lab.category == "mixes" and lab.mixes_samples]
    assert not truly_mixing, [lab.reason for lab in truly_mixing]
    reducing = [lab for lab in g.labels if lab.kind == "reduces"]
    assert len(reducing) == 7  # 3 kernels (contractions) + 3 biases + the loss's sum
    assert g.counts()["reduces"] == 1  # one round: every gradient on one pass over the chunks
    plan = g.schedule(40, "chunk", micro_batch=8, store=mcl.CacheStore(None))
    plan.run(params, opt_state, *_batch(40))
    (round_,) = [s for s in plan.segments if s.combines]
    after = plan.segments[round_.index + 1 :]
    assert after and all(s.mode == "once" for s in after)  # adam: once, after the combine
    assert plan.timeline is not None
    modes = [e.mode for e in plan.timeline.executions]
    assert modes[-1] == "once" and modes.count("combine") == 1


def _chunked_step() -> mcl.BatchedFunction:
    """The training step under ``chunk`` (8 rows a chunk), with an in-memory store."""
    return mcl.batched_jit(
        train_step,
        batch_axes=(None, None, 0, 0),
        policy="chunk",
        micro_batch=8,
        store=mcl.CacheStore(None),
    )


def test_training_step_under_batched_jit_equals_jax_jit(state) -> None:  # type: ignore[no-untyped-def]
    params, opt_state = state
    step = _chunked_step()
    reference = jax.jit(train_step)
    for n in (16, 23, 5, 40):
        out, expected = (
            step(params, opt_state, *_batch(n)),
            reference(params, opt_state, *_batch(n)),
        )
        assert jax.tree.structure(out) == jax.tree.structure(expected)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
            # float32 gradients summed per chunk of 8 instead of at once: a few ulps; adam
            # divides by sqrt(v) ~ |g|, so its update keeps that relative error.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    loss = float(out[0])
    assert 0.1 < loss < 10  # a real cross-entropy, not a degenerate value
    moved = jax.tree.leaves(
        jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), out[1], params)
    )
    assert min(moved) > 1e-4  # every parameter was updated


def test_training_step_compiles_nothing_at_a_new_batch_size(state) -> None:  # type: ignore[no-untyped-def]
    params, opt_state = state
    step = _chunked_step()
    step(params, opt_state, *_batch(16))
    for n in (23, 40):
        step(params, opt_state, *_batch(n))
        assert step.last_timeline.compile_count() == 0, step.last_timeline


def test_scanned_transformer_step_accumulates_layer_gradients_in_its_backward_scan() -> None:
    from mlcache_lab.models import get_model

    model = get_model("transformer", vocab=32, seq=8, width=16, layers=2, num_heads=2)
    tx = optax.adam(1e-3)

    def loss(params: Any, tokens: jax.Array) -> jax.Array:
        logits = model.apply(params, tokens)
        return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

    def step(params: Any, opt_state: Any, tokens: jax.Array) -> Any:
        value, grads = jax.value_and_grad(loss)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return value, optax.apply_updates(params, updates), opt_state

    params = model.init(jax.random.key(0))
    opt_state = tx.init(params)
    g = mcl.partition(
        step,
        params,
        opt_state,
        *model.make_inputs(8, jax.random.key(1)),
        batch_axes=(None, None, 0),
    )
    scans = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "scan"
    ]
    assert [lab.kind for lab in scans] == ["batched", "reduces"]  # forward, backward
    assert "scan body sums over the batch axis into ys" in scans[1].reason
    scatters = [
        lab.reason
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "scatter-add" and lab.kind != "batched"
    ]  # the embedding's gradient (the others are per-sample scatters)
    assert scatters == [
        "reduces: scatter-add sums per-sample updates over the batch axis 0, "
        "combined across chunks by add"
    ]
    truly_mixing = [lab.reason for lab in g.labels if lab.category == "mixes" and lab.mixes_samples]
    assert not truly_mixing, truly_mixing
    bf = mcl.batched_jit(
        step, batch_axes=(None, None, 0), policy="chunk", micro_batch=4, store=mcl.CacheStore(None)
    )
    for n in (7, 9, 13):  # padded last chunks: the mask reaches the sums inside the scan body
        (tokens,) = model.make_inputs(n, jax.random.key(n))
        out, expected = bf(params, opt_state, tokens), jax.jit(step)(params, opt_state, tokens)
        assert bf.last_plan is not None and bf.last_plan.timeline is not None
        if n != 7:  # chunks of 4 were compiled at the first size: nothing new at 9 or 13
            assert bf.last_plan.timeline.compile_count() == 0, bf.last_plan
        assert "whole" not in {s.mode for s in bf.last_plan.segments}
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
            # adam's step is lr * m / (sqrt(v) + 1e-8): where a gradient is near 1e-8 (the
            # embedding rows of unused tokens) its sign-like step amplifies the gradient's
            # reassociation error; 5e-6 is 0.5% of one lr=1e-3 step.
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=5e-6)
    assert 1.0 < float(out[0]) < 10.0  # a real cross-entropy over 32 tokens


VOCAB, DIM, CLASSES = 11, 6, 3


class Embedder(nn.Module):
    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        h = nn.Embed(VOCAB, DIM)(tokens).mean(1)  # [B, T, D] -> [B, D]
        return nn.Dense(CLASSES)(jnp.tanh(h))


def _handwritten_logits(params: Any, tokens: jax.Array) -> jax.Array:
    h = params["embed"][tokens].mean(1)
    return jnp.tanh(h) @ params["w"]


def _flax_logits(params: Any, tokens: jax.Array) -> jax.Array:
    return Embedder().apply(params, tokens)


def _tokens(n: int) -> tuple[jax.Array, jax.Array]:
    tokens = jax.random.randint(jax.random.key(n), (n, 5), 0, VOCAB)
    return tokens, jax.random.randint(jax.random.key(n + 1), (n,), 0, CLASSES)


@pytest.mark.parametrize("which", ["handwritten", "flax"])
def test_an_embedding_gradient_is_a_sum_over_samples(which: str) -> None:
    """The embedding's gradient (a scatter-add of per-sample rows) reduces; padded rows add 0."""
    if which == "flax":
        logits_fn = _flax_logits
        params = Embedder().init(jax.random.key(0), jnp.zeros((1, 5), jnp.int32))
    else:
        logits_fn = _handwritten_logits
        k1, k2 = jax.random.split(jax.random.key(0))
        params = {
            "embed": jax.random.normal(k1, (VOCAB, DIM)),
            "w": jax.random.normal(k2, (DIM, CLASSES)),
        }
    tx = optax.sgd(0.1)

    def step(params: Any, opt_state: Any, tokens: jax.Array, y: jax.Array) -> Any:
        def loss(p: Any) -> jax.Array:
            logits = logits_fn(p, tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return value, grads, optax.apply_updates(params, updates)

    opt_state = tx.init(params)
    g = mcl.partition(step, params, opt_state, *_tokens(4), batch_axes=(None, None, 0, 0))
    (scatter,) = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "scatter-add" and lab.kind != "batched"
    ]
    assert scatter.kind == "reduces" and "scatter-add sums per-sample updates" in scatter.reason
    for policy in ("chunk", "buckets"):
        bf = mcl.batched_jit(
            step,
            batch_axes=(None, None, 0, 0),
            policy=policy,
            micro_batch=4,
            store=mcl.CacheStore(None),
        )
        for n in (7, 3, 9, 13):  # 7 = 4+2+1 warms every bucket; 9 and 13 pad under chunk
            out = bf(params, opt_state, *_tokens(n))
            expected = jax.jit(step)(params, opt_state, *_tokens(n))
            for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
            assert bf.last_plan is not None and bf.last_plan.timeline is not None
            if n != 7:
                assert bf.last_plan.timeline.compile_count() == 0, bf.last_plan
    grads = jax.tree.leaves(out[1])
    assert min(float(jnp.max(jnp.abs(x))) for x in grads) > 1e-3  # real gradients
