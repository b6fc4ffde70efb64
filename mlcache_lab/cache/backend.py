"""A joblib store backend whose items are signed bytes, written atomically.

:class:`SignedStoreBackend` is joblib's ``FileSystemStoreBackend`` (same
layout, ``metadata.json`` per item, ``get_items`` and ``reduce_size``
eviction) with two methods replaced:

* ``dump_item(call_id, body)`` takes *bytes*, frames and signs them
  (:func:`~mlcache_lab.cache.signing.seal`), writes a temporary file in the
  item's directory and ``os.replace``-s it onto ``output.pkl``: a reader sees
  the old file or the new one, never half of one, and a writer killed midway
  leaves only a temporary file that no lookup reads (the next write of that
  item deletes it once it is an hour old). Errors are raised
  (``OSError``), not turned into warnings, so the store can warn once.
* ``load_item(call_id)`` reads the raw bytes and returns the verified body
  (:func:`~mlcache_lab.cache.signing.unseal`): nothing is unpickled here, and
  nothing is unpickled by the caller unless the signature held.

Directories are created ``0700`` and files ``0600`` (``0770``/``0640`` for a
shared store, with the group inherited through the set-group-ID bit).
The backend is registered with joblib as ``"mlcache_lab_signed"``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

import joblib
from joblib._store_backends import FileSystemStoreBackend

from .signing import seal, unseal

__all__ = ["BACKEND_NAME", "SignedStoreBackend"]

BACKEND_NAME = "mlcache_lab_signed"
_OUTPUT = "output.pkl"
# A temporary file older than this is a killed writer's, not one still writing.
STALE_TEMPORARY_SECONDS = 3600.0


class SignedStoreBackend(FileSystemStoreBackend):  # type: ignore[misc]
    """joblib's file-system backend storing signed byte strings.

    ``backend_options``: ``key`` (bytes, required), ``verify`` (bool,
    default True; False is unsafe and for benchmarks only), ``shared``
    (bool: group-accessible directories and files).
    """

    key: bytes
    verify: bool
    dir_mode: int
    file_mode: int

    def configure(
        self, location: str, verbose: int = 0, backend_options: dict[str, Any] | None = None
    ) -> None:
        options = dict(backend_options or {})
        key = options.pop("key", None)
        if not isinstance(key, bytes) or not key:
            raise ValueError(
                f"SignedStoreBackend needs backend_options={{'key': <bytes>}}. Got key={key!r}."
            )
        self.key = key
        self.verify = bool(options.pop("verify", True))
        shared = bool(options.pop("shared", False))
        self.dir_mode = 0o2770 if shared else 0o700
        self.file_mode = 0o640 if shared else 0o600
        self.create_location(location)
        super().configure(location, verbose=verbose, backend_options=options)

    # ------------------------------------------------------------- locations
    def create_location(self, location: str) -> None:
        """Create ``location`` and any missing parent, each with the store's mode."""
        missing = []
        path = os.path.abspath(location)
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it
                os.mkdir(path, self.dir_mode)
                os.chmod(path, self.dir_mode)  # the umask must not change it
        if not os.path.isdir(location):  # a file where a directory should be
            raise NotADirectoryError(f"not a directory: {location!r}")

    # ----------------------------------------------------------------- items
    def dump_item(self, call_id: list[str], item: bytes, verbose: int = 0) -> None:
        """Sign ``item`` (bytes) and publish it atomically as the item's ``output.pkl``.

        Raises:
          OSError: the store cannot be written (read-only, full, gone).
        """
        if not isinstance(item, bytes | bytearray | memoryview):
            raise TypeError(f"SignedStoreBackend stores bytes. Got {type(item).__name__}.")
        item_path = os.path.join(self.location, *call_id)
        data = seal(self.key, bytes(item))
        for attempt in range(2):
            try:
                self.create_location(item_path)
                self._publish(os.path.join(item_path, _OUTPUT), data)
                break
            except FileNotFoundError:
                if attempt:  # evicted by another process between mkdir and open, twice
                    raise
        self._remove_stale_temporaries(item_path)

    def _remove_stale_temporaries(self, item_path: str) -> None:
        """Delete what writers killed mid-write left here (old enough to be nobody's)."""
        now = time.time()
        with contextlib.suppress(OSError), os.scandir(item_path) as it:
            for entry in it:
                if entry.name.startswith(_OUTPUT + ".") and entry.name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        if now - entry.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                            os.unlink(entry.path)

    def _publish(self, filename: str, data: bytes) -> None:
        tmp = f"{filename}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.file_mode)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            # No fsync: after a crash a file whose blocks never reached the disk
            # fails its length or signature check and is a miss, not a wrong answer.
            os.replace(tmp, filename)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load_item(
        self,
        call_id: list[str],
        verbose: int = 0,
        timestamp: float | None = None,
        metadata: Any = None,
    ) -> memoryview:
        """The verified body of the item's ``output.pkl``.

        Raises:
          FileNotFoundError: there is no such item.
          EntryRejected: the file's frame or signature is wrong (nothing was parsed).
          OSError: it cannot be read.
        """
        with open(os.path.join(self.location, *call_id, _OUTPUT), "rb") as fh:
            data = fh.read()
        return unseal(self.key, data, verify=self.verify)


joblib.register_store_backend(BACKEND_NAME, SignedStoreBackend)
