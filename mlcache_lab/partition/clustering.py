"""Cluster growth over the equation graph: acyclic, deterministic, optional min size.

This module knows nothing of JAX: equations are ``0..n-1`` in program order,
``producers[i]`` lists the equations whose outputs equation ``i`` reads, and
``keys[i]`` is its ``(kind, category)``.

Growth follows the claims: a batched cluster takes each batched consumer of its
nodes; a non-batched cluster takes each consumer not already in another
cluster. Choices the claims leave open, and what we do:

* **Order.** Equations are visited in program order; one that no producer's
  cluster can take seeds a new cluster. Batched clusters claim their batched
  consumers first, so "a consumer not already in another cluster" is, for a
  non-batched cluster, a non-batched consumer.
* **Seeds.** Growth only follows consumers, so two equations that read only
  graph inputs (siblings, not producer and consumer) seed separate clusters.
  With ``groups`` (what :func:`~mlcache_lab.partition.partition` passes by
  default, ``growth="gather"``), such a would-be seed joins the newest cluster
  of its key and group instead, or an older one, where that keeps the graph
  acyclic: batch-invariant work only consumes invariant values, so it always
  can, and a real model's weight preprocessing becomes one cluster instead of
  one per weight. Without ``groups`` (``growth="plain"``, the claims' growth)
  ``min_cluster_size`` is the knob that merges such fragments.
* **Batch-sized values made from no sample.** A bias broadcast to ``[B, d]``,
  an ``iota`` along a non-batch axis of a ``[B, T]`` array, a mask built from
  ``ones((B, T, T))``, the rows' positions (an ``iota`` along ``B``) depend on
  no sample, yet carry the batch dimension. The claims would call them
  non-batched; we label them batched (see :mod:`.analysis`), so they join
  (gathering) or sit next to (plain growth) the batched cluster that reads
  them, and a schedule makes them at the chunk or bucket size (positions from
  the chunk's first row, :mod:`.positions`): they compile once per chunk or
  bucket size, like the rest. Only work that really mixes samples, or depends
  on the whole batch's size (``dim_as_value`` in a shape), runs at the whole
  batch.
* **Ties.** A consumer that several clusters could take joins the one with the
  lowest id.
* **Invariant vs mixing.** A non-batched cluster takes only consumers of its own
  category, so batch-invariant work (weight preprocessing) stays apart from work
  that mixes samples: a scheduler can run the former once and keep it.
* **Acyclicity.** A consumer joins a cluster only if no path leaves the cluster
  and re-enters it through the consumer. Clusters keep a topological order,
  maintained incrementally (Pearce & Kelly, 2006), so the check explores only
  clusters between the two ends of a new backward edge; in the common case of a
  forward edge it costs nothing.
* **Reductions.** Reductions over the batch axis (kind ``reduces``) have no
  reducing consumers (their outputs carry no batch axis), so growth leaves one
  cluster per reduction. They are then gathered: each joins the first earlier
  reducing cluster that no path links it to, either way. A gradient's many
  weight reductions become one cluster per *round* (reductions that can run
  on the same pass over the chunks), acyclic by construction.
* **min_cluster_size.** Clusters smaller than it are merged into a neighbour
  (producer or consumer cluster) where that keeps the graph acyclic, preferring
  a neighbour of the same kind and category, then of the same kind, lowest id
  first. A batched cluster may fold into a non-batched neighbour (its work then
  runs on the whole batch); a non-batched cluster never folds into a batched one.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Hashable, Sequence

__all__ = ["ClusterPlan", "grow_clusters"]

Key = tuple[str, str]


class ClusterPlan:
    """The result of growth: members, keys and edges of every cluster.

    Attributes:
      members: equation indices of each cluster, ascending; clusters are
        numbered by their first equation.
      keys: ``(kind, category)`` of each cluster.
      dependencies: sorted ``(producer, consumer)`` cluster pairs.
      queue: a topological order of the clusters, the lowest ready id first.
      cluster_of: the cluster of each equation.
    """

    def __init__(self, members: list[list[int]], keys: list[Key], edges: set[tuple[int, int]]):
        order = sorted(range(len(members)), key=lambda c: members[c][0])
        renumber = {old: new for new, old in enumerate(order)}
        self.members = [members[c] for c in order]
        self.keys = [keys[c] for c in order]
        self.dependencies = sorted((renumber[a], renumber[b]) for a, b in edges)
        self.cluster_of = [0] * sum(len(m) for m in members)
        for c, eqns in enumerate(self.members):
            for i in eqns:
                self.cluster_of[i] = c
        self.queue = _topological_queue(len(self.members), self.dependencies)


def _topological_queue(n: int, edges: Sequence[tuple[int, int]]) -> list[int]:
    """Nodes ``0..n-1`` in topological order of ``edges``, the lowest ready id first.

    Deterministic: among the nodes whose producers have all been taken, the
    lowest id goes next, so the same graph always gives the same queue.

    Raises:
      RuntimeError: the edges close a cycle (growth keeps clusters acyclic, so
        this is a bug in the growth, not something a caller can cause).
    """
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for c in range(n):
        sorter.add(c)
    for a, b in edges:
        sorter.add(b, a)
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        raise RuntimeError(
            f"internal error: the cluster graph has a cycle through clusters {err.args[1]}"
        ) from err
    ready: list[int] = []
    queue: list[int] = []
    while sorter.is_active():
        for c in sorter.get_ready():
            heapq.heappush(ready, c)
        c = heapq.heappop(ready)
        queue.append(c)
        sorter.done(c)
    return queue


class _Graph:
    """Clusters with successor/predecessor sets and a maintained topological order."""

    def __init__(self) -> None:
        self.succ: list[set[int]] = []
        self.pred: list[set[int]] = []
        self.pos: list[int] = []

    def add_node(self) -> int:
        self.succ.append(set())
        self.pred.append(set())
        self.pos.append(len(self.pos))
        return len(self.pos) - 1

    def forward(self, start: int, bound: int) -> set[int]:
        """Clusters reachable from ``start`` whose position is at most ``bound``."""
        seen, stack, pos = {start}, [start], self.pos
        while stack:
            for d in self.succ[stack.pop()]:
                if d not in seen and pos[d] <= bound:
                    seen.add(d)
                    stack.append(d)
        return seen

    def add_edge(self, a: int, b: int) -> None:
        """Add ``a -> b``; the caller has checked that ``b`` does not reach ``a``."""
        if b in self.succ[a] or a == b:
            return
        self.succ[a].add(b)
        self.pred[b].add(a)
        pos = self.pos
        if pos[a] < pos[b]:
            return
        fwd = self.forward(b, pos[a])
        back, stack = {a}, [a]
        while stack:
            for p in self.pred[stack.pop()]:
                if p not in back and pos[p] >= pos[b]:
                    back.add(p)
                    stack.append(p)
        moved = sorted(back, key=pos.__getitem__) + sorted(fwd, key=pos.__getitem__)
        for node, slot in zip(moved, sorted(pos[n] for n in moved), strict=True):
            pos[node] = slot

    def creates_cycle(self, c: int, others: Sequence[int]) -> bool:
        """Whether edges ``o -> c`` for all ``others`` would close a cycle."""
        later = [o for o in others if self.pos[o] > self.pos[c]]
        if not later:
            return False
        reach = self.forward(c, max(self.pos[o] for o in later))
        return any(o in reach for o in later)


def grow_clusters(
    producers: Sequence[Sequence[int]],
    keys: Sequence[Key],
    min_cluster_size: int = 1,
    groups: Sequence[Hashable | None] | None = None,
) -> ClusterPlan:
    """Grow clusters over equations ``0..n-1`` (see the module docstring).

    Args:
      producers: for each equation, the equations whose outputs it reads.
      keys: ``(kind, category)`` of each equation.
      min_cluster_size: clusters smaller than this are merged into a neighbour
        where acyclicity allows.
      groups: for each equation, the group it is gathered with (``None``: plain
        growth for it); ``None`` (default) for the claims' plain growth
        everywhere. An equation only shares a cluster with equations of its key
        and group.
    """
    groups = [None] * len(keys) if groups is None else list(groups)
    graph = _Graph()
    cluster_of: list[int] = []
    members: list[list[int]] = []
    ckeys: list[tuple[Key, Hashable | None]] = []
    of_group: dict[tuple[Key, Hashable], list[int]] = {}
    for i, key in enumerate(keys):
        prods = sorted({cluster_of[p] for p in producers[i]})
        mine = (key, groups[i])
        chosen = -1
        for c in prods:
            if ckeys[c] == mine and not graph.creates_cycle(c, [o for o in prods if o != c]):
                chosen = c
                break
        if chosen < 0 and groups[i] is not None:
            # Gathering: a would-be seed joins the newest cluster of its group
            # (the one program order is filling, usually where its consumers go)
            # or an older one, where no cycle closes.
            for c in reversed(of_group.get((key, groups[i]), [])):
                if not graph.creates_cycle(c, prods):
                    chosen = c
                    break
        if chosen < 0:
            chosen = graph.add_node()
            members.append([])
            ckeys.append(mine)
            if groups[i] is not None:
                of_group.setdefault((key, groups[i]), []).append(chosen)
        for o in prods:
            graph.add_edge(o, chosen)
        members[chosen].append(i)
        cluster_of.append(chosen)
    plain_keys = [k for k, _ in ckeys]
    _gather_reductions(graph, members, plain_keys)
    if min_cluster_size > 1:
        _merge_small(graph, members, plain_keys, min_cluster_size)
    alive = [c for c in range(len(members)) if members[c]]
    index = {c: k for k, c in enumerate(alive)}
    edges = {(index[a], index[b]) for a in alive for b in graph.succ[a]}
    return ClusterPlan([sorted(members[c]) for c in alive], [plain_keys[c] for c in alive], edges)


def _gather_reductions(graph: _Graph, members: list[list[int]], keys: list[Key]) -> None:
    """Merge each reducing cluster into the first earlier one no path links it to."""
    gathered: list[int] = []
    for t in range(len(members)):
        if keys[t][0] != "reduces" or not members[t]:
            continue
        for n in gathered:
            linked = t in graph.succ[n] or n in graph.succ[t]
            if linked or _path_avoiding(graph, n, t) or _path_avoiding(graph, t, n):
                continue
            _absorb(graph, members, keys, n, t)
            break
        else:
            gathered.append(t)


def _merge_small(graph: _Graph, members: list[list[int]], keys: list[Key], size: int) -> None:
    changed = True
    while changed:
        changed = False
        for t in range(len(members)):
            if not members[t] or len(members[t]) >= size:
                continue
            for n in _neighbours_by_preference(graph, keys, t):
                if _path_avoiding(graph, t, n) or _path_avoiding(graph, n, t):
                    continue
                _absorb(graph, members, keys, n, t)
                changed = True
                break


def _neighbours_by_preference(graph: _Graph, keys: list[Key], t: int) -> list[int]:
    kind = keys[t][0]
    allowed = [
        n
        for n in sorted(graph.succ[t] | graph.pred[t])
        if kind == "batched" or keys[n][0] != "batched"
    ]
    return sorted(allowed, key=lambda n: (keys[n] != keys[t], keys[n][0] != kind, n))


def _path_avoiding(graph: _Graph, a: int, b: int) -> bool:
    """Whether a path ``a -> x -> ... -> b`` exists with ``x`` not ``b`` (length >= 2)."""
    seen = set(graph.succ[a]) - {b}
    stack = list(seen)
    while stack:
        for d in graph.succ[stack.pop()]:
            if d == b:
                return True
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return False


def _absorb(graph: _Graph, members: list[list[int]], keys: list[Key], n: int, t: int) -> None:
    """Merge cluster ``t`` into ``n``."""
    members[n].extend(members[t])
    members[t] = []
    if keys[n] != keys[t]:
        keys[n] = ("non_batched", "mixes")
    for s in graph.succ[t] - {n}:
        graph.pred[s].discard(t)
        graph.pred[s].add(n)
        graph.succ[n].add(s)
    for p in graph.pred[t] - {n}:
        graph.succ[p].discard(t)
        graph.succ[p].add(n)
        graph.pred[n].add(p)
    graph.succ[n].discard(t)
    graph.pred[n].discard(t)
    graph.succ[t], graph.pred[t] = set(), set()
