"""batched_jit's cached levels: trace (cached_jit's), partition and segments.

In-process: what each level reports, a warm store that decodes no jaxpr, and
damaged or unloadable entries of each new level regenerated. In fresh
processes (slow): the partitioned rows of the pipeline-change table, as the
session's one run of ``mlcache-lab demo`` measured them (``demo_run``, in
tests/conftest.py), each call checked against ``jax.jit``.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.cache.store import PARTITIONED_LEVELS
from mlcache_lab.experiments.batched_changes import BATCHED_CHANGES, check_row
from mlcache_lab.schedule import segments as segments_module

pytestmark = pytest.mark.usefixtures("fresh_key_file")


def net(w: jax.Array, x: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ w)
    return h @ w.T + x.mean(0)  # a reduction over the batch: a round, combined across chunks


W = jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)


def _x(n: int) -> jax.Array:
    return jnp.arange(n * 8, dtype=jnp.float32).reshape(n, 8) / 100


def _call(path: Path, n: int = 37, **options: object) -> mcl.BatchedFunction:
    bf = mcl.batched_jit(net, batch_axes=(None, 0), store=mcl.CacheStore(path), **options)
    np.testing.assert_allclose(bf(W, _x(n)), net(W, _x(n)), rtol=1e-5, atol=1e-5)
    return bf


def _statuses(bf: mcl.BatchedFunction) -> dict[str, str]:
    assert bf.last_report is not None
    return bf.last_report.statuses()


def test_cold_then_warm_store_bypasses_trace_and_partition(tmp_path: Path) -> None:
    cold = _call(tmp_path / "s")
    assert _statuses(cold) == dict.fromkeys(PARTITIONED_LEVELS, "miss")
    decoded: list[int] = []
    original = segments_module.decode_jaxpr

    def counting(payload: bytes) -> object:
        decoded.append(1)
        return original(payload)

    segments_module.decode_jaxpr = counting  # type: ignore[assignment]
    try:
        warm = _call(tmp_path / "s")  # a new store object: only the disk is shared
    finally:
        segments_module.decode_jaxpr = original
    assert _statuses(warm) == {"trace": "bypassed", "partition": "bypassed", "segments": "disk"}
    compiles = [c.statuses["compile"] for c in warm.last_timeline.compilations]
    assert compiles and set(compiles) == {"disk"}
    assert not decoded  # no segment program was decoded: the executables were found by key
    assert warm._graph is None  # nor the graph ...
    assert warm.graph is not None  # ... until asked for: then it is partition()'s graph
    fresh = mcl.partition(net, W, _x(37), batch_axes=(None, 0))
    assert warm.graph.queue == fresh.queue and len(warm.graph.clusters) >= 2
    assert [c.kind for c in warm.graph.clusters] == [c.kind for c in fresh.clusters]
    assert [lab.kind for lab in warm.graph.labels] == [lab.kind for lab in fresh.labels]
    # A later call of the same object reports its levels in memory.
    warm(W, _x(20))
    assert _statuses(warm) == dict.fromkeys(PARTITIONED_LEVELS, "memory")


def test_last_timeline_is_the_last_calls_record(tmp_path: Path) -> None:
    bf = mcl.batched_jit(net, batch_axes=(None, 0), store=mcl.CacheStore(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"net has not been called yet\. Fix: call it once"):
        bf.last_timeline  # noqa: B018 (the property raises)
    bf(W, _x(5))
    assert bf.last_plan is not None and bf.last_timeline is bf.last_plan.timeline
    assert {e.size for e in bf.last_timeline.executions if e.mode == "split"} == {5}


def test_each_miss_says_which_component_changed(tmp_path: Path) -> None:
    _call(tmp_path / "s")
    changed = _call(tmp_path / "s", min_cluster_size=2)
    assert changed.last_report is not None
    assert changed.last_report.status("trace") == "disk"
    assert changed.last_report.reason("partition").startswith("min_cluster_size changed")
    buckets = _call(tmp_path / "s", policy="buckets")
    assert buckets.last_report is not None
    assert buckets.last_report.statuses()["partition"] == "disk"
    assert "policy changed: 'split, padded rows masked'" in buckets.last_report.reason("segments")
    with pytest.raises(ValueError, match=r"Valid options for 'level' are \('trace', 'partition'"):
        buckets.last_report.status("lower")


def _compile_statuses(bf: mcl.BatchedFunction) -> set[tuple[str, str]]:
    return {(c.statuses["lower"], c.statuses["compile"]) for c in bf.last_timeline.compilations}


def test_new_compiler_options_compile_again_from_the_cached_lowering(tmp_path: Path) -> None:
    _call(tmp_path / "s")
    options = {"xla_backend_optimization_level": 0}
    changed = _call(tmp_path / "s", compiler_options=options)
    assert _statuses(changed) == {"trace": "bypassed", "partition": "bypassed", "segments": "disk"}
    assert _compile_statuses(changed) == {("disk", "miss")}  # StableHLO reused, XLA compiled
    assert changed.compiler_options == options
    # Each option set keeps its own executables: both now load from disk.
    assert _compile_statuses(_call(tmp_path / "s")) == {("bypassed", "disk")}
    again = _call(tmp_path / "s", compiler_options=options)
    assert _compile_statuses(again) == {("bypassed", "disk")}


def test_compiler_options_reach_xla(tmp_path: Path) -> None:
    bf = mcl.batched_jit(
        net,
        batch_axes=(None, 0),
        store=mcl.CacheStore(tmp_path / "s"),
        compiler_options={"no_such_xla_option": "1"},
    )
    with pytest.raises(Exception, match="no_such_xla_option"):
        bf(W, _x(5))


def test_compiler_options_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(TypeError, match=r"'compiler_options' must be a mapping.*Got "):
        mcl.batched_jit(net, batch_axes=(None, 0), compiler_options=["O0"])
    with pytest.raises(TypeError, match=r"compiler_options=\{1: 0\}"):
        mcl.cached_jit(net, compiler_options={1: 0})


def _content_files(root: Path, level: str) -> list[Path]:
    files = sorted((root / level / "content").glob("*/output.pkl"))
    assert files, f"no {level} entries under {root}"
    return files


def test_damaged_partition_entry_is_a_miss_and_is_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _call(root)
    for path in _content_files(root, "partition"):
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF  # one flipped byte: the signature no longer matches
        path.write_bytes(bytes(data))
    for path in _content_files(root, "segments"):
        path.unlink()  # so the partition level is looked up, not bypassed
    with pytest.warns(mcl.CacheWarning, match="refused an entry"):
        again = _call(root)
    assert again.last_report is not None
    assert again.last_report.status("partition") == "miss"
    assert "damaged entry" in again.last_report.reason("partition")
    assert again.last_report.status("trace") == "disk"
    healed = _call(root)  # the regenerated entries overwrote the damaged ones
    assert _statuses(healed)["segments"] == "disk"
    assert mcl.CacheStore(root).verify() == []


def test_unloadable_segments_entry_is_a_miss_and_is_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _call(root)
    store = mcl.CacheStore(root)
    for path in _content_files(root, "segments"):
        # Validly signed but not a segment set (a foreign writer with the key, or an old
        # layout): the codec refuses it.
        store.write("segments", path.parent.name, b"not a segment set", {})
    again = _call(root)
    assert again.last_report is not None
    assert again.last_report.status("segments") == "miss"
    assert "could not be loaded" in again.last_report.reason("segments")
    assert again.last_report.status("partition") == "disk"
    healed = _call(root)
    assert _statuses(healed) == {"trace": "bypassed", "partition": "bypassed", "segments": "disk"}


def test_batched_jit_shares_the_trace_entry_with_cached_jit(tmp_path: Path) -> None:
    """One tracer: batched_jit's trace level is cached_jit(fn, batch_axes=...)'s entry."""
    root = tmp_path / "s"
    mcl.cached_jit(net, store=mcl.CacheStore(root), batch_axes=(None, 0))(W, _x(5))
    bf = _call(root)
    assert bf.last_report is not None
    assert bf.last_report.status("trace") == "disk"
    assert bf.last_report.reason("trace") == "found by chain key"


def test_a_function_that_is_not_polymorphic_still_runs_uncached(tmp_path: Path) -> None:
    def fixed(x: jax.Array) -> jax.Array:
        return x.reshape(4, -1).sum(1)  # hardcodes the batch size

    bf = mcl.batched_jit(fixed, policy="whole", store=mcl.CacheStore(tmp_path / "s"))
    x = jnp.ones((4, 6))
    np.testing.assert_allclose(bf(x), fixed(x))
    assert bf.last_report is not None
    assert bf.last_report.status("partition") == "miss"
    assert "does not trace with a symbolic batch" in bf.last_report.reason("partition")
    assert bf.graph is not None and not bf.graph.symbolic


@pytest.mark.slow
@pytest.mark.parametrize("change", BATCHED_CHANGES, ids=[c.name for c in BATCHED_CHANGES])
def test_partitioned_pipeline_change_in_fresh_processes(change, demo_run) -> None:  # type: ignore[no-untyped-def]
    base, changed = demo_run.batched
    assert {lvl: base["levels"][lvl]["status"] for lvl in PARTITIONED_LEVELS} == dict.fromkeys(
        PARTITIONED_LEVELS, "miss"
    )
    problem = check_row(change, base, changed[change.name])
    assert not problem, (problem, changed[change.name])
