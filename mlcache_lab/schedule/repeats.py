"""Repeated blocks: a run of identical layers cut into pieces that share one program.

A model whose layers are a Python loop (not ``lax.scan``) unrolls into its
jaxpr: 48 transformer blocks are 48 copies of one sequence of equations, each
reading its own weights. Fused into one split segment they make one large
program per chunk size, slow to compile, to load, and to start (XLA's first
execution of a large executable costs more than the same work split into
small ones). :func:`find_blocks` finds the longest run of equations that
repeats back to back (the same primitives, parameters and shapes, block after
block), and where to cut it so that the fewest values cross the cuts. The
segment becomes a prefix, ``K`` blocks and a suffix
(:func:`mlcache_lab.schedule.segments.build_segments`); blocks whose
programs are the same text share one program, so one executable per chunk or
bucket size serves all of them: compiling, loading and the first executions
cost one block's, not ``K``'s.

A block must hold at least :data:`MIN_BLOCK_EQUATIONS` equations (a short
repeat, such as a chain of element-wise ops, is cheaper fused) and the
repeats at least half of the segment's equations.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend.core import Literal

__all__ = ["MIN_BLOCK_EQUATIONS", "Blocks", "find_blocks"]

MIN_BLOCK_EQUATIONS = 24
"""The fewest equations a repeated block may hold."""

MIN_COVERAGE = 0.5
"""The least share of a segment's equations the repeated blocks must cover."""


@dataclasses.dataclass(frozen=True)
class Blocks:
    """Where a sequence of equations repeats: ``count`` blocks of ``length`` from ``start``.

    The pieces are ``[0, start)`` (the prefix, maybe empty), the blocks
    ``[start + k * length, start + (k + 1) * length)``, then the suffix.
    """

    start: int
    length: int
    count: int

    @property
    def cuts(self) -> list[int]:
        """The piece boundaries inside the sequence: each block's start, and the last one's end."""
        return [self.start + k * self.length for k in range(self.count + 1)]

    def pieces(self, n: int) -> list[range]:
        """The equation ranges of the prefix, each block and the suffix (empty ones left out)."""
        bounds = [0, *self.cuts, n]
        return [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _param_text(value: Any, memo: dict[int, str]) -> str:
    """A parameter as text; inner jaxprs (control flow) printed once per object."""
    if hasattr(value, "eqns") or hasattr(value, "jaxpr"):
        key = id(value)
        if key not in memo:
            memo[key] = str(value)
        return memo[key]
    if isinstance(value, tuple | list):
        return "(" + ",".join(_param_text(v, memo) for v in value) + ")"
    return repr(value)


def _signature(eqn: Any, memo: dict[int, str]) -> str:
    """What two equations must share to be the same step of two blocks."""
    params = ";".join(f"{k}={_param_text(v, memo)}" for k, v in sorted(eqn.params.items()))
    reads = ",".join(
        f"lit:{v.val!r}:{v.aval}" if isinstance(v, Literal) else str(v.aval) for v in eqn.invars
    )
    made = ",".join(str(v.aval) for v in eqn.outvars)
    return f"{eqn.primitive.name}[{params}]({reads})->{made}"


def _longest_repeat(codes: np.ndarray, min_length: int) -> tuple[int, int, int] | None:
    """``(start, length, span)`` of the tandem repeat covering most equations, or None.

    For each block length ``p``, the longest stretch where ``codes[i] ==
    codes[i + p]`` holds; a stretch of ``r`` positions spans ``r + p``
    equations (the span), ``(r + p) // p`` whole blocks. Ties go to the
    shorter block (48 layers, not 24 pairs of layers). A block that itself
    repeats with a period under ``min_length`` is no block: it is a short
    repeat, ``p`` only one of its multiples.
    """
    n = len(codes)
    best: tuple[int, int, int] | None = None
    best_cover = 0
    for p in range(min_length, n // 2 + 1):
        if n - n % p <= best_cover:  # no longer block can cover more
            continue
        same = np.concatenate(([0], (codes[:-p] == codes[p:]).astype(np.int8), [0]))
        edges = np.diff(same)
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        if not len(starts):
            continue
        lengths = ends - starts
        k = int(np.argmax(lengths))
        count = (int(lengths[k]) + p) // p
        if count < 2 or count * p <= best_cover:
            continue
        block = codes[starts[k] : starts[k] + p]
        if any(np.array_equal(block[:-q], block[q:]) for q in range(1, min_length)):
            continue  # a multiple of a short repeat (a chain of element-wise ops)
        best, best_cover = (int(starts[k]), p, int(lengths[k]) + p), count * p
    return best


def _crossings(eqns: Sequence[Any], read_outside: set[Any]) -> np.ndarray:
    """Per cut position ``c`` (0..n), how many values made before ``c`` are read at or after it."""
    n = len(eqns)
    made_at: dict[Any, int] = {}
    last_read: dict[Any, int] = {}
    for i, e in enumerate(eqns):
        for v in e.invars:
            if not isinstance(v, Literal) and v in made_at:
                last_read[v] = i
        for v in e.outvars:
            made_at[v] = i
    delta = np.zeros(n + 2, np.int64)
    for v, i in made_at.items():
        end = n if v in read_outside else last_read.get(v)
        if end is not None and end > i:  # live across cuts i+1 .. end
            delta[i + 1] += 1
            delta[end + 1] -= 1
    return np.cumsum(delta)[: n + 1]


def find_blocks(
    eqns: Sequence[Any], read_outside: set[Any], min_length: int = MIN_BLOCK_EQUATIONS
) -> Blocks | None:
    """The repeated blocks of ``eqns`` (a split segment's, in order), or None.

    Args:
      eqns: the equations, in a topological order (the graph's).
      read_outside: values made here and read after them (or returned).
      min_length: the fewest equations a block may hold.

    Returns:
      The blocks of the longest tandem repeat (at least two blocks of at least
      ``min_length`` equations, covering at least :data:`MIN_COVERAGE` of
      ``eqns``), cut where the fewest values cross; None when there is none.
    """
    n = len(eqns)
    if n < 2 * min_length:
        return None
    memo: dict[int, str] = {}
    index: dict[str, int] = {}
    codes = np.array([index.setdefault(_signature(e, memo), len(index)) for e in eqns], np.int64)
    found = _longest_repeat(codes, min_length)
    if found is None:
        return None
    start, p, span = found
    live = _crossings(eqns, read_outside)
    best: tuple[tuple[int, int, int], Blocks] | None = None
    for phase in range(start, start + p):  # where the first block starts
        count = (start + span - phase) // p
        if count < 2 or count * p < MIN_COVERAGE * n:
            continue
        blocks = Blocks(phase, p, count)
        worst = int(max(live[c] for c in blocks.cuts))
        score = (worst, -count, phase)
        if best is None or score < best[0]:
            best = (score, blocks)
    return None if best is None else best[1]
