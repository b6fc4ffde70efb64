"""``ClusterGraph``: the partition of a jaxpr (data: clusters, labels, queue), displayable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal, Var
from jax.tree_util import PyTreeDef

from .analysis import Axis, JaxprAnalysis, Label
from .cluster import Cluster
from .dims import is_symbolic, shape_text

__all__ = ["ClusterGraph", "batch_size_of"]

WRONG_ARGS = (
    "ClusterGraph.run expects arguments like the example arguments of partition(): "
    "{what}. Got {got}, expected {expected}. Fix: pass arrays of the analysed shapes (any "
    "batch size for a symbolic graph; see ClusterGraph.at_batch_size for a concrete one)."
)
CONCRETE_GRAPH = (
    "This ClusterGraph was traced at batch size {size} only ({reason}). Got batch size {got}. "
    "Fix: run graph.at_batch_size({got}), which re-partitions the function at that size, or "
    "make the function polymorphic in the batch so that partition() traces it symbolically."
)
BAD_BATCH_SIZE = "batch_size must be an int >= 1. Got batch_size={value!r}. Fix: e.g. 8."
STRUCTURE_DIFFERS = (
    "Re-partitioning {name} at batch size {size} gave another clustering than at batch size "
    "{base}: {what}. The concrete graphs cannot stand in for each other. Fix: make the "
    "function polymorphic in the batch (why it is not: {reason}), or partition it at batch "
    "size {size} directly."
)


@dataclasses.dataclass(frozen=True, eq=False)
class ClusterGraph:
    """Batched and non-batched clusters of a function's jaxpr (see :func:`partition`).

    A *symbolic* graph is traced with the symbolic batch dimension ``B``: it,
    and every cluster, runs at any batch size. A *concrete* graph (the fallback
    for a function that is not polymorphic in the batch) runs at
    :attr:`batch_size` only; :meth:`at_batch_size` gives the same partition at
    another size by tracing :attr:`fn` again.

    Attributes:
      jaxpr: the analysed ``ClosedJaxpr``, calls inlined; ``labels[i]`` and the
        clusters' ``equations`` index its equations.
      labels: one :class:`~mlcache_lab.partition.analysis.Label` per equation.
      clusters: the :class:`Cluster` s, numbered by their first equation.
      dependencies: ``(producer_cluster_id, consumer_cluster_id)`` pairs, sorted.
      queue: cluster ids in a deterministic topological order (``graphlib``'s,
        the lowest ready id first).
      in_tree: tree structure of the example arguments.
      out_tree: tree structure of the function's outputs.
      in_batch_axes: batch axis of each flattened argument (after promotion:
        an argument declared without one but aligned with the batch gets one).
      batch_size: the example batch size.
      min_cluster_size: the merging threshold used.
      growth: how clusters grew, ``"gather"`` or ``"plain"`` (see
        :func:`~mlcache_lab.partition.api.cluster_plan`).
      name: the function's name.
      analysis: the full batch analysis (axis of every variable).
      symbolic: whether :attr:`jaxpr` has the symbolic batch dimension ``B``.
      symbolic_reason: ``""`` for a symbolic graph; otherwise why it is
        concrete (the error tracing with ``B`` raised, or ``symbolic=False``).
      fn: the partitioned function.
      arg_specs: the example arguments as ``jax.ShapeDtypeStruct`` s (a pytree).
      declared_batch_axes: batch axis of each flattened argument as given
        (before promotion).
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
    symbolic: bool = True
    symbolic_reason: str = ""
    fn: Callable[..., Any] | None = dataclasses.field(default=None, repr=False)
    arg_specs: Any = dataclasses.field(default=None, repr=False)
    declared_batch_axes: tuple[Axis, ...] = ()
    growth: str = "gather"
    _resized: dict[int, ClusterGraph] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def initial_values(self, *args: Any) -> dict[Var, Any]:
        """Values of the jaxpr's inputs and constants for ``args``: where a run starts.

        For a symbolic graph ``args`` may have any batch size; every other
        dimension must match the example arguments.

        Raises:
          ValueError: ``args`` do not have the example arguments' structure and
            shapes, or (concrete graph) have another batch size.
        """
        leaves, tree = jax.tree.flatten(args)
        if tree != self.in_tree:
            raise ValueError(
                WRONG_ARGS.format(
                    what="the tree structure differs", got=tree, expected=self.in_tree
                )
            )
        jaxpr = self.jaxpr.jaxpr
        self.batch_size_of(*args)
        for i, (x, v) in enumerate(zip(leaves, jaxpr.invars, strict=True)):
            shape, want = tuple(np.shape(x)), tuple(v.aval.shape)
            if len(shape) != len(want) or any(
                not is_symbolic(w) and w != d for d, w in zip(shape, want, strict=False)
            ):
                raise ValueError(
                    WRONG_ARGS.format(
                        what=f"flat argument {i} has another shape",
                        got=shape,
                        expected=shape_text(want),
                    )
                )
        env: dict[Var, Any] = dict(zip(jaxpr.constvars, self.jaxpr.consts, strict=True))
        env.update(zip(jaxpr.invars, leaves, strict=True))
        return env

    def batch_size_of(self, *args: Any) -> int:
        """The batch size of ``args``, read along the batch axes (see :func:`batch_size_of`)."""
        return batch_size_of(self, args)

    def at_batch_size(self, batch_size: int) -> ClusterGraph:
        """This partition for ``batch_size`` samples.

        A symbolic graph holds for every batch size: it returns itself. A
        concrete graph traces :attr:`fn` again at ``batch_size`` (concretely,
        same ``min_cluster_size`` and ``growth``) and checks that the clustering is the same:
        same queue and dependencies, and per cluster the same kind, category,
        number of equations and batch axes of inputs and outputs. So cluster
        ``c`` of both graphs is the same computation at two sizes: a chunk of
        ``batch_size`` samples can run with
        ``g.at_batch_size(batch_size).clusters[c]``. The schedule's ``whole``
        policy runs a concrete graph through it. Results are kept per size.
        ``batch_size`` may be 1, but there a concrete analysis cannot tell the
        batch from broadcasting, and the clustering often differs: pad such a
        chunk to a larger size instead.

        Raises:
          ValueError: ``batch_size`` is not a positive int, ``fn`` was not kept,
            or the clustering differs at that size.
        """
        if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
            raise ValueError(BAD_BATCH_SIZE.format(value=batch_size))
        if batch_size < 1:
            raise ValueError(BAD_BATCH_SIZE.format(value=batch_size))
        batch_size = int(batch_size)
        if self.symbolic or batch_size == self.batch_size:
            return self
        if batch_size not in self._resized:
            self._resized[batch_size] = self._repartition(batch_size)
        return self._resized[batch_size]

    def _repartition(self, batch_size: int) -> ClusterGraph:
        from ..stages.signature import with_batch_dim
        from .api import build_graph  # the api builds graphs

        if self.fn is None or self.arg_specs is None:
            raise ValueError(
                f"ClusterGraph {self.name} keeps no function to re-partition at batch size "
                f"{batch_size}. Fix: build it with partition(fn, *example_args, ...)."
            )
        leaves, tree = jax.tree.flatten(self.arg_specs)
        specs = [
            jax.ShapeDtypeStruct(
                with_batch_dim(s.shape, a, batch_size), s.dtype, weak_type=s.weak_type
            )
            for s, a in zip(leaves, self.declared_batch_axes, strict=True)
        ]
        other = build_graph(
            self.fn,
            jax.tree.unflatten(tree, specs),
            self.declared_batch_axes,
            batch_size,
            self.min_cluster_size,
            symbolic=False,
            growth=self.growth,
        )
        what = _structure_difference(self, other)
        if what is not None:
            raise ValueError(
                STRUCTURE_DIFFERS.format(
                    name=self.name,
                    size=batch_size,
                    base=self.batch_size,
                    what=what,
                    reason=self.symbolic_reason,
                )
            )
        return dataclasses.replace(other, symbolic_reason=self.symbolic_reason, _resized={})

    def outputs(self, env: dict[Var, Any]) -> Any:
        """The function's output pytree read from ``env`` (after every cluster ran)."""
        flat = [v.val if isinstance(v, Literal) else env[v] for v in self.jaxpr.jaxpr.outvars]
        return jax.tree.unflatten(self.out_tree, flat)

    def run(self, *args: Any) -> Any:
        """Run the clusters one by one in queue order on ``args``; equals ``fn(*args)`` (allclose).

        One of the contract's two thin calls into the one executor (with
        :meth:`schedule`): it is
        ``schedule(self, n, "whole", fuse=False).reference(*args)`` for the
        ``n`` samples of ``args``, every cluster a segment of its own, run once
        on the whole batch and evaluated uncompiled (see
        :mod:`mlcache_lab.schedule.reference`). So it is the oracle a compiled
        plan is checked against. A symbolic graph runs at any batch size, a
        concrete one at :attr:`batch_size` only.

        Raises:
          ValueError: ``args`` are not shaped like the example arguments, or
            (concrete graph) have another batch size.
        """
        # Lazy: schedule sits above partition; this method is the contract's thin call into it.
        from ..schedule import schedule

        n = self.batch_size_of(*args)  # a concrete graph at another size: CONCRETE_GRAPH
        return schedule(self, n, "whole", fuse=False).reference(*args)

    def cluster_of(self, equation: int) -> Cluster:
        """The cluster holding equation ``equation``."""
        for cluster in self.clusters:
            if equation in cluster.equations:
                return cluster
        raise IndexError(f"equation={equation} is not in 0..{len(self.labels) - 1}")

    def counts(self) -> dict[str, int]:
        """Number of clusters per category (``batched``/``invariant``/``mixes``/``reduces``)."""
        out = {"batched": 0, "invariant": 0, "mixes": 0, "reduces": 0}
        for c in self.clusters:
            out[c.category] += 1
        return out

    def __repr__(self) -> str:
        from .display import summary

        return summary(self)

    def schedule(
        self,
        batch_size: int,
        policy: str = "chunk",
        micro_batch: int = 16,
        **options: Any,
    ) -> Any:
        """This graph's queue scheduled for ``batch_size`` samples: a ``Plan``.

        See :func:`mlcache_lab.schedule.schedule` for the policies and
        ``options`` (``bucket_sizes``, ``devices``, ``store``).
        """
        # Lazy: schedule sits above partition; this method is the contract's thin call into it.
        from ..schedule import schedule

        return schedule(self, batch_size, policy, micro_batch, **options)

    def to_dot(self, detail: str = "clusters", annotations: Any = None) -> Any:
        """The cluster graph as a ``graphviz.Digraph`` (see :func:`.display.to_dot`).

        ``detail="equations"`` lists each cluster's equations; ``annotations``
        (``{cluster_id: text}``) adds a line under a cluster's label.
        """
        from .display import to_dot

        return to_dot(self, detail, annotations)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        # The one rich display: SVG (Graphviz, or the layered renderer without it) and
        # text. No _repr_html_ as well, which would store the picture twice in a notebook.
        from .display import mimebundle

        return mimebundle(self)


def _structure_difference(a: ClusterGraph, b: ClusterGraph) -> str | None:
    """How the clusterings of two concrete graphs of one function differ, or ``None``."""
    if len(a.clusters) != len(b.clusters):
        return f"{len(a.clusters)} clusters against {len(b.clusters)}"
    if a.queue != b.queue:
        return f"queue {a.queue} against {b.queue}"
    if a.dependencies != b.dependencies:
        return f"dependencies {a.dependencies} against {b.dependencies}"
    for position, cid in enumerate(a.queue):
        x, y = a.clusters[cid], b.clusters[cid]
        for field in ("kind", "category", "in_batch_axes", "out_batch_axes"):
            if getattr(x, field) != getattr(y, field):
                return (
                    f"cluster {cid} (queue position {position}) has {field} "
                    f"{getattr(x, field)!r} against {getattr(y, field)!r}"
                )
        if len(x) != len(y):
            return (
                f"cluster {cid} (queue position {position}) has {len(x)} equations against {len(y)}"
            )
    return None


def batch_size_of(graph: Any, args: tuple[Any, ...]) -> int:
    """The batch size of ``args``, read along ``graph.in_batch_axes``.

    ``graph`` is a :class:`ClusterGraph`, or what a plan keeps of one (its
    ``in_batch_axes``, ``batch_size``, ``symbolic`` and ``symbolic_reason``).

    Raises:
      ValueError: the batched arguments disagree on it; or the graph is
        concrete and it is not ``graph.batch_size``.
    """
    leaves = jax.tree.leaves(args)
    sizes = {
        int(np.shape(x)[a])
        for x, a in zip(leaves, graph.in_batch_axes, strict=False)
        if a is not None and np.ndim(x) > a
    }
    if len(sizes) > 1:
        raise ValueError(
            WRONG_ARGS.format(
                what="the batched arguments disagree on the batch size",
                got=sorted(sizes),
                expected="one size",
            )
        )
    n = sizes.pop() if sizes else graph.batch_size
    if not graph.symbolic and n != graph.batch_size:
        raise ValueError(
            CONCRETE_GRAPH.format(size=graph.batch_size, reason=graph.symbolic_reason, got=n)
        )
    return int(n)
