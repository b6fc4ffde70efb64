"""How a policy cuts a batch of B samples into the chunks batched clusters run on.

* ``whole``: one chunk of B (the monolithic baseline: a compilation per new B).
* ``chunk``: chunks of ``micro_batch``; the last one is padded up to
  ``micro_batch`` (so one executable serves every B).
* ``buckets``: B written as a sum of bucket sizes (default: powers of two up
  to ``max_bucket``), largest first, no padding; a new B reuses the buckets
  already compiled.
* ``devices``: chunks of ``micro_batch`` as for ``chunk``, spread round-robin
  over the devices and dispatched asynchronously.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["POLICIES", "Chunk", "default_buckets", "split_batch", "validate"]

POLICIES = ("whole", "chunk", "buckets", "devices")


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Samples ``[start, start + size)`` run as one call of ``run_size`` rows.

    ``run_size - size`` rows are padding (copies of the chunk's last sample),
    dropped from the outputs.
    """

    start: int
    size: int
    run_size: int

    @property
    def padding(self) -> int:
        return self.run_size - self.size


def validate(batch_size: object, policy: object, micro_batch: object, bucket_sizes: object) -> None:
    """Raise a clear error for a bad schedule argument."""
    if policy not in POLICIES:
        raise ValueError(
            f"Valid options for 'policy' are {POLICIES}. Got policy={policy!r} instead."
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(
            f"'batch_size' must be a positive int. Got batch_size={batch_size!r}; pass the "
            "number of samples along the batch axis."
        )
    if not isinstance(micro_batch, int) or isinstance(micro_batch, bool) or micro_batch < 1:
        raise ValueError(
            f"'micro_batch' must be an int >= 1. Got micro_batch={micro_batch!r}; e.g. "
            "micro_batch=16."
        )
    if bucket_sizes is not None:
        sizes = list(bucket_sizes) if isinstance(bucket_sizes, Sequence) else None
        if not sizes or any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in sizes):
            raise ValueError(
                f"'bucket_sizes' must be a non-empty sequence of positive ints. Got "
                f"bucket_sizes={bucket_sizes!r}; e.g. bucket_sizes=(1, 2, 4, 8, 16, 32)."
            )


def default_buckets(max_bucket: int) -> tuple[int, ...]:
    """Powers of two up to ``max_bucket``: ``(1, 2, 4, ..., 2**k <= max_bucket)``."""
    sizes, s = [], 1
    while s <= max_bucket:
        sizes.append(s)
        s *= 2
    return tuple(sizes)


def split_batch(
    batch_size: int,
    policy: str,
    micro_batch: int = 16,
    bucket_sizes: Sequence[int] | None = None,
) -> list[Chunk]:
    """The chunks batched clusters run on for ``batch_size`` samples under ``policy``.

    Raises:
      ValueError: a bad argument, or bucket sizes that cannot add up to ``batch_size``.
    """
    validate(batch_size, policy, micro_batch, bucket_sizes)
    if policy == "whole":
        return [Chunk(0, batch_size, batch_size)]
    if policy in ("chunk", "devices"):
        chunks = []
        for start in range(0, batch_size, micro_batch):
            size = min(micro_batch, batch_size - start)
            chunks.append(Chunk(start, size, micro_batch))
        return chunks
    sizes = _decompose(batch_size, tuple(bucket_sizes or default_buckets(micro_batch)))
    chunks, start = [], 0
    for size in sizes:
        chunks.append(Chunk(start, size, size))
        start += size
    return chunks


def _decompose(total: int, buckets: tuple[int, ...]) -> list[int]:
    """``total`` as a sum of as few bucket sizes as possible, largest first."""
    options = sorted(set(buckets), reverse=True)
    if all(b & (b - 1) == 0 for b in options) and 1 in options:
        out, left = [], total  # powers of two: greedy is optimal
        for b in options:
            while left >= b:
                out.append(b)
                left -= b
        return out
    best: list[list[int] | None] = [[]] + [None] * total  # fewest coins, any set
    for n in range(1, total + 1):
        for b in options:
            prev = best[n - b] if b <= n else None
            if prev is not None and (best[n] is None or len(prev) + 1 < len(best[n] or [])):
                best[n] = [*prev, b]
    found = best[total]
    if found is None:
        raise ValueError(
            f"bucket_sizes={tuple(buckets)!r} cannot add up to batch_size={total}. Fix: "
            "include 1 among the bucket sizes, or use policy='chunk' (pads the last chunk)."
        )
    return sorted(found, reverse=True)
