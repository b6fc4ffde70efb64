"""Plan: a cluster graph scheduled for one batch size, and the executor that runs it.

``schedule(graph, batch_size, policy, ...)`` cuts the batch into chunks
(:mod:`.policies`), fuses the queue into segments (:mod:`.segments`) and
returns a :class:`Plan`. ``plan.run(*args)`` executes the segments in queue
order: split segments once per chunk (padding dropped from the outputs,
never passed to a non-batched segment), the others once on the whole batch.
A split segment with reductions is a round (:mod:`.rounds`): after its chunks,
each reduction's partials are combined, and the combine is recorded in the
timeline.
Every segment is compiled through ``cached_jit`` and the graph's store, per
device where the policy uses several; the executables are kept per graph, so
a plan for a new batch size reuses what earlier plans compiled.
``plan.reference(*args)`` is the same execution in reference mode: each
segment's program evaluated uncompiled (:mod:`.reference`), the oracle the
tests check ``plan.run`` and the partition against; ``schedule(...,
fuse=False)`` gives every cluster a segment of its own.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Var

from ..cache.store import CacheStore
from ..partition.graph import ClusterGraph
from ..stages.cached_function import CachedFunction, cached_jit
from ..stages.pipeline import check_compiler_options
from .policies import Chunk, split_batch, validate
from .reference import ReferenceFunction
from .rounds import combine, size_values
from .segments import (
    Boundary,
    Segment,
    SegmentSet,
    build_segments,
    segment_flavour,
    variable_slots,
)
from .timeline import Compilation, Execution, Timeline

__all__ = ["Plan", "plan_segments", "schedule"]

NOT_SYMBOLIC = (
    "policy={policy!r} splits the batch, which needs a graph traced with a symbolic batch "
    "dimension; this function's graph is concrete ({reason}). Fix: make the function "
    "shape-polymorphic in the batch (read the batch size from x.shape, do not hardcode it), "
    "or use policy='whole', which traces it again at each batch size."
)
BAD_FUSE = (
    "'fuse' must be True (fuse adjacent clusters that run alike into one segment) or False "
    "(a segment per cluster). Got fuse={value!r}."
)
BAD_SHARE_BLOCKS = (
    "'share_blocks' must be True (layers repeated back to back share one program per size) "
    "or False (they stay in one program, for ablations). Got share_blocks={value!r}."
)
NO_GRAPH_FOR_REFERENCE = (
    "This plan was made from segments read from the cache (a warm batched_jit), without its "
    "cluster graph, and reference_values are keyed by the graph's variables. Fix: schedule "
    "the graph itself, bf.graph.schedule(batch_size=..., ...).reference_values(*args)."
)
WRONG_BATCH = (
    "This plan is for batch_size={planned}, but the arguments have {got} samples. "
    "Fix: make a plan for it, g.schedule(batch_size={got}, ...), or use mcl.batched_jit."
)


def segment_function(
    segments: SegmentSet,
    segment: Segment,
    device: Any,
    store: CacheStore | None,
    compiler_options: Mapping[str, Any] | None = None,
) -> CachedFunction:
    """The ``cached_jit`` of ``segment``'s program on ``device`` (made once per set and program).

    Segments with the same program (repeated blocks) share one function, and so
    one executable per size. ``compiler_options`` go to every segment's compile
    level: a change of them compiles again from the cached StableHLO.
    """
    key = (
        segment.program.__mlcache_fingerprint__(),
        segment.batch_axes,
        None if device is None else int(device.id),
        # Options as text (values need not be hashable); nothing to format on the usual path.
        repr(sorted(compiler_options.items())) if compiler_options else "",
    )
    f = segments.functions.get(key)
    if f is None:
        f = cached_jit(
            segment.program,
            store=store,
            batch_axes=segment.batch_axes
            if any(a is not None for a in segment.batch_axes)
            else None,
            device=device,
            compiler_options=compiler_options,
        )
        segments.functions[key] = f
    return f


# A segment's callable on a device: its cached_jit for run(), a ReferenceFunction for reference().
SegmentFunction = Callable[[Segment, Any], Any]


# Per graph and store, the segments of each policy flavour: plans for every batch size
# of one graph share them, and with them the executables they loaded.
_SEGMENTS: weakref.WeakKeyDictionary[ClusterGraph, dict[tuple[int, str, bool], SegmentSet]] = (
    weakref.WeakKeyDictionary()
)


def graph_segments(
    graph: ClusterGraph,
    policy: str,
    store: CacheStore | None,
    fuse: bool = True,
    share_blocks: bool = True,
) -> SegmentSet:
    """``graph``'s segments for ``policy`` (built once per graph, store, flavour and fusing)."""
    per_graph = _SEGMENTS.setdefault(graph, {})
    key = (id(store), segment_flavour(policy, share_blocks), fuse)
    if key not in per_graph:
        per_graph[key] = build_segments(graph, policy, fuse, share_blocks)
    return per_graph[key]


@dataclasses.dataclass
class Plan:
    """A graph's execution queue scheduled for ``batch_size`` samples.

    Attributes:
      graph: the :class:`~mlcache_lab.partition.ClusterGraph`, or ``None`` for a
        plan made from segments read from the cache (``batched_jit``'s warm
        path: the graph is not decoded; ``BatchedFunction.graph`` decodes it).
      batch_size, policy, micro_batch, bucket_sizes: the schedule's arguments.
      chunks: how split segments cut the batch (:class:`~.policies.Chunk`).
      segments: the fused runs of the queue, in order.
      devices: devices split segments use (one unless ``policy="devices"``).
      store: the cache store its segments compile through.
      timeline: the last run's :class:`~.timeline.Timeline` (None before a run).
      segment_set: the segments with the graph's :class:`~.segments.Boundary`
        and their cached functions (default: the graph's, for this policy).
      compiler_options: XLA options every segment compiles with (part of each
        executable's compile key).
    """

    graph: ClusterGraph | None
    batch_size: int
    policy: str
    micro_batch: int
    bucket_sizes: tuple[int, ...] | None
    chunks: list[Chunk]
    segments: list[Segment]
    devices: list[Any]
    store: CacheStore | None = None
    timeline: Timeline | None = None
    segment_set: SegmentSet = dataclasses.field(default=None, repr=False)  # type: ignore[assignment]
    compiler_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.segment_set is None:
            if self.graph is None:
                raise ValueError("a Plan needs its graph or its segment_set")
            self.segment_set = graph_segments(self.graph, self.policy, self.store)

    @property
    def boundary(self) -> Boundary:
        """The graph's inputs, constants and outputs by slot."""
        return self.segment_set.boundary

    # ---------------------------------------------------------------- running
    def run(self, *args: Any) -> Any:
        """Execute the plan on ``args`` (shaped like the graph's example arguments).

        Returns the function's outputs (allclose to ``fn(*args)``); the record of
        what ran is in :attr:`timeline`.
        """
        segment_set, store, options = self.segment_set, self.store, self.compiler_options

        def function(segment: Segment, device: Any) -> CachedFunction:
            return segment_function(segment_set, segment, device, store, options)

        _, result, timeline = self._execute(function, args)
        self.timeline = timeline
        return result

    def reference(self, *args: Any) -> Any:
        """Execute the plan uncompiled: the oracle :meth:`run` is tested against.

        The same chunks, padding, combines and rounds as :meth:`run`, with every
        segment's program evaluated equation by equation (see
        :mod:`.reference`): no store, no compiled segment. :attr:`timeline` is
        left as the last :meth:`run` made it.
        """
        _, result, _ = self._execute(_reference_functions(), args)
        return result

    def reference_values(self, *args: Any) -> dict[Var, Any]:
        """Like :meth:`reference`, but the value of every variable a segment reads or makes.

        Keyed by the graph's jaxpr variables (its inputs and constants too).
        Under ``schedule(..., fuse=False)`` every cluster is a segment, so this
        holds every cluster's inputs and outputs.

        Raises:
          ValueError: the plan has no graph (:data:`NO_GRAPH_FOR_REFERENCE`).
        """
        if self.graph is None:
            raise ValueError(NO_GRAPH_FOR_REFERENCE)
        env, _, _ = self._execute(_reference_functions(), args)
        var_of = {slot: v for v, slot in variable_slots(self.graph).items()}
        return {var_of[slot]: self._assembled(env, slot) for slot in list(env)}

    def _execute(
        self, function: SegmentFunction, args: tuple[Any, ...]
    ) -> tuple[dict[int, Any], Any, Timeline]:
        """Run every segment: the value of every slot read or made, the outputs, the timeline.

        A split segment's outputs stay in chunk parts (:class:`_Parts`) unless
        something reads them whole.
        """
        boundary = self.boundary
        env = boundary.initial_values(*args)
        got = boundary.batch_size_of(*args)
        if got != self.batch_size:
            raise ValueError(WRONG_BATCH.format(planned=self.batch_size, got=got))
        timeline = Timeline()
        t0 = time.perf_counter()
        for segment in self.segments:
            if segment.mode == "split":  # chunk parts of an earlier split segment: as they are
                inputs = [env[v] for v in segment.inputs]
                outs = self._run_split(function, segment, inputs, timeline, t0)
            else:
                inputs = [self._assembled(env, v) for v in segment.inputs]
                outs = self._run_whole(function, segment, inputs, timeline, t0)
            env.update(zip(segment.outputs, outs, strict=True))
        for slot in boundary.output_slots:
            if not isinstance(slot, tuple):  # ("literal", value) needs nothing
                self._assembled(env, slot)
        result = boundary.outputs(env)
        jax.block_until_ready(result)
        timeline.total_seconds = time.perf_counter() - t0
        return env, result, timeline

    def _assembled(self, env: dict[int, Any], slot: int) -> Any:
        """The value of ``slot`` on the whole batch (chunk parts assembled, once)."""
        value = env[slot]
        if isinstance(value, _Parts):
            home = self.devices[0] if self.policy == "devices" else None
            value = env[slot] = _assemble(value, value.axis, self.chunks, home)
        return value

    def _call(
        self,
        function: SegmentFunction,
        segment: Segment,
        device: Any,
        args: list[Any],
        run_size: int,
    ) -> tuple[list[Any], Compilation | None]:
        f = function(segment, device)
        outs = f(*args)
        report = f.last_report
        compilation = None
        if report is not None and not report.fast_path:
            compilation = Compilation(
                segment.index,
                segment.clusters,
                None if device is None else device.id,
                run_size,
                report.statuses(),
                report.total_seconds,
            )
        return outs, compilation

    def _run_whole(
        self,
        function: SegmentFunction,
        segment: Segment,
        inputs: list[Any],
        timeline: Timeline,
        t0: float,
    ) -> list[Any]:
        args = inputs
        if segment.carrier:
            args = [np.zeros((self.batch_size,), np.int8), *inputs]
        if segment.size_dims:  # B as a value, so the program compiles once
            args = [*args, *size_values(segment, self.batch_size)]
        start = time.perf_counter() - t0
        outs, compilation = self._call(function, segment, None, args, self.batch_size)
        jax.block_until_ready(outs)
        timeline.executions.append(
            Execution(
                segment.index,
                segment.clusters,
                segment.mode,
                0,
                0,
                self.batch_size,
                self.batch_size,
                None,
                start,
                time.perf_counter() - t0,
                compilation,
            )
        )
        return outs

    def _run_split(
        self,
        function: SegmentFunction,
        segment: Segment,
        inputs: list[Any],
        timeline: Timeline,
        t0: float,
    ) -> list[Any]:
        spread = self.policy == "devices"
        placed: dict[tuple[int, int], Any] = {}  # (input, device) -> unbatched input there
        # Chunks are dispatched without waiting for the one before, so loading the next
        # size's executable and slicing its rows overlap the running chunk.
        pending = []
        for k, chunk in enumerate(self.chunks):
            device = self.devices[k % len(self.devices)] if spread else None
            args = [
                x[k] if isinstance(x, _Parts) else _take(x, a, chunk)
                for x, a in zip(inputs, segment.in_axes, strict=True)
            ]
            if segment.carrier:
                args.insert(0, np.zeros((chunk.run_size,), np.int8))
            if device is not None:
                args = [
                    _place(placed, i, x, device) if a is None else jax.device_put(x, device)
                    for i, (x, a) in enumerate(zip(args, segment.batch_axes, strict=False))
                ]
            if segment.masked:  # the real rows (per chunk: never cached per device)
                args.append(np.asarray(chunk.size, np.int32))
            if segment.offset:  # the chunk's first row, for the rows' positions
                args.append(np.asarray(chunk.start, np.int32))
            dispatched = time.perf_counter() - t0
            outs, compilation = self._call(function, segment, device, args, chunk.run_size)
            ready = _when_ready(device, outs, t0)
            pending.append((k, chunk, device, dispatched, outs, compilation, ready))
        busy: dict[Any, float] = {}  # device -> when its last chunk was ready
        results = []
        for k, chunk, device, dispatched, outs, compilation, ready in pending:
            # A device runs its chunks in dispatch order: each starts once it was
            # dispatched (its executable loaded) and the one before it is done.
            start = max(dispatched, busy.get(device, dispatched))
            end = busy[device] = ready.result()  # raises a failed execution's error
            timeline.executions.append(
                Execution(
                    segment.index,
                    segment.clusters,
                    "split",
                    k,
                    chunk.start,
                    chunk.size,
                    chunk.run_size,
                    None if device is None else device.id,
                    start,
                    end,
                    compilation,
                    segment.round,
                )
            )
            results.append(outs)
        if segment.combines:
            home = self.devices[0] if spread else None
            return self._combine(segment, results, home, timeline, t0)
        return [_Parts.of([r[j] for r in results], axis) for j, axis in enumerate(segment.out_axes)]

    def _combine(
        self,
        segment: Segment,
        results: list[list[Any]],
        home: Any,
        timeline: Timeline,
        t0: float,
    ) -> list[Any]:
        """A round's outputs: reductions combined across chunks, the rest assembled."""
        start = time.perf_counter() - t0
        n = len(segment.outputs)
        starts = [c.start for c in self.chunks]
        outs = []
        for j, (axis, how) in enumerate(zip(segment.out_axes, segment.combines, strict=True)):
            parts = [r[j] for r in results]
            if how is None:
                outs.append(_Parts.of(parts, axis))
                continue
            values = None if how.value is None else [r[n + how.value] for r in results]
            outs.append(combine(how.op, parts, values, starts, home))
        jax.block_until_ready(outs)
        timeline.executions.append(
            Execution(
                segment.index,
                segment.clusters,
                "combine",
                0,
                0,
                self.batch_size,
                self.batch_size,
                None if home is None else home.id,
                start,
                time.perf_counter() - t0,
                None,
                segment.round,
            )
        )
        return outs

    # ---------------------------------------------------------------- display
    def _segment_line(self, s: Segment) -> str:
        ids = "+".join(map(str, s.clusters))
        if s.mode == "split":
            sizes: dict[int, int] = {}
            for c in self.chunks:
                sizes[c.run_size] = sizes.get(c.run_size, 0) + 1
            runs = ", ".join(f"{n}x{size}" for size, n in sorted(sizes.items(), reverse=True))
            pad = sum(c.padding for c in self.chunks)
            where = f" over {len(self.devices)} devices" if self.policy == "devices" else ""
            line = f"split  {runs}{where}" + (f", {pad} rows padded" if pad else "")
            if s.combines:
                ops: dict[str, int] = {}
                for how in s.combines:
                    if how is not None:
                        ops[how.op] = ops.get(how.op, 0) + 1
                combined = ", ".join(f"{op}x{k}" for op, k in sorted(ops.items()))
                masked = ", padded rows masked" if s.masked and pad else ""
                line = f"round {s.round}: {line}, then combine ({combined}){masked}"
            return line
        if s.mode == "once" and s.size_dims:
            return "once   1x (reads B as a value, passed in: compiled once for every batch size)"
        if s.mode == "once":
            return "once   1x (batch-invariant, compiled once for every batch size)"
        return f"whole  1x{self.batch_size} (compiled per batch size) clusters {ids}"

    def __repr__(self) -> str:
        head = (
            f"Plan({self.boundary.name}: batch_size={self.batch_size}, policy={self.policy!r}"
            + (f", micro_batch={self.micro_batch}" if self.policy in ("chunk", "devices") else "")
            + (
                f", buckets={self.bucket_sizes or 'powers of two'}"
                if self.policy == "buckets"
                else ""
            )
            + f"): {len(self.segments)} segments from {self.boundary.n_clusters} clusters"
        )
        lines = [head]
        for s in self.segments:
            lines.append(
                f"  seg {s.index}  clusters {'+'.join(map(str, s.clusters)):<12} "
                f"{self._segment_line(s)}"
            )
        if self.timeline is not None:
            lines.append(f"  last run: {self.timeline!r}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{s.index}</td><td>{'+'.join(map(str, s.clusters))}</td><td>{s.mode}</td>"
            f"<td>{html.escape(self._segment_line(s))}</td></tr>"
            for s in self.segments
        )
        return (
            f"<table><caption>{html.escape(repr(self).splitlines()[0])}</caption>"
            "<tr><th>segment</th><th>clusters</th><th>mode</th><th>runs</th></tr>"
            f"{rows}</table>"
        )


class _Parts(list):  # type: ignore[type-arg]
    """A split segment's output as its chunks made it (padding included), on their devices.

    The next split segment reads chunk ``k``'s part as it is, with no
    assembling and slicing again between them (repeated blocks pass their
    activations along this way); anything else reads it assembled
    (:meth:`Plan._assembled`). Padded rows are copies of the last row, or
    outputs made from them: per-sample work keeps them apart from real rows,
    and reductions mask them.
    """

    axis: int

    @classmethod
    def of(cls, parts: list[Any], axis: int | None) -> Any:
        """``parts`` kept per chunk, or, along no batch axis, the one value they share."""
        if axis is None:
            return parts[0]  # the same for every chunk
        kept = cls(parts)
        kept.axis = axis
        return kept


_WAITERS: dict[Any, ThreadPoolExecutor] = {}  # device -> its one waiting thread
_WAITERS_LOCK = threading.Lock()
os.register_at_fork(after_in_child=_WAITERS.clear)  # a forked child has none of the threads


def _when_ready(device: Any, outs: Any, t0: float) -> Future[float]:
    """When ``outs`` is ready, in seconds since ``t0``, noted by ``device``'s own thread.

    ``block_until_ready`` waits without holding the GIL, so the caller goes on
    dispatching (and loading executables) meanwhile. One thread per device, for
    the whole process, notes its results in dispatch order: no thread is started
    per run.
    """
    with _WAITERS_LOCK:
        waiter = _WAITERS.get(device)
        if waiter is None:
            waiter = _WAITERS[device] = ThreadPoolExecutor(1, thread_name_prefix="mlcache-ready")
    return waiter.submit(_ready_at, outs, t0)


def _ready_at(outs: Any, t0: float) -> float:
    jax.block_until_ready(outs)
    return time.perf_counter() - t0


def _is_key(x: Any) -> bool:
    """A typed PRNG key array: NumPy cannot hold one, so its glue stays in JAX."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _on_host() -> bool:
    """Glue (slicing, padding, concatenation) runs in NumPy on a CPU backend.

    Eager JAX ops compile once per new shape, so slicing and concatenating
    with them would compile small programs for every new batch size; on the
    CPU, NumPy views and copies of the same buffers cost no compilation.
    """
    return jax.default_backend() == "cpu"


def _take(x: Any, axis: int | None, chunk: Chunk) -> Any:
    """Rows ``chunk`` of ``x`` along ``axis``, padded with copies of the last one."""
    if axis is None:
        return x
    xp: Any = np if _on_host() and not _is_key(x) else jnp
    arr = np.asarray(x) if xp is np else x
    index = [slice(None)] * arr.ndim
    index[axis] = slice(chunk.start, chunk.start + chunk.size)
    part = arr[tuple(index)]
    if chunk.padding:
        index[axis] = slice(chunk.size - 1, chunk.size)
        last = part[tuple(index)]
        part = xp.concatenate([part, xp.repeat(last, chunk.padding, axis=axis)], axis=axis)
    return part


def _place(cache: dict[tuple[int, int], Any], i: int, x: Any, device: Any) -> Any:
    key = (i, device.id)
    if key not in cache:
        cache[key] = jax.device_put(x, device)
    return cache[key]


def _assemble(parts: Sequence[Any], axis: int, chunks: Sequence[Chunk], home: Any) -> Any:
    """Chunk parts along ``axis`` as one array, padding dropped (on ``home``, if given)."""
    if home is not None:
        parts = [jax.device_put(p, home) for p in parts]
    if len(parts) == 1 and chunks[0].padding == 0:
        return parts[0]
    host = _on_host() and not _is_key(parts[0])
    pieces = []
    for p, c in zip(parts, chunks, strict=True):
        arr = np.asarray(p) if host else p
        if c.padding:
            index = [slice(None)] * arr.ndim
            index[axis] = slice(0, c.size)
            arr = arr[tuple(index)]
        pieces.append(arr)
    if host:
        shape = list(pieces[0].shape)
        shape[axis] = sum(piece.shape[axis] for piece in pieces)
        out = np.concatenate(pieces, axis=axis, out=_aligned_empty(tuple(shape), pieces[0].dtype))
        # The buffer is ours alone and never written again: the CPU client adopts it.
        return jax.device_put(out, home, may_alias=True)
    return jnp.concatenate(pieces, axis=axis)


_ALIGN = 64  # bytes


def _aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array whose data starts on a 64-byte boundary.

    XLA's CPU client takes such a host buffer without copying it (``device_put``
    with ``may_alias=True``); NumPy's own allocations are only 16-byte aligned.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _reference_functions() -> SegmentFunction:
    """A fresh reference callable per segment (one per run: nothing outlives it)."""
    made: dict[int, ReferenceFunction] = {}

    def function(segment: Segment, device: Any) -> ReferenceFunction:
        if segment.index not in made:
            made[segment.index] = ReferenceFunction(segment.program, segment.batch_axes)
        return made[segment.index]

    return function


def schedule(
    graph: ClusterGraph,
    batch_size: int,
    policy: str = "chunk",
    micro_batch: int = 16,
    *,
    bucket_sizes: Sequence[int] | None = None,
    devices: Sequence[Any] | None = None,
    store: CacheStore | None = None,
    fuse: bool = True,
    share_blocks: bool = True,
    compiler_options: Mapping[str, Any] | None = None,
) -> Plan:
    """Schedule ``graph``'s queue for ``batch_size`` samples.

    Args:
      graph: from :func:`mlcache_lab.partition`.
      batch_size: the number of samples the plan runs.
      policy: ``"whole"``, ``"chunk"``, ``"buckets"`` or ``"devices"`` (see
        :mod:`mlcache_lab.schedule.policies`).
      micro_batch: chunk size for ``chunk``/``devices``; the largest bucket for
        ``buckets`` when ``bucket_sizes`` is not given.
      bucket_sizes: the sizes ``buckets`` may use (default powers of two).
      devices: devices for ``devices`` (default: all of ``jax.devices()``).
      store: the cache store (default: the default store).
      fuse: fuse adjacent clusters that run the same way into one segment (the
        default); ``False`` makes every cluster a segment of its own, as the
        reference oracle (``g.run``, the tests' ground truth) runs them.
      share_blocks: cut a split segment whose layers repeat back to back (a
        Python loop over layers) into blocks sharing one program, compiled and
        loaded once per size (:mod:`mlcache_lab.schedule.repeats`); ``False``
        for ablations. Only with ``fuse``.
      compiler_options: XLA options for every segment's executable, as
        ``cached_jit(compiler_options=...)``: a change compiles the segments
        again from their cached StableHLO.

    Raises:
      ValueError: an unknown policy, ``batch_size`` or ``micro_batch`` < 1,
        bucket sizes that cannot add up to ``batch_size``, or a ``fuse`` or
        ``share_blocks`` that is not a bool.
      TypeError: ``compiler_options`` is not a mapping of option names to values.
    """
    validate(batch_size, policy, micro_batch, bucket_sizes)
    if not isinstance(fuse, bool):
        raise ValueError(BAD_FUSE.format(value=fuse))
    if not isinstance(share_blocks, bool):
        raise ValueError(BAD_SHARE_BLOCKS.format(value=share_blocks))
    if not graph.symbolic:
        if policy != "whole":
            raise ValueError(NOT_SYMBOLIC.format(reason=graph.symbolic_reason, policy=policy))
        graph = graph.at_batch_size(batch_size)  # traced again at this size
    segment_set = graph_segments(graph, policy, store, fuse, share_blocks)
    return plan_segments(
        segment_set,
        batch_size,
        policy,
        micro_batch,
        bucket_sizes,
        devices,
        store,
        graph,
        compiler_options,
    )


def plan_segments(
    segment_set: SegmentSet,
    batch_size: int,
    policy: str,
    micro_batch: int,
    bucket_sizes: Sequence[int] | None,
    devices: Sequence[Any] | None,
    store: CacheStore | None,
    graph: ClusterGraph | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> Plan:
    """A :class:`Plan` of segments already built (or read from the ``segments`` level).

    Raises:
      ValueError, TypeError: as :func:`schedule`.
    """
    validate(batch_size, policy, micro_batch, bucket_sizes)
    options = check_compiler_options(compiler_options)
    chunks = split_batch(batch_size, policy, micro_batch, bucket_sizes)
    if devices is None:
        devices = jax.devices() if policy == "devices" else jax.devices()[:1]
    elif not devices:
        raise ValueError("'devices' must name at least one device, e.g. devices=jax.devices().")
    return Plan(
        graph,
        batch_size,
        policy,
        micro_batch,
        tuple(bucket_sizes) if bucket_sizes is not None else None,
        chunks,
        segment_set.segments,
        list(devices),
        store,
        segment_set=segment_set,
        compiler_options=options,
    )
