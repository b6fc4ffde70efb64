"""Segments: runs of consecutive queue clusters that a policy executes the same way.

A schedule does not call every cluster separately: adjacent clusters of the
queue that run the same way (all split into chunks, or all run once on the
whole batch) are fused into one *segment*, one compiled call. Splitting then
costs little over the monolithic function. Modes:

* ``split``: batched and reducing clusters, run on chunks of the batch; a
  split segment holding reductions is a *round* (:mod:`.rounds`): per-chunk
  partials, then a combine; batched work reading a combined value starts the
  next round;
* ``whole``: non-batched clusters that depend on the batch (mixing samples, or
  depending on the whole batch's size: ``dim_as_value`` read in a shape), run
  once per call at B, compiled per B (the compile level only: the program is
  shape-polymorphic);
* ``once``: batch-invariant clusters that never see ``B`` (weight
  preprocessing), or that read ``B`` only as a value (the ``1/B`` of a mean,
  passed in at run time): compiled once for every batch size, run once per call.

Under the ``whole`` policy the entire queue is one ``whole`` segment.

The rule, a choice the patent claims leave open: batch-invariant work whose
result carries the batch dimension (a bias broadcast to ``B``, an ``iota``
over a non-batch axis of a ``[B, T]`` array, a mask built from ``x.shape``,
and the rows' positions, an ``iota`` over ``B``) runs at the chunk or bucket
size, inside or next to the split segment that consumes it (the analysis
labels it batched), and so compiles once per chunk or bucket size; only work
that really mixes samples runs at the whole batch. A split segment making
positions takes each chunk's first row as a last ``int32[]`` input
(:attr:`Segment.offset`), added to its ``iota`` over ``B``
(:mod:`mlcache_lab.partition.positions`), so padded rows get the positions
they would have and are dropped as usual.

A segment's program is a ``ClosedJaxpr`` cut out of the graph's (symbolic)
jaxpr. It is handed to :func:`mlcache_lab.cached_jit` as a
:class:`SegmentProgram`, which the trace stage takes as already traced and
which fingerprints itself by its program text, so every level is cached.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, Literal, Var, jaxpr_as_fun

from ..cache.keys import digest
from ..partition.dims import batch_dim, is_batch_dim, is_symbolic, jaxpr_mentions_batch
from ..partition.graph import ClusterGraph
from ..partition.positions import is_batch_iota, offset_positions
from .rounds import Combine, cut_rounds, partial_program, size_only

__all__ = ["MODES", "Segment", "SegmentProgram", "build_segments"]

MODES = ("split", "whole", "once")


class SegmentProgram:
    """A cut of the graph's jaxpr as a callable of its flat inputs.

    ``__mlcache_jaxpr__`` lets ``cached_jit`` skip tracing;
    ``__mlcache_fingerprint__`` keys the trace level on the program itself.
    """

    def __init__(self, jaxpr: ClosedJaxpr, name: str) -> None:
        self.__mlcache_jaxpr__ = jaxpr
        self.__name__ = self.__qualname__ = name
        self.__module__ = "mlcache_lab.schedule"

    def __mlcache_fingerprint__(self) -> str:
        return digest(str(self.__mlcache_jaxpr__.jaxpr))

    def __call__(self, *leaves: Any) -> list[Any]:
        return list(jaxpr_as_fun(self.__mlcache_jaxpr__)(*leaves))


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """Consecutive queue clusters run as one compiled call.

    Attributes:
      index: position in the plan.
      clusters: the cluster ids, in queue order.
      mode: ``"split"``, ``"whole"`` or ``"once"``.
      inputs: graph variables read (the program takes the carrier before them).
      outputs: graph variables made here and read later or returned.
      in_axes: batch axis of each input (an exact ``B`` dimension) or None.
      out_axes: batch axis of each output or None.
      carrier: True when the program's first input is a ``[B]`` int8 array that
        only lends the batch size (no real input carries it).
      program: the program handed to ``cached_jit``.
      combines: for a round, how each output combines across chunks (``None``:
        not a reduction); empty for other segments.
      masked: the program takes the chunk's number of real rows as a last
        ``int32[]`` input and keeps padded rows out of its reductions.
      size_vars: ``dim_as_value`` outputs the program takes as inputs (after
        :attr:`inputs`), fed at run time with :attr:`size_dims` evaluated at
        the true batch size.
      size_dims: the dimension expression (``B``, ``3*B``) of each size var.
      round: for a round, its number among the plan's rounds (from 0).
      offset: the program takes the chunk's first row as a last ``int32[]``
        input (after the real rows when :attr:`masked`) and adds it to every
        ``iota`` along the batch.
    """

    index: int
    clusters: tuple[int, ...]
    mode: str
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    in_axes: tuple[int | None, ...]
    out_axes: tuple[int | None, ...]
    carrier: bool
    program: SegmentProgram
    combines: tuple[Combine | None, ...] = ()
    masked: bool = False
    size_vars: tuple[Var, ...] = ()
    size_dims: tuple[Any, ...] = ()
    round: int | None = None
    offset: bool = False

    @property
    def batch_axes(self) -> tuple[int | None, ...]:
        """``cached_jit``'s ``batch_axes`` for the program (carrier included)."""
        extra = (None,) * (len(self.size_vars) + self.masked + self.offset)
        return ((0,) if self.carrier else ()) + self.in_axes + extra


def _dims(v: Any) -> tuple[Any, ...]:
    return tuple(getattr(getattr(v, "aval", None), "shape", ()))


def _batch_axis(v: Any) -> int | None:
    for i, d in enumerate(_dims(v)):
        if is_batch_dim(d):
            return i
    return None


def _exactly_batched(v: Any) -> bool:
    """Every symbolic dimension of ``v`` is ``B`` itself (so it can be sliced)."""
    return all(is_batch_dim(d) for d in _dims(v) if is_symbolic(d))


def _mentions_batch(graph: ClusterGraph, cids: Sequence[int]) -> bool:
    """Whether the clusters depend on ``B`` anywhere: shapes or parameters."""
    return any(jaxpr_mentions_batch(graph.clusters[c].jaxpr.jaxpr) for c in cids)


def _cluster_mode(graph: ClusterGraph, cid: int, policy: str) -> str:
    if policy == "whole":
        return "whole"
    cluster = graph.clusters[cid]
    if cluster.kind in ("batched", "reduces"):
        return "split"
    if size_only(cluster.jaxpr.jaxpr):
        return "once"  # B only as a value: it is passed in (see _with_size_inputs)
    return "whole" if _mentions_batch(graph, [cid]) else "once"


def fusing_order(graph: ClusterGraph, modes: dict[int, str]) -> list[int]:
    """A topological order of the clusters that keeps clusters of one mode together.

    Kahn's algorithm over ``graph.dependencies``: among the ready clusters it
    takes one of the current mode if there is one, else starts a new run with
    batch-invariant (``once``) clusters first, then the ready cluster earliest
    in ``graph.queue``. Ties go to queue order, so the result is deterministic.
    """
    position = {cid: i for i, cid in enumerate(graph.queue)}
    waiting = {cid: 0 for cid in graph.queue}
    consumers: dict[int, list[int]] = {cid: [] for cid in graph.queue}
    for producer, consumer in graph.dependencies:
        waiting[consumer] += 1
        consumers[producer].append(consumer)
    ready = sorted((c for c, n in waiting.items() if n == 0), key=position.__getitem__)
    order: list[int] = []
    mode = "once"
    while ready:
        same = [c for c in ready if modes[c] == mode]
        if not same:
            once = [c for c in ready if modes[c] == "once"]
            same = once or ready[:1]
            mode = modes[same[0]]
        cid = same[0]
        ready.remove(cid)
        order.append(cid)
        for consumer in consumers[cid]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
        ready.sort(key=position.__getitem__)
    return order


def build_segments(graph: ClusterGraph, policy: str) -> list[Segment]:
    """Fuse clusters that run the same way, in a fusing topological order, into segments."""
    modes = {cid: _cluster_mode(graph, cid, policy) for cid in graph.queue}
    runs: list[tuple[str, list[int]]] = []
    for cid in fusing_order(graph, modes):
        mode = modes[cid]
        if runs and runs[-1][0] == mode:
            runs[-1][1].append(cid)
        else:
            runs.append((mode, [cid]))
    runs = [(m, piece) for m, cids in runs for piece in _rounds_of(graph, m, cids)]
    segments = []
    rounds = 0
    for index, (mode, cids) in enumerate(runs):
        segment = _make_segment(graph, index, mode, cids)
        if segment.mode == "split" and not _splittable(segment):
            segment = _make_segment(graph, index, "whole", cids)
        offset = segment.mode == "split" and any(
            is_batch_iota(e) for e in segment.program.__mlcache_jaxpr__.jaxpr.eqns
        )
        if segment.mode == "split" and any(graph.clusters[c].kind == "reduces" for c in cids):
            masked = policy in ("chunk", "devices")
            segment = _as_round(graph, segment, rounds, masked, offset)
            rounds += 1
        elif offset:
            program = offset_positions(segment.program.__mlcache_jaxpr__)
            segment = dataclasses.replace(
                segment, program=SegmentProgram(program, segment.program.__name__), offset=True
            )
        elif segment.mode == "once" and segment.carrier:
            segment = _with_size_inputs(segment)
        segments.append(segment)
    return segments


def _rounds_of(graph: ClusterGraph, mode: str, cids: list[int]) -> list[list[int]]:
    return cut_rounds(graph, cids) if mode == "split" else [cids]


def _as_round(
    graph: ClusterGraph, segment: Segment, number: int, masked: bool, offset: bool
) -> Segment:
    """A split segment with reductions: its program computes per-chunk partials."""
    body = segment.program.__mlcache_jaxpr__.jaxpr
    members = {i for cid in segment.clusters for i in graph.clusters[cid].equations}
    eqns = graph.jaxpr.jaxpr.eqns
    reducing = {id(eqns[i]): graph.labels[i] for i in members if graph.labels[i].kind == "reduces"}
    closed, combines = partial_program(
        graph,
        body.invars,
        int(segment.carrier),
        segment.outputs,
        body.eqns,
        reducing,
        masked,
        offset,
    )
    program = SegmentProgram(closed, segment.program.__name__)
    return dataclasses.replace(
        segment, program=program, combines=combines, masked=masked, round=number, offset=offset
    )


def _with_size_inputs(segment: Segment) -> Segment:
    """A ``once`` segment reading ``B`` as a value: ``dim_as_value`` becomes an input.

    So the program holds for every batch size and compiles once; the executor
    feeds the true batch size (a mean divides by it, not by a chunk's size).
    """
    body = segment.program.__mlcache_jaxpr__.jaxpr
    made = [e for e in body.eqns if e.primitive.name == "dim_as_value"]
    sizes = tuple(e.outvars[0] for e in made)
    eqns = [e for e in body.eqns if e.primitive.name != "dim_as_value"]
    binders = [*body.invars[1:], *sizes]  # the carrier goes: no shape depends on B
    info = DebugInfo(
        "schedule",
        segment.program.__name__,
        tuple(f"in{k}" for k in range(len(binders))),
        tuple(f"out{k}" for k in range(len(body.outvars))),
    )
    new = Jaxpr([], binders, body.outvars, eqns, body.effects, info)
    program = SegmentProgram(ClosedJaxpr(new, []), segment.program.__name__)
    return dataclasses.replace(
        segment,
        program=program,
        carrier=False,
        size_vars=sizes,
        size_dims=tuple(e.params["dim"] for e in made),
    )


def _splittable(segment: Segment) -> bool:
    return all(_exactly_batched(v) for v in (*segment.inputs, *segment.outputs))


def _make_segment(graph: ClusterGraph, index: int, mode: str, cids: Sequence[int]) -> Segment:
    jaxpr = graph.jaxpr.jaxpr
    members = sorted(i for cid in cids for i in graph.clusters[cid].equations)
    member_set = set(members)
    eqns = [jaxpr.eqns[i] for i in members]
    made = {v for e in eqns for v in e.outvars}
    inputs: dict[Var, None] = {}
    for e in eqns:
        for v in e.invars:
            if not isinstance(v, Literal) and v not in made:
                inputs.setdefault(v)
    read_later = _read_outside(graph, frozenset(member_set))
    outputs = [v for e in eqns for v in e.outvars if v in read_later]
    in_vars = list(inputs)
    carrier = _mentions_batch(graph, cids) and not any(_batch_axis(v) is not None for v in in_vars)
    binders = list(in_vars)
    if carrier:
        binders.insert(0, Var(_carrier_aval(graph)))
    effects = set().union(*(e.effects for e in eqns)) if eqns else set()
    name = f"{graph.name}.segment{index}[{'+'.join(map(str, cids))}]"
    info = DebugInfo(
        "schedule",
        name,
        tuple(f"in{k}" for k in range(len(binders))),
        tuple(f"out{k}" for k in range(len(outputs))),
    )
    body = Jaxpr([], binders, outputs, eqns, effects, info)
    program = SegmentProgram(ClosedJaxpr(body, []), name)
    return Segment(
        index,
        tuple(cids),
        mode,
        tuple(in_vars),
        tuple(outputs),
        tuple(_batch_axis(v) for v in in_vars),
        tuple(_batch_axis(v) for v in outputs),
        carrier,
        program,
    )


def _carrier_aval(graph: ClusterGraph) -> Any:
    """``int8[B]`` with the ``B`` of the graph's symbolic scope."""
    from jax._src import core

    for v in graph.jaxpr.jaxpr.invars:
        for d in _dims(v):
            if is_symbolic(d):
                return core.ShapedArray((batch_dim(d.scope),), np.dtype(np.int8))
    raise AssertionError("a carrier was asked for in a graph without a symbolic batch")


@functools.lru_cache(maxsize=64)
def _reads(graph_id: int, jaxpr: Any) -> tuple[tuple[Var, ...], ...]:
    return tuple(tuple(v for v in e.invars if not isinstance(v, Literal)) for e in jaxpr.eqns)


def _read_outside(graph: ClusterGraph, members: frozenset[int]) -> set[Var]:
    jaxpr = graph.jaxpr.jaxpr
    out = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    for i, reads in enumerate(_reads(id(graph), jaxpr)):
        if i not in members:
            out.update(reads)
    return out
