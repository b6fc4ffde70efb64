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
"""

from __future__ import annotations

import dataclasses
import html
import time
import weakref
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..cache.store import CacheStore
from ..partition.graph import ClusterGraph
from ..stages.cached_function import CachedFunction, cached_jit
from .policies import Chunk, split_batch, validate
from .rounds import combine, size_values
from .segments import Segment, build_segments
from .timeline import Compilation, Execution, Timeline

__all__ = ["Plan", "schedule"]

NOT_SYMBOLIC = (
    "policy={policy!r} splits the batch, which needs a graph traced with a symbolic batch "
    "dimension; this function's graph is concrete ({reason}). Fix: make the function "
    "shape-polymorphic in the batch (read the batch size from x.shape, do not hardcode it), "
    "or use policy='whole', which traces it again at each batch size."
)
WRONG_BATCH = (
    "This plan is for batch_size={planned}, but the arguments have {got} samples. "
    "Fix: make a plan for it, g.schedule(batch_size={got}, ...), or use mcl.batched_jit."
)


class _Executor:
    """Per graph and store: the segments of each policy and their cached functions."""

    def __init__(self, graph: ClusterGraph, store: CacheStore | None) -> None:
        self.graph, self.store = graph, store
        self._segments: dict[str, list[Segment]] = {}
        self._functions: dict[tuple[str, int, int | None], CachedFunction] = {}

    def segments(self, policy: str) -> list[Segment]:
        if policy not in self._segments:
            self._segments[policy] = build_segments(self.graph, policy)
        return self._segments[policy]

    def function(self, policy: str, segment: Segment, device: Any) -> CachedFunction:
        key = (policy, segment.index, None if device is None else device.id)
        f = self._functions.get(key)
        if f is None:
            f = cached_jit(
                segment.program,
                store=self.store,
                batch_axes=segment.batch_axes
                if any(a is not None for a in segment.batch_axes)
                else None,
                device=device,
            )
            self._functions[key] = f
        return f


_EXECUTORS: weakref.WeakKeyDictionary[ClusterGraph, dict[int, _Executor]] = (
    weakref.WeakKeyDictionary()
)


def _executor(graph: ClusterGraph, store: CacheStore | None) -> _Executor:
    per_store = _EXECUTORS.setdefault(graph, {})
    key = id(store)
    if key not in per_store:
        per_store[key] = _Executor(graph, store)
    return per_store[key]


@dataclasses.dataclass
class Plan:
    """A graph's execution queue scheduled for ``batch_size`` samples.

    Attributes:
      graph: the :class:`~mlcache_lab.partition.ClusterGraph`.
      batch_size, policy, micro_batch, bucket_sizes: the schedule's arguments.
      chunks: how split segments cut the batch (:class:`~.policies.Chunk`).
      segments: the fused runs of the queue, in order.
      devices: devices split segments use (one unless ``policy="devices"``).
      timeline: the last run's :class:`~.timeline.Timeline` (None before a run).
    """

    graph: ClusterGraph
    batch_size: int
    policy: str
    micro_batch: int
    bucket_sizes: tuple[int, ...] | None
    chunks: list[Chunk]
    segments: list[Segment]
    devices: list[Any]
    store: CacheStore | None = None
    timeline: Timeline | None = None

    # ---------------------------------------------------------------- running
    def run(self, *args: Any) -> Any:
        """Execute the plan on ``args`` (shaped like the graph's example arguments).

        Returns the function's outputs (allclose to ``fn(*args)``); the record of
        what ran is in :attr:`timeline`.
        """
        graph = self.graph
        env = graph.initial_values(*args)
        got = graph.batch_size_of(*args)
        if got != self.batch_size:
            raise ValueError(WRONG_BATCH.format(planned=self.batch_size, got=got))
        executor = _executor(graph, self.store)
        timeline = Timeline()
        t0 = time.perf_counter()
        for segment in self.segments:
            inputs = [env[v] for v in segment.inputs]
            if segment.mode == "split":
                outs = self._run_split(executor, segment, inputs, timeline, t0)
            else:
                outs = self._run_whole(executor, segment, inputs, timeline, t0)
            env.update(zip(segment.outputs, outs, strict=True))
        result = graph.outputs(env)
        jax.block_until_ready(result)
        timeline.total_seconds = time.perf_counter() - t0
        self.timeline = timeline
        return result

    def _call(
        self, executor: _Executor, segment: Segment, device: Any, args: list[Any], run_size: int
    ) -> tuple[list[Any], Compilation | None]:
        f = executor.function(self.policy, segment, device)
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
        executor: _Executor,
        segment: Segment,
        inputs: list[Any],
        timeline: Timeline,
        t0: float,
    ) -> list[Any]:
        args = inputs
        if segment.carrier:
            args = [np.zeros((self.batch_size,), np.int8), *inputs]
        if segment.size_vars:  # B as a value, so the program compiles once
            args = [*args, *size_values(segment, self.batch_size)]
        start = time.perf_counter() - t0
        outs, compilation = self._call(executor, segment, None, args, self.batch_size)
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
        executor: _Executor,
        segment: Segment,
        inputs: list[Any],
        timeline: Timeline,
        t0: float,
    ) -> list[Any]:
        spread = self.policy == "devices"
        placed: dict[tuple[int, int], Any] = {}  # (input, device) -> unbatched input there
        pending = []
        for k, chunk in enumerate(self.chunks):
            device = self.devices[k % len(self.devices)] if spread else None
            args = [_take(x, a, chunk) for x, a in zip(inputs, segment.in_axes, strict=True)]
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
            start = time.perf_counter() - t0
            outs, compilation = self._call(executor, segment, device, args, chunk.run_size)
            end = None
            if not spread:  # one device: each chunk's end is when its results are ready
                jax.block_until_ready(outs)
                end = time.perf_counter() - t0
            pending.append((k, chunk, device, start, end, outs, compilation))
        results = []
        for k, chunk, device, start, end, outs, compilation in pending:
            if end is None:  # dispatched asynchronously under "devices": ready in order
                jax.block_until_ready(outs)
                end = time.perf_counter() - t0
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
        home = self.devices[0] if spread else None
        if segment.combines:
            return self._combine(segment, results, home, timeline, t0)
        return [
            _assemble([r[j] for r in results], axis, self.chunks, home)
            for j, axis in enumerate(segment.out_axes)
        ]

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
                outs.append(_assemble(parts, axis, self.chunks, home))
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
        if s.mode == "once" and s.size_vars:
            return "once   1x (reads B as a value, passed in: compiled once for every batch size)"
        if s.mode == "once":
            return "once   1x (batch-invariant, compiled once for every batch size)"
        return f"whole  1x{self.batch_size} (compiled per batch size) clusters {ids}"

    def __repr__(self) -> str:
        head = (
            f"Plan({self.graph.name}: batch_size={self.batch_size}, policy={self.policy!r}"
            + (f", micro_batch={self.micro_batch}" if self.policy in ("chunk", "devices") else "")
            + (
                f", buckets={self.bucket_sizes or 'powers of two'}"
                if self.policy == "buckets"
                else ""
            )
            + f"): {len(self.segments)} segments from {len(self.graph.clusters)} clusters"
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
    xp: Any = np if _on_host() else jnp
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


def _assemble(parts: Sequence[Any], axis: int | None, chunks: Sequence[Chunk], home: Any) -> Any:
    if axis is None:
        return parts[0]  # the same for every chunk
    if home is not None:
        parts = [jax.device_put(p, home) for p in parts]
    if len(parts) == 1 and chunks[0].padding == 0:
        return parts[0]
    host = _on_host()
    pieces = []
    for p, c in zip(parts, chunks, strict=True):
        arr = np.asarray(p) if host else p
        if c.padding:
            index = [slice(None)] * arr.ndim
            index[axis] = slice(0, c.size)
            arr = arr[tuple(index)]
        pieces.append(arr)
    if host:
        return jax.device_put(np.concatenate(pieces, axis=axis), home)
    return jnp.concatenate(pieces, axis=axis)


def schedule(
    graph: ClusterGraph,
    batch_size: int,
    policy: str = "chunk",
    micro_batch: int = 16,
    *,
    bucket_sizes: Sequence[int] | None = None,
    devices: Sequence[Any] | None = None,
    store: CacheStore | None = None,
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

    Raises:
      ValueError: an unknown policy, ``batch_size`` or ``micro_batch`` < 1, or
        bucket sizes that cannot add up to ``batch_size``.
    """
    validate(batch_size, policy, micro_batch, bucket_sizes)
    if not graph.symbolic:
        if policy != "whole":
            raise ValueError(NOT_SYMBOLIC.format(reason=graph.symbolic_reason, policy=policy))
        graph = graph.at_batch_size(batch_size)  # traced again at this size
    chunks = split_batch(batch_size, policy, micro_batch, bucket_sizes)
    if devices is None:
        devices = jax.devices() if policy == "devices" else jax.devices()[:1]
    elif not devices:
        raise ValueError("'devices' must name at least one device, e.g. devices=jax.devices().")
    segments = _executor(graph, store).segments(policy)
    return Plan(
        graph,
        batch_size,
        policy,
        micro_batch,
        tuple(bucket_sizes) if bucket_sizes is not None else None,
        chunks,
        segments,
        list(devices),
        store,
    )
