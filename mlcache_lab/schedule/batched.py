"""batched_jit: partition once, schedule per batch size, run; a drop-in callable."""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from ..cache.store import CacheStore
from ..partition import ClusterGraph, partition
from ..partition.api import BAD_GROWTH, GROWTHS
from ..stages.signature import make_signature
from .plan import Plan, schedule
from .policies import validate

__all__ = ["BatchedFunction", "batched_jit"]


class BatchedFunction:
    """``fn`` run through its cluster graph, scheduled for whatever batch size it is called with.

    Create it with :func:`batched_jit`. The graph is built on the first call;
    a plan is made (and kept) per batch size; every segment is compiled
    through the cache, so under ``chunk`` and ``buckets`` a new batch size
    compiles nothing new once the chunk or bucket sizes have been seen.
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
    ) -> None:
        if not callable(fn):
            raise TypeError(f"batched_jit expects a callable 'fn'. Got fn={fn!r}.")
        validate(1, policy, micro_batch, bucket_sizes)
        if not isinstance(growth, str) or growth not in GROWTHS:
            raise ValueError(BAD_GROWTH.format(options=GROWTHS, value=growth))
        self._fn = fn
        self.batch_axes = batch_axes
        self.policy, self.micro_batch = policy, micro_batch
        self.bucket_sizes = tuple(bucket_sizes) if bucket_sizes is not None else None
        self.store, self.min_cluster_size, self.growth = store, min_cluster_size, growth
        self.devices = list(devices) if devices is not None else None
        self.graph: ClusterGraph | None = None
        self.last_plan: Plan | None = None
        self._plans: dict[int, Plan] = {}
        self._stats: collections.Counter[str] = collections.Counter()
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return (
            f"batched_jit({self.__name__}, policy={self.policy!r}, "
            f"micro_batch={self.micro_batch}, plans for batch sizes {sorted(self._plans)})"
        )

    def _graph(self, args: tuple[Any, ...]) -> ClusterGraph:
        if self.graph is None:
            self.graph = partition(
                self._fn,
                *_example(args, self.batch_axes),
                batch_axes=self.batch_axes,
                min_cluster_size=self.min_cluster_size,
                growth=self.growth,
            )
        return self.graph

    def plan(self, batch_size: int) -> Plan:
        """The plan for ``batch_size`` (made once, then kept). Call once first."""
        if self.graph is None:
            raise ValueError("the graph is built on the first call; call the function first")
        if batch_size not in self._plans:
            self._plans[batch_size] = schedule(
                self.graph,
                batch_size,
                self.policy,
                self.micro_batch,
                bucket_sizes=self.bucket_sizes,
                devices=self.devices,
                store=self.store,
            )
        return self._plans[batch_size]

    def __call__(self, *args: Any) -> Any:
        graph = self._graph(args)
        plan = self.plan(graph.batch_size_of(*args))
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
    )
