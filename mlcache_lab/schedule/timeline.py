"""Timeline: what a plan run executed where and when, and the compilations it caused."""

from __future__ import annotations

import dataclasses
import html
from typing import Any

__all__ = ["Compilation", "Execution", "Timeline"]


@dataclasses.dataclass(frozen=True)
class Compilation:
    """A call that was not a fast-path hit: what each cache level did.

    Attributes:
      segment: the segment index; ``clusters`` its cluster ids.
      device: device id, or None for the default device.
      run_size: the rows the executable was built for.
      statuses: ``{level: "memory"|"disk"|"miss"|"bypassed"}``.
      seconds: time to get the executable (lookups, loads, regeneration).
    """

    segment: int
    clusters: tuple[int, ...]
    device: int | None
    run_size: int
    statuses: dict[str, str]
    seconds: float

    @property
    def compiled(self) -> bool:
        """True when XLA compiled (the compile level missed)."""
        return self.statuses.get("compile") == "miss"


@dataclasses.dataclass(frozen=True)
class Execution:
    """One compiled call of a segment.

    Attributes:
      segment, clusters, mode: which segment ran (``split``/``whole``/``once``),
        or ``combine``: a round's partials combined across chunks.
      chunk: chunk index within the segment's run (0 for non-split segments).
      start_row, size: the samples ``[start_row, start_row + size)`` it computed.
      run_size: rows actually run (``run_size - size`` are padding).
      device: device id (None: default device).
      start, end: seconds since the run began (``end``: results ready).
      compilation: the :class:`Compilation` this call caused, if any.
      round: for a round's chunks and combine, the round's number (else None).
    """

    segment: int
    clusters: tuple[int, ...]
    mode: str
    chunk: int
    start_row: int
    size: int
    run_size: int
    device: int | None
    start: float
    end: float
    compilation: Compilation | None = None
    round: int | None = None


@dataclasses.dataclass
class Timeline:
    """Every execution of one :meth:`Plan.run`, in dispatch order."""

    executions: list[Execution] = dataclasses.field(default_factory=list)
    total_seconds: float = 0.0

    @property
    def compilations(self) -> list[Compilation]:
        return [e.compilation for e in self.executions if e.compilation is not None]

    def compile_count(self) -> int:
        """How many executables XLA had to compile during the run."""
        return sum(c.compiled for c in self.compilations)

    def rounds(self) -> int:
        """How many rounds (chunks of a segment with reductions, then a combine) ran."""
        return len({e.round for e in self.executions if e.round is not None})

    def rows(self) -> list[dict[str, Any]]:
        """One dict per execution (for a table or a CSV)."""
        out = []
        for e in self.executions:
            row = {k: v for k, v in dataclasses.asdict(e).items() if k not in ("compilation",)}
            row["clusters"] = "+".join(map(str, e.clusters))
            c = e.compilation
            row["compile_statuses"] = "/".join(c.statuses.values()) if c else ""
            row["compile_seconds"] = c.seconds if c else 0.0
            out.append(row)
        return out

    def __repr__(self) -> str:
        rounds = self.rounds()
        return (
            f"Timeline({len(self.executions)} executions, {self.compile_count()} compilations, "
            + (f"{rounds} round{'s' * (rounds != 1)}, " if rounds else "")
            + f"{self.total_seconds:.4f} s)"
        )

    def __str__(self) -> str:
        lines = [repr(self)]
        for e in self.executions:
            dev = "-" if e.device is None else str(e.device)
            pad = f" (+{e.run_size - e.size} pad)" if e.run_size != e.size else ""
            comp = ""
            if e.compilation is not None:
                comp = "  compiled: " + "/".join(e.compilation.statuses.values())
            if e.round is not None:
                comp += f"  round {e.round}"
            lines.append(
                f"  seg {e.segment} [{'+'.join(map(str, e.clusters))}] {e.mode:<7} "
                f"rows {e.start_row}:{e.start_row + e.size}{pad} dev {dev} "
                f"{e.start * 1e3:8.2f}-{e.end * 1e3:8.2f} ms{comp}"
            )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = (
            "<tr><th>segment</th><th>clusters</th><th>mode</th><th>rows</th><th>padding</th>"
            "<th>device</th><th>start ms</th><th>end ms</th><th>cache levels</th></tr>"
        )
        body = []
        for e in self.executions:
            comp = "/".join(e.compilation.statuses.values()) if e.compilation else "hit"
            body.append(
                f"<tr><td>{e.segment}</td><td>{'+'.join(map(str, e.clusters))}</td>"
                f"<td>{e.mode}</td><td>{e.start_row}:{e.start_row + e.size}</td>"
                f"<td>{e.run_size - e.size}</td><td>{'-' if e.device is None else e.device}</td>"
                f"<td>{e.start * 1e3:.2f}</td><td>{e.end * 1e3:.2f}</td>"
                f"<td>{html.escape(comp)}</td></tr>"
            )
        return f"<table><caption>{html.escape(repr(self))}</caption>{head}{''.join(body)}</table>"
