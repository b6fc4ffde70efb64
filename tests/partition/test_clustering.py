"""Cluster growth on random equation graphs: coverage, acyclicity, determinism."""

from __future__ import annotations

import hypothesis.strategies as st
import jax.numpy as jnp
import pytest
from hypothesis import given, settings

from mlcache_lab.partition import partition
from mlcache_lab.partition.clustering import ClusterPlan, grow_clusters

from .ground_truth import partition_and_check

KEYS = [("batched", "batched"), ("non_batched", "invariant"), ("non_batched", "mixes")]


@st.composite
def dags(draw: st.DrawFn) -> tuple[list[list[int]], list[tuple[str, str]]]:
    n = draw(st.integers(1, 40))
    producers = [
        sorted(set(draw(st.lists(st.integers(0, i - 1), max_size=3)))) if i else []
        for i in range(n)
    ]
    keys = [KEYS[draw(st.sampled_from([0, 0, 0, 1, 2]))] for _ in range(n)]
    return producers, keys


def _cluster_edges(producers: list[list[int]], cluster_of: list[int]) -> set[tuple[int, int]]:
    return {
        (cluster_of[p], cluster_of[i])
        for i, ps in enumerate(producers)
        for p in ps
        if cluster_of[p] != cluster_of[i]
    }


def _is_acyclic(n: int, edges: set[tuple[int, int]]) -> bool:
    succ: dict[int, list[int]] = {c: [] for c in range(n)}
    for a, b in edges:
        succ[a].append(b)
    state = [0] * n  # 0 new, 1 on stack, 2 done

    def visit(c: int) -> bool:
        state[c] = 1
        for d in succ[c]:
            if state[d] == 1 or (state[d] == 0 and not visit(d)):
                return False
        state[c] = 2
        return True

    return all(state[c] or visit(c) for c in range(n))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dags(), st.sampled_from([1, 1, 2, 4, 6]))
def test_growth_invariants(dag: tuple, min_size: int) -> None:
    producers, keys = dag
    plan = grow_clusters(producers, keys, min_size)
    n_clusters = len(plan.members)
    assert sorted(i for m in plan.members for i in m) == list(range(len(keys)))
    edges = _cluster_edges(producers, plan.cluster_of)
    assert edges == set(plan.dependencies)
    assert _is_acyclic(n_clusters, edges)
    position = {c: k for k, c in enumerate(plan.queue)}
    assert sorted(plan.queue) == list(range(n_clusters))
    assert all(position[a] < position[b] for a, b in plan.dependencies)
    assert [m[0] for m in plan.members] == sorted(m[0] for m in plan.members)
    for members, key in zip(plan.members, plan.keys, strict=True):
        member_keys = {keys[i] for i in members}
        if key[0] == "batched":
            assert member_keys == {key}  # a batched cluster holds only batched work
        if min_size == 1:
            assert member_keys == {key}
    again = grow_clusters(producers, keys, min_size)
    assert (again.members, again.dependencies, again.queue) == (
        plan.members,
        plan.dependencies,
        plan.queue,
    )
    if min_size > 1:
        base = grow_clusters(producers, keys, 1)
        assert n_clusters <= len(base.members)


def test_batched_consumer_that_would_close_a_cycle_starts_a_new_cluster() -> None:
    # 0 batched -> 1 mixes -> 2 batched, and 0 -> 2 directly: 2 cannot join 0's cluster.
    plan = grow_clusters([[], [0], [0, 1]], [KEYS[0], KEYS[2], KEYS[0]])
    assert plan.members == [[0], [1], [2]]
    assert plan.dependencies == [(0, 1), (0, 2), (1, 2)]


def test_invariant_and_mixing_work_stay_apart() -> None:
    plan = grow_clusters([[], [0], [1]], [KEYS[1], KEYS[2], KEYS[2]])
    assert plan.members == [[0], [1, 2]]


def test_min_cluster_size_never_turns_batched_work_non_batched_by_absorption() -> None:
    # A lone invariant equation next to a big batched cluster must stay apart.
    producers = [[], [], [1], [2], [0, 3]]
    keys = [KEYS[1]] + [KEYS[0]] * 4
    plan = grow_clusters(producers, keys, 4)
    assert plan.keys[plan.cluster_of[1]] == ("batched", "batched")
    assert plan.keys[plan.cluster_of[0]] == ("non_batched", "invariant")


def test_min_cluster_size_merges_tiny_clusters_and_keeps_ground_truth() -> None:
    def f(x):  # type: ignore[no-untyped-def]
        h = jnp.tanh(x) + 1
        m = h.mean(0)
        return jnp.sin(h - m) * 2 + jnp.cos(x)

    x = jnp.arange(12.0).reshape(4, 3) / 7
    small = partition(f, x)
    merged = partition_and_check(f, x, min_cluster_size=4)
    assert len(merged.clusters) < len(small.clusters)
    assert merged.min_cluster_size == 4


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dags())
def test_gathering_keeps_growth_invariants(dag: tuple) -> None:
    producers, keys = dag
    groups = [None if k[1] == "mixes" else k[1] for k in keys]
    plan = grow_clusters(producers, keys, 1, groups)
    n_clusters = len(plan.members)
    assert sorted(i for m in plan.members for i in m) == list(range(len(keys)))
    edges = _cluster_edges(producers, plan.cluster_of)
    assert edges == set(plan.dependencies) and _is_acyclic(n_clusters, edges)
    for members, key in zip(plan.members, plan.keys, strict=True):
        assert {keys[i] for i in members} == {key}
    # Invariant work reads only invariant work: it always gathers into one cluster.
    invariant = {plan.cluster_of[i] for i, k in enumerate(keys) if k[1] == "invariant"}
    if all(
        keys[p][1] == "invariant"
        for i, k in enumerate(keys)
        if k[1] == "invariant"
        for p in producers[i]
    ):
        assert len(invariant) <= 1


def test_gathering_joins_sibling_seeds() -> None:
    # Two invariant equations reading only graph inputs, and two batched siblings.
    keys = [KEYS[1], KEYS[1], KEYS[0], KEYS[0], KEYS[0]]
    producers: list[list[int]] = [[], [], [0], [1], [2, 3]]
    assert len(grow_clusters(producers, keys).members) == 4
    gathered = grow_clusters(producers, keys, 1, [k[1] for k in keys])
    assert gathered.members == [[0, 1], [2, 3, 4]]


def _lowest_ready_first(n: int, edges: set[tuple[int, int]]) -> list[int]:
    """The queue by its definition: repeatedly the lowest id whose producers are all taken."""
    taken: list[int] = []
    while len(taken) < n:
        ready = [
            c for c in range(n) if c not in taken and all(a in taken for a, b in edges if b == c)
        ]
        taken.append(min(ready))
    return taken


@st.composite
def cluster_dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    """A DAG over ``0..n-1`` whose topological order is not the id order."""
    n = draw(st.integers(1, 25))
    ranks = draw(st.permutations(range(n)))  # node ranks[i] is i-th in some topological order
    pairs = draw(st.sets(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))
    return n, {(ranks[i], ranks[j]) for i, j in pairs if i < j}


@given(cluster_dags())
@settings(max_examples=150, deadline=None)
def test_queue_is_the_lowest_ready_cluster_first(dag: tuple[int, set[tuple[int, int]]]) -> None:
    n, edges = dag
    members = [[c] for c in range(n)]  # cluster c is equation c: numbering unchanged
    plan = ClusterPlan(members, [KEYS[0]] * n, edges)
    assert plan.queue == _lowest_ready_first(n, edges)


def test_queue_pins_a_small_graph() -> None:
    plan = ClusterPlan([[0], [1], [2], [3]], [KEYS[0]] * 4, {(2, 1), (3, 0), (2, 0)})
    assert plan.queue == [2, 1, 3, 0]


def test_a_cycle_in_the_cluster_graph_is_an_internal_error_naming_it() -> None:
    with pytest.raises(RuntimeError, match=r"internal error: the cluster graph has a cycle"):
        ClusterPlan([[0], [1], [2]], [KEYS[0]] * 3, {(0, 1), (1, 2), (2, 1)})
