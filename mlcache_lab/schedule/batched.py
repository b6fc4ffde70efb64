"""batched_jit: partition once, schedule per batch size, run; a drop-in callable.

The pipeline is cached level by level in the store (DESIGN.md, "Cache
keys"): ``trace`` (``cached_jit``'s own trace stage, the same entry a
``cached_jit(fn, batch_axes=...)`` uses), ``partition`` and ``segments``
(:mod:`.partitioned_levels`), then each segment program's own
trace/lower/compile through ``cached_jit``. The first call looks the levels
up deepest first: a ``segments`` hit by chain key bypasses trace and
partition and decodes no jaxpr; each level after the deepest hit is looked up
by content before it is regenerated. :attr:`BatchedFunction.last_report`
says what each level did.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from ..cache.keys import KeyComponents, chain_key, content_key, explain_change
from ..cache.store import PARTITIONED_LEVELS, CacheStore, Lookup
from ..partition import ClusterGraph
from ..partition.api import (
    BAD_GROWTH,
    BAD_MIN_CLUSTER_SIZE,
    GROWTHS,
    arg_specs,
    build_graph,
    graph_from_jaxpr,
    normalize_batch_axes,
)
from ..partition.dims import pinned_batch_size
from ..partition.inline import inline_calls
from ..stages import pipeline
from ..stages.cached_function import CachedFunction
from ..stages.report import LevelReport, StageReport
from ..stages.signature import Signature, make_signature
from .partitioned_levels import PartitionArtifact, partition_config, segments_config
from .plan import BAD_SHARE_BLOCKS, Plan, plan_segments, schedule
from .policies import validate
from .segments import SegmentSet, build_segments
from .timeline import Timeline

__all__ = ["BatchedFunction", "batched_jit"]

NO_CALL_YET = (
    "BatchedFunction.last_timeline is the last call's record, and {name} has not been called "
    "yet. Fix: call it once (bf(*args)) first."
)
NO_PLAN_YET = (
    "BatchedFunction.plan({batch_size}) needs the graph, which the first call builds. "
    "Fix: call the function once (bf(*args)), then ask for plans."
)


class BatchedFunction:
    """``fn`` run through its cluster graph, scheduled for whatever batch size it is called with.

    Create it with :func:`batched_jit`. The first call resolves the cached
    levels (see the module docstring); a plan is made (and kept) per batch
    size; every segment is compiled through the cache, so under ``chunk`` and
    ``buckets`` a new batch size compiles nothing new once the chunk or bucket
    sizes have been seen. :attr:`graph` is decoded on first access.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        batch_axes: Any,
        policy: str,
        micro_batch: int,
        bucket_sizes: Sequence[int] | None,
        store: CacheStore | None,
        min_cluster_size: int,
        devices: Sequence[Any] | None,
        growth: str = "gather",
        share_blocks: bool = True,
        compiler_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"batched_jit expects a callable 'fn'. Got fn={fn!r}.")
        validate(1, policy, micro_batch, bucket_sizes)
        if not isinstance(growth, str) or growth not in GROWTHS:
            raise ValueError(BAD_GROWTH.format(options=GROWTHS, value=growth))
        if (
            not isinstance(min_cluster_size, int)
            or isinstance(min_cluster_size, bool)
            or min_cluster_size < 1
        ):
            raise ValueError(BAD_MIN_CLUSTER_SIZE.format(value=min_cluster_size))
        if not isinstance(share_blocks, bool):
            raise ValueError(BAD_SHARE_BLOCKS.format(value=share_blocks))
        self.compiler_options = pipeline.check_compiler_options(compiler_options)
        self._fn = fn
        self.share_blocks = share_blocks
        self.batch_axes = batch_axes
        self.policy, self.micro_batch = policy, micro_batch
        self.bucket_sizes = tuple(bucket_sizes) if bucket_sizes is not None else None
        self.store, self.min_cluster_size, self.growth = store, min_cluster_size, growth
        self.devices = list(devices) if devices is not None else None
        # The trace stage is cached_jit's: same fingerprint, batch_axes and symbolic B.
        self._tracer = CachedFunction(
            fn,
            store=store,
            batch_axes=batch_axes,
            static_argnums=None,
            donate_argnums=None,
            compiler_options=None,
            lowering_platforms=None,
        )
        self._graph: ClusterGraph | None = None
        self._sig: Signature | None = None
        self._specs: tuple[Any, ...] = ()
        self._partition: PartitionArtifact | None = None
        self._partition_key: str | None = None
        self._segments: SegmentSet | None = None
        self.last_plan: Plan | None = None
        self.last_report: StageReport | None = None
        self._plans: dict[int, Plan] = {}
        self._stats: collections.Counter[str] = collections.Counter()
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return (
            f"batched_jit({self.__name__}, policy={self.policy!r}, "
            f"micro_batch={self.micro_batch}, plans for batch sizes {sorted(self._plans)})"
        )

    # ------------------------------------------------------------------ graph
    @property
    def graph(self) -> ClusterGraph | None:
        """The cluster graph (``None`` before the first call).

        A warm call does not need it; it is rebuilt on first access from the
        trace and partition levels (the jaxpr decoded, the clustering read).
        """
        if self._graph is None and self._sig is not None:
            self._graph = self._rebuild_graph()
        return self._graph

    def _rebuild_graph(self) -> ClusterGraph:
        sig = self._sig
        if sig is None:  # the graph property asks only after the first call set it
            raise RuntimeError("internal error: a graph was rebuilt before the first call")
        if self._partition is None and self._partition_key is not None:
            found = self._tracer.store.lookup_content("partition", self._partition_key)
            self._partition = self._decode("partition", found)
        arts, _ = self._tracer._resolve(sig, upto="trace")
        closed = inline_calls(arts["trace"].jaxpr)  # type: ignore[union-attr]
        part = self._partition
        return graph_from_jaxpr(
            self._fn,
            self._specs,
            closed,
            jax.tree.structure(self._specs),
            arts["trace"].out_tree,
            sig.leaf_batch_axes,
            sig.batch_size or 2,
            self.min_cluster_size,
            self.growth,
            analysis=None if part is None else part.analysis(closed.jaxpr),
            plan=None if part is None else part.plan,
        )

    # ------------------------------------------------------------ resolution
    def _resolve(self, args: tuple[Any, ...]) -> StageReport:
        """Find or build the segments for this function and policy, level by level."""
        start = time.perf_counter()
        report = StageReport(self.__name__, {level: LevelReport() for level in PARTITIONED_LEVELS})
        example = _example(args, self.batch_axes)
        normalize_batch_axes(example, self.batch_axes)  # partition's checks and messages
        # Shapes and dtypes only: the graph keeps no reference to the first call's arrays.
        self._specs = arg_specs(tuple(example))
        tracer = self._tracer
        sig = tracer._signature(example, {})
        self._sig = sig
        context, problem = pipeline.describe_trace_context()
        configs = {
            "trace": tracer._configs(sig, None, None, context)["trace"],
            "partition": partition_config(self.min_cluster_size, self.growth),
            "segments": segments_config(self.policy, self.share_blocks),
        }
        chain, prev = {}, "root"
        for level in PARTITIONED_LEVELS:
            chain[level] = chain_key(prev, configs[level])
            prev = chain[level]
        notes = [*tracer.fingerprint.notes, *([problem] if problem else [])]
        store = tracer.store
        chained = 0
        while chained < len(PARTITIONED_LEVELS) and store.caches(PARTITIONED_LEVELS[chained]):
            chained += 1
        ids = f"{tracer._function_id}#batched_jit"

        def components(level: str) -> dict[str, str]:
            values = configs[level].as_dict()
            i = PARTITIONED_LEVELS.index(level)
            if i:
                values[f"{PARTITIONED_LEVELS[i - 1]}_key"] = chain[PARTITIONED_LEVELS[i - 1]]
            return values

        def explain(level: str, found: Lookup) -> str:
            if found.reason != "no entry":
                return found.reason
            return explain_change(store.last_components(level, ids), components(level))

        reasons: dict[str, str] = {}
        if notes:
            why = "; ".join(notes)
            for level in PARTITIONED_LEVELS[1:]:
                reasons[level] = f"function fingerprint unreliable ({why}): chain keys unused"
        # Deepest first: segments, then partition, by chain key.
        for i in (2, 1):
            level = PARTITIONED_LEVELS[i]
            if notes:
                continue
            if i >= chained:
                reasons[level] = f"the {level} level, or one before it, is off in this store"
                continue
            t0 = time.perf_counter()
            found = store.lookup_chain(level, chain[level])
            art = self._decode(level, found)
            if art is None:
                reasons[level] = explain(level, found)
                report.levels[level] = LevelReport(
                    "miss", time.perf_counter() - t0, chain[level], reasons[level]
                )
                continue
            report.levels[level] = LevelReport(
                found.status, time.perf_counter() - t0, chain[level], "found by chain key"
            )
            if level == "segments":
                self._segments = art
                self._partition_key = found.meta.get("partition")
                for skipped in PARTITIONED_LEVELS[:2]:
                    report.levels[skipped] = LevelReport("bypassed", 0.0, "", "a deeper level hit")
                report.total_seconds = time.perf_counter() - start
                return report
            self._partition = art
            self._partition_key = found.content_key
            report.levels["trace"] = LevelReport("bypassed", 0.0, "", "a deeper level hit")
            break

        if self._partition is None:
            if not self._trace_and_partition(sig, example, report, configs, chain, reasons, notes):
                report.total_seconds = time.perf_counter() - start
                return report  # a concrete graph: planned per batch size, levels unused
            if not notes:
                store.record_components("partition", ids, components("partition"))
        # The segments, by content, else built from the graph.
        part = self._partition
        if part is None:  # _trace_and_partition returned True, so it set one
            raise RuntimeError("internal error: segments were asked for without a partition")
        t0 = time.perf_counter()
        ckey = content_key(part.digest, configs["segments"])
        found = store.lookup_content("segments", ckey)
        segments = self._decode("segments", found)
        status, reason, note = "miss", reasons.get("segments", ""), ""
        if segments is not None:
            status, reason = found.status, "found by content: the partition artifact is unchanged"
            if not notes and chained > 2:  # the chain key now leads here too
                store.write("segments", ckey, None, {}, chain_key=chain["segments"])
                store.remember("segments", ckey, segments, found.meta, chain["segments"])
        else:
            graph = self.graph
            if graph is None:  # the partition is known, so the graph can be rebuilt
                raise RuntimeError("internal error: the graph could not be rebuilt")
            segments = build_segments(graph, self.policy, share_blocks=self.share_blocks)
            meta = {"partition": self._partition_key}
            store.remember("segments", ckey, segments, meta, None if notes else chain["segments"])
            try:
                payload: bytes | None = segments.encode()
            except Exception as err:  # a program the jaxpr codec refuses: memory only
                payload, note = None, f"kept in memory only: {type(err).__name__}: {err}"
            if payload is not None:
                store.write(
                    "segments",
                    ckey,
                    payload,
                    meta,
                    chain_key=None if notes or chained <= 2 else chain["segments"],
                    duration=time.perf_counter() - t0,
                )
        if not notes:
            store.record_components("segments", ids, components("segments"))
        report.levels["segments"] = LevelReport(
            status, time.perf_counter() - t0, chain["segments"], reason, note
        )
        self._segments = segments
        report.total_seconds = time.perf_counter() - start
        return report

    def _trace_and_partition(
        self,
        sig: Signature,
        example: tuple[Any, ...],
        report: StageReport,
        configs: dict[str, KeyComponents],
        chain: dict[str, str],
        reasons: dict[str, str],
        notes: list[str],
    ) -> bool:
        """The trace (cached_jit's level) and the partition, by content or analysed.

        Returns False when the function does not trace with a symbolic batch:
        the graph is then :func:`~mlcache_lab.partition.api.build_graph`'s
        (concrete, or its error), and the partitioned levels are not used.
        """
        store = self._tracer.store
        why = ""
        try:
            arts, traced = self._tracer._resolve(sig, upto="trace")
            report.levels["trace"] = traced.levels["trace"]
            closed = inline_calls(arts["trace"].jaxpr)  # type: ignore[union-attr]
            why = pinned_batch_size(closed.jaxpr) or ""
        except Exception as err:  # not polymorphic in the batch, or not traceable at all
            why = f"{type(err).__name__}: {err}"
            report.levels["trace"] = LevelReport(
                "miss", 0.0, chain["trace"], f"the symbolic trace failed ({why:.200})"
            )
        if why:
            # partition's own path: it falls back to a concrete trace, or raises its error.
            in_axes, size = normalize_batch_axes(example, self.batch_axes)
            self._graph = build_graph(
                self._fn,
                self._specs,
                in_axes,
                size,
                self.min_cluster_size,
                None,
                self.growth,
            )
            unused = f"not cached: the function does not trace with a symbolic batch ({why:.200})"
            for level in PARTITIONED_LEVELS[1:]:
                report.levels[level] = LevelReport("miss", 0.0, "", unused)
            return False
        trace_art = arts["trace"]
        if not isinstance(trace_art, pipeline.TraceArtifact):  # what the trace level makes
            raise RuntimeError(f"internal error: the trace level gave a {type(trace_art)}")
        t0 = time.perf_counter()
        ckey = content_key(trace_art.digest, configs["partition"]) if trace_art.digest else None
        part, status, reason, note = None, "miss", reasons.get("partition", ""), ""
        if ckey is not None:
            found = store.lookup_content("partition", ckey)
            part = self._decode("partition", found)
            if part is not None:
                status, reason = found.status, "found by content: the trace artifact is unchanged"
                if not notes:  # the chain key now leads here too
                    store.write("partition", ckey, None, {}, chain_key=chain["partition"])
                    store.remember("partition", ckey, part, {}, chain["partition"])
        if part is None:
            self._graph = graph_from_jaxpr(
                self._fn,
                self._specs,
                closed,
                jax.tree.structure(self._specs),
                trace_art.out_tree,
                sig.leaf_batch_axes,
                sig.batch_size or 2,
                self.min_cluster_size,
                self.growth,
            )
            part = PartitionArtifact.of(self._graph)
            key = ckey or (None if notes else chain["partition"])
            if key is None:
                note = "kept in memory only: the jaxpr has no encoding to key it by"
            else:
                store.remember("partition", key, part, {}, None if notes else chain["partition"])
                store.write(
                    "partition",
                    key,
                    part.payload,
                    {},
                    chain_key=None if notes else chain["partition"],
                    duration=time.perf_counter() - t0,
                )
            ckey = key
        self._partition, self._partition_key = part, ckey
        report.levels["partition"] = LevelReport(
            status, time.perf_counter() - t0, chain["partition"], reason, note
        )
        return True

    def _decode(self, level: str, found: Lookup) -> Any:
        """The artifact of a lookup, or None (a damaged or foreign entry becomes a miss)."""
        if found.status == "memory":
            return found.payload
        if found.status != "disk":
            return None
        try:
            art: Any = (
                PartitionArtifact.decode(found.payload)
                if level == "partition"
                else SegmentSet.decode(found.payload)
            )
        except Exception as err:  # a damaged or foreign entry: regenerate, never trust
            found.status = "miss"
            found.reason = f"entry could not be loaded ({type(err).__name__}: {err}); regenerating"
            return None
        if found.content_key is None:  # a disk hit always names its content key
            raise RuntimeError(f"internal error: a {level} hit without its content key")
        self._tracer.store.remember(level, found.content_key, art, found.meta)
        return art

    # ------------------------------------------------------------------ calls
    @property
    def last_timeline(self) -> Timeline:
        """The last call's :class:`~.timeline.Timeline` (``last_plan.timeline``).

        Raises:
          ValueError: before the first call (:data:`NO_CALL_YET`).
        """
        timeline = None if self.last_plan is None else self.last_plan.timeline
        if timeline is None:
            raise ValueError(NO_CALL_YET.format(name=self.__name__))
        return timeline

    def plan(self, batch_size: int) -> Plan:
        """The plan for ``batch_size`` (made once, then kept). Call once first."""
        if self._segments is None and self._graph is None:
            raise ValueError(NO_PLAN_YET.format(batch_size=batch_size))
        if batch_size not in self._plans:
            if self._segments is not None:
                self._plans[batch_size] = plan_segments(
                    self._segments,
                    batch_size,
                    self.policy,
                    self.micro_batch,
                    self.bucket_sizes,
                    self.devices,
                    self.store,
                    self._graph,
                    self.compiler_options,
                )
            elif self._graph is not None:  # (one of the two: checked above)
                self._plans[batch_size] = schedule(
                    self._graph,
                    batch_size,
                    self.policy,
                    self.micro_batch,
                    bucket_sizes=self.bucket_sizes,
                    devices=self.devices,
                    store=self.store,
                    share_blocks=self.share_blocks,
                    compiler_options=self.compiler_options,
                )
        return self._plans[batch_size]

    def __call__(self, *args: Any) -> Any:
        if self._segments is None and self._graph is None:
            self.last_report = self._resolve(args)
        elif self.last_report is not None and not self.last_report.fast_path:
            self.last_report = _in_memory(self.last_report)
        if self._segments is not None:
            n = self._segments.boundary.batch_size_of(*args)
        elif self._graph is not None:
            n = self._graph.batch_size_of(*args)
        else:  # _resolve makes one or the other
            raise RuntimeError("internal error: a call resolved neither segments nor a graph")
        plan = self.plan(n)
        out = plan.run(*args)
        self.last_plan = plan
        timeline = plan.timeline
        if timeline is None:  # Plan.run records one on every run
            raise RuntimeError("internal error: a plan ran without recording its timeline")
        self._stats["calls"] += 1
        self._stats["executions"] += len(timeline.executions)
        self._stats["compilations"] += timeline.compile_count()
        for c in timeline.compilations:
            for level, status in c.statuses.items():
                self._stats[f"{level}_{status}"] += 1
        self._stats["padded_rows"] += sum(
            e.run_size - e.size for e in timeline.executions if e.mode == "split"
        )
        return out

    def stats(self) -> dict[str, Any]:
        """Calls, executions, XLA compilations, cache-level outcomes, padded rows, plans."""
        out: dict[str, Any] = dict(self._stats)
        out["batch_sizes"] = sorted(self._plans)
        return out


def _in_memory(report: StageReport) -> StageReport:
    """The report of a later call: the levels are this object's, in memory."""
    fast = StageReport(report.function, {}, fast_path=True)
    for level, lvl in report.levels.items():
        fast.levels[level] = LevelReport("memory", 0.0, lvl.key, "in this BatchedFunction")
    return fast


def _example(args: tuple[Any, ...], batch_axes: Any) -> tuple[Any, ...]:
    """Arguments to partition with: the call's own, or 2 samples if it has one.

    (Values do not matter: the graph is traced with a symbolic batch.)
    """
    sig = make_signature(args, {}, static_argnums=(), donate_argnums=(), batch_axes=batch_axes)
    if sig.batch_size is None or sig.batch_size >= 2:
        return args
    leaves, tree = jax.tree.flatten(args)
    grown = [
        x if a is None else np.repeat(np.asarray(x), 2, axis=a)
        for x, a in zip(leaves, sig.leaf_batch_axes, strict=True)
    ]
    return tuple(jax.tree.unflatten(tree, grown))


def batched_jit(
    fn: Callable[..., Any],
    *,
    batch_axes: Any = 0,
    policy: str = "chunk",
    micro_batch: int = 16,
    bucket_sizes: Sequence[int] | None = None,
    store: CacheStore | None = None,
    min_cluster_size: int = 1,
    devices: Sequence[Any] | None = None,
    growth: str = "gather",
    share_blocks: bool = True,
    compiler_options: Mapping[str, Any] | None = None,
) -> BatchedFunction:
    """``fn`` partitioned into clusters and scheduled per batch size (see :func:`schedule`).

    Args:
      fn: a function of pytrees of arrays.
      batch_axes: ``jax.vmap``-style ``in_axes``, e.g. ``(None, 0)`` for ``fn(params, x)``.
      policy: ``"whole"``, ``"chunk"``, ``"buckets"`` or ``"devices"``.
      micro_batch: chunk size (``chunk``/``devices``), largest bucket (``buckets``).
      bucket_sizes: explicit bucket sizes for ``buckets``.
      store: cache store for the segments' executables (default store if None).
      min_cluster_size: passed to :func:`mlcache_lab.partition`.
      devices: devices for ``devices`` (default all).
      growth: passed to :func:`mlcache_lab.partition` (``"plain"`` for ablations).
      share_blocks: cut layers repeated back to back (a Python loop over
        layers) into blocks that share one program, so one executable per size
        serves them all (see :mod:`mlcache_lab.schedule.repeats`); ``False``
        keeps them in one program (for ablations).
      compiler_options: XLA options for every segment's executable, as
        ``cached_jit(compiler_options=...)``. They key only the compile level:
        a change reuses trace, partition and segments, and each segment's
        StableHLO, and compiles again.

    Returns:
      A :class:`BatchedFunction`: call it like ``fn``; ``.last_plan`` and
      ``.stats()`` say what ran and what it compiled.
    """
    return BatchedFunction(
        fn,
        batch_axes=batch_axes,
        policy=policy,
        micro_batch=micro_batch,
        bucket_sizes=bucket_sizes,
        store=store,
        min_cluster_size=min_cluster_size,
        devices=devices,
        growth=growth,
        share_blocks=share_blocks,
        compiler_options=compiler_options,
    )
