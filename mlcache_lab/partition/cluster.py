"""Clusters: groups of equations of a graph's jaxpr, with their batch axes (data only).

In a *symbolic* graph (the default, see :func:`~mlcache_lab.partition.partition`)
every batched dimension is the symbolic ``B``, so a cluster's jaxpr holds for
every batch size. In a *concrete* graph (the fallback for functions that are
not polymorphic in the batch) it holds at the analysed batch size only; other
sizes come from :meth:`ClusterGraph.at_batch_size`. Clusters are run by the one
executor, :mod:`mlcache_lab.schedule` (``g.run`` is its reference mode).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence

from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, Literal, Var

from .analysis import Axis, JaxprAnalysis, Label
from .clustering import ClusterPlan
from .dims import is_batch_dim, is_symbolic, jaxpr_mentions_batch

__all__ = ["Cluster", "build_clusters"]


@dataclasses.dataclass(frozen=True, eq=False)
class Cluster:
    """A group of equations of :attr:`ClusterGraph.jaxpr` that runs as one unit.

    Attributes:
      id: index in :attr:`ClusterGraph.clusters`; clusters are numbered by their
        first equation.
      kind: ``"batched"`` (may run on any slice of the batch), ``"reduces"``
        (reductions over the batch axis: a partial per slice, then a combine
        across slices) or ``"non_batched"`` (runs once, on the whole batch).
      category: ``"batched"``, ``"invariant"`` (touches no batched value: a
        scheduler may run it once and keep its outputs) or ``"mixes"`` (combines
        samples: runs on every call) or ``"reduces"``.
      reason: one line; for ``mixes`` the first equation that mixes, naming the
        primitive and the axis.
      equations: indices into ``ClusterGraph.jaxpr.jaxpr.eqns``, ascending.
      jaxpr: a ``ClosedJaxpr`` taking the values of :attr:`inputs` and returning
        those of :attr:`outputs`. In a symbolic graph batch dimensions are the
        symbolic ``B``; in a concrete one they are the analysed batch size.
      inputs: variables of the graph's jaxpr read here but made elsewhere (graph
        inputs, graph constants, or other clusters' outputs), in first-use order.
      outputs: variables made here and read by another cluster or returned.
      in_batch_axes: batch axis of each input (``None``: pass it whole). For a
        batched cluster these are the inputs to split with the batch.
      out_batch_axes: batch axis of each output. For a batched cluster, outputs
        with an axis are concatenated along it across chunks; outputs without
        one are the same for every chunk.
      batch_size: the batch size of the example arguments.
      symbolic: whether the jaxpr has the symbolic batch dimension (runs at any
        batch size) or is concrete (runs at :attr:`batch_size` only).
    """

    id: int
    kind: str
    category: str
    reason: str
    equations: tuple[int, ...]
    jaxpr: ClosedJaxpr
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    in_batch_axes: tuple[Axis, ...]
    out_batch_axes: tuple[Axis, ...]
    batch_size: int
    symbolic: bool
    _labels: tuple[Label, ...] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.equations)

    def primitives(self) -> collections.Counter[str]:
        """How many equations of each primitive the cluster holds."""
        return collections.Counter(e.primitive.name for e in self.jaxpr.jaxpr.eqns)

    @functools.cached_property
    def needs_batch_size(self) -> bool:
        """Whether the cluster's program depends on ``B`` while no input carries it.

        True for a cluster of a symbolic graph whose program depends on ``B``
        (a shape, or a parameter such as ``dim_as_value``) while no input has a
        dimension that is exactly ``B``: e.g. an invariant cluster making
        ``iota(B)`` or a ``[B, d]`` zeros, or the ``1/B`` of a mean. The
        schedule runs such work with a leading ``int8[B]`` "batch carrier"
        argument that only lends its size (``Segment.carrier``), or passes
        ``B`` in as a value.
        """
        if not self.symbolic:
            return False
        if any(is_batch_dim(d) for v in self.jaxpr.jaxpr.invars for d in v.aval.shape):
            return False
        return jaxpr_mentions_batch(self.jaxpr.jaxpr)


def build_clusters(
    closed: ClosedJaxpr, analysis: JaxprAnalysis, plan: ClusterPlan, batch_size: int
) -> list[Cluster]:
    """Turn a :class:`ClusterPlan` over ``closed``'s equations into :class:`Cluster` s.

    The clusters are symbolic when ``closed``'s inputs have the symbolic ``B``.
    """
    jaxpr = closed.jaxpr
    symbolic = any(is_symbolic(d) for v in jaxpr.invars for d in v.aval.shape)
    eqns = jaxpr.eqns
    owner: dict[Var, int] = {}
    for i, eqn in enumerate(eqns):
        for v in eqn.outvars:
            owner[v] = plan.cluster_of[i]
    read_outside: set[Var] = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    for i, eqn in enumerate(eqns):
        c = plan.cluster_of[i]
        for v in eqn.invars:
            if not isinstance(v, Literal) and owner.get(v, -1) != c:
                read_outside.add(v)
    clusters = []
    axes = analysis.axes
    for cid, members in enumerate(plan.members):
        inputs: dict[Var, None] = {}
        outputs: list[Var] = []
        for i in members:
            for v in eqns[i].invars:
                if not isinstance(v, Literal) and owner.get(v, -1) != cid:
                    inputs.setdefault(v)
            outputs.extend(v for v in eqns[i].outvars if v in read_outside)
        cluster_eqns = [eqns[i] for i in members]
        labels = tuple(analysis.labels[i] for i in members)
        effects = set().union(*(e.effects for e in cluster_eqns))
        info = DebugInfo(
            "partition",
            f"cluster {cid}",
            tuple(f"in{k}" for k in range(len(inputs))),
            tuple(f"out{k}" for k in range(len(outputs))),
        )
        body = Jaxpr([], list(inputs), outputs, cluster_eqns, effects, info)
        kind, category = plan.keys[cid]
        clusters.append(
            Cluster(
                cid,
                kind,
                category,
                _reason(category, labels),
                tuple(members),
                ClosedJaxpr(body, []),
                tuple(inputs),
                tuple(outputs),
                tuple(axes[v] for v in inputs),
                tuple(axes[v] for v in outputs),
                batch_size,
                symbolic,
                labels,
            )
        )
    return clusters


def _reason(category: str, labels: Sequence[Label]) -> str:
    n = len(labels)
    if category == "batched":
        return f"batched: {n} equation{'s' * (n != 1)} keep samples apart"
    if category == "invariant":
        return "invariant: touches no batched value"
    if category == "reduces":
        combines = sorted({lab.reason.rsplit(" by ", 1)[-1] for lab in labels})
        return (
            f"reduces: {n} reduction{'s' * (n != 1)} over the batch axis, "
            f"combined across chunks by {', '.join(combines)}"
        )
    first = next((lab.reason for lab in labels if lab.mixes_samples), None)
    if first is not None:
        return first
    if any(lab.kind == "batched" for lab in labels):
        return "mixes: batched equations merged here by min_cluster_size run on the whole batch"
    return next(lab.reason for lab in labels if lab.category == "mixes")
