"""The on-disk and in-process store: one ``joblib.Memory`` per pipeline level.

Layout under the store's root (``CacheStore.path``)::

    <root>/<level>/content/<content key>/output.pkl    the artifact
    <root>/<level>/chain/<chain key>/output.pkl        a pointer to a content key
    <root>/<level>/explain/<function id>/output.pkl    the last chain components

``<level>`` is ``trace``, ``lower`` or ``compile``; keys (and the digest of
the function's module and name that identifies explain records) are 32 hex digits
(see :mod:`mlcache_lab.cache.keys`). Files are written by joblib's store
backend, which writes to a temporary name and renames, so a reader never sees
half an entry. Each ``output.pkl`` holds one *entry*, a dict::

    {"format": ENTRY_FORMAT, "level": str, "kind": "content"|"chain"|"explain",
     "key": str, "versions": str, "payload": bytes, "meta": bytes, "sha256": str}

``payload`` is the level's artifact as its codec wrote it (or, for a chain
entry, the content key it points to); ``meta`` is a pickled dict (the output
treedef, codec notes); ``sha256`` is over both, length-prefixed;
``versions`` names the jax/jaxlib build that wrote it. An entry whose format,
level, key, versions or checksum do not match is *damaged*: it is reported as
a miss with that reason and overwritten by the regenerated artifact, never
used. joblib's metadata (``metadata.json``: duration, time) is kept per entry,
and :meth:`CacheStore.reduce_size` is joblib's ``reduce_size``.

An in-process layer (a dict per level) sits in front of the disk: a hit there
is a ``"memory"`` hit and costs no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jaxlib
import joblib

from .keys import digest

__all__ = ["ENTRY_FORMAT", "LEVELS", "CacheStore", "CacheWarning", "Lookup", "default_store"]

ENTRY_FORMAT = 1
LEVELS = ("trace", "lower", "compile")
_VERSIONS = f"jax={jax.__version__};jaxlib={jaxlib.__version__}"
_DEFAULT = object()


class CacheWarning(UserWarning):
    """The store could not be used; the function still runs, uncached."""


@dataclasses.dataclass
class Lookup:
    """What a lookup found.

    Attributes:
      status: ``"memory"``, ``"disk"`` or ``"miss"``.
      payload: the artifact bytes on a disk hit, or the in-memory object on a memory hit.
      meta: the entry's metadata dict (codec notes, out_tree, ...).
      reason: on a miss, why (absent, damaged: ...); on a hit, by what key.
      content_key: the content key the artifact lives under.
    """

    status: str
    payload: Any = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    reason: str = ""
    content_key: str | None = None


class _Level:
    """One level's joblib store plus its in-process dictionary."""

    def __init__(self, name: str, root: Path | None) -> None:
        self.name = name
        self.memory = joblib.Memory(None if root is None else root / name, verbose=0)
        self.objects: dict[str, tuple[Any, dict[str, Any]]] = {}  # content key -> object
        self.pointers: dict[str, str] = {}  # chain key -> content key
        self.counts = {"memory": 0, "disk": 0, "miss": 0, "write": 0}

    @property
    def backend(self) -> Any:
        return self.memory.store_backend


class CacheStore:
    """Where cached_jit keeps traced jaxprs, StableHLO and executables.

    Args:
      path: a directory; ``None`` keeps everything in this process only. The
        default is ``$MLCACHE_LAB_DIR`` or ``~/.cache/mlcache_lab``.
      max_bytes: when given, :meth:`reduce_size` runs after writes so each
        level stays under ``max_bytes / 3`` (least recently used first).

    A path that cannot be written gives one :class:`CacheWarning`; the store
    then behaves as an in-process store.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | object | None = _DEFAULT,
        *,
        max_bytes: int | None = None,
    ) -> None:
        if path is _DEFAULT:
            path = os.environ.get("MLCACHE_LAB_DIR") or "~/.cache/mlcache_lab"
        if path is not None and not isinstance(path, str | os.PathLike):
            raise TypeError(
                f"'path' must be a directory path or None (in-memory only). "
                f"Got path={path!r} of type {type(path).__name__}; pass a str or pathlib.Path."
            )
        if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes <= 0):
            raise ValueError(
                f"'max_bytes' must be a positive int or None. Got max_bytes={max_bytes!r}; "
                "pass e.g. max_bytes=2**30 for 1 GiB."
            )
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._warned = False
        root = None if path is None else Path(os.path.expanduser(os.fspath(path))).resolve()
        if root is not None and not self._writable(root):
            root = None
        self.path: Path | None = root
        self._levels = {name: _Level(name, root) for name in LEVELS}

    def __repr__(self) -> str:
        where = "in-memory" if self.path is None else str(self.path)
        return f"CacheStore({where!r})" if self.path else "CacheStore(None)"

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def _writable(self, root: Path) -> bool:
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = root / f".probe-{os.getpid()}-{threading.get_ident()}"
            probe.write_bytes(b"")
            probe.unlink()
            return True
        except OSError as err:
            self._warn(
                f"cache directory {str(root)!r} cannot be written ({err}); "
                "running uncached. Pass CacheStore(path=...) a writable directory."
            )
            return False

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, CacheWarning, stacklevel=3)

    # ----------------------------------------------------------------- lookups
    def lookup_chain(self, level: str, chain_key: str) -> Lookup:
        """Find ``level``'s artifact by chain key: memory, then disk."""
        lvl = self._levels[level]
        content = lvl.pointers.get(chain_key)
        if content is not None and content in lvl.objects:
            return self._hit_memory(lvl, content, "chain key")
        if self.path is None:
            return self._miss(lvl, "not in this process and the store is in-memory only")
        found = self._load(lvl, "chain", chain_key)
        if isinstance(found, str):
            return self._miss(lvl, found)
        content = found["payload"].decode()
        result = self.lookup_content(level, content, _count=False)
        if result.status == "miss":
            return self._miss(lvl, result.reason)
        lvl.pointers[chain_key] = content
        result.reason = "chain key"
        lvl.counts[result.status] += 1
        return result

    def lookup_content(self, level: str, content_key: str, *, _count: bool = True) -> Lookup:
        """Find ``level``'s artifact by content key: memory, then disk."""
        lvl = self._levels[level]
        if content_key in lvl.objects:
            return self._hit_memory(lvl, content_key, "content key", count=_count)
        if self.path is None:
            return self._miss(lvl, "not in this process", count=_count)
        found = self._load(lvl, "content", content_key)
        if isinstance(found, str):
            return self._miss(lvl, found, count=_count)
        if _count:
            lvl.counts["disk"] += 1
        return Lookup("disk", found["payload"], found["meta"], "content key", content_key)

    def _hit_memory(self, lvl: _Level, content: str, how: str, count: bool = True) -> Lookup:
        obj, meta = lvl.objects[content]
        if count:
            lvl.counts["memory"] += 1
        return Lookup("memory", obj, dict(meta), how, content)

    def _miss(self, lvl: _Level, reason: str, count: bool = True) -> Lookup:
        if count:
            lvl.counts["miss"] += 1
        return Lookup("miss", reason=reason)

    def _load(self, lvl: _Level, kind: str, key: str) -> dict[str, Any] | str:
        """The verified entry, or a string saying why there is none."""
        backend = lvl.backend
        call_id = [kind, key]
        if not backend.contains_item(call_id):
            return "no entry"
        try:
            entry = backend.load_item(call_id, verbose=0)
        except Exception as err:  # a damaged file fails in many ways
            return f"damaged entry ({type(err).__name__}), regenerating"
        problem = _check_entry(entry, lvl.name, kind, key)
        if problem:
            return f"damaged entry ({problem}), regenerating"
        _touch(Path(backend.location, *call_id, "output.pkl"))
        return entry

    # ------------------------------------------------------------------ writes
    def remember(
        self,
        level: str,
        content_key: str,
        obj: Any,
        meta: dict[str, Any],
        chain_key: str | None = None,
    ) -> None:
        """Keep ``obj`` (the live artifact) in this process."""
        lvl = self._levels[level]
        lvl.objects[content_key] = (obj, dict(meta))
        if chain_key is not None:
            lvl.pointers[chain_key] = content_key

    def write(
        self,
        level: str,
        content_key: str,
        payload: bytes | None,
        meta: dict[str, Any],
        chain_key: str | None = None,
        duration: float = 0.0,
    ) -> None:
        """Persist an artifact under its content key (``payload=None``: pointer only)."""
        if self.path is None:
            return
        lvl = self._levels[level]
        if payload is not None:
            self._dump(lvl, "content", content_key, payload, meta, duration)
        if chain_key is not None:
            self._dump(lvl, "chain", chain_key, content_key.encode(), {}, 0.0)
        if self.max_bytes is not None:
            self.reduce_size()

    def _dump(
        self,
        lvl: _Level,
        kind: str,
        key: str,
        payload: bytes,
        meta: dict[str, Any],
        duration: float,
    ) -> None:
        meta_bytes = pickle.dumps(meta)
        entry = {
            "format": ENTRY_FORMAT,
            "level": lvl.name,
            "kind": kind,
            "key": key,
            "versions": _VERSIONS,
            "payload": payload,
            "meta": meta_bytes,
            "sha256": _checksum(payload, meta_bytes),
        }
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lvl.backend.dump_item([kind, key], entry, verbose=0)
            lvl.backend.store_metadata([kind, key], {"duration": duration, "time": time.time()})
        if caught:
            self._warn(
                f"writing to the cache at {str(self.path)!r} failed "
                f"({caught[0].message}); results are not persisted."
            )
        else:
            lvl.counts["write"] += 1

    # ------------------------------------------------------- explain records
    def last_components(self, level: str, function_id: str) -> dict[str, str] | None:
        """The chain components last written for ``function_id`` at ``level``."""
        lvl = self._levels[level]
        function_id = digest("explain", function_id)
        mem = lvl.objects.get(f"explain:{function_id}")
        if mem is not None:
            return dict(mem[0])
        if self.path is None:
            return None
        found = self._load(lvl, "explain", function_id)
        if isinstance(found, str):
            return None
        return dict(found["meta"])

    def record_components(self, level: str, function_id: str, components: dict[str, str]) -> None:
        lvl = self._levels[level]
        function_id = digest("explain", function_id)
        lvl.objects[f"explain:{function_id}"] = (dict(components), {})
        if self.path is not None:
            self._dump(lvl, "explain", function_id, b"", dict(components), 0.0)

    # ------------------------------------------------------------- management
    def stats(self) -> dict[str, dict[str, int]]:
        """Per level: entries and bytes on disk, and this process's hit/miss counts."""
        out: dict[str, dict[str, int]] = {}
        for name, lvl in self._levels.items():
            entries = size = 0
            if self.path is not None:
                for item in lvl.backend.get_items():
                    if f"{os.sep}content{os.sep}" in item.path + os.sep:
                        entries += 1
                    size += item.size
            out[name] = {"entries": entries, "bytes": size, **lvl.counts}
        return out

    def reduce_size(self, max_bytes: int | None = None) -> None:
        """Evict least recently used entries so each level stays under a third of the bound."""
        bound = max_bytes if max_bytes is not None else self.max_bytes
        if bound is None or self.path is None:
            return
        for lvl in self._levels.values():
            lvl.memory.reduce_size(bytes_limit=max(bound // len(LEVELS), 1))

    def clear(self) -> None:
        """Forget everything, on disk and in this process."""
        for lvl in self._levels.values():
            lvl.objects.clear()
            lvl.pointers.clear()
            if self.path is not None:
                lvl.memory.clear(warn=False)

    def forget_in_process(self) -> None:
        """Drop the in-process layer (as a fresh process would start)."""
        for lvl in self._levels.values():
            lvl.objects.clear()
            lvl.pointers.clear()


def _check_entry(entry: Any, level: str, kind: str, key: str) -> str:
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not an entry"
    if entry.get("format") != ENTRY_FORMAT:
        return f"entry format {entry.get('format')!r}, this build reads {ENTRY_FORMAT}"
    if entry.get("versions") != _VERSIONS:
        return f"written by {entry.get('versions')!r}, this is {_VERSIONS}"
    if (entry.get("level"), entry.get("kind"), entry.get("key")) != (level, kind, key):
        return "entry belongs to another key"
    payload, meta = entry.get("payload"), entry.get("meta")
    if not isinstance(payload, bytes) or not isinstance(meta, bytes):
        return "malformed payload"
    if _checksum(payload, meta) != entry.get("sha256"):
        return "checksum mismatch"
    try:
        entry["meta"] = pickle.loads(meta)
    except Exception as err:
        return f"unreadable metadata ({type(err).__name__})"
    return "" if isinstance(entry["meta"], dict) else "malformed metadata"


def _checksum(payload: bytes, meta: bytes) -> str:
    h = hashlib.sha256()
    for part in (payload, meta):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _touch(path: Path) -> None:
    # Recency for reduce_size (joblib reads atime, which noatime mounts never update).
    with contextlib.suppress(OSError):
        os.utime(path)


_default_store: CacheStore | None = None


def default_store() -> CacheStore:
    """The process-wide store at ``$MLCACHE_LAB_DIR`` or ``~/.cache/mlcache_lab``."""
    global _default_store
    if _default_store is None:
        _default_store = CacheStore()
    return _default_store
