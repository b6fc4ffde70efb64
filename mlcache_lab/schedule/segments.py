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
  Cheap invariant work (layout and elementwise: a weight transposed for tied
  embeddings, a bias broadcast to its rank, a causal mask) that only one split
  run reads runs inside that run's program instead (:func:`_fold_cheap_work`):
  one executable fewer to load and wait for before the first chunk.

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

Segments refer to the graph's values by *slot*: a number per variable of the
graph's jaxpr (its constants, then its inputs, then every equation's outputs,
in order). With a :class:`Boundary` (the graph's inputs, constants and
outputs by slot) they are all a plan needs: :class:`SegmentSet` is what the
``segments`` cache level stores, so a warm ``batched_jit`` runs without the
graph's jaxpr; each program is decoded only if its own levels miss.
"""

from __future__ import annotations

import dataclasses
import functools
import graphlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax import export as jax_export
from jax.core import ShapedArray
from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, Literal, Var, jaxpr_as_fun

from ..cache.jaxpr_codec import decode_jaxpr, encode_jaxpr
from ..cache.keys import digest
from ..jax_internals import symbolic_scope
from ..partition.dims import (
    batch_dim,
    eqn_mentions_batch,
    is_batch_dim,
    is_symbolic,
    jaxpr_mentions_batch,
    shape_text,
)
from ..partition.graph import WRONG_ARGS, ClusterGraph, batch_size_of
from ..partition.positions import is_batch_iota, offset_positions
from ..partition.rules.elementwise import ELEMENTWISE
from .repeats import find_blocks
from .rounds import Combine, cut_rounds, partial_program, size_only

__all__ = ["MODES", "Boundary", "Segment", "SegmentProgram", "SegmentSet", "build_segments"]

MODES = ("split", "whole", "once")


class SegmentProgram:
    """A cut of the graph's jaxpr as a callable of its flat inputs.

    ``__mlcache_jaxpr__`` lets ``cached_jit`` skip tracing;
    ``__mlcache_fingerprint__`` keys the trace level on the program itself.
    A program read from the ``segments`` level holds its encoded jaxpr and its
    fingerprint: the jaxpr is decoded on first use, which a warm call (its
    executable found by chain key) never makes.
    """

    def __init__(
        self,
        jaxpr: ClosedJaxpr | None,
        name: str,
        *,
        encoded: bytes | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if jaxpr is None and encoded is None:
            raise ValueError("a SegmentProgram needs its jaxpr or its encoded jaxpr")
        self._jaxpr, self._encoded = jaxpr, encoded
        self._fingerprint = fingerprint
        self.__name__ = self.__qualname__ = name
        self.__module__ = "mlcache_lab.schedule"

    @property
    def __mlcache_jaxpr__(self) -> ClosedJaxpr:
        if self._jaxpr is None:
            if self._encoded is None:  # one of the two is always there (__init__)
                raise RuntimeError(f"internal error: {self.__name__} has no program")
            self._jaxpr = decode_jaxpr(self._encoded)
        return self._jaxpr

    @property
    def decoded(self) -> bool:
        """Whether the jaxpr is in memory (built here, or decoded since)."""
        return self._jaxpr is not None

    def __mlcache_fingerprint__(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = digest(str(self.__mlcache_jaxpr__.jaxpr))
        return self._fingerprint

    def encode(self) -> bytes:
        """The program's jaxpr in the trace level's codec (raises ``JaxprCodecError``)."""
        if self._encoded is None:
            self._encoded = encode_jaxpr(self.__mlcache_jaxpr__)
        return self._encoded

    def __call__(self, *leaves: Any) -> list[Any]:
        return list(jaxpr_as_fun(self.__mlcache_jaxpr__)(*leaves))


@dataclasses.dataclass(frozen=True, eq=False)
class Segment:
    """Consecutive queue clusters run as one compiled call.

    Attributes:
      index: position in the plan.
      clusters: the cluster ids, in queue order.
      mode: ``"split"``, ``"whole"`` or ``"once"``.
      inputs: slots of the graph values read (the program takes the carrier
        before them); see :class:`Boundary`.
      outputs: slots of the graph values made here and read later or returned.
      in_axes: batch axis of each input (an exact ``B`` dimension) or None.
      out_axes: batch axis of each output or None.
      carrier: True when the program's first input is a ``[B]`` int8 array that
        only lends the batch size (no real input carries it).
      program: the program handed to ``cached_jit``.
      combines: for a round, how each output combines across chunks (``None``:
        not a reduction); empty for other segments.
      masked: the program takes the chunk's number of real rows as a last
        ``int32[]`` input and keeps padded rows out of its reductions.
      size_dims: the dimension expression (``B``, ``3*B``) of each
        ``dim_as_value`` the program takes as an input (after :attr:`inputs`),
        fed at run time with the expression evaluated at the true batch size.
      size_dtypes: the dtype of each of those inputs.
      round: for a round, its number among the plan's rounds (from 0).
      offset: the program takes the chunk's first row as a last ``int32[]``
        input (after the real rows when :attr:`masked`) and adds it to every
        ``iota`` along the batch.

    New fields take defaults, so the dataclass grows without breaking callers.
    """

    index: int
    clusters: tuple[int, ...]
    mode: str
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    in_axes: tuple[int | None, ...]
    out_axes: tuple[int | None, ...]
    carrier: bool
    program: SegmentProgram
    combines: tuple[Combine | None, ...] = ()
    masked: bool = False
    size_dims: tuple[Any, ...] = ()
    size_dtypes: tuple[Any, ...] = ()
    round: int | None = None
    offset: bool = False

    @property
    def batch_axes(self) -> tuple[int | None, ...]:
        """``cached_jit``'s ``batch_axes`` for the program (carrier included)."""
        extra = (None,) * (len(self.size_dims) + self.masked + self.offset)
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

    A ``graphlib`` topological sort of ``graph.dependencies``: among the ready
    clusters it takes one of the current mode if there is one, else starts a
    new run with batch-invariant (``once``) clusters first, then the ready
    cluster earliest in ``graph.queue``. Ties go to queue order, so the result
    is deterministic.
    """
    position = {cid: i for i, cid in enumerate(graph.queue)}
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for cid in graph.queue:
        sorter.add(cid)
    for producer, consumer in graph.dependencies:
        sorter.add(consumer, producer)
    sorter.prepare()
    ready: list[int] = []
    order: list[int] = []
    mode = "once"
    while sorter.is_active():
        ready.extend(sorter.get_ready())
        ready.sort(key=position.__getitem__)
        same = [c for c in ready if modes[c] == mode]
        if not same:
            once = [c for c in ready if modes[c] == "once"]
            same = once or ready[:1]
            mode = modes[same[0]]
        cid = same[0]
        ready.remove(cid)
        order.append(cid)
        sorter.done(cid)
    return order


def build_segments(
    graph: ClusterGraph, policy: str, fuse: bool = True, share_blocks: bool = True
) -> SegmentSet:
    """Fuse clusters that run the same way, in a fusing topological order, into segments.

    Returns the segments (reading and writing slots) with the graph's :class:`Boundary`.
    With ``fuse=False`` every cluster is a segment of its own (the reference
    oracle's view: every cluster's inputs and outputs are segment boundaries).
    With ``share_blocks`` (and ``fuse``), a split segment whose equations
    repeat block after block (layers in a Python loop) is cut into its blocks
    (:mod:`.repeats`). Segments whose programs are the same text share one
    :class:`SegmentProgram`, so one executable per size serves them all.
    """
    slots = variable_slots(graph)
    segments = [
        dataclasses.replace(
            seg,
            inputs=tuple(slots[v] for v in seg.inputs),
            outputs=tuple(slots[v] for v in seg.outputs),
        )
        for seg in _segments_by_variable(graph, policy, fuse, fuse and share_blocks)
    ]
    return SegmentSet(Boundary.of(graph, slots), _share_programs(segments))


def _share_programs(segments: list[Segment]) -> list[Segment]:
    """Every segment whose program prints the same as an earlier one's takes that program."""
    first: dict[tuple[str, tuple[int | None, ...]], SegmentProgram] = {}
    out = []
    for seg in segments:
        key = (seg.program.__mlcache_fingerprint__(), seg.batch_axes)
        program = first.setdefault(key, seg.program)
        out.append(seg if program is seg.program else dataclasses.replace(seg, program=program))
    return out


def segment_flavour(policy: str, share_blocks: bool = True) -> str:
    """What of ``policy`` decides the segment programs (the ``segments`` level's key).

    ``whole`` runs the queue as one segment; the others split batched work,
    and ``chunk``/``devices`` mask padded rows out of reductions, ``buckets``
    (no padding) does not; ``share_blocks`` cuts repeated blocks. Chunk and
    bucket sizes only decide compilations.
    """
    if policy == "whole":
        return "one whole segment"
    masked = policy in ("chunk", "devices")
    flavour = "split, padded rows masked" if masked else "split, no padding"
    return flavour + ("" if share_blocks else ", repeated blocks kept in one program")


def variable_slots(graph: ClusterGraph) -> dict[Var, int]:
    """Every variable of the graph's jaxpr by slot: constants, inputs, then equation outputs."""
    jaxpr = graph.jaxpr.jaxpr
    order = [*jaxpr.constvars, *jaxpr.invars, *(v for e in jaxpr.eqns for v in e.outvars)]
    return {v: i for i, v in enumerate(order)}


def _segments_by_variable(
    graph: ClusterGraph, policy: str, fuse: bool, share_blocks: bool
) -> list[Segment]:
    modes = {cid: _cluster_mode(graph, cid, policy) for cid in graph.queue}
    runs = _runs(graph, modes, fuse)
    if fuse:
        runs = _fold_cheap_work(graph, modes, runs)
    runs = [(m, piece) for m, cids in runs for piece in _rounds_of(graph, m, cids)]
    segments: list[Segment] = []
    rounds = 0
    for mode, cids in runs:
        segment = _make_segment(graph, len(segments), mode, cids)
        if segment.mode == "split" and not _splittable(segment):
            segment = _make_segment(graph, len(segments), "whole", cids)
        reduces = any(graph.clusters[c].kind == "reduces" for c in cids)
        pieces = [segment]
        if share_blocks and segment.mode == "split" and not reduces:
            pieces = _blocks_of(graph, segment, len(segments)) or pieces
        for piece in pieces:
            offset = piece.mode == "split" and any(
                is_batch_iota(e) for e in piece.program.__mlcache_jaxpr__.jaxpr.eqns
            )
            if piece.mode == "split" and reduces:
                masked = policy in ("chunk", "devices")
                piece = _as_round(graph, piece, rounds, masked, offset)
                rounds += 1
            elif offset:
                program = offset_positions(piece.program.__mlcache_jaxpr__)
                piece = dataclasses.replace(
                    piece, program=SegmentProgram(program, piece.program.__name__), offset=True
                )
            elif piece.mode == "once" and piece.carrier:
                piece = _with_size_inputs(piece)
            segments.append(piece)
    return segments


def _runs(graph: ClusterGraph, modes: dict[int, str], fuse: bool) -> list[tuple[str, list[int]]]:
    """The clusters in fusing order, cut where the mode changes (each alone without ``fuse``)."""
    runs: list[tuple[str, list[int]]] = []
    for cid in fusing_order(graph, modes):
        mode = modes[cid]
        if fuse and runs and runs[-1][0] == mode:
            runs[-1][1].append(cid)
        else:
            runs.append((mode, [cid]))
    return runs


_RANDOM = {"random_seed", "random_fold_in", "random_clone", "threefry2x32"}
CHEAP_PRIMITIVES = frozenset(
    {"broadcast_in_dim", "transpose", "reshape", "squeeze", "expand_dims", "iota"}
    | set(ELEMENTWISE) - _RANDOM
)
"""Primitives whose work is proportional to the values they read and make (layout,
elementwise, ``iota``): a batch-invariant cluster made of them alone runs inside the chunk
program that reads it (:func:`_fold_cheap_work`)."""


def _fold_cheap_work(
    graph: ClusterGraph, modes: dict[int, str], runs: list[tuple[str, list[int]]]
) -> list[tuple[str, list[int]]]:
    """``runs`` with cheap batch-invariant work moved into the split run that reads it.

    A ``once`` cluster made only of :data:`CHEAP_PRIMITIVES` (a weight
    transposed for tied embeddings, biases broadcast to their rank, a causal
    mask from ``iota``), whose values only split clusters read and none is an
    output, would otherwise be an executable of its own: loaded, run and
    waited for before the first chunk, its results written out whole. Inside
    the chunk program it costs about one pass over values the program reads
    anyway, and XLA fuses it into the dots and fusions that read it. It is
    folded only where its readers all land in the run it joins; else it stays
    ``once``.
    """
    outputs = {v for v in graph.jaxpr.jaxpr.outvars if not isinstance(v, Literal)}
    readers: dict[int, set[int]] = {}
    for producer, consumer in graph.dependencies:
        readers.setdefault(producer, set()).add(consumer)
    folded = {
        cid
        for cid, mode in modes.items()
        if mode == "once"
        and readers.get(cid)
        and all(modes[c] == "split" for c in readers[cid])
        and set(graph.clusters[cid].primitives()) <= CHEAP_PRIMITIVES
        and not outputs.intersection(graph.clusters[cid].outputs)
    }
    while folded:
        trial = _runs(graph, {**modes, **dict.fromkeys(folded, "split")}, True)
        run_of = {cid: k for k, (_, cids) in enumerate(trial) for cid in cids}
        stray = {cid for cid in folded if any(run_of[c] != run_of[cid] for c in readers[cid])}
        if not stray:
            return trial
        folded -= stray
    return runs


def _blocks_of(graph: ClusterGraph, segment: Segment, index: int) -> list[Segment] | None:
    """``segment`` cut into its prefix, repeated blocks and suffix, or None (no repeat).

    The pieces are split segments numbered from ``index``; None too when a
    piece could not be split (a value crossing a cut whose batch dimension is
    not exactly ``B``).
    """
    members = sorted(i for cid in segment.clusters for i in graph.clusters[cid].equations)
    eqns = [graph.jaxpr.jaxpr.eqns[i] for i in members]
    blocks = find_blocks(eqns, _read_outside(graph, frozenset(members)))
    if blocks is None:
        return None
    cluster_of = {i: cid for cid in segment.clusters for i in graph.clusters[cid].equations}
    pieces = []
    for k, span in enumerate(blocks.pieces(len(members))):
        piece = [members[i] for i in span]
        cids = tuple(dict.fromkeys(cluster_of[i] for i in piece))
        made = _make_segment(graph, index + k, "split", cids, piece)
        if not _splittable(made):
            return None
        pieces.append(made)
    return pieces


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
        size_dims=tuple(e.params["dim"] for e in made),
        size_dtypes=tuple(np.dtype(v.aval.dtype) for v in sizes),
    )


def _splittable(segment: Segment) -> bool:
    return all(_exactly_batched(v) for v in (*segment.inputs, *segment.outputs))


def _make_segment(
    graph: ClusterGraph,
    index: int,
    mode: str,
    cids: Sequence[int],
    members: Sequence[int] | None = None,
) -> Segment:
    """The segment of clusters ``cids``, or of their equations ``members`` only (a block)."""
    jaxpr = graph.jaxpr.jaxpr
    if members is None:
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
    mentions = any(eqn_mentions_batch(e) for e in eqns)  # in a shape or a parameter
    carrier = mentions and not any(_batch_axis(v) is not None for v in in_vars)
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
    for v in graph.jaxpr.jaxpr.invars:
        for d in _dims(v):
            if is_symbolic(d):
                return ShapedArray((batch_dim(symbolic_scope(d)),), np.dtype(np.int8))
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


@dataclasses.dataclass(frozen=True, eq=False)
class Boundary:
    """A graph's inputs, constants and outputs by slot: where a plan's run starts and ends.

    Attributes:
      name: the function's name.
      n_clusters: the graph's number of clusters (for display).
      in_tree, out_tree: the argument and output tree structures.
      in_batch_axes: batch axis of each flat argument.
      in_shapes: each flat argument's shape, ``None`` where it is the batch.
      batch_size: the example batch size (the only one of a concrete graph).
      symbolic, symbolic_reason: as :class:`~mlcache_lab.partition.ClusterGraph`'s.
      consts: ``(slot, value)`` of the jaxpr's constants.
      output_slots: per flat output, its slot, or ``("literal", value)``.
    """

    name: str
    n_clusters: int
    in_tree: Any
    out_tree: Any
    in_batch_axes: tuple[int | None, ...]
    in_shapes: tuple[tuple[int | None, ...], ...]
    batch_size: int
    symbolic: bool
    symbolic_reason: str
    consts: tuple[tuple[int, Any], ...]
    output_slots: tuple[Any, ...]

    @classmethod
    def of(cls, graph: ClusterGraph, slots: dict[Var, int]) -> Boundary:
        jaxpr = graph.jaxpr.jaxpr
        return cls(
            graph.name,
            len(graph.clusters),
            graph.in_tree,
            graph.out_tree,
            tuple(graph.in_batch_axes),
            tuple(
                tuple(None if is_symbolic(d) else int(d) for d in v.aval.shape)
                for v in jaxpr.invars
            ),
            graph.batch_size,
            graph.symbolic,
            graph.symbolic_reason,
            tuple(
                (slots[v], np.asarray(c))
                for v, c in zip(jaxpr.constvars, graph.jaxpr.consts, strict=True)
            ),
            tuple(
                ("literal", v.val) if isinstance(v, Literal) else slots[v] for v in jaxpr.outvars
            ),
        )

    @property
    def first_input(self) -> int:
        return len(self.consts)

    def batch_size_of(self, *args: Any) -> int:
        """The batch size of ``args``, read along the batch axes, as the graph reads it.

        Raises:
          ValueError: as :meth:`ClusterGraph.batch_size_of
          <mlcache_lab.partition.ClusterGraph.batch_size_of>`.
        """
        return batch_size_of(self, args)

    def initial_values(self, *args: Any) -> dict[int, Any]:
        """Slot -> value of the constants and inputs for ``args``.

        Raises:
          ValueError: ``args`` do not have the example arguments' structure and
            shapes (any batch size for a symbolic graph).
        """
        leaves, tree = jax.tree.flatten(args)
        if tree != self.in_tree:
            raise ValueError(
                WRONG_ARGS.format(
                    what="the tree structure differs", got=tree, expected=self.in_tree
                )
            )
        self.batch_size_of(*args)
        for i, (x, want) in enumerate(zip(leaves, self.in_shapes, strict=True)):
            shape = tuple(np.shape(x))
            if len(shape) != len(want) or any(
                w is not None and w != d for d, w in zip(shape, want, strict=False)
            ):
                raise ValueError(
                    WRONG_ARGS.format(
                        what=f"flat argument {i} has another shape",
                        got=shape,
                        expected=shape_text(["B" if w is None else w for w in want]),
                    )
                )
        env: dict[int, Any] = dict(self.consts)
        env.update(enumerate(leaves, start=self.first_input))
        return env

    def outputs(self, env: dict[int, Any]) -> Any:
        """The function's output pytree read from ``env``."""
        flat = [o[1] if isinstance(o, tuple) else env[o] for o in self.output_slots]
        return jax.tree.unflatten(self.out_tree, flat)


@dataclasses.dataclass(eq=False)
class SegmentSet:
    """A graph's segments under one policy flavour, and the cached functions that run them.

    What the ``segments`` cache level stores (:meth:`encode`/:meth:`decode`):
    the boundary, and per segment its slots, axes, carrier, combines, masking,
    size inputs and its program's encoded jaxpr and fingerprint, so every
    segment's ``cached_jit`` chain keys are computed without decoding a jaxpr.
    Plans for every batch size of one graph and flavour share one set, so a
    new batch size reuses the executables earlier ones loaded; segments that
    share a program (repeated blocks) share its functions too.
    """

    boundary: Boundary
    segments: list[Segment]
    functions: dict[tuple[str, tuple[int | None, ...], int | None, str], Any] = dataclasses.field(
        default_factory=dict
    )

    def encode(self) -> bytes:
        """The set as bytes (raises ``JaxprCodecError`` for a program the codec refuses)."""
        import pickle

        records = [
            {
                **_fields(seg),
                # Dimension expressions do not unpickle in another process: as text.
                "size_dims": tuple(str(d) if is_symbolic(d) else d for d in seg.size_dims),
                "program": (
                    seg.program.__name__,
                    seg.program.encode(),
                    seg.program.__mlcache_fingerprint__(),
                ),
            }
            for seg in self.segments
        ]
        return pickle.dumps(
            (SEGMENTS_FORMAT, _fields(self.boundary), records),
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def decode(cls, payload: bytes) -> SegmentSet:
        """The set :meth:`encode` wrote; programs stay encoded until used.

        Raises:
          ValueError: another format (an entry from another version).
        """
        import pickle

        fmt, boundary, records = pickle.loads(payload)
        if fmt != SEGMENTS_FORMAT:
            raise ValueError(f"segments format {fmt!r}, this version reads {SEGMENTS_FORMAT}")
        segments = []
        for record in records:
            name, encoded, fingerprint = record.pop("program")
            record["size_dims"] = tuple(
                jax_export.symbolic_shape(d)[0] if isinstance(d, str) else d
                for d in record["size_dims"]
            )
            program = SegmentProgram(None, name, encoded=encoded, fingerprint=fingerprint)
            segments.append(Segment(program=program, **record))
        return cls(Boundary(**boundary), _share_programs(segments))  # as when built


SEGMENTS_FORMAT = 1
"""Version of :meth:`SegmentSet.encode`'s layout (part of the ``segments`` level's key)."""


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields by name, shallowly (treedefs do not deep-copy), program aside."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "program"}
