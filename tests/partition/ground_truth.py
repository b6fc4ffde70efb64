"""Numerical ground truth shared by the partition tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mlcache_lab.partition import ClusterGraph, partition, split_run
from mlcache_lab.partition.cluster import Cluster
from mlcache_lab.partition.rules import COMBINES

_COMBINE_UFUNCS = {
    "add": np.add,
    "max": np.maximum,
    "min": np.minimum,
    "and": np.logical_and,
    "or": np.logical_or,
}


def _close(a: Any, b: Any) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
    if jnp.issubdtype(a.dtype, jnp.inexact):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    else:
        np.testing.assert_array_equal(a, b)


def assert_tree_close(a: Any, b: Any) -> None:
    """Same structure; exact for integers and bools, allclose for floats."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(np.asarray(x).dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        _close(x, y)


def resize_args(graph: ClusterGraph, args: tuple[Any, ...], n: int) -> tuple[Any, ...]:
    """``args`` with ``n`` samples: the batched leaves' samples repeated or cut."""
    leaves, tree = jax.tree.flatten(args)
    out = [
        x if a is None else jnp.take(x, jnp.arange(n) % x.shape[a], axis=a)
        for x, a in zip(leaves, graph.declared_batch_axes, strict=True)
    ]
    return jax.tree.unflatten(tree, out)


def check_ground_truth(
    graph: ClusterGraph,
    *args: Any,
    reference: Any = None,
    fn: Callable[..., Any] | None = None,
    other_sizes: tuple[int, ...] = (),
) -> None:
    """The numerical facts a partition must satisfy.

    1. Clusters run in queue order give the function's outputs.
    2. Every batched cluster run on two parts of the batch, concatenated along the
       batch axes, equals the cluster run on the whole batch (a concrete graph's
       cluster runs the smaller part padded to its batch size).
    3. A reducing cluster of a symbolic graph run on two parts of the batch,
       its partials combined (added, maxed, ...), equals the cluster run on the
       whole batch (argmax/argmin partials need values the cluster does not
       return: the schedule's tests check those).
    4. A symbolic graph, run at each of ``other_sizes``, gives ``fn``'s outputs
       at that size.
    """
    if reference is not None:
        assert_tree_close(graph.run(*args), reference)
    env = graph.evaluate(*args)
    for cluster in graph.clusters:
        if cluster.kind == "reduces" and graph.symbolic and graph.batch_size > 1:
            _check_reduction(cluster, [env[v] for v in cluster.inputs], graph.batch_size)
        if cluster.kind != "batched":
            continue
        inputs = [env[v] for v in cluster.inputs]
        n = graph.batch_size if cluster.needs_batch_size else None
        whole = cluster.run(*inputs, batch_size=n)
        first = graph.batch_size // 2
        parts = split_run(cluster, inputs, [first, graph.batch_size - first])
        for w, p in zip(whole, parts, strict=True):
            assert_tree_close(p, w)
    if graph.symbolic and fn is not None:
        for n in other_sizes:
            resized = resize_args(graph, args, n)
            assert_tree_close(graph.run(*resized), fn(*resized))


def partition_and_check(
    fn: Callable[..., Any],
    *args: Any,
    batch_axes: Any = 0,
    min_cluster_size: int = 1,
    growth: str = "gather",
    other_sizes: tuple[int, ...] = (1,),
) -> ClusterGraph:
    """Partition ``fn`` and check the ground truths against ``fn`` (also at ``other_sizes``)."""
    graph = partition(
        fn, *args, batch_axes=batch_axes, min_cluster_size=min_cluster_size, growth=growth
    )
    check_ground_truth(graph, *args, reference=fn(*args), fn=fn, other_sizes=other_sizes)
    return graph


def _check_reduction(cluster: Cluster, inputs: list[Any], n: int) -> None:
    made = {v: e.primitive.name for e in cluster.jaxpr.jaxpr.eqns for v in e.outvars}
    whole = cluster.run(*inputs)
    first = n // 2
    halves = []
    for rows in (slice(0, first), slice(first, n)):
        part = []
        for x, a in zip(inputs, cluster.in_batch_axes, strict=True):
            if a is not None:
                index = [slice(None)] * np.ndim(x)
                index[a] = rows
                x = np.asarray(x)[tuple(index)]
            part.append(x)
        halves.append(cluster.run(*part))
    for k, v in enumerate(cluster.jaxpr.jaxpr.outvars):
        op = COMBINES.get(made.get(v, ""))
        if op in _COMBINE_UFUNCS:
            combined = _COMBINE_UFUNCS[op](np.asarray(halves[0][k]), np.asarray(halves[1][k]))
            _close(combined.astype(np.asarray(whole[k]).dtype), whole[k])
