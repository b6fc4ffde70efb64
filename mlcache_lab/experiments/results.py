"""Results of a study: a tidy table (one row per run), saved as CSV and loaded back.

The table is a list of flat dicts with a fixed column order; :meth:`Table.to_pandas`
hands it to pandas when that is installed. A saved CSV starts with ``#``
comment lines (the study, how it was run, the command) and reads back with
:func:`load`, values typed again (numbers, booleans, empty = None).
"""

from __future__ import annotations

import csv
import html
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cache.store import LEVELS

__all__ = ["Results", "Table", "load"]


class Table:
    """Rows (dicts) with ordered columns: filter, group, export."""

    def __init__(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
    ) -> None:
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = list(dict.fromkeys(k for r in self.rows for k in r))
        self.columns = list(columns)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]

    def column(self, name: str) -> list[Any]:
        """Every row's value of ``name`` (None where a row has none)."""
        if name not in self.columns:
            raise KeyError(f"no column {name!r}; the columns are {self.columns}")
        return [r.get(name) for r in self.rows]

    def unique(self, name: str) -> list[Any]:
        """The distinct values of ``name``, in order of appearance."""
        return list(dict.fromkeys(self.column(name)))

    def where(self, **equals: Any) -> Table:
        """The rows whose columns equal the given values."""
        for name in equals:
            self.column(name)
        rows = [r for r in self.rows if all(r.get(k) == v for k, v in equals.items())]
        return Table(rows, self.columns)

    def median(self, value: str, by: Sequence[str]) -> dict[tuple[Any, ...], float]:
        """Median of ``value`` per group of ``by`` columns (None values skipped)."""
        groups: dict[tuple[Any, ...], list[float]] = {}
        for r in self.rows:
            v = r.get(value)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            groups.setdefault(tuple(r.get(b) for b in by), []).append(float(v))
        return {k: statistics.median(v) for k, v in groups.items()}

    def to_pandas(self) -> Any:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Table.to_pandas needs pandas: pip install pandas (or use .rows/.column)."
            ) from None
        return pd.DataFrame(self.rows, columns=self.columns)

    def write_csv(self, path: str | Path, comments: Sequence[str] = ()) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            for line in comments:
                fh.write(f"# {line}\n")
            writer = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def __repr__(self) -> str:
        return f"Table({len(self.rows)} rows x {len(self.columns)} columns: {self.columns[:8]}...)"

    def _repr_html_(self, limit: int = 50) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = []
        for r in self.rows[:limit]:
            cells = "".join(f"<td>{html.escape(_text(r.get(c)))}</td>" for c in self.columns)
            body.append(f"<tr>{cells}</tr>")
        more = f"<p>{len(self.rows) - limit} more rows</p>" if len(self.rows) > limit else ""
        return f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


class Results:
    """The rows of a study and how it was run.

    Attributes:
      table: a :class:`Table`, one row per run (scenario, model, cache_levels,
        repeat, factors, per level status/seconds/reason, ``total_seconds``,
        ``as_expected``, the process count and the machine).
      study: the study's name; meta: backend, n_jobs, path, runs resumed, seconds.
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        study: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.table = Table(rows)
        self.study = study
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return len(self.table)

    def save(self, path: str | Path, command: str | None = None) -> Path:
        """Write the table as CSV (``#`` lines first: study, how it ran, the command)."""
        comments = [f"study: {self.study}"]
        if self.meta:
            comments.append(
                "run: " + ", ".join(f"{k}={v}" for k, v in self.meta.items() if k != "path")
            )
        if command:
            comments.append(f"made by: {command}")
        return self.table.write_csv(path, comments)

    def summary(self) -> Table:
        """Median total seconds and status pattern per scenario, model, setting (and factors)."""
        keys = [
            c
            for c in ("scenario", "model", "cache_levels", "policy", "micro_batch")
            if c in self.table.columns
        ]
        medians = self.table.median("total_seconds", keys)
        levels = [lvl for lvl in LEVELS if f"{lvl}_status" in self.table.columns]
        rows = []
        for group, value in medians.items():
            match = self.table.where(**dict(zip(keys, group, strict=True)))
            statuses = [match.unique(f"{lvl}_status") for lvl in levels]
            rows.append(
                {
                    **dict(zip(keys, group, strict=True)),
                    "runs": len(match),
                    # A level some rows lack (jax.jit's rows have three) shows as "-" there.
                    "statuses": "/".join(
                        "|".join("-" if v is None else str(v) for v in s) for s in statuses
                    ),
                    "median_total_seconds": round(value, 5),
                    "all_as_expected": all(v is not False for v in match.column("as_expected"))
                    if "as_expected" in match.columns
                    else None,
                    "any_shares_core": any(match.column("shares_core"))
                    if "shares_core" in match.columns
                    else None,
                }
            )
        return Table(rows)

    def __repr__(self) -> str:
        return f"Results({self.study!r}: {len(self.table)} runs)"

    def _repr_html_(self) -> str:
        return f"<p>Results of <b>{html.escape(self.study)}</b>: {len(self.table)} runs</p>" + (
            self.summary()._repr_html_()
        )


# Columns kept as text even when a value looks like a number.
_TEXT_COLUMNS = frozenset(
    {
        "scenario",
        "model",
        "cache_levels",
        "policy",
        "run_id",
        "host",
        "platform",
        "cpu_model",
        "python",
        "jax",
        "mlcache_lab",
        "started",
        "expected",
    }
    | {f"{lvl}_{f}" for lvl in LEVELS for f in ("status", "reason")}
)


def _parse(value: str, column: str = "") -> Any:
    if column in _TEXT_COLUMNS:
        return value
    if value == "":
        return None
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def load(path: str | Path) -> Results:
    """Read a CSV written by :meth:`Results.save` (or any ``#``-commented CSV of runs)."""
    path = Path(path)
    study = ""
    with path.open(newline="") as fh:
        lines = fh.read().splitlines()
    body = []
    for line in lines:
        if line.startswith("#"):
            if line.startswith("# study: "):
                study = line[len("# study: ") :]
            continue
        body.append(line)
    reader = csv.DictReader(body)
    rows = [{k: _parse(v, k) for k, v in r.items()} for r in reader]
    results = Results(rows, study=study or path.stem)
    results.table.columns = list(reader.fieldnames or results.table.columns)
    return results
