"""Clusters: runnable jaxprs over groups of equations, with their batch axes."""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, Literal, Var, jaxpr_as_fun

from .analysis import Axis, JaxprAnalysis, Label
from .clustering import ClusterPlan
from .resize import specialize

__all__ = ["Cluster", "build_clusters"]

NOT_BATCHED = (
    "Cluster {id} is {kind} ({category}): it runs on the whole batch only, so it has no jaxpr "
    "for batch_size={size}. Run it with its analysed inputs, or split only batched clusters."
)
NO_BATCHED_INPUT = (
    "Cluster {id} has no input with a batch axis, so the batch size of its inputs cannot be "
    "read from them; call cluster.specialize(batch_size) and run that jaxpr instead."
)


@dataclasses.dataclass(frozen=True, eq=False)
class Cluster:
    """A group of equations of :attr:`ClusterGraph.jaxpr` that runs as one unit.

    Attributes:
      id: index in :attr:`ClusterGraph.clusters`; clusters are numbered by their
        first equation.
      kind: ``"batched"`` (may run on any slice of the batch) or ``"non_batched"``
        (runs once, on the whole batch).
      category: ``"batched"``, ``"invariant"`` (touches no batched value: a
        scheduler may run it once and keep its outputs) or ``"mixes"`` (combines
        samples: runs on every call).
      reason: one line; for ``mixes`` the first equation that mixes, naming the
        primitive and the axis.
      equations: indices into ``ClusterGraph.jaxpr.jaxpr.eqns``, ascending.
      jaxpr: a ``ClosedJaxpr`` taking the values of :attr:`inputs` and returning
        those of :attr:`outputs`.
      inputs: variables of the graph's jaxpr read here but made elsewhere (graph
        inputs, graph constants, or other clusters' outputs), in first-use order.
      outputs: variables made here and read by another cluster or returned.
      in_batch_axes: batch axis of each input (``None``: pass it whole). For a
        batched cluster these are the inputs to split with the batch.
      out_batch_axes: batch axis of each output. For a batched cluster, outputs
        with an axis are concatenated along it across chunks; outputs without
        one are the same for every chunk.
      batch_size: the batch size the graph was analysed with.
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
    _labels: tuple[Label, ...] = dataclasses.field(repr=False)
    _axes: dict[Var, Axis] = dataclasses.field(repr=False)

    def __len__(self) -> int:
        return len(self.equations)

    def primitives(self) -> collections.Counter[str]:
        """How many equations of each primitive the cluster holds."""
        return collections.Counter(e.primitive.name for e in self.jaxpr.jaxpr.eqns)

    def specialize(self, batch_size: int) -> ClosedJaxpr:
        """This batched cluster's jaxpr for ``batch_size`` samples.

        Inputs and outputs with a batch axis have ``batch_size`` on it; the others
        keep their shapes. Raises ``ValueError`` for a non-batched cluster.
        """
        if self.kind != "batched":
            raise ValueError(
                NOT_BATCHED.format(
                    id=self.id, kind=self.kind, category=self.category, size=batch_size
                )
            )
        if batch_size == self.batch_size:
            return self.jaxpr
        return self._specialized(batch_size)

    @functools.lru_cache(maxsize=16)  # noqa: B019  (clusters live as long as their graph)
    def _specialized(self, batch_size: int) -> ClosedJaxpr:
        return specialize(self.jaxpr.jaxpr, self._labels, self._axes, batch_size)

    @functools.cached_property
    def _compiled(self) -> Any:
        return jax.jit(jaxpr_as_fun(self.jaxpr))

    def run(self, *inputs: Any) -> list[Any]:
        """Evaluate the cluster on the values of :attr:`inputs` (compiled with ``jax.jit``).

        A batched cluster accepts any batch size on its batched inputs; it is
        re-specialised (and compiled) once per new size.
        """
        size = self.batch_size
        if self.kind == "batched":
            sizes = {
                x.shape[a] for x, a in zip(inputs, self.in_batch_axes, strict=True) if a is not None
            }
            if not sizes and self.in_batch_axes and any(a is not None for a in self.out_batch_axes):
                raise ValueError(NO_BATCHED_INPUT.format(id=self.id))
            size = sizes.pop() if len(sizes) == 1 else size
        if size == self.batch_size:
            return list(self._compiled(*inputs))
        return list(_jitted(self._specialized(size))(*inputs))


@functools.lru_cache(maxsize=256)
def _jitted(closed: ClosedJaxpr) -> Any:
    return jax.jit(jaxpr_as_fun(closed))


def build_clusters(
    closed: ClosedJaxpr, analysis: JaxprAnalysis, plan: ClusterPlan, batch_size: int
) -> list[Cluster]:
    """Turn a :class:`ClusterPlan` over ``closed``'s equations into :class:`Cluster` s."""
    jaxpr = closed.jaxpr
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
                labels,
                axes,
            )
        )
    return clusters


def _reason(category: str, labels: Sequence[Label]) -> str:
    n = len(labels)
    if category == "batched":
        return f"batched: {n} equation{'s' * (n != 1)} keep samples apart"
    if category == "invariant":
        return "invariant: touches no batched value"
    first = next((lab.reason for lab in labels if lab.mixes_samples), None)
    if first is not None:
        return first
    if any(lab.kind == "batched" for lab in labels):
        return "mixes: batched equations merged here by min_cluster_size run on the whole batch"
    return next(lab.reason for lab in labels if lab.category == "mixes")
