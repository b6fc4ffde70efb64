"""The on-disk and in-process store: one ``joblib.Memory`` per pipeline level.

Layout under the store's root (``CacheStore.path``)::

    <root>/<level>/content/<content key>/output.pkl    the artifact
    <root>/<level>/chain/<chain key>/output.pkl        a pointer to a content key
    <root>/<level>/explain/<function id>/output.pkl    the last chain components
    <root>/<level>/<kind>/<key>/metadata.json          joblib's (duration, time)

``<level>`` is one of :data:`STORE_LEVELS`: ``trace``, ``lower`` and
``compile`` (the chain of :data:`LEVELS`, ``cached_jit``'s), and ``partition``
and ``segments`` (the partitioned path's own levels, after ``trace``: the chain
of :data:`PARTITIONED_LEVELS`, ``batched_jit``'s; each segment program then
goes through ``trace``/``lower``/``compile`` as a ``cached_jit``); keys (and the digest of
the function's module and name that identifies explain records) are 32 hex
digits (see :mod:`mlcache_lab.cache.keys`). The root is created ``0700``.

Each ``output.pkl`` is written by :class:`~mlcache_lab.cache.backend.SignedStoreBackend`
(joblib's file-system backend, signed): a temporary file renamed into place,
holding a signed frame (:mod:`mlcache_lab.cache.signing`)::

    MAGIC b"MLCSIG1\n" | body length (u64 LE) | HMAC-SHA256(key, magic+length+body) | body

and the body, format :data:`ENTRY_FORMAT`::

    header length (u32 LE) | header (JSON) | payload | meta (pickle of a dict)
    header = {"format": 2, "level": str, "kind": "content"|"chain"|"explain",
              "key": str, "versions": "jax=...;jaxlib=...",
              "payload_bytes": int, "meta_bytes": int}

``payload`` is the level's artifact as its codec wrote it (for a chain entry,
the content key it points to); ``meta`` holds the output treedef and codec
notes. Reading an entry checks, in this order, before anything is unpickled:
the frame (magic, length: a truncated or extended file), the signature (a
modified file, or one signed with another key), then the JSON header
(format, versions, level/kind/key: an entry from another jax build, or one
moved to another key). An entry failing the frame or signature is *refused*
(one :class:`CacheWarning` per store, the first time); any failure is a miss
whose reason says why, and the regenerated artifact overwrites the entry.
The codecs then check what only they can see (a jaxpr codec version we no
longer read, an executable built for another device or backend).

The key is kept outside the store (``$MLCACHE_LAB_KEY_FILE``, else
``~/.config/mlcache_lab/hmac.key``, created 0600): whoever can read it can
make entries this process loads, so it decides who is trusted. A store several
users write is opt-in: ``CacheStore(path, shared=True, key_file=...)``.

``levels`` says which levels the store caches (all three by default). A level
that is off is never looked up, written or kept in memory: it runs on every
call that is not served by the caller's fast path, and (see
:mod:`mlcache_lab.stages.cached_function`) no level after it is found by chain
key, only by content. ``CacheStore(path, levels=("compile",))`` is therefore
JAX's persistent compilation cache: every new process traces and lowers again,
then finds the executable by the hash of its StableHLO and compile config.
Ablation studies use it to measure what each level adds.

``max_bytes`` bounds the store: after each write, joblib's ``reduce_size``
evicts the least recently used entries of each level (a hit touches its
file's access time). An in-process layer (a dict per level) sits in front of
the disk: a hit there is a ``"memory"`` hit and costs no I/O.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import re
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jaxlib
import joblib

from .backend import BACKEND_NAME
from .keys import digest
from .signing import (
    KEY_FILE_ENV,
    UNSAFE_SKIP_VERIFY_ENV,
    EntryRejected,
    KeyFileError,
    default_key_file,
    key_file_problem,
    load_or_create_key,
)

__all__ = [
    "ENTRY_FORMAT",
    "LEVELS",
    "PARTITIONED_LEVELS",
    "STORE_LEVELS",
    "CacheStore",
    "CacheWarning",
    "DamagedEntry",
    "Lookup",
    "default_store",
]

ENTRY_FORMAT = 2
LEVELS = ("trace", "lower", "compile")
"""``cached_jit``'s levels, in chain order: each level's chain key extends the previous one's."""
PARTITIONED_LEVELS = ("trace", "partition", "segments")
"""``batched_jit``'s levels above its segments' compilations, in chain order."""
STORE_LEVELS = ("trace", "lower", "compile", "partition", "segments")
"""Every level a store holds (what ``CacheStore(levels=...)`` chooses from)."""
KINDS = ("content", "chain", "explain")
_VERSIONS = f"jax={jax.__version__};jaxlib={jaxlib.__version__}"
_DEFAULT = object()
_KEY = re.compile(r"[0-9a-f]{32}")

_SHARED_NEEDS_KEY = (
    "a shared store needs a key file that every trusted writer can read and nobody else can. "
    "Got shared=True with no key_file and ${env} unset; pass e.g. "
    "CacheStore(path, shared=True, key_file='/etc/mlcache_lab/team.key') "
    "(mode 0640, group = the trusted writers)."
)


class CacheWarning(UserWarning):
    """The store could not be used as asked; the function still runs, uncached or regenerated."""


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


@dataclasses.dataclass(frozen=True)
class DamagedEntry:
    """An entry :meth:`CacheStore.verify` could not use, and why."""

    level: str
    kind: str
    key: str
    reason: str


class _Level:
    """One level's joblib store plus its in-process dictionary."""

    def __init__(self, name: str, root: Path | None, options: dict[str, Any]) -> None:
        self.name = name
        if root is None:
            self.memory = joblib.Memory(None, verbose=0)
        else:
            self.memory = joblib.Memory(
                root / name, backend=BACKEND_NAME, verbose=0, backend_options=options
            )
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
      shared: ``True`` for a store several users write (a team's or a
        cluster's). Directories are then created group-writable (``2770``),
        files group-readable, and ``key_file`` (or ``$MLCACHE_LAB_KEY_FILE``)
        is required. **Who must be trusted:** everyone who can read the key
        file can write entries that this process unpickles and runs, so give
        it (mode ``0640``, its group the trusted writers) only to people whose
        code you would run; their jax/jaxlib installations make the
        executables, so those are trusted too. Anyone who can write the store
        directory but not read the key can delete entries or cause misses and
        one warning, never make you load their bytes.
      key_file: where the HMAC key is (created, mode 0600, if missing). The
        default is ``$MLCACHE_LAB_KEY_FILE``, else
        ``~/.config/mlcache_lab/hmac.key``. It must be outside the store.
      levels: the levels this store caches, a subset of ``("trace", "lower",
        "compile")`` (default: all). The others always run, and nothing after
        an uncached level is found by chain key: ``levels=("compile",)``
        behaves like JAX's persistent compilation cache, ``levels=()`` caches
        nothing across calls of different functions or processes.

    A path that cannot be written, or a key that cannot be read, gives one
    :class:`CacheWarning`; the store then behaves as an in-process store.
    Writes that fail later (a read-only or full disk) give one warning too,
    and the function keeps running, uncached.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | object | None = _DEFAULT,
        *,
        max_bytes: int | None = None,
        shared: bool = False,
        key_file: str | os.PathLike[str] | None = None,
        levels: Sequence[str] = STORE_LEVELS,
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
        if not isinstance(shared, bool):
            raise TypeError(f"'shared' must be True or False. Got shared={shared!r}.")
        if key_file is not None and not isinstance(key_file, str | os.PathLike):
            raise TypeError(
                f"'key_file' must be a file path or None (the default key). Got "
                f"key_file={key_file!r}; pass e.g. key_file='~/.config/mlcache_lab/hmac.key'."
            )
        if shared and key_file is None and not os.environ.get(KEY_FILE_ENV):
            raise ValueError(_SHARED_NEEDS_KEY.replace("${env}", KEY_FILE_ENV))
        self.levels: tuple[str, ...] = _check_levels(levels)
        self.max_bytes = max_bytes
        self.shared = shared
        self._lock = threading.Lock()
        self._warned_write = False
        self._warned_refused = False
        root = None if path is None else Path(os.path.expanduser(os.fspath(path))).resolve()
        self.key_file: Path | None = None
        options: dict[str, Any] = {}
        if root is not None:
            self.key_file = (
                Path(os.path.expanduser(os.fspath(key_file))) if key_file else default_key_file()
            ).resolve()
            if self.key_file.is_relative_to(root):
                raise ValueError(
                    f"the key file must be outside the store: anyone who can write the store "
                    f"could replace it. Got key_file={str(self.key_file)!r} inside "
                    f"{str(root)!r}; keep it in e.g. ~/.config/mlcache_lab/."
                )
            options = self._open(root, self.key_file)
            if not options:
                root = None
        self.path: Path | None = root
        self._levels: dict[str, _Level] = {}
        try:
            self._levels = {name: _Level(name, root, options) for name in STORE_LEVELS}
        except OSError as err:  # e.g. a level directory replaced by a file
            self._warn_write(
                f"cache directory {str(root)!r} cannot be written ({err}); running uncached."
            )
            self.path = None
            self._levels = {name: _Level(name, None, {}) for name in STORE_LEVELS}

    def __repr__(self) -> str:
        where = repr(str(self.path)) if self.path else "None"
        extra = "" if self.levels == STORE_LEVELS else f", levels={self.levels!r}"
        return f"CacheStore({where}{extra})"

    def caches(self, level: str) -> bool:
        """Whether this store caches ``level`` (see ``levels``)."""
        return level in self.levels

    def _off(self, level: str) -> str:
        return f"the {level} level is off in this store (levels={self.levels!r}): it always runs"

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def _open(self, root: Path, key_file: Path) -> dict[str, Any]:
        """The backend options (key, modes) for ``root``; ``{}`` (after one warning) if unusable."""
        try:
            existed = root.is_dir()
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not existed:  # our own directory: the umask must not loosen it
                os.chmod(root, 0o2770 if self.shared else 0o700)
            probe = root / f".probe-{os.getpid()}-{threading.get_ident()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            self._warn_write(
                f"cache directory {str(root)!r} cannot be written ({err}); "
                "running uncached. Pass CacheStore(path=...) a writable directory."
            )
            return {}
        try:
            key = load_or_create_key(key_file, mode=0o640 if self.shared else 0o600)
        except KeyFileError as err:
            self._warn_write(f"{err}; running uncached (entries cannot be signed).")
            return {}
        problem = key_file_problem(key_file, shared=self.shared)
        if problem:
            warnings.warn(
                f"the cache key file {str(key_file)!r} is not private: {problem}. "
                "Whoever can read it can make this process load their code; "
                f"chmod {'640' if self.shared else '600'} it "
                + ("(group = the trusted writers)." if self.shared else "or make a new one."),
                CacheWarning,
                stacklevel=3,
            )
        verify = os.environ.get(UNSAFE_SKIP_VERIFY_ENV, "") in ("", "0")
        if not verify:
            warnings.warn(
                f"{UNSAFE_SKIP_VERIFY_ENV} is set: entries of {str(root)!r} are loaded WITHOUT "
                "checking their signatures, so whoever can write the store can run code here. "
                "It exists for the integrity benchmark only; unset it.",
                CacheWarning,
                stacklevel=3,
            )
        return {"key": key, "verify": verify, "shared": self.shared}

    def _warn_write(self, message: str) -> None:
        if not self._warned_write:
            self._warned_write = True
            warnings.warn(message, CacheWarning, stacklevel=4)

    def _warn_refused(self, reason: str) -> None:
        if not self._warned_refused:
            self._warned_refused = True
            warnings.warn(
                f"refused an entry of the cache at {str(self.path)!r} that failed verification "
                f"({reason}); it is regenerated and overwritten, never loaded. Entries are loaded "
                f"only when signed with the key in {str(self.key_file)!r}; if other users write "
                "this store, see CacheStore(shared=True). Further refusals by this store are "
                "reported as misses only.",
                CacheWarning,
                stacklevel=4,
            )

    # ----------------------------------------------------------------- lookups
    def lookup_chain(self, level: str, chain_key: str) -> Lookup:
        """Find ``level``'s artifact by chain key: memory, then disk."""
        lvl = self._levels[level]
        if level not in self.levels:
            return self._miss(lvl, self._off(level))
        content = lvl.pointers.get(chain_key)
        if content is not None and content in lvl.objects:
            return self._hit_memory(lvl, content, "chain key")
        if self.path is None:
            return self._miss(lvl, "not in this process and the store is in-memory only")
        found = self._load(lvl, "chain", chain_key)
        if isinstance(found, str):
            return self._miss(lvl, found)
        content = found["payload"].decode("ascii", "replace")
        if not _KEY.fullmatch(content):
            return self._miss(lvl, "damaged entry (a chain pointer to no key), regenerating")
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
        if level not in self.levels:
            return self._miss(lvl, self._off(level), count=_count)
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

    def _load(
        self, lvl: _Level, kind: str, key: str, *, touch: bool = True, warn: bool = True
    ) -> dict[str, Any] | str:
        """The verified entry, or a string saying why there is none."""
        backend = lvl.backend
        try:
            body = backend.load_item([kind, key])
        except (FileNotFoundError, NotADirectoryError):
            return "no entry"
        except EntryRejected as err:
            if warn:
                self._warn_refused(str(err))
            return f"damaged entry (refused: {err}), regenerating"
        except OSError as err:
            return f"damaged entry (unreadable: {type(err).__name__}: {err}), regenerating"
        found = _decode_entry(body, lvl.name, kind, key)
        if isinstance(found, str):
            return f"damaged entry ({found}), regenerating"
        if touch:
            _touch(Path(backend.location, kind, key, "output.pkl"))
        return found

    def read_payload(self, level: str, content_key: str) -> bytes:
        """The verified payload of ``level``'s entry under ``content_key`` (no decoding).

        Raises:
          KeyError: there is no usable entry; the message says why.
        """
        if self.path is None:
            raise KeyError(f"{self!r} is in-memory only: it has no entries on disk")
        found = self._load(self._levels[level], "content", content_key, touch=False)
        if isinstance(found, str):
            raise KeyError(f"{level} entry {content_key}: {found}")
        return found["payload"]  # type: ignore[no-any-return]

    def verify(self) -> list[DamagedEntry]:
        """Check every entry on disk (frame, signature, header); the ones that fail.

        Nothing is evicted or rewritten, no warning is given, and recency is
        not updated: this is a read-only audit (e.g. after copying a store).
        """
        damaged: list[DamagedEntry] = []
        if self.path is None:
            return damaged
        for name, lvl in self._levels.items():
            for kind in KINDS:
                folder = Path(lvl.backend.location, kind)
                if not folder.is_dir():
                    continue
                for item in sorted(folder.iterdir()):
                    if not _KEY.fullmatch(item.name):
                        continue
                    found = self._load(lvl, kind, item.name, touch=False, warn=False)
                    if isinstance(found, str) and found != "no entry":  # not a half entry
                        damaged.append(DamagedEntry(name, kind, item.name, found))
        return damaged

    # ------------------------------------------------------------------ writes
    def remember(
        self,
        level: str,
        content_key: str,
        obj: Any,
        meta: dict[str, Any],
        chain_key: str | None = None,
    ) -> None:
        """Keep ``obj`` (the live artifact) in this process (not for a level that is off)."""
        if level not in self.levels:
            return
        lvl = self._levels[level]
        lvl.objects[content_key] = (obj, dict(meta))
        if chain_key is not None:
            lvl.pointers[chain_key] = content_key

    def forget(self, level: str, content_key: str) -> None:
        """Drop one artifact from this process's memory (the disk entry stays)."""
        self._levels[level].objects.pop(content_key, None)

    def write(
        self,
        level: str,
        content_key: str,
        payload: bytes | None,
        meta: dict[str, Any],
        chain_key: str | None = None,
        duration: float = 0.0,
    ) -> None:
        """Persist an artifact under its content key (``payload=None``: pointer only).

        Nothing is written for a level that is off.
        """
        if self.path is None or level not in self.levels:
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
        body = _encode_entry(lvl.name, kind, key, payload, meta)
        try:
            lvl.backend.dump_item([kind, key], body)
        except OSError as err:
            self._warn_write(
                f"writing to the cache at {str(self.path)!r} failed ({type(err).__name__}: "
                f"{err}); results are not persisted (the store is read-only, full or gone). "
                "Functions still run, uncached; this warning is not repeated."
            )
            return
        lvl.backend.store_metadata([kind, key], {"duration": duration, "time": time.time()})
        lvl.counts["write"] += 1

    # ------------------------------------------------------- explain records
    def last_components(self, level: str, function_id: str) -> dict[str, str] | None:
        """The chain components last written for ``function_id`` at ``level``."""
        if level not in self.levels:
            return None
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
        if level not in self.levels:
            return
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
                    if f"{os.sep}content{os.sep}" in item.path + os.sep and os.path.exists(
                        os.path.join(item.path, "output.pkl")
                    ):  # not an empty directory a failed write left
                        entries += 1
                    size += item.size
            out[name] = {"entries": entries, "bytes": size, **lvl.counts}
        return out

    def reduce_size(self, max_bytes: int | None = None) -> None:
        """Evict least recently used entries so each level stays under its share of the bound."""
        bound = max_bytes if max_bytes is not None else self.max_bytes
        if bound is None or self.path is None:
            return
        for lvl in self._levels.values():
            lvl.memory.reduce_size(bytes_limit=max(bound // len(STORE_LEVELS), 1))

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


def _check_levels(levels: Any) -> tuple[str, ...]:
    """``levels`` as a tuple in pipeline order, or a ValueError that shows the fix."""
    if isinstance(levels, str) or not isinstance(levels, Sequence | set | frozenset):
        raise TypeError(
            f"'levels' must be a sequence of level names from {STORE_LEVELS}. Got "
            f"levels={levels!r}; "
            f"write e.g. levels=('compile',) for a cache like JAX's persistent cache."
        )
    unknown = [lvl for lvl in levels if lvl not in STORE_LEVELS]
    if unknown:
        raise ValueError(
            f"Valid options for 'levels' are subsets of {STORE_LEVELS}. Got "
            f"levels={tuple(levels)!r} "
            f"instead (unknown: {unknown})."
        )
    return tuple(lvl for lvl in STORE_LEVELS if lvl in levels)


# ------------------------------------------------------------ the entry body
def _encode_entry(level: str, kind: str, key: str, payload: bytes, meta: dict[str, Any]) -> bytes:
    meta_bytes = pickle.dumps(meta, protocol=pickle.HIGHEST_PROTOCOL)
    header = json.dumps(
        {
            "format": ENTRY_FORMAT,
            "level": level,
            "kind": kind,
            "key": key,
            "versions": _VERSIONS,
            "payload_bytes": len(payload),
            "meta_bytes": len(meta_bytes),
        },
        sort_keys=True,
    ).encode()
    return b"".join((len(header).to_bytes(4, "little"), header, payload, meta_bytes))


def _decode_entry(body: memoryview, level: str, kind: str, key: str) -> dict[str, Any] | str:
    """The entry in a *verified* body, or why it cannot be used here."""
    if len(body) < 4:
        return "no header"
    size = int.from_bytes(body[:4], "little")
    try:
        header = json.loads(bytes(body[4 : 4 + size]))
    except ValueError:
        return "unreadable header"
    if not isinstance(header, dict):
        return "malformed header"
    if header.get("format") != ENTRY_FORMAT:
        return f"entry format {header.get('format')!r}, this build reads {ENTRY_FORMAT}"
    if header.get("versions") != _VERSIONS:
        return f"written by {header.get('versions')!r}, this is {_VERSIONS}"
    if (header.get("level"), header.get("kind"), header.get("key")) != (level, kind, key):
        return (
            f"entry belongs to another key ({header.get('level')}/{header.get('kind')}/"
            f"{header.get('key')})"
        )
    p, m = header.get("payload_bytes"), header.get("meta_bytes")
    if not isinstance(p, int) or not isinstance(m, int) or 4 + size + p + m != len(body):
        return "malformed header (lengths)"
    start = 4 + size
    try:
        meta = pickle.loads(body[start + p :])  # verified above: written with our key
    except Exception as err:
        return f"unreadable metadata ({type(err).__name__})"
    if not isinstance(meta, dict):
        return "malformed metadata"
    return {**header, "payload": bytes(body[start : start + p]), "meta": meta}


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
