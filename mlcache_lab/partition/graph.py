"""``ClusterGraph``: the partition of a jaxpr, runnable in queue order and displayable."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal, Var
from jax.tree_util import PyTreeDef

from .analysis import Axis, JaxprAnalysis, Label
from .cluster import Cluster

__all__ = ["ClusterGraph"]

WRONG_ARGS = (
    "ClusterGraph.run expects arguments like the example arguments of partition(): "
    "{what}. Got {got}, expected {expected}. Fix: pass arrays of the analysed shapes "
    "(run batched clusters on other batch sizes with Cluster.run)."
)


@dataclasses.dataclass(frozen=True, eq=False)
class ClusterGraph:
    """Batched and non-batched clusters of a function's jaxpr (see :func:`partition`).

    Attributes:
      jaxpr: the analysed ``ClosedJaxpr``, calls inlined; ``labels[i]`` and the
        clusters' ``equations`` index its equations.
      labels: one :class:`~mlcache_lab.partition.analysis.Label` per equation.
      clusters: the :class:`Cluster` s, numbered by their first equation.
      dependencies: ``(producer_cluster_id, consumer_cluster_id)`` pairs, sorted.
      queue: cluster ids in a deterministic topological order (Kahn's algorithm,
        lowest ready id first).
      in_tree: tree structure of the example arguments.
      out_tree: tree structure of the function's outputs.
      in_batch_axes: batch axis of each flattened argument (after promotion:
        an argument declared without one but aligned with the batch gets one).
      batch_size: the example batch size.
      min_cluster_size: the merging threshold used.
      name: the function's name.
      analysis: the full batch analysis (axis of every variable).
    """

    jaxpr: ClosedJaxpr
    labels: list[Label]
    clusters: list[Cluster]
    dependencies: list[tuple[int, int]]
    queue: list[int]
    in_tree: PyTreeDef
    out_tree: PyTreeDef
    in_batch_axes: tuple[Axis, ...]
    batch_size: int
    min_cluster_size: int
    name: str
    analysis: JaxprAnalysis = dataclasses.field(repr=False)

    def initial_values(self, *args: Any) -> dict[Var, Any]:
        """Values of the jaxpr's inputs and constants for ``args``: where a run starts.

        Raises:
          ValueError: ``args`` do not have the example arguments' structure and shapes.
        """
        leaves, tree = jax.tree.flatten(args)
        if tree != self.in_tree:
            raise ValueError(
                WRONG_ARGS.format(
                    what="the tree structure differs", got=tree, expected=self.in_tree
                )
            )
        jaxpr = self.jaxpr.jaxpr
        for i, (x, v) in enumerate(zip(leaves, jaxpr.invars, strict=True)):
            if tuple(np.shape(x)) != tuple(v.aval.shape):
                raise ValueError(
                    WRONG_ARGS.format(
                        what=f"flat argument {i} has another shape",
                        got=np.shape(x),
                        expected=v.aval.shape,
                    )
                )
        env: dict[Var, Any] = dict(zip(jaxpr.constvars, self.jaxpr.consts, strict=True))
        env.update(zip(jaxpr.invars, leaves, strict=True))
        return env

    def outputs(self, env: dict[Var, Any]) -> Any:
        """The function's output pytree read from ``env`` (after every cluster ran)."""
        flat = [v.val if isinstance(v, Literal) else env[v] for v in self.jaxpr.jaxpr.outvars]
        return jax.tree.unflatten(self.out_tree, flat)

    def evaluate(self, *args: Any) -> dict[Var, Any]:
        """Run every cluster in queue order; the value of every cluster input/output."""
        env = self.initial_values(*args)
        for cid in self.queue:
            cluster = self.clusters[cid]
            outs = cluster.run(*(env[v] for v in cluster.inputs))
            env.update(zip(cluster.outputs, outs, strict=True))
        return env

    def run(self, *args: Any) -> Any:
        """Run the clusters in queue order on ``args``; equals ``fn(*args)`` (allclose).

        Each cluster runs once on the whole batch, compiled with ``jax.jit``. This is
        the reference a scheduler's plan is checked against.
        """
        return self.outputs(self.evaluate(*args))

    def cluster_of(self, equation: int) -> Cluster:
        """The cluster holding equation ``equation``."""
        for cluster in self.clusters:
            if equation in cluster.equations:
                return cluster
        raise IndexError(f"equation={equation} is not in 0..{len(self.labels) - 1}")

    def counts(self) -> dict[str, int]:
        """Number of clusters per category (``batched``/``invariant``/``mixes``)."""
        out = {"batched": 0, "invariant": 0, "mixes": 0}
        for c in self.clusters:
            out[c.category] += 1
        return out

    def __repr__(self) -> str:
        from .display import summary

        return summary(self)

    def to_dot(self) -> Any:
        """The cluster graph as a ``graphviz.Digraph`` (see :mod:`.display`)."""
        from .display import to_dot

        return to_dot(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        from .display import mimebundle

        return mimebundle(self)

    def _repr_html_(self) -> str:
        from .display import html

        return html(self)
