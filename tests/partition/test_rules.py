"""One program per rule: the label the rule gives, and the numerical ground truth.

The label alone would only restate the rule; every case is also run through
``partition_and_check``, which splits each batched cluster in two and compares.

Programs derive batch-sized shapes from their input (``x.shape[0]``), so they
trace with the symbolic batch dimension ``B``. The ``*-hardcoded`` cases (and
``top-k-batch``, whose shape rule needs ``B >= 2``) are not polymorphic in the
batch: they exercise the concrete fallback, where the same rules compare ints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from .ground_truth import partition_and_check

B = 4
rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(B, 3, 5)), jnp.float32)  # batch axis 0
XT = jnp.asarray(rng.normal(size=(3, B, 5)), jnp.float32)  # batch axis 1
W = jnp.asarray(rng.normal(size=(5, 6)), jnp.float32)
IDX = jnp.asarray(rng.integers(0, 7, size=(B, 3)), jnp.int32)
TABLE = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
IMG = jnp.asarray(rng.normal(size=(B, 6, 6, 2)), jnp.float32)
KERNEL = jnp.asarray(rng.normal(size=(3, 3, 2, 4)), jnp.float32)

# (name, fn, args, batch_axes, primitive, expected category of that primitive)
CASES: list[tuple[str, Callable[..., Any], tuple[Any, ...], Any, str, str]] = [
    ("elementwise", lambda x: jnp.sin(x) * 2 + x, (X,), 0, "sin", "batched"),
    ("compare-select", lambda x: jnp.where(x > 0, x, -x), (X,), 0, "select_n", "batched"),
    ("int-ops", lambda i: (i * 3 + 1) % 5 - (i >> 1), (IDX,), 0, "rem", "batched"),
    (
        "convert",
        lambda x: x.astype(jnp.int32).astype(jnp.float16),
        (X,),
        0,
        "convert_element_type",
        "batched",
    ),
    ("dot-free", lambda x, w: x @ w, (X, W), (0, None), "dot_general", "batched"),
    (
        "dot-batch-dim",
        lambda x: jnp.einsum("bij,bkj->bik", x, x),
        (X,),
        0,
        "dot_general",
        "batched",
    ),
    (
        "dot-contract-batch",
        lambda x: jnp.einsum("bij,bik->jk", x, x),
        (X,),
        0,
        "dot_general",
        "reduces",
    ),
    (
        "dot-contract-batch-weight-gradient",
        lambda x, g: x.reshape(x.shape[0], -1).T @ g,
        (X, X[:, 0, :]),
        0,
        "dot_general",
        "reduces",
    ),
    (
        "dot-contract-batch-unbatched-side-hardcoded",
        lambda x, w: jnp.einsum("bij,bk->ijk", x, w),
        (X, X[:, 0, :]),
        (0, None),
        "dot_general",
        "reduces",
    ),
    (
        "dot-outer-batch",
        lambda x: x.reshape(x.shape[0], -1) @ x.reshape(x.shape[0], -1).T,
        (X,),
        0,
        "dot_general",
        "mixes",
    ),
    (
        "dot-outer-batch-hardcoded",
        lambda x: x.reshape(B, -1) @ x.reshape(B, -1).T,
        (X,),
        0,
        "dot_general",
        "mixes",
    ),
    ("dot-moved-axis", lambda x, w: x @ w, (XT, W), (None, 1), "dot_general", "batched"),
    (
        "conv",
        lambda k, x: jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        (KERNEL, IMG),
        (None, 0),
        "conv_general_dilated",
        "batched",
    ),
    (
        "conv-batch-on-spatial",
        lambda k, x: jax.lax.conv_general_dilated(
            x.transpose(1, 0, 2, 3), k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        (KERNEL, IMG),
        (None, 0),
        "conv_general_dilated",
        "mixes",
    ),
    ("reduce-other", lambda x: x.sum(axis=(1, 2)), (X,), 0, "reduce_sum", "batched"),
    ("reduce-batch", lambda x: x.max(axis=0), (X,), 0, "reduce_max", "reduces"),
    ("reduce-min-batch", lambda x: x.min(axis=(0, 2)), (X,), 0, "reduce_min", "reduces"),
    ("reduce-sum-all", lambda x: x.sum(), (X,), 0, "reduce_sum", "reduces"),
    ("reduce-and-batch", lambda x: jnp.all(x > 0, axis=0), (X,), 0, "reduce_and", "reduces"),
    ("reduce-or-batch", lambda x: jnp.any(x > 0, axis=0), (X,), 0, "reduce_or", "reduces"),
    ("reduce-prod-batch", lambda x: x.prod(axis=0), (X,), 0, "reduce_prod", "mixes"),
    ("logsumexp-batch", lambda x: jax.nn.logsumexp(x, axis=0), (X,), 0, "reduce_sum", "reduces"),
    ("argmin-batch", lambda x: jnp.argmin(x, axis=0), (X,), 0, "argmin", "reduces"),
    ("argmax-other", lambda x: jnp.argmax(x, axis=2), (X,), 0, "argmax", "batched"),
    ("argmax-batch", lambda x: jnp.argmax(x, axis=0), (X,), 0, "argmax", "reduces"),
    ("reshape-keeps", lambda x: x.reshape(x.shape[0], 15), (X,), 0, "reshape", "batched"),
    ("reshape-keeps-hardcoded", lambda x: x.reshape(B, 15), (X,), 0, "reshape", "batched"),
    ("reshape-merges", lambda x: x.reshape(-1, 5), (X,), 0, "reshape", "mixes"),
    ("reshape-merges-hardcoded", lambda x: x.reshape(B * 3, 5), (X,), 0, "reshape", "mixes"),
    ("reshape-splits", lambda x: x.reshape(3, -1), (X,), 0, "reshape", "mixes"),
    (
        "reshape-moved",
        lambda x: x.reshape(3, x.shape[1], 5, 1),
        (XT,),
        1,
        "reshape",
        "batched",
    ),
    ("reshape-moved-hardcoded", lambda x: x.reshape(3, B, 5, 1), (XT,), 1, "reshape", "batched"),
    ("transpose", lambda x: jnp.transpose(x, (2, 0, 1)) + 1, (X,), 0, "transpose", "batched"),
    (
        "broadcast",
        lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], 2, 3, 5)),
        (X,),
        0,
        "broadcast_in_dim",
        "batched",
    ),
    (
        "broadcast-hardcoded",
        lambda x: jnp.broadcast_to(x[:, None], (B, 2, 3, 5)),
        (X,),
        0,
        "broadcast_in_dim",
        "batched",
    ),
    (
        "expand-squeeze",
        lambda x: jnp.squeeze(jnp.expand_dims(x, 2), 2),
        (X,),
        0,
        "squeeze",
        "batched",
    ),
    # With a symbolic B, basic indexing lowers to gather; lax.slice_in_dim stays a slice.
    ("slice-other", lambda x: jax.lax.slice_in_dim(x, 1, 3, axis=1), (X,), 0, "slice", "batched"),
    ("slice-batch", lambda x: jax.lax.slice_in_dim(x, 1, None, axis=0), (X,), 0, "slice", "mixes"),
    ("index-other", lambda x: x[:, 1:3], (X,), 0, "gather", "batched"),
    ("index-batch", lambda x: x[1:], (X,), 0, "gather", "mixes"),
    ("index-reversed-batch", lambda x: x[::-1], (X,), 0, "gather", "mixes"),
    (
        "dynamic-slice",
        lambda x, i: jax.lax.dynamic_slice_in_dim(x, i, 2, axis=2),
        (X, jnp.int32(1)),
        (0, None),
        "dynamic_slice",
        "batched",
    ),
    (
        "dynamic-update",
        lambda x: jax.lax.dynamic_update_slice_in_dim(x, x[:, :1] * 0, 1, 1),
        (X,),
        0,
        "dynamic_update_slice",
        "batched",
    ),
    ("embedding-lookup", lambda t, i: t[i], (TABLE, IDX), (None, 0), "gather", "batched"),
    ("gather-window", lambda x: x[:, :, jnp.array([4, 0, 2])], (X,), 0, "gather", "batched"),
    ("gather-into-batch", lambda x: x[jnp.array([3, 0])], (X,), 0, "gather", "mixes"),
    (
        "take-along-axis",
        lambda x, i: jnp.take_along_axis(x[:, :, 0], i % 3, axis=1),
        (X, IDX),
        0,
        "gather",
        "batched",
    ),
    ("scatter-window", lambda x: x.at[:, 1].set(0.0), (X,), 0, "scatter", "batched"),
    (  # a histogram of the samples' indices: a sum over samples, from zeros
        "scatter-add-shared",
        lambda i: jnp.zeros(7).at[i].add(1.0),
        (IDX,),
        0,
        "scatter-add",
        "reduces",
    ),
    (  # into a shared non-zero table: every chunk would add the table again
        "scatter-add-nonzero",
        lambda i: jnp.ones(7).at[i].add(1.0),
        (IDX,),
        0,
        "scatter-add",
        "mixes",
    ),
    (
        "concatenate-other",
        lambda x: jnp.concatenate([x, x * 2], axis=2),
        (X,),
        0,
        "concatenate",
        "batched",
    ),
    (
        "concatenate-batch",
        lambda x: jnp.concatenate([x, x], axis=0),
        (X,),
        0,
        "concatenate",
        "mixes",
    ),
    ("pad-other", lambda x: jnp.pad(x, ((0, 0), (1, 2), (0, 0))), (X,), 0, "pad", "batched"),
    ("pad-batch", lambda x: jnp.pad(x, ((1, 0), (0, 0), (0, 0))), (X,), 0, "pad", "mixes"),
    ("cumsum-other", lambda x: jnp.cumsum(x, axis=2), (X,), 0, "cumsum", "batched"),
    ("cumsum-batch", lambda x: jnp.cumsum(x, axis=0), (X,), 0, "cumsum", "mixes"),
    ("cummax-batch", lambda x: jax.lax.cummax(x, axis=1), (XT,), 1, "cummax", "mixes"),
    ("sort-other", lambda x: jnp.sort(x, axis=-1), (X,), 0, "sort", "batched"),
    ("sort-batch", lambda x: jnp.sort(x, axis=0), (X,), 0, "sort", "mixes"),
    ("argsort", lambda x: jnp.argsort(x, axis=1), (X,), 0, "sort", "batched"),
    ("top-k", lambda x: jax.lax.top_k(x, 2)[0], (X,), 0, "top_k", "batched"),
    (
        "top-k-batch",
        lambda x: jax.lax.top_k(jnp.moveaxis(x, 0, -1), 2)[1],
        (X,),
        0,
        "top_k",
        "mixes",
    ),
    ("split", lambda x: jnp.split(x, [2], axis=2)[1], (X,), 0, "split", "batched"),
    ("rev", lambda x: jax.lax.rev(x, (0,)), (X,), 0, "rev", "mixes"),
    ("rev-other", lambda x: jax.lax.rev(x, (2,)), (X,), 0, "rev", "batched"),
    (
        "iota-promoted",
        lambda x: x + jnp.arange(x.shape[0], dtype=x.dtype)[:, None, None],
        (X,),
        0,
        "add",
        "batched",
    ),
    (
        "iota-promoted-hardcoded",
        lambda x: x + jnp.arange(B, dtype=x.dtype)[:, None, None],
        (X,),
        0,
        "add",
        "batched",
    ),
    (
        "batch-size-on-another-axis",
        lambda x: x[:, :1, :1] * jnp.ones(x.shape[0]),
        (X,),
        0,
        "mul",
        "mixes",
    ),
    (
        "rng-invariant",
        lambda x: x + jax.random.normal(jax.random.key(1), x.shape),
        (X,),
        0,
        "add",
        "batched",
    ),
    (
        "rng-per-sample-keys",
        lambda k: (
            jax.random.uniform(k, (3,)).sum()
            if False
            else jax.vmap(lambda kk: jax.random.uniform(kk, (3,)))(k)
        ),
        (jax.random.split(jax.random.key(2), B),),
        0,
        "random_bits",
        "batched",
    ),
    (
        "pooling",
        lambda x: jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
        ),
        (IMG,),
        0,
        "reduce_window_max",
        "batched",
    ),
    (
        "pooling-batch",
        lambda x: jax.lax.reduce_window(x, 0.0, jax.lax.add, (2, 1, 1, 1), (1, 1, 1, 1), "VALID"),
        (IMG,),
        0,
        "reduce_window_sum",
        "mixes",
    ),
    (
        "unknown-primitive",
        lambda x: jnp.linalg.cholesky(jnp.einsum("bij,bkj->bik", x, x) + 5 * jnp.eye(3)),
        (X,),
        0,
        "cholesky",
        "mixes",
    ),
]


CONCRETE = {c[0] for c in CASES if c[0].endswith("-hardcoded")} | {"top-k-batch"}


@pytest.mark.parametrize(
    ("name", "fn", "args", "batch_axes", "prim", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_rule(name, fn, args, batch_axes, prim, expected) -> None:  # type: ignore[no-untyped-def]
    g = partition_and_check(fn, *args, batch_axes=batch_axes)
    assert g.symbolic == (name not in CONCRETE), g.symbolic_reason
    assert bool(g.symbolic_reason) == (not g.symbolic)
    eqns = g.jaxpr.jaxpr.eqns
    labels = [lab for e, lab in zip(eqns, g.labels, strict=True) if e.primitive.name == prim]
    assert labels, f"{prim} not in {[e.primitive.name for e in eqns]}"
    assert labels[-1].category == expected, labels[-1].reason
    if expected in ("mixes", "reduces"):
        reason = labels[-1].reason
        assert prim in reason and ("axis" in reason or "axes" in reason)
    if expected == "reduces":  # the reason names the combine; the output has no batch axis
        assert "combined across chunks by" in labels[-1].reason
        assert labels[-1].kind == "reduces" and labels[-1].out_batch_axes == (None,)


def test_unknown_primitive_reason_says_so() -> None:
    fn = CASES[-1][1]
    g = partition_and_check(fn, X)
    (lab,) = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "cholesky"
    ]
    assert "no batching rule" in lab.reason


def test_mixes_reason_names_primitive_and_axis() -> None:
    g = partition_and_check(lambda x: x.prod(axis=1), XT, batch_axes=1)
    assert g.labels[0].reason == "mixes: reduce_prod reduces over the batch axis 1 (axes=(1,))"


def test_reduces_reason_names_primitive_axis_and_combine() -> None:
    g = partition_and_check(lambda x: x.sum(axis=1), XT, batch_axes=1)
    assert g.labels[0].reason == (
        "reduces: reduce_sum reduces over the batch axis 1, combined across chunks by add"
    )
    g = partition_and_check(lambda x: jnp.einsum("bij,bik->jk", x, x), X)
    assert g.labels[-1].reason == (
        "reduces: dot_general contracts the batch axis 0, combined across chunks by add"
    )


def test_invariant_work_is_labelled_invariant() -> None:
    g = partition_and_check(lambda w, x: x @ (w @ w.T), W, X[:, 0, :], batch_axes=(None, 0))
    first = g.labels[0]
    assert first.kind == "non_batched" and first.category == "invariant"
    assert g.labels[-1].out_batch_axes == (0,) and g.labels[-1].kind == "batched"


def test_batch_axis_moves_with_transpose() -> None:
    g = partition_and_check(lambda x: jnp.transpose(x, (1, 2, 0)) * 2, X)
    assert g.labels[0].out_batch_axes == (2,)
    assert g.clusters[0].out_batch_axes == (2,)


def test_follower_of_a_mix_is_mixes_not_invariant() -> None:
    g = partition_and_check(lambda x: jnp.exp(x.mean(axis=0)), X, growth="plain")
    names = [e.primitive.name for e in g.jaxpr.jaxpr.eqns]
    # 1/B comes from dim_as_value(B): invariant (no batched operand), yet it needs B.
    assert names == ["dim_as_value", "convert_element_type", "reduce_sum", "div", "exp"]
    assert [lab.category for lab in g.labels] == [
        "invariant",
        "invariant",
        "reduces",
        "mixes",
        "mixes",
    ]
    assert "computed across samples" in g.labels[-1].reason
    (invariant,) = [c for c in g.clusters if c.category == "invariant"]
    assert invariant.needs_batch_size and not invariant.inputs


def test_symbolic_reshape_reasons_show_the_batch_dimension() -> None:
    g = partition_and_check(lambda x: x.reshape(-1, 5) * 2, X)
    assert g.symbolic
    assert (
        g.labels[0].reason == "mixes: reshape merges the batch axis 0 (shape (B, 3, 5) -> (3*B, 5))"
    )
    assert str(g.jaxpr.jaxpr.eqns[0].outvars[0].aval.shape[0]) == "3*B"


def test_batch_size_on_a_non_batch_axis_mixes() -> None:
    """``x @ x.T`` is [B, B]: read per sample, a chunk would need the whole batch's column."""
    g = partition_and_check(lambda x: (x @ x.T) + x[:, :1], X[:, 0, :])
    (add,) = [
        lab
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels, strict=True)
        if e.primitive.name == "add"
    ]
    assert add.category == "mixes"
    assert "size B on axis 1" in add.reason
