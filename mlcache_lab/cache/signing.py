"""Signed entries: an HMAC key kept outside the store, and the frame every entry file has.

Entries hold pickles and XLA executables, so *loading* one runs code. A store
directory that someone else can write must therefore never be read blindly:
every entry file is framed and signed, and the signature is checked over the
raw bytes before anything in it is parsed, let alone unpickled.

Frame of an entry file (``output.pkl``)::

    offset  size  content
    0       8     MAGIC, b"MLCSIG1\\n"
    8       8     length of the body, unsigned little-endian
    16      32    HMAC-SHA256(key, MAGIC + length + body)
    48      ...   body (see mlcache_lab.cache.store)

The key is 32 random bytes kept, as 64 hex digits, in a *key file* outside the
store: ``$MLCACHE_LAB_KEY_FILE``, else ``$XDG_CONFIG_HOME/mlcache_lab/hmac.key``
(``~/.config/mlcache_lab/hmac.key``). It is created on first use with mode
0600 in a 0700 directory. Whoever can read the key can write entries this
process will load: the key file decides who is trusted, not the store's
permissions.

:data:`UNSAFE_SKIP_VERIFY_ENV` turns the signature check off on load. It exists
only so the benchmark can measure what verification costs; with it set, a
store anyone can write runs their code. Never set it otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import uuid
from pathlib import Path

__all__ = [
    "FRAME_BYTES",
    "KEY_FILE_ENV",
    "MAGIC",
    "UNSAFE_SKIP_VERIFY_ENV",
    "EntryRejected",
    "KeyFileError",
    "default_key_file",
    "key_file_problem",
    "load_or_create_key",
    "seal",
    "unseal",
]

MAGIC = b"MLCSIG1\n"
_TAG_BYTES = 32
FRAME_BYTES = len(MAGIC) + 8 + _TAG_BYTES
KEY_FILE_ENV = "MLCACHE_LAB_KEY_FILE"
UNSAFE_SKIP_VERIFY_ENV = "MLCACHE_LAB_UNSAFE_SKIP_VERIFY"
_KEY_BYTES = 32


class EntryRejected(ValueError):
    """An entry file failed verification; it was not parsed."""


class KeyFileError(OSError):
    """The key file cannot be read, created or parsed."""


# ---------------------------------------------------------------- the frame
def seal(key: bytes, body: bytes) -> bytes:
    """``body`` framed and signed with ``key``: the bytes of an entry file."""
    head = MAGIC + len(body).to_bytes(8, "little")
    return head + _tag(key, head, body) + body


def unseal(key: bytes, data: bytes, *, verify: bool = True) -> memoryview:
    """The body of an entry file, after checking its frame and its signature.

    Args:
      key: the HMAC key.
      data: the whole file.
      verify: ``False`` skips the signature check (unsafe; benchmarks only).

    Raises:
      EntryRejected: with the reason, when the frame or the signature is wrong.
    """
    if len(data) < FRAME_BYTES:
        raise EntryRejected(f"{len(data)} bytes, shorter than the {FRAME_BYTES}-byte frame")
    if data[: len(MAGIC)] != MAGIC:
        raise EntryRejected(
            f"not a signed entry (starts {bytes(data[:8])!r}, expected {MAGIC!r}): written by "
            "an older mlcache_lab or by something else"
        )
    length = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    found = len(data) - FRAME_BYTES
    if found != length:
        what = "truncated" if found < length else "extended"
        raise EntryRejected(f"{what}: {found} body bytes, the frame says {length}")
    view = memoryview(data)
    if verify:
        head, tag = view[: len(MAGIC) + 8], view[len(MAGIC) + 8 : FRAME_BYTES]
        if not hmac.compare_digest(_tag(key, head, view[FRAME_BYTES:]), tag):
            raise EntryRejected(
                "signature does not verify: the file was modified, or signed with another key"
            )
    return view[FRAME_BYTES:]


def _tag(key: bytes, head: bytes | memoryview, body: bytes | memoryview) -> bytes:
    mac = hmac.new(key, head, hashlib.sha256)
    mac.update(body)
    return mac.digest()


# ------------------------------------------------------------- the key file
def default_key_file() -> Path:
    """``$MLCACHE_LAB_KEY_FILE``, else ``$XDG_CONFIG_HOME/mlcache_lab/hmac.key``."""
    explicit = os.environ.get(KEY_FILE_ENV)
    if explicit:
        return Path(os.path.expanduser(explicit))
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join("~", ".config")
    return Path(os.path.expanduser(config), "mlcache_lab", "hmac.key")


def load_or_create_key(path: Path, *, mode: int = 0o600) -> bytes:
    """The key in ``path``; a new random key is written there first if there is none.

    Creation is atomic and never replaces a key another process made meanwhile:
    the key is written to a private temporary file and hard-linked into place.

    Raises:
      KeyFileError: the file cannot be read or created, or holds no key.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        _create_key(path, mode)
        try:
            text = path.read_bytes()
        except OSError as err:
            raise KeyFileError(f"cannot read the new key file {str(path)!r}: {err}") from err
    except OSError as err:
        raise KeyFileError(f"cannot read the key file {str(path)!r}: {err}") from err
    try:
        key = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < _KEY_BYTES:
        raise KeyFileError(
            f"the key file {str(path)!r} does not hold a key ({_KEY_BYTES * 2} or more hex "
            "digits). Delete it to have a new one made, or point MLCACHE_LAB_KEY_FILE elsewhere."
        )
    return key


def _create_key(path: Path, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # the umask must not widen or narrow it
            os.write(fd, secrets.token_bytes(_KEY_BYTES).hex().encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process made the key first: use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as err:
        raise KeyFileError(f"cannot create the key file {str(path)!r}: {err}") from err


def key_file_problem(path: Path, *, shared: bool) -> str:
    """Why the key file's owner or mode lets untrusted users forge entries ('' if none).

    A private store's key must be the current user's and unreadable by anyone
    else; a shared store's key may be read by its group, never by others.
    """
    try:
        st = path.stat()
    except OSError as err:
        return f"cannot stat the key file: {err}"
    problems = []
    if hasattr(os, "getuid") and st.st_uid != os.getuid() and not shared:
        problems.append(f"it belongs to uid {st.st_uid}, not to this user")
    loose = stat.S_IRWXO if shared else (stat.S_IRWXG | stat.S_IRWXO)
    if st.st_mode & loose:
        problems.append(
            f"its mode is {stat.S_IMODE(st.st_mode):04o}: "
            + ("others" if shared else "group or others")
            + " can read or replace it"
        )
    return "; ".join(problems)
