"""The partitioned path's own cache levels: ``partition`` and ``segments``.

``batched_jit``'s pipeline is trace -> partition -> segments -> (per segment
program) trace/lower/compile at each chunk or bucket size. The first three
are :data:`~mlcache_lab.cache.store.PARTITIONED_LEVELS`, cached in the same
store as ``cached_jit``'s levels, with the same rules (DESIGN.md, "Cache
keys"):

* ``partition``: the cluster graph's clustering (labels, batch axes, members,
  dependencies, queue). Config: the clustering options (``min_cluster_size``,
  ``growth``) and the version of the analysis code. Chain key: after the trace
  level's chain key; content key: after the trace artifact's digest, so an
  edit that leaves the jaxpr unchanged finds it by content.
* ``segments``: the graph's :class:`~.segments.SegmentSet` for one policy
  flavour (:func:`~.segments.segment_flavour`): the boundary, and per segment
  its slots, axes, carrier, combines, masking, size inputs, encoded program
  and program fingerprint. Config: the flavour and the schedule code's
  version. Content key: after the partition artifact's digest.

A warm call finds ``segments`` by chain key: trace and partition are
bypassed, no jaxpr is decoded, and every segment's executable is found by
its own compile-level chain key, computed from the stored fingerprint.
"""

from __future__ import annotations

import dataclasses
import functools
import pickle
from pathlib import Path
from typing import Any

from ..cache.keys import KeyComponents, digest
from ..partition.analysis import JaxprAnalysis, Label
from ..partition.clustering import ClusterPlan
from ..partition.graph import ClusterGraph
from .segments import SEGMENTS_FORMAT, segment_flavour

__all__ = ["PartitionArtifact", "partition_config", "segments_config"]

PARTITION_FORMAT = 1
"""Version of :meth:`PartitionArtifact.encode`'s layout."""


@functools.cache
def _source_digest(package: str, names: tuple[str, ...]) -> str:
    """A digest of source files: a code version that changes with every edit of them."""
    root = Path(__file__).resolve().parent.parent / package
    files = sorted(p for name in names for p in root.glob(name))
    return digest(*(f"{p.relative_to(root)}\n{p.read_text()}" for p in files))


def analysis_version() -> str:
    """The partition package's code (analysis, rules, clustering): it decides the clusters."""
    return _source_digest("partition", ("*.py", "rules/*.py"))


def schedule_version() -> str:
    """The code that cuts segment programs out of a graph (positions: the per-chunk iota)."""
    return digest(
        _source_digest("schedule", ("segments.py", "rounds.py", "repeats.py")),
        _source_digest("partition", ("positions.py",)),
    )


def partition_config(min_cluster_size: int, growth: str) -> KeyComponents:
    """Everything that decides the clusters, given the trace, by name."""
    return KeyComponents(
        "partition",
        {
            "min_cluster_size": str(min_cluster_size),
            "growth": growth,
            "analysis_code": analysis_version(),
            "partition_format": str(PARTITION_FORMAT),
        },
    )


def segments_config(policy: str, share_blocks: bool = True) -> KeyComponents:
    """Everything that decides the segment programs, given the partition, by name."""
    return KeyComponents(
        "segments",
        {
            "policy": segment_flavour(policy, share_blocks),
            "schedule_code": schedule_version(),
            "segments_format": str(SEGMENTS_FORMAT),
        },
    )


def _variables(jaxpr: Any) -> list[Any]:
    """The jaxpr's variables in slot order (constants, inputs, equation outputs)."""
    return [*jaxpr.constvars, *jaxpr.invars, *(v for e in jaxpr.eqns for v in e.outvars)]


@dataclasses.dataclass
class PartitionArtifact:
    """A graph's clustering, without its jaxpr (that is the trace level's).

    Attributes:
      labels: one label per equation; ``None`` when a label holds the analysis
        of an inner jaxpr (control flow), which has no encoding here: the
        graph's analysis is then run again when the graph is rebuilt.
      axes: the batch axis of every variable, in slot order (``None`` with labels).
      plan: the :class:`ClusterPlan` (members, keys, dependencies, queue).
      payload: the encoded artifact (what the store keeps).
      graph: the graph, when it is in this process.
    """

    labels: list[Label] | None
    axes: list[Any] | None
    plan: ClusterPlan
    payload: bytes
    graph: ClusterGraph | None = None

    @property
    def digest(self) -> str:
        return digest(self.payload)

    @classmethod
    def of(cls, graph: ClusterGraph) -> PartitionArtifact:
        analysis = graph.analysis
        labels: list[Label] | None = list(analysis.labels)
        axes: list[Any] | None = None
        variables = _variables(graph.jaxpr.jaxpr)
        if any(lab.inner for lab in analysis.labels) or len(analysis.axes) != len(variables):
            labels = None
        else:
            axes = [analysis.axes[v] for v in variables]
        # The graph's clustering as the ClusterPlan it was built from (clusters are
        # numbered as the plan numbers them).
        plan = ClusterPlan.__new__(ClusterPlan)
        plan.__dict__.update(
            members=[list(c.equations) for c in graph.clusters],
            keys=[(c.kind, c.category) for c in graph.clusters],
            dependencies=list(graph.dependencies),
            queue=list(graph.queue),
            cluster_of=_cluster_of(graph),
        )
        payload = pickle.dumps(
            (PARTITION_FORMAT, labels, axes, plan.__dict__), protocol=pickle.HIGHEST_PROTOCOL
        )
        return cls(labels, axes, plan, payload, graph)

    @classmethod
    def decode(cls, payload: bytes) -> PartitionArtifact:
        """The artifact :meth:`of` encoded.

        Raises:
          ValueError: another format (an entry from another version).
        """
        fmt, labels, axes, state = pickle.loads(payload)
        if fmt != PARTITION_FORMAT:
            raise ValueError(f"partition format {fmt!r}, this version reads {PARTITION_FORMAT}")
        plan = ClusterPlan.__new__(ClusterPlan)
        plan.__dict__.update(state)
        return cls(labels, axes, plan, payload)

    def analysis(self, jaxpr: Any) -> JaxprAnalysis | None:
        """The stored analysis of ``jaxpr`` (the trace's, calls inlined), or None to re-run it."""
        if self.labels is None or self.axes is None:
            return None
        variables = _variables(jaxpr)
        if len(variables) != len(self.axes) or len(jaxpr.eqns) != len(self.labels):
            return None
        return JaxprAnalysis(jaxpr, dict(zip(variables, self.axes, strict=True)), self.labels)


def _cluster_of(graph: ClusterGraph) -> list[int]:
    out = [0] * len(graph.labels)
    for c, cluster in enumerate(graph.clusters):
        for i in cluster.equations:
            out[i] = c
    return out
