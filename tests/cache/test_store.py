"""The store: damaged entries are detected and regenerated, size is bounded, stats add up."""

from __future__ import annotations

import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl


def model(w, x):
    return jnp.tanh(x @ w) * 3


ARGS = (jnp.eye(4) * 0.5, jnp.arange(8.0).reshape(2, 4))
EXPECTED = np.asarray(jax.jit(model)(*ARGS))


def entries(path: Path, level: str, kind: str = "content") -> list[Path]:
    return sorted((path / level / kind).glob("*/output.pkl"))


def warm(path: Path) -> None:
    mcl.cached_jit(model, store=mcl.CacheStore(path))(*ARGS)


def fresh_call(path: Path):
    f = mcl.cached_jit(model, store=mcl.CacheStore(path))
    out = f(*ARGS)
    return out, f.last_report


DAMAGES = {
    "truncated": lambda data: data[: len(data) // 2],
    "random_bytes": lambda data: np.random.default_rng(0).bytes(len(data)),
    "empty": lambda data: b"",
    "flipped_byte": lambda data: data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:],
}


@pytest.mark.parametrize("level", ["trace", "lower", "compile"])
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_entry_is_a_miss_and_is_regenerated(tmp_path, level, damage):
    path = tmp_path / "store"
    warm(path)
    for entry in entries(path, level):
        entry.write_bytes(DAMAGES[damage](entry.read_bytes()))
    # Make the damaged level the deepest one reached, so it must be read.
    for deeper in ("lower", "compile")[("trace", "lower", "compile").index(level) :]:
        if deeper != level:
            for entry in entries(path, deeper):
                entry.unlink()
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status(level) == "miss", report
    out, report = fresh_call(path)  # regenerated and written back: now a hit
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status(level) == "disk" or level != "compile"


def rewrite_entry(entry: Path, **changes) -> None:
    import joblib

    data = joblib.load(entry)
    data.update(changes)
    joblib.dump(data, entry)


@pytest.mark.parametrize(
    "change",
    [
        {"versions": "jax=0.0.1;jaxlib=0.0.1"},
        {"format": 99},
        {"key": "0" * 32},
        {"payload": b"not what was checksummed"},
    ],
)
def test_foreign_entries_are_not_trusted(tmp_path, change):
    path = tmp_path / "store"
    warm(path)
    for entry in entries(path, "compile"):
        rewrite_entry(entry, **change)
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "miss"
    assert "damaged entry" in report.reason("compile")


def test_executable_for_another_program_is_caught_by_checksum(tmp_path):
    path = tmp_path / "store"
    warm(path)
    other = tmp_path / "other"
    mcl.cached_jit(lambda w, x: x @ w, store=mcl.CacheStore(other))(*ARGS)
    (mine,), (theirs,) = entries(path, "compile"), entries(other, "compile")
    mine.write_bytes(theirs.read_bytes())  # a whole, valid entry under the wrong key
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert "another key" in report.reason("compile")


def test_jaxpr_of_an_unknown_codec_version_is_regenerated(tmp_path):
    path = tmp_path / "store"
    warm(path)
    for level in ("lower", "compile"):
        for entry in entries(path, level):
            entry.unlink()
    (entry,) = entries(path, "trace")
    import joblib

    from mlcache_lab.cache.store import _checksum

    data = joblib.load(entry)
    payload = data["payload"][:4] + bytes([200]) + data["payload"][5:]
    rewrite_entry(entry, payload=payload, sha256=_checksum(payload, data["meta"]))
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("trace") == "miss"
    assert "codec version 200" in report.reason("trace")


def test_stats_and_reduce_size(tmp_path):
    path = tmp_path / "store"
    store = mcl.CacheStore(path)
    for k in range(3):
        mcl.cached_jit(lambda w, x, k=k: x @ w + k, store=store)(*ARGS)
    stats = store.stats()
    assert stats["compile"]["entries"] == 3
    total = sum(s["bytes"] for s in stats.values())
    store.reduce_size(max_bytes=total // 4)
    after = store.stats()
    assert sum(s["bytes"] for s in after.values()) < total
    assert after["compile"]["entries"] < 3


def test_max_bytes_bounds_the_store(tmp_path):
    store = mcl.CacheStore(tmp_path / "store", max_bytes=200_000)
    for k in range(4):
        mcl.cached_jit(lambda w, x, k=k: jnp.sin(x @ w) + k, store=store)(*ARGS)
    for level, s in store.stats().items():
        assert s["bytes"] <= 200_000 // 3 or s["entries"] <= 1, (level, s)


def test_clear_empties_the_store(tmp_path):
    store = mcl.CacheStore(tmp_path / "store")
    mcl.cached_jit(model, store=store)(*ARGS)
    store.clear()
    assert all(s["entries"] == 0 for s in store.stats().values())
    f = mcl.cached_jit(model, store=store)
    f(*ARGS)
    assert f.last_report.status("compile") == "miss"


def test_entries_are_plain_dicts_with_checksums(tmp_path):
    path = tmp_path / "store"
    warm(path)
    import joblib

    (entry,) = entries(path, "compile")
    data = joblib.load(entry)
    assert set(data) == {"format", "level", "kind", "key", "versions", "payload", "sha256", "meta"}
    assert data["level"] == "compile" and data["kind"] == "content"
    pickle.loads(pickle.loads(data["meta"])["out_tree"])
