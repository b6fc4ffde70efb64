"""Cache keys built from named components, so every miss can say what changed.

A level's *chain key* hashes the previous level's chain key with this level's
config; its *content key* hashes the previous level's artifact with the same
config (DESIGN.md, "Cache keys"). Both are 32 hex digits: the form joblib's
store expects for an item directory, and short enough to print.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping

__all__ = ["KeyComponents", "chain_key", "content_key", "digest", "explain_change"]


def digest(*parts: bytes | str) -> str:
    """32 hex digits of BLAKE2b over ``parts``, each length-prefixed."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class KeyComponents:
    """The named, readable components of one level's config.

    Attributes:
      level: ``"trace"``, ``"lower"`` or ``"compile"``.
      values: component name -> a readable string (a long value is digested
        by the caller: readable enough to compare, never the weights).
    """

    level: str
    values: Mapping[str, str]

    def digest(self) -> str:
        """A digest of every (name, value) pair, in name order."""
        return digest(self.level, *(f"{k}={v}" for k, v in sorted(self.values.items())))

    def as_dict(self) -> dict[str, str]:
        return dict(self.values)


def chain_key(previous_chain_key: str, config: KeyComponents) -> str:
    """hash(previous level's chain key, this level's config)."""
    return digest("chain", config.level, previous_chain_key, config.digest())


def content_key(previous_artifact_digest: str, config: KeyComponents) -> str:
    """hash(previous level's artifact, this level's config)."""
    return digest("content", config.level, previous_artifact_digest, config.digest())


def explain_change(old: Mapping[str, str] | None, new: Mapping[str, str]) -> str:
    """Which named components differ between ``old`` and ``new``, readably.

    Returns a sentence like ``"compiler_options changed: '{}' -> '{...}'"``.
    """
    if old is None:
        return "no earlier entry for this function at this level"
    names = [n for n in sorted(set(old) | set(new)) if old.get(n) != new.get(n)]
    if not names:
        return "same components as the last entry, which is no longer in the store"
    # "function", "function f.<closure net>", "function f.<closure net>.state['w']":
    # the most specific names say what changed; those containing them follow from it.
    specific = [n for n in names if not any(o != n and _contains(n, o) for o in names)]
    changed = []
    for name in specific[:_MAX_LISTED]:
        a, b = _difference(old.get(name), new.get(name))
        changed.append(f"{name} changed: {a} -> {b}")
    if len(specific) > _MAX_LISTED:
        changed.append(f"and {len(specific) - _MAX_LISTED} more components")
    return "; ".join(changed)


_MAX_LISTED = 8


def _contains(outer: str, inner: str) -> bool:
    """Whether component ``inner`` is a part of component ``outer`` (by its name)."""
    return inner.startswith(outer) and inner[len(outer)] in " .["


def _difference(before: str | None, after: str | None, context: int = 12) -> tuple[str, str]:
    """The two values around where they first differ, elided on both sides."""
    if before is None or after is None:
        return _short(before), _short(after)
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while (
        end < min(len(before), len(after)) - start
        and before[len(before) - 1 - end] == after[len(after) - 1 - end]
    ):
        end += 1
    lo = max(start - context, 0)

    def cut(text: str) -> str:
        hi = min(len(text) - end + context, len(text))
        middle = text[lo:hi]
        return _short(("..." if lo else "") + middle + ("..." if hi < len(text) else ""))

    return cut(before), cut(after)


def _short(value: str | None, limit: int = 60) -> str:
    if value is None:
        return "(absent)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "...'"
