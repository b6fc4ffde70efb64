"""What a result was measured on, and with how many runs at once (timing honesty)."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["Concurrency", "cpus", "machine_info"]


def cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@cache
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def machine_info() -> dict[str, Any]:
    """Host, CPU, memory and software versions of the machine running this process."""
    import jax

    from .. import __version__

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpus": cpus(),
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "mlcache_lab": __version__,
    }


class Concurrency:
    """Counts the runs in progress on this host, through marker files in a shared folder.

    Each run holds a file ``<host>.<pid>.<uuid>`` while it runs; a marker whose
    process is gone (a killed study) is removed when counted. The count is the
    number of measured processes that competed for this host's CPUs.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.host = socket.gethostname().replace(".", "_")

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / f"{self.host}.{os.getpid()}.{uuid.uuid4().hex}"
        marker.touch()
        try:
            yield
        finally:
            marker.unlink(missing_ok=True)

    def count(self) -> int:
        """Runs in progress on this host now (this one included)."""
        n = 0
        for marker in self.folder.glob(f"{self.host}.*"):
            try:
                pid = int(marker.name.split(".")[1])
            except (IndexError, ValueError):
                continue
            if _alive(pid):
                n += 1
            else:
                marker.unlink(missing_ok=True)
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
