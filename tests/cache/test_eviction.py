"""Bounded size: ``max_bytes`` keeps every level under its share, least recently used first."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax.numpy as jnp
import pytest
from entry_tools import ARGS

import mlcache_lab as mcl
from mlcache_lab.cache.store import STORE_LEVELS


def fa(w, x):
    return jnp.sin(x @ w)


def fb(w, x):
    return jnp.cos(x @ w)


def fc(w, x):
    return jnp.exp(x @ w)


FUNCTIONS = {"a": fa, "b": fb, "c": fc}


def items(root: Path) -> set[Path]:
    return {p.parent for p in root.rglob("output.pkl")}


def status(root: Path, fn) -> str:
    f = mcl.cached_jit(fn, store=mcl.CacheStore(root))
    f(*ARGS)
    return f.last_report.status("compile")


@pytest.mark.parametrize("hit_a", [False, True])
def test_a_hit_makes_an_entry_recent(tmp_path, hit_a):
    root = tmp_path / "store"
    owned: dict[str, set[Path]] = {}
    for name, fn in FUNCTIONS.items():
        before = items(root) if root.exists() else set()
        mcl.cached_jit(fn, store=mcl.CacheStore(root))(*ARGS)
        owned[name] = items(root) - before
    base = time.time() - 10_000
    for rank, name in enumerate("abc"):  # a is the oldest, then b, then c
        for item in owned[name]:
            if item.parent.name != "explain":
                os.utime(item / "output.pkl", (base + rank, base + rank))
    if hit_a:
        assert status(root, fa) == "disk"
        content = [i for i in owned["a"] if "compile/content" in str(i)]
        touched = os.stat(content[0] / "output.pkl")
        # The store sets both times itself: eviction must not depend on the mount's atime policy.
        assert touched.st_atime > base + 1000 and touched.st_mtime > base + 1000
    store = mcl.CacheStore(root)
    oldest = "b" if hit_a else "a"
    (victim,) = [i for i in owned[oldest] if "compile/content" in str(i)]
    victim_size = sum(f.stat().st_size for f in victim.iterdir())
    level_bytes = store.stats()["compile"]["bytes"]
    share = len(STORE_LEVELS)  # the bound is shared by every level the store may hold
    store.reduce_size(max_bytes=share * (level_bytes - victim_size))  # room for all but one
    assert not victim.exists()
    assert store.stats()["compile"]["bytes"] <= level_bytes - victim_size
    survivors = {n for n in "abc" if n != oldest}
    for name in survivors:
        assert status(root, FUNCTIONS[name]) == "disk", name
    assert status(root, FUNCTIONS[oldest]) == "miss"


def test_max_bytes_keeps_each_level_under_its_share(tmp_path):
    bound = 3 * 30_000
    store = mcl.CacheStore(tmp_path / "store", max_bytes=bound)
    for k in range(6):
        fn = mcl.cached_jit(lambda w, x, k=k: jnp.tanh(x @ w) + k, store=store)
        fn(*ARGS)
        for level, s in store.stats().items():
            assert s["bytes"] <= bound // 3, (k, level, s)
    assert 0 < store.stats()["compile"]["entries"] < 6  # some were evicted, the newest kept
    newest = mcl.cached_jit(lambda w, x, k=5: jnp.tanh(x @ w) + k, store=mcl.CacheStore(store.path))
    newest(*ARGS)
    assert newest.last_report.status("compile") == "disk"
