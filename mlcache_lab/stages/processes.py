"""Running a module in a fresh Python process and reading the JSON line it prints last.

Every measurement of a cold or warm start needs a new process: the pipeline
changes (:mod:`.changes`), the ablation runs and the fresh-process benchmarks
all start one with :func:`run_json_child`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["run_json_child"]


def run_json_child(
    module: str,
    args: Sequence[str],
    *,
    what: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """``python -m module *args`` in a new process; the dict its last stdout line holds.

    Raises:
      RuntimeError: the child exited non-zero; the message starts with ``what``
        and ends with the child's stderr.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
