"""Numerical ground truth shared by the partition tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxpr_as_fun

from mlcache_lab.partition import Cluster, ClusterGraph, partition
from mlcache_lab.schedule import schedule


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
        dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype  # keys refuse asarray
        if jnp.issubdtype(dtype, jax.dtypes.prng_key):
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
    """The numerical facts a partition must satisfy, checked through the one executor.

    1. ``graph.run`` (the clusters in queue order, the executor's reference mode)
       gives the function's outputs.
    2. Every batched cluster run on two parts of the batch, concatenated along the
       batch axes, equals the cluster run on the whole batch; every reducing
       cluster's partials over the two parts, combined, equal its value on the
       whole batch (argmax/argmin included). For a symbolic graph this runs
       through the executor: a plan with a segment per cluster (``fuse=False``)
       under ``chunk`` with two chunks (the second padded when the batch is
       odd), evaluated uncompiled, must give every cluster's outputs as the
       whole-batch plan does. The schedule runs a concrete graph whole only, so
       there each batched cluster's program is evaluated on each part padded to
       the analysed batch size (copies of the part's last row, as the schedule
       pads) and the padding dropped.
    3. A symbolic graph, run at each of ``other_sizes``, gives ``fn``'s outputs
       at that size.
    """
    if reference is not None:
        assert_tree_close(graph.run(*args), reference)
    n = graph.batch_size
    whole = schedule(graph, n, "whole", fuse=False).reference_values(*args)
    if graph.symbolic:
        halves = schedule(graph, n, "chunk", -(-n // 2), fuse=False).reference_values(*args)
        assert_cluster_outputs_close(graph, halves, whole, "two chunks")
    else:
        for cluster in graph.clusters:
            if cluster.kind == "batched":
                _check_padded_halves(cluster, whole)
    if graph.symbolic and fn is not None:
        for size in other_sizes:
            resized = resize_args(graph, args, size)
            assert_tree_close(graph.run(*resized), fn(*resized))


def assert_cluster_outputs_close(
    graph: ClusterGraph, got: dict[Any, Any], expected: dict[Any, Any], what: str
) -> None:
    """Every cluster's outputs in ``got`` equal those in ``expected`` (queue order).

    ``got`` and ``expected`` are ``Plan.reference_values`` of plans with a
    segment per cluster; the first cluster that differs is named.
    """
    for cid in graph.queue:
        cluster = graph.clusters[cid]
        for k, v in enumerate(cluster.outputs):
            try:
                assert_tree_close(got[v], expected[v])
            except AssertionError as error:
                raise AssertionError(
                    f"cluster {cid} ({cluster.category}) output {k}: {what} differ from the "
                    f"whole batch: {error}"
                ) from error


def _padded_rows(x: Any, axis: int, start: int, size: int, run_size: int) -> Any:
    """Rows ``[start, start + size)`` of ``x`` and copies of the last up to ``run_size``."""
    rows = np.arange(start, start + run_size).clip(max=start + size - 1)
    return np.take(np.asarray(x), rows, axis=axis)


def _check_padded_halves(cluster: Cluster, env: dict[Any, Any]) -> None:
    """A concrete batched cluster on two padded parts of the batch equals it on the whole."""
    n = cluster.batch_size
    inputs = [env[v] for v in cluster.inputs]
    run = jaxpr_as_fun(cluster.jaxpr)  # what the reference does with a concrete program
    parts = []
    for start, size in ((0, n // 2), (n // 2, n - n // 2)):
        padded = [
            x if a is None else _padded_rows(x, a, start, size, n)
            for x, a in zip(inputs, cluster.in_batch_axes, strict=True)
        ]
        outs = run(*padded)
        parts.append(
            [
                y if a is None else np.take(np.asarray(y), np.arange(size), axis=a)
                for y, a in zip(outs, cluster.out_batch_axes, strict=True)
            ]
        )
    for k, (v, a) in enumerate(zip(cluster.outputs, cluster.out_batch_axes, strict=True)):
        got = parts[0][k] if a is None else np.concatenate([p[k] for p in parts], axis=a)
        try:
            assert_tree_close(got, np.asarray(env[v]))
        except AssertionError as error:
            raise AssertionError(
                f"cluster {cluster.id} output {k}: two padded parts differ from the whole "
                f"batch: {error}"
            ) from error


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
