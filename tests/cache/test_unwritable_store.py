"""Read-only, full or broken stores: one warning, not one per call; the function still runs."""

from __future__ import annotations

import errno
import os
import shutil
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from entry_tools import EXPECTED, entries, fresh_call, model, stray_files, warm

import mlcache_lab as mcl


def calls_with_new_shapes(store, fn=model, n=3):
    """``n`` calls that each compile (and try to write) a new executable."""
    f = mcl.cached_jit(fn, store=store)
    w = jnp.eye(4) * 0.5
    for batch in range(1, n + 1):
        x = jnp.arange(4.0 * batch).reshape(batch, 4)
        np.testing.assert_allclose(f(w, x), np.tanh(np.asarray(x) @ np.asarray(w)) * 3, rtol=1e-6)
    return f


def failing(real, store_root, err):
    def call(*args, **kwargs):
        target = os.fsdecode(args[-1] if real is os.replace else args[0])
        if target.startswith(str(store_root)):
            raise OSError(err, os.strerror(err), target)
        return real(*args, **kwargs)

    return call


@pytest.mark.parametrize(
    ("function", "err"),
    [("open", errno.EROFS), ("open", errno.EACCES), ("replace", errno.ENOSPC)],
)
def test_a_store_that_refuses_writes_warns_once(tmp_path, monkeypatch, function, err):
    root = (tmp_path / "store").resolve()
    store = mcl.CacheStore(root)
    real = getattr(os, function)
    monkeypatch.setattr(os, function, failing(real, root, err))
    with pytest.warns(mcl.CacheWarning, match="results are not persisted") as caught:
        calls_with_new_shapes(store)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert os.strerror(err) in str(caught[0].message)
    monkeypatch.undo()
    assert all(s["write"] == 0 and s["entries"] == 0 for s in store.stats().values())
    assert stray_files(root) == []  # no temporary file left behind


def test_a_disk_that_fills_mid_write_leaves_nothing(tmp_path, monkeypatch):
    root = (tmp_path / "store").resolve()
    store = mcl.CacheStore(root)
    real_write = os.write

    def write(fd, data):  # the first chunk lands, then the disk is full
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(root)):
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.warns(mcl.CacheWarning, match="No space left on device") as caught:
        calls_with_new_shapes(store)
    monkeypatch.undo()
    assert len(caught) == 1
    assert stray_files(root) == [] and list(root.rglob("output.pkl")) == []


def test_a_warm_read_only_store_still_serves_hits(tmp_path, monkeypatch):
    root = (tmp_path / "store").resolve()
    warm(root)
    monkeypatch.setattr(os, "open", failing(os.open, root, errno.EROFS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a hit writes nothing, so nothing to warn about
        out, report = fresh_call(root)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "disk"


def test_level_directories_replaced_by_files(tmp_path):
    root = tmp_path / "store"
    warm(root)
    shutil.rmtree(root / "compile")
    (root / "compile").write_text("a file where a directory was")
    with pytest.warns(mcl.CacheWarning, match="cannot be written.*running uncached") as caught:
        store = mcl.CacheStore(root)
        calls_with_new_shapes(store)
    assert len(caught) == 1
    assert not store.on_disk


def test_kind_directories_replaced_by_files_after_opening(tmp_path):
    root = tmp_path / "store"
    store = mcl.CacheStore(root)  # opened while still healthy
    for level in ("trace", "lower", "compile"):
        for kind in ("content", "chain", "explain"):
            (root / level / kind).write_text("not a directory")
    with pytest.warns(mcl.CacheWarning, match="NotADirectoryError") as caught:
        f = calls_with_new_shapes(store)
    assert len(caught) == 1
    assert f.last_report.status("compile") == "miss"
    assert store.on_disk  # still trying: the directories may come back


def test_stale_temporaries_are_removed_by_the_next_write(tmp_path):
    root = tmp_path / "store"
    warm(root)
    (entry,) = entries(root, "compile")
    stale = entry.with_name("output.pkl.deadbeef.tmp")
    stale.write_bytes(b"half an entry from a killed writer")
    young = entry.with_name("output.pkl.cafe.tmp")
    young.write_bytes(b"another writer, still writing")
    os.utime(stale, (1, 1))
    store = mcl.CacheStore(root)
    store.write("compile", entry.parent.name, b"payload", {})
    assert not stale.exists() and young.exists()
