"""Pipeline changes, each measured in a fresh process: the cache's behaviour table.

A *change* turns a base call (:class:`~mlcache_lab.experiments.calls.CallSpec`:
model, batch size, options, the code of the model's module) into a changed
one; :func:`run_change` runs the base call in one fresh process (warming the
store), then the changed call in another, and returns both results (each with
its :class:`~mlcache_lab.StageReport` as a dict, see
:mod:`mlcache_lab.experiments.child`). :data:`CHANGES` holds the table of
DESIGN.md with the statuses each row must give.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from typing import Any

from ..models import get_model
from .calls import Call, CallSpec, run_call

__all__ = ["CHANGES", "Change", "WarmStores", "run_change"]


@dataclasses.dataclass(frozen=True)
class Change:
    """A row of the behaviour table: how to change a base call, what each level must do."""

    name: str
    description: str
    apply: Callable[[CallSpec], CallSpec]
    expected: dict[str, str]
    base: Callable[[CallSpec], CallSpec] = lambda spec: spec


def _batch(spec: CallSpec) -> tuple[Any, ...]:
    return get_model(spec.model, **dict(spec.config)).batch_axes


CHANGES: tuple[Change, ...] = (
    Change(
        "nothing",
        "nothing (new process, warm store)",
        lambda s: s,
        {"trace": "bypassed", "lower": "bypassed", "compile": "disk"},
    ),
    Change(
        "compiler_option",
        "compiler option",
        lambda s: s.replace(compiler_options=(("xla_backend_optimization_level", 0),)),
        {"trace": "bypassed", "lower": "disk", "compile": "miss"},
    ),
    Change(
        "donate_argnums",
        "lowering option: donate_argnums",
        lambda s: s.replace(donate_argnums=(1,)),
        {"trace": "disk", "lower": "miss", "compile": "miss"},
    ),
    Change(
        "lowering_platforms",
        "lowering option: lowering_platforms",
        lambda s: s.replace(lowering_platforms=("cpu", "cuda")),
        {"trace": "disk", "lower": "miss", "compile": "miss"},
    ),
    Change(
        "code_edit_same_jaxpr",
        "code edit that leaves the jaxpr the same",
        lambda s: s.replace(body="same_jaxpr"),
        {"trace": "miss", "lower": "disk", "compile": "disk"},
    ),
    Change(
        "code_edit",
        "code edit that changes the jaxpr",
        lambda s: s.replace(body="changed_jaxpr"),
        {"trace": "miss", "lower": "miss", "compile": "miss"},
    ),
    Change(
        "new_batch_size_batch_axes",
        "new batch size, batch_axes given",
        lambda s: s.replace(batch_size=s.batch_size + 5),
        {"trace": "bypassed", "lower": "disk", "compile": "miss"},
        base=lambda s: s.replace(batch_axes=_batch(s)),
    ),
    Change(
        "new_batch_size",
        "new batch size, no batch_axes",
        lambda s: s.replace(batch_size=s.batch_size + 5),
        {"trace": "miss", "lower": "miss", "compile": "miss"},
    ),
)


WarmStores = dict[tuple[CallSpec, bool], tuple[str, dict[str, Any]]]
"""Base calls already run, by their spec (store left out) and ``verify``: a snapshot of the
store each warmed, and its result (see :func:`run_change`'s ``warmed``)."""


def run_change(
    change: Change,
    spec: CallSpec,
    *,
    verify: bool = False,
    timeout: float = 300.0,
    warmed: WarmStores | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Warm the store with the base call, then run the changed call; both results.

    Args:
      change: a row of :data:`CHANGES`.
      spec: the base call (its ``store`` starts empty or warm, as the caller wants).
      verify: also run ``jax.jit(apply)`` in each process and report the largest
        difference (``max_abs_diff``).
      timeout: seconds allowed to each fresh process.
      warmed: shared across the rows of a table: a row whose base call was
        already run starts from a copy of the store that call warmed (a
        snapshot taken before any changed call wrote to it) instead of running
        it again, and reports that call's result as its base.
    """
    base = change.base(spec)
    key = (base.replace(store=""), verify)
    if warmed is not None and key in warmed:
        snapshot, base_result = warmed[key]
        shutil.rmtree(base.store, ignore_errors=True)
        shutil.copytree(snapshot, base.store)
    else:
        base_result = run_call(Call(spec=base, verify=verify), timeout=timeout)
        if warmed is not None:
            snapshot = f"{base.store}.warm"
            shutil.rmtree(snapshot, ignore_errors=True)
            shutil.copytree(base.store, snapshot)
            warmed[key] = (snapshot, base_result)
    return base_result, run_call(Call(spec=change.apply(base), verify=verify), timeout=timeout)
