"""partition(): arguments, pytrees, bad input, g.run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlcache_lab.partition import ClusterGraph, partition
from mlcache_lab.partition.api import (
    AXIS_OUT_OF_RANGE,
    BAD_AXIS_TYPE,
    BAD_MIN_CLUSTER_SIZE,
    BATCH_AXES_PREFIX,
    BATCH_AXES_STRUCTURE,
    BATCH_SIZES_DIFFER,
    BATCH_TOO_SMALL,
    NO_BATCHED_ARGUMENT,
    NON_ARRAY_ARGUMENT,
    NON_ARRAY_OUTPUT,
)
from mlcache_lab.partition.graph import WRONG_ARGS

from .ground_truth import assert_tree_close, partition_and_check


def _pattern(message: str) -> str:
    """The constant's text up to its first placeholder, regex-escaped."""
    import re

    return re.escape(message.split("{")[0])


def mlp(params: dict, x: jax.Array) -> jax.Array:
    return jnp.tanh(x @ params["w"] + params["b"])


@pytest.fixture
def params() -> dict:
    return {"w": jnp.ones((3, 4)) / 3, "b": jnp.arange(4.0)}


def test_returns_graph_with_contract_fields(params: dict) -> None:
    x = jnp.arange(15.0).reshape(5, 3)
    g = partition(mlp, params, x, batch_axes=(None, 0))
    assert isinstance(g, ClusterGraph)
    assert len(g.labels) == len(g.jaxpr.jaxpr.eqns)
    assert sorted(g.queue) == list(range(len(g.clusters)))
    assert g.batch_size == 5
    covered = sorted(i for c in g.clusters for i in c.equations)
    assert covered == list(range(len(g.jaxpr.jaxpr.eqns)))
    for c in g.clusters:
        assert c.kind in ("batched", "non_batched")
        assert c.reason.split(":")[0] == c.category
        assert len(c.in_batch_axes) == len(c.inputs) == len(c.jaxpr.jaxpr.invars)
        assert len(c.out_batch_axes) == len(c.outputs) == len(c.jaxpr.jaxpr.outvars)
    assert_tree_close(g.run(params, x), mlp(params, x))


def test_batch_axes_prefix_pytree_and_negative_axis() -> None:
    def f(p: dict, xs: dict) -> dict:
        return {"y": xs["a"].T * p["s"] + xs["b"], "n": jnp.sum(p["t"])}

    p = {"s": jnp.float32(2.0), "t": jnp.ones(3)}
    xs = {"a": jnp.ones((4, 5)), "b": jnp.ones((5, 4))}
    g = partition_and_check(f, p, xs, batch_axes=(None, {"a": -1, "b": 0}))
    assert g.in_batch_axes == (None, None, 1, 0)
    assert jax.tree.structure(g.run(p, xs)) == jax.tree.structure(f(p, xs))


def test_default_batch_axes_is_zero_for_every_argument() -> None:
    g = partition_and_check(lambda a, b: a * b, jnp.ones((3, 2)), jnp.ones((3, 2)))
    assert g.in_batch_axes == (0, 0)
    assert [c.kind for c in g.clusters] == ["batched"]


def test_python_scalar_and_passthrough_outputs() -> None:
    def f(x: jax.Array, w: jax.Array) -> tuple:
        return x, 3.0, w, x * 2

    g = partition_and_check(f, jnp.ones((2, 3)), jnp.ones(3), batch_axes=(0, None))
    assert len(g.clusters) == 1


@pytest.mark.parametrize(
    ("batch_axes", "args", "message"),
    [
        ((0,), (jnp.ones((2, 3)), jnp.ones(3)), BATCH_AXES_STRUCTURE),
        ((0, {"x": 0}), (jnp.ones((2, 3)), jnp.ones(3)), BATCH_AXES_PREFIX),
        ("0", (jnp.ones((2, 3)),), BATCH_AXES_STRUCTURE),
        ((0, 2), (jnp.ones((2, 3)), jnp.ones((2, 3))), AXIS_OUT_OF_RANGE),
        ((0, -3), (jnp.ones((2, 3)), jnp.ones((2, 3))), AXIS_OUT_OF_RANGE),
        ((0, 1.0), (jnp.ones((2, 3)), jnp.ones((2, 3))), BAD_AXIS_TYPE),
        ((0, 0), (jnp.ones((2, 3)), jnp.ones((4, 3))), BATCH_SIZES_DIFFER),
        ((None, None), (jnp.ones((2, 3)), jnp.ones((2, 3))), NO_BATCHED_ARGUMENT),
        ((0, None), (jnp.ones((1, 3)), jnp.ones((1, 3))), BATCH_TOO_SMALL),
        ((0, None), (jnp.ones((2, 3)), "relu"), NON_ARRAY_ARGUMENT),
    ],
)
def test_bad_input_raises_value_error_naming_the_fix(batch_axes, args, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=_pattern(message)) as info:
        partition(lambda *a: a[0] * 2, *args, batch_axes=batch_axes)
    assert "Fix:" in str(info.value)


def test_error_names_the_argument_path_and_value() -> None:
    with pytest.raises(ValueError, match=r"axis 5 for example_args\[1\]\['x'\] of shape \(2, 3\)"):
        partition(lambda a, b: a, jnp.ones((2, 3)), {"x": jnp.ones((2, 3))}, batch_axes=(0, 5))
    with pytest.raises(ValueError, match=r"'example_args\[0\]': 2, 'example_args\[1\]': 3"):
        partition(lambda a, b: a, jnp.ones((2, 3)), jnp.ones((3, 3)), batch_axes=0)


def test_function_returning_non_arrays_is_rejected() -> None:
    with pytest.raises(ValueError, match=_pattern(NON_ARRAY_OUTPUT)) as info:
        partition(lambda x: {"y": x, "name": "relu"}, jnp.ones((2, 3)))
    assert "output['name']" in str(info.value)


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "4"])
def test_bad_min_cluster_size(value: object) -> None:
    with pytest.raises(ValueError, match=_pattern(BAD_MIN_CLUSTER_SIZE)):
        partition(lambda x: x, jnp.ones((2, 3)), min_cluster_size=value)  # type: ignore[arg-type]


def test_run_rejects_other_shapes_or_structure(params: dict) -> None:
    g = partition(mlp, params, jnp.ones((4, 3)), batch_axes=(None, 0))
    with pytest.raises(ValueError, match=_pattern(WRONG_ARGS)):
        g.run(params, jnp.ones((4, 5)))
    with pytest.raises(ValueError, match="tree structure differs"):
        g.run(params)


def test_run_takes_any_batch_size(params: dict) -> None:
    g = partition(mlp, params, jnp.ones((4, 3)), batch_axes=(None, 0))
    assert g.symbolic
    for n in (1, 5, 9):
        x = jnp.arange(n * 3.0).reshape(n, 3)
        assert_tree_close(g.run(params, x), mlp(params, x))


def test_unbatched_argument_aligned_with_batch_is_promoted() -> None:
    """``mask`` is declared unbatched, but sample i reads mask[i]: it must be split.

    With a symbolic batch ``B`` the function does not trace (``[B, 3] * [4, 3]``):
    the graph falls back to the example batch size, where the promotion happens.
    """

    def f(mask: jax.Array, x: jax.Array) -> jax.Array:
        return jnp.sin(x) * mask

    x = jnp.arange(12.0).reshape(4, 3)
    mask = jnp.asarray(np.random.default_rng(0).random((4, 3)), jnp.float32)
    g = partition_and_check(f, mask, x, batch_axes=(None, 0))
    assert not g.symbolic and "incompatible shapes" in g.symbolic_reason
    assert g.in_batch_axes == (0, 0) and g.declared_batch_axes == (None, 0)
    (cluster,) = g.clusters
    assert cluster.kind == "batched" and cluster.in_batch_axes == (0, 0)


def test_labels_are_deterministic(params: dict) -> None:
    x = jnp.ones((4, 3))
    g1 = partition(mlp, params, x, batch_axes=(None, 0))
    g2 = partition(mlp, params, x, batch_axes=(None, 0))
    assert g1.queue == g2.queue and g1.dependencies == g2.dependencies
    assert [c.equations for c in g1.clusters] == [c.equations for c in g2.clusters]
    assert [(lab.kind, lab.out_batch_axes, lab.reason) for lab in g1.labels] == [
        (lab.kind, lab.out_batch_axes, lab.reason) for lab in g2.labels
    ]
