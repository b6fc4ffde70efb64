"""Helpers for tests that open, forge and damage store entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import mlcache_lab as mcl
from mlcache_lab.cache.signing import default_key_file, seal, unseal


def model(w, x):
    return jnp.tanh(x @ w) * 3


def other_model(w, x):
    return x @ w - 1


ARGS = (jnp.eye(4) * 0.5, jnp.arange(8.0).reshape(2, 4))
EXPECTED = np.asarray(jax.jit(model)(*ARGS))


def entries(path: Path, level: str, kind: str = "content") -> list[Path]:
    return sorted((path / level / kind).glob("*/output.pkl"))


def warm(path: Path, fn=model) -> None:
    mcl.cached_jit(fn, store=mcl.CacheStore(path))(*ARGS)


def fresh_call(path: Path, fn=model):
    f = mcl.cached_jit(fn, store=mcl.CacheStore(path))
    out = f(*ARGS)
    return out, f.last_report


def current_key() -> bytes:
    return bytes.fromhex(default_key_file().read_text().strip())


def read_entry(file: Path, key: bytes | None = None) -> tuple[dict[str, Any], bytes, bytes]:
    """(header, payload, meta bytes) of a signed entry file."""
    body = bytes(unseal(key or current_key(), file.read_bytes()))
    size = int.from_bytes(body[:4], "little")
    header = json.loads(body[4 : 4 + size])
    start = 4 + size
    payload = body[start : start + header["payload_bytes"]]
    return header, payload, body[start + header["payload_bytes"] :]


def write_entry(
    file: Path,
    header: dict[str, Any],
    payload: bytes,
    meta: bytes,
    key: bytes | None = None,
) -> None:
    """Write a validly signed entry (what a writer holding the key could make)."""
    header = {**header, "payload_bytes": len(payload), "meta_bytes": len(meta)}
    text = json.dumps(header, sort_keys=True).encode()
    body = len(text).to_bytes(4, "little") + text + payload + meta
    file.write_bytes(seal(key or current_key(), body))


def rewrite_entry(file: Path, **header_changes: Any) -> None:
    header, payload, meta = read_entry(file)
    write_entry(file, {**header, **header_changes}, payload, meta)


def stray_files(path: Path) -> list[str]:
    """Temporary files left in the store (a writer's leftovers)."""
    return [str(p) for p in path.rglob("*.tmp")] + [
        str(p) for p in path.rglob("*") if p.is_file() and ".probe-" in p.name
    ]


def assert_regenerated(path: Path, report: Any, level: str) -> None:
    """The entry this call looked up at ``level`` is whole again: a new store finds it."""
    found = mcl.CacheStore(path).lookup_chain(level, report.levels[level].key)
    assert found.status == "disk", (level, found.reason)
