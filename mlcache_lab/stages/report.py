"""StageReport: what each cache level did for one call, readable in a terminal and a notebook."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from ..cache.store import LEVELS

__all__ = ["STATUSES", "LevelReport", "StageReport"]

STATUSES = ("memory", "disk", "miss", "bypassed")


@dataclasses.dataclass
class LevelReport:
    """One level of one call.

    Attributes:
      status: ``"memory"`` | ``"disk"`` | ``"miss"`` | ``"bypassed"``.
      seconds: time spent at this level (lookup, load or regeneration).
      key: the chain key looked up (32 hex digits), or "" when bypassed.
      reason: on a miss, which named key component changed (or why there was
        no usable entry); on a hit, by which key it was found.
      note: anything else worth knowing (e.g. the level was kept in memory only).
    """

    status: str = "bypassed"
    seconds: float = 0.0
    key: str = ""
    reason: str = ""
    note: str = ""


@dataclasses.dataclass
class StageReport:
    """Per level (trace, lower, compile; for ``batched_jit``: trace, partition, segments).

    Each level has a status, seconds, key and reason.

    ``fast_path`` is True when the call went straight to an executable already
    loaded in this process (no level was consulted; all show ``memory``).
    """

    function: str
    levels: dict[str, LevelReport] = dataclasses.field(
        default_factory=lambda: {name: LevelReport() for name in LEVELS}
    )
    fast_path: bool = False
    total_seconds: float = 0.0

    def _level(self, level: str) -> LevelReport:
        try:
            return self.levels[level]
        except KeyError:
            raise ValueError(
                f"Valid options for 'level' are {tuple(self.levels)}. Got level={level!r} instead."
            ) from None

    def status(self, level: str) -> str:
        """``"memory"``, ``"disk"``, ``"miss"`` or ``"bypassed"``."""
        return self._level(level).status

    def seconds(self, level: str) -> float:
        return self._level(level).seconds

    def reason(self, level: str) -> str:
        return self._level(level).reason

    def key(self, level: str) -> str:
        return self._level(level).key

    def statuses(self) -> dict[str, str]:
        """``{level: status}``, e.g. for asserting a whole row of the pipeline table."""
        return {name: lvl.status for name, lvl in self.levels.items()}

    def as_dict(self) -> dict[str, Any]:
        """A flat dict (one column per level field): a row of a results table."""
        row: dict[str, Any] = {
            "function": self.function,
            "fast_path": self.fast_path,
            "total_seconds": self.total_seconds,
        }
        for name, lvl in self.levels.items():
            for field in ("status", "seconds", "key", "reason", "note"):
                row[f"{name}_{field}"] = getattr(lvl, field)
        return row

    def __str__(self) -> str:
        head = f"StageReport for {self.function}" + (" (fast path)" if self.fast_path else "")
        rows = [f"{'level':<8} {'status':<9} {'seconds':>9}  reason"]
        for name, lvl in self.levels.items():
            text = lvl.reason + (f" [{lvl.note}]" if lvl.note else "")
            rows.append(f"{name:<8} {lvl.status:<9} {lvl.seconds:>9.4f}  {text}")
        rows.append(f"{'total':<8} {'':<9} {self.total_seconds:>9.4f}")
        return "\n".join([head, *rows])

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v.status}" for k, v in self.levels.items())
        return f"StageReport({self.function!r}: {inner}, {self.total_seconds:.4f}s)"

    def _repr_html_(self) -> str:
        colours = {"memory": "#2e7d32", "disk": "#1565c0", "miss": "#c62828", "bypassed": "#757575"}
        rows = []
        for name, lvl in self.levels.items():
            colour = colours.get(lvl.status, "black")
            note = f"<br><i>{html.escape(lvl.note)}</i>" if lvl.note else ""
            rows.append(
                f"<tr><td>{name}</td><td style='color:{colour};font-weight:bold'>{lvl.status}"
                f"</td><td style='text-align:right'>{lvl.seconds:.4f}</td>"
                f"<td><code>{lvl.key[:12]}</code></td>"
                f"<td>{html.escape(lvl.reason)}{note}</td></tr>"
            )
        title = html.escape(self.function) + (" (fast path)" if self.fast_path else "")
        return (
            f"<table><caption>StageReport: {title}, {self.total_seconds:.4f} s</caption>"
            "<tr><th>level</th><th>status</th><th>seconds</th><th>key</th><th>reason</th></tr>"
            + "".join(rows)
            + "</table>"
        )
