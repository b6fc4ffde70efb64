"""Clusters: runnable jaxprs over groups of equations, with their batch axes.

In a *symbolic* graph (the default, see :func:`~mlcache_lab.partition.partition`)
every batched dimension is the symbolic ``B``, so a cluster's jaxpr holds for
every batch size: :attr:`Cluster.exported` is its shape-polymorphic
``jax.export`` and :meth:`Cluster.run` calls it at the inputs' sizes. In a
*concrete* graph (the fallback for functions that are not polymorphic in the
batch) a cluster runs at the analysed batch size only; other sizes come from
:meth:`ClusterGraph.at_batch_size`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax import export as jax_export
from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, Literal, Var, jaxpr_as_fun

from .analysis import Axis, JaxprAnalysis, Label
from .clustering import ClusterPlan
from .dims import BATCH_DIM, batch_dim, is_batch_dim, is_symbolic, jaxpr_mentions_batch
from .positions import is_batch_iota, offset_positions

__all__ = ["BATCH_DIM", "Cluster", "build_clusters"]

NOT_BATCHED = (
    "Cluster {id} is {kind} ({category}): it runs on the whole batch only, so it has no jaxpr "
    "for batch_size={size}. Run it with its analysed inputs, or split only batched clusters."
)
NO_BATCH_SIZE = (
    "Cluster {id} needs the batch size, and none of its inputs carries it (its program makes "
    "values of the batch's size from no batched input). Fix: pass it, e.g. "
    "cluster.run(*inputs, batch_size=8)."
)
BATCH_SIZE_MISMATCH = (
    "Cluster {id} got inputs of batch size {got} and batch_size={given}. Fix: pass inputs of "
    "batch size {given}, or leave batch_size out to use the inputs' size."
)
CONCRETE_ONLY = (
    "Cluster {id} belongs to a concretely traced graph (the function is not polymorphic in "
    "the batch size), so it runs at batch size {size} only. Got batch size {got}. Fix: take "
    "the cluster from graph.at_batch_size({got}), which re-partitions the function at that size."
)


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
    _batch: Any = dataclasses.field(repr=False, default=None)  # the symbolic B of the graph

    def __len__(self) -> int:
        return len(self.equations)

    def primitives(self) -> collections.Counter[str]:
        """How many equations of each primitive the cluster holds."""
        return collections.Counter(e.primitive.name for e in self.jaxpr.jaxpr.eqns)

    @functools.cached_property
    def needs_batch_size(self) -> bool:
        """Whether :meth:`run` must be told the batch size (``batch_size=``).

        True for a cluster of a symbolic graph whose program depends on ``B``
        (a shape, or a parameter such as ``dim_as_value``) while no input has a
        dimension that is exactly ``B``: e.g. an invariant cluster making
        ``[B, d]`` zeros or ``iota(B)`` alone, or the ``1/B`` of a mean. Its
        :attr:`exported` takes a leading ``int8[B]`` "batch carrier" argument.
        """
        if not self.symbolic or any(p is not None for p in self._batch_positions):
            return False
        return jaxpr_mentions_batch(self.jaxpr.jaxpr)

    @functools.cached_property
    def exported(self) -> jax_export.Exported:
        """The cluster as a ``jax.export.Exported``, shape-polymorphic in ``B``.

        Its arguments are :attr:`inputs` (with ``B`` where the batch is), preceded
        by an ``int8[B]`` batch carrier, that only lends its size, when
        :attr:`needs_batch_size`, and followed by an ``int32[]``, the first
        row's position in the batch, when :attr:`positional`. For a concrete
        graph the export has the analysed shapes.
        """
        program = offset_positions(self.jaxpr) if self.positional else self.jaxpr
        fn = jaxpr_as_fun(program)
        specs = [
            jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
            for v in program.jaxpr.invars
        ]
        if self.needs_batch_size:
            specs.insert(0, jax.ShapeDtypeStruct((self._batch,), np.int8))
            inner = fn

            def fn(carrier: Any, *xs: Any) -> Any:
                del carrier  # only its size matters: it defines B
                return inner(*xs)

        return jax_export.export(jax.jit(fn))(*specs)

    @functools.cached_property
    def positional(self) -> bool:
        """Whether this batched cluster makes the rows' positions (an ``iota`` along ``B``).

        Run on a part of the batch it must be told where the part starts
        (``run(..., start=)``; see :mod:`.positions`).
        """
        return (
            self.symbolic
            and self.kind == "batched"
            and any(is_batch_iota(e) for e in self.jaxpr.jaxpr.eqns)
        )

    @functools.cached_property
    def _batch_positions(self) -> tuple[Axis, ...]:
        """Per input, an axis whose size is the batch size (``None``: none is)."""
        if not self.symbolic:
            return self.in_batch_axes
        return tuple(
            next((i for i, d in enumerate(v.aval.shape) if is_batch_dim(d)), None)
            for v in self.jaxpr.jaxpr.invars
        )

    def batch_size_of(self, inputs: Sequence[Any], default: int | None = None) -> int:
        """The batch size the inputs carry; ``default`` when none carries it.

        Raises:
          ValueError: no input carries it and ``default`` is ``None``, or the
            inputs disagree.
        """
        sizes = {
            int(np.shape(x)[a])
            for x, a in zip(inputs, self._batch_positions, strict=True)
            if a is not None
        }
        if len(sizes) > 1:
            raise ValueError(
                f"Cluster {self.id} got inputs of different batch sizes {sorted(sizes)}. Fix: "
                "slice every batched input to the same samples."
            )
        if sizes:
            return sizes.pop()
        if default is None:
            raise ValueError(NO_BATCH_SIZE.format(id=self.id))
        return default

    def specialize(self, batch_size: int) -> ClosedJaxpr:
        """This batched cluster's jaxpr for ``batch_size`` samples (shapes concrete).

        For a symbolic graph it calls :attr:`exported`; for a concrete graph it is
        :attr:`jaxpr` itself, at the analysed batch size only.

        Raises:
          ValueError: the cluster is not batched, or is concrete and
            ``batch_size`` is not the analysed one.
        """
        if self.kind != "batched":
            raise ValueError(
                NOT_BATCHED.format(
                    id=self.id, kind=self.kind, category=self.category, size=batch_size
                )
            )
        if not self.symbolic:
            if batch_size != self.batch_size:
                raise ValueError(
                    CONCRETE_ONLY.format(id=self.id, size=self.batch_size, got=batch_size)
                )
            return self.jaxpr
        specs = [
            jax.ShapeDtypeStruct(
                tuple(batch_size if is_batch_dim(d) else d for d in v.aval.shape),
                v.aval.dtype,
                weak_type=v.aval.weak_type,
            )
            for v in self.jaxpr.jaxpr.invars
        ]  # a batched cluster has B on batch axes only (see analysis)
        if self.positional:  # the whole batch: positions from row 0
            return jax.make_jaxpr(lambda *xs: self._call(*xs, np.int32(0)))(*specs)
        return jax.make_jaxpr(self._call)(*specs)

    @functools.cached_property
    def _call(self) -> Any:
        if self.symbolic:
            return jax.jit(self.exported.call)
        return jax.jit(jaxpr_as_fun(self.jaxpr))

    def run(self, *inputs: Any, batch_size: int | None = None, start: int = 0) -> list[Any]:
        """Evaluate the cluster on the values of :attr:`inputs`.

        A cluster of a symbolic graph runs at any batch size, read from the
        inputs; ``batch_size`` is required only when :attr:`needs_batch_size`
        (otherwise it must agree with the inputs). A cluster of a concrete
        graph runs at :attr:`batch_size` only. Compiled once per shape.
        ``start``: for a :attr:`positional` cluster run on a part of the batch,
        the part's first row (ignored otherwise).

        Raises:
          ValueError: the batch size is missing, disagrees with the inputs, or
            (concrete graph) is not the analysed one.
        """
        tail = (np.int32(start),) if self.positional else ()
        if self.needs_batch_size:
            if batch_size is None:
                raise ValueError(NO_BATCH_SIZE.format(id=self.id))
            return list(self._call(np.zeros((batch_size,), np.int8), *inputs, *tail))
        n = self.batch_size_of(inputs, default=batch_size or self.batch_size)
        if batch_size is not None and n != batch_size:
            raise ValueError(BATCH_SIZE_MISMATCH.format(id=self.id, got=n, given=batch_size))
        if not self.symbolic and n != self.batch_size:
            raise ValueError(CONCRETE_ONLY.format(id=self.id, size=self.batch_size, got=n))
        return list(self._call(*inputs, *tail))


def build_clusters(
    closed: ClosedJaxpr, analysis: JaxprAnalysis, plan: ClusterPlan, batch_size: int
) -> list[Cluster]:
    """Turn a :class:`ClusterPlan` over ``closed``'s equations into :class:`Cluster` s.

    The clusters are symbolic when ``closed``'s inputs have the symbolic ``B``.
    """
    jaxpr = closed.jaxpr
    dim = next((d for v in jaxpr.invars for d in v.aval.shape if is_symbolic(d)), None)
    batch = None if dim is None else batch_dim(dim.scope)
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
                batch is not None,
                labels,
                batch,
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
