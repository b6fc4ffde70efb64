"""Running clusters: the whole graph in queue order, or a batched cluster in chunks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .cluster import Cluster
from .graph import ClusterGraph

__all__ = ["NEEDS_GRAPH", "run_clusters", "split_inputs", "split_run"]

NEEDS_GRAPH = (
    "Cluster {id} is from a concretely traced graph of batch size {n}, so a chunk of {size} "
    "samples needs the graph re-partitioned at that size. Fix: "
    "split_run(cluster, inputs, sizes, graph=graph)."
)
BAD_SIZES = (
    "sizes must be positive ints summing to the batch size of the inputs. Got sizes={sizes} "
    "for a batch of {batch}. Fix: e.g. sizes=[{half}, {rest}]."
)


def run_clusters(graph: ClusterGraph, *args: Any) -> Any:
    """Run ``graph``'s clusters in queue order on ``args`` (same as ``graph.run(*args)``)."""
    return graph.run(*args)


def split_inputs(cluster: Cluster, inputs: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """Cut a batched cluster's inputs into consecutive chunks of ``sizes`` samples.

    Inputs with a batch axis are sliced along it; the others are passed whole to
    every chunk.
    """
    batch = next(
        (
            np.shape(x)[a]
            for x, a in zip(inputs, cluster.in_batch_axes, strict=True)
            if a is not None
        ),
        cluster.batch_size,
    )
    if any(int(s) != s or s < 1 for s in sizes) or sum(sizes) != batch:
        raise ValueError(
            BAD_SIZES.format(
                sizes=list(sizes), batch=batch, half=batch // 2, rest=batch - batch // 2
            )
        )
    starts = np.cumsum([0, *sizes[:-1]])
    chunks = []
    for start, size in zip(starts, sizes, strict=True):
        chunk = []
        for x, a in zip(inputs, cluster.in_batch_axes, strict=True):
            if a is None:
                chunk.append(x)
            else:
                index = [slice(None)] * np.ndim(x)
                index[a] = slice(int(start), int(start + size))
                chunk.append(x[tuple(index)])
        chunks.append(chunk)
    return chunks


def split_run(
    cluster: Cluster,
    inputs: Sequence[Any],
    sizes: Sequence[int],
    *,
    graph: ClusterGraph | None = None,
) -> list[Any]:
    """Run a batched cluster chunk by chunk and put the results back together.

    Outputs with a batch axis are concatenated along it; outputs without one are
    the same for every chunk, and are taken from the first. A
    :attr:`~.Cluster.positional` cluster is told each chunk's first row. For a
    batched cluster this equals ``cluster.run(*inputs)``: that is the ground
    truth the analysis is tested against.

    A cluster of a symbolic graph runs every chunk itself. A cluster of a
    concrete graph runs at its analysed batch size only: with ``graph``, a
    chunk of another size runs on the same cluster of
    ``graph.at_batch_size(size)``; without, a smaller chunk is padded to the
    analysed size with its own samples (repeated), as a padding schedule would,
    and the padding rows are dropped from the outputs.

    Raises:
      ValueError: ``sizes`` do not add up to the batch, or a concrete cluster
        gets a chunk larger than its batch size and no ``graph``.
    """
    results = []
    starts = np.cumsum([0, *sizes[:-1]])
    chunks = split_inputs(cluster, inputs, sizes)
    for chunk, size, start in zip(chunks, sizes, starts, strict=True):
        if cluster.needs_batch_size:  # it makes batch-sized values from no input
            results.append(cluster.run(*chunk, batch_size=int(size), start=int(start)))
        elif cluster.symbolic or size == cluster.batch_size:
            results.append(cluster.run(*chunk, start=int(start)))
        elif graph is not None:
            results.append(graph.at_batch_size(int(size)).clusters[cluster.id].run(*chunk))
        elif size < cluster.batch_size:
            results.append(_run_padded(cluster, chunk, int(size)))
        else:
            raise ValueError(NEEDS_GRAPH.format(id=cluster.id, size=size, n=cluster.batch_size))
    return [
        results[0][k] if a is None else jnp.concatenate([r[k] for r in results], axis=a)
        for k, a in enumerate(cluster.out_batch_axes)
    ]


def _run_padded(cluster: Cluster, chunk: Sequence[Any], size: int) -> list[Any]:
    """Run a concrete batched cluster on ``size`` samples padded to its batch size."""
    wrap = np.arange(cluster.batch_size) % size
    padded = [
        x if a is None else jnp.take(x, wrap, axis=a)
        for x, a in zip(chunk, cluster.in_batch_axes, strict=True)
    ]
    outs = cluster.run(*padded)
    return [
        y if a is None else jax.lax.slice_in_dim(y, 0, size, axis=a)
        for y, a in zip(outs, cluster.out_batch_axes, strict=True)
    ]
