"""The store: damaged entries are detected and regenerated, size is bounded, stats add up."""

from __future__ import annotations

import pickle

import jax.numpy as jnp
import numpy as np
import pytest
from entry_tools import (
    ARGS,
    EXPECTED,
    assert_regenerated,
    entries,
    fresh_call,
    read_entry,
    rewrite_entry,
    warm,
    write_entry,
)

import mlcache_lab as mcl
from mlcache_lab.cache.signing import MAGIC

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
    with pytest.warns(mcl.CacheWarning, match="refused an entry"):
        out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status(level) == "miss", report
    assert "refused" in report.reason(level)
    assert_regenerated(path, report, level)
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "disk"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"versions": "jax=0.0.1;jaxlib=0.0.1"}, "written by 'jax=0.0.1;jaxlib=0.0.1'"),
        ({"format": 99}, "entry format 99"),
        ({"key": "0" * 32}, "another key"),
        ({"level": "trace"}, "another key"),
    ],
)
def test_foreign_entries_are_not_trusted(tmp_path, change, reason):
    path = tmp_path / "store"
    warm(path)
    for entry in entries(path, "compile"):
        rewrite_entry(entry, **change)  # validly signed: a writer with the key made it
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "miss"
    assert "damaged entry" in report.reason("compile")
    assert reason in report.reason("compile")


def test_executable_for_another_program_is_caught(tmp_path):
    path = tmp_path / "store"
    warm(path)
    other = tmp_path / "other"
    mcl.cached_jit(lambda w, x: x @ w, store=mcl.CacheStore(other))(*ARGS)
    (mine,), (theirs,) = entries(path, "compile"), entries(other, "compile")
    mine.write_bytes(theirs.read_bytes())  # a whole, signed entry under the wrong key
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
    header, payload, meta = read_entry(entry)
    write_entry(entry, header, payload[:4] + bytes([200]) + payload[5:], meta)
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("trace") == "miss"
    assert "codec version 200" in report.reason("trace")


def test_executable_for_another_device_is_regenerated(tmp_path):
    path = tmp_path / "store"
    warm(path)
    (entry,) = entries(path, "compile")
    header, payload, meta = read_entry(entry)
    meta_dict = pickle.loads(meta)
    meta_dict["runtime"] = "cuda 12.8; NVIDIA H100 80GB HBM3 x8"
    write_entry(entry, header, payload, pickle.dumps(meta_dict))
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "miss"
    assert "executable built for 'cuda 12.8; NVIDIA H100" in report.reason("compile")
    out, report = fresh_call(path)
    assert report.status("compile") == "disk"


def test_damaged_chain_pointer_is_rewritten(tmp_path):
    path = tmp_path / "store"
    warm(path)
    (pointer,) = entries(path, "compile", "chain")
    pointer.write_bytes(pointer.read_bytes()[:-3] + b"../")
    with pytest.warns(mcl.CacheWarning, match="refused"):
        out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "disk"  # found again by content
    assert mcl.CacheStore(path).verify() == []


def test_signed_pointer_to_no_key_is_a_miss(tmp_path):
    path = tmp_path / "store"
    warm(path)
    (pointer,) = entries(path, "compile", "chain")
    header, _, meta = read_entry(pointer)
    write_entry(pointer, header, b"../../trace/content/x", meta)  # never a path
    found = mcl.CacheStore(path).lookup_chain("compile", pointer.parent.name)
    assert found.status == "miss"
    assert "chain pointer to no key" in found.reason
    out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "disk"  # by content, and the pointer is rewritten
    assert mcl.CacheStore(path).lookup_chain("compile", pointer.parent.name).status == "disk"


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


def test_clear_empties_the_store(tmp_path):
    store = mcl.CacheStore(tmp_path / "store")
    mcl.cached_jit(lambda w, x: jnp.cos(x @ w), store=store)(*ARGS)
    store.clear()
    assert all(s["entries"] == 0 for s in store.stats().values())
    f = mcl.cached_jit(lambda w, x: jnp.cos(x @ w), store=store)
    f(*ARGS)
    assert f.last_report.status("compile") == "miss"


def test_entries_are_signed_frames_with_a_json_header(tmp_path):
    path = tmp_path / "store"
    warm(path)
    (entry,) = entries(path, "compile")
    assert entry.read_bytes().startswith(MAGIC)
    header, payload, meta = read_entry(entry)
    assert set(header) == {
        "format",
        "level",
        "kind",
        "key",
        "versions",
        "payload_bytes",
        "meta_bytes",
    }
    assert header["level"] == "compile" and header["kind"] == "content"
    assert header["key"] == entry.parent.name and header["format"] == 2
    pickle.loads(pickle.loads(meta)["out_tree"])
    store = mcl.CacheStore(path)
    assert store.read_payload("compile", entry.parent.name) == payload
    with pytest.raises(KeyError, match="no entry"):
        store.read_payload("compile", "0" * 32)
