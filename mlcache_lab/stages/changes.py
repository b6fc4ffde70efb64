"""Pipeline changes, each measured in a fresh process: the cache's behaviour table.

A *change* turns a base call (model, batch size, options, the code of the
model's module) into a changed one; :func:`run_change` runs the base call in
one fresh process (warming the store), then the changed call in another, and
returns the second call's :class:`StageReport` as a dict. :data:`CHANGES`
holds the table of DESIGN.md with the statuses each row must give.

The model's code lives in a real module written to disk (``model_under_test.py``
in ``workdir``), so a code edit is an edit of a file, as it is for a user.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .processes import run_json_child

__all__ = ["CHANGES", "CallSpec", "Change", "run_change", "run_fresh", "write_model_module"]

MODULE_NAME = "model_under_test"

# The bodies of ``apply`` in the model module: the base, an edit that leaves
# the jaxpr unchanged (a named intermediate), and one that changes it.
BODIES = {
    "base": "return MODEL.apply(params, x)",
    "same_jaxpr": "out = MODEL.apply(params, x)\n    return out",
    "changed_jaxpr": "return MODEL.apply(params, x) * 0.5",
}

_TEMPLATE = '''\
"""A model module that the pipeline-change scenarios edit on disk."""

from mlcache_lab.models import get_model

MODEL = get_model({model!r}, **{config!r})


def apply(params, x):
    {body}
'''


@dataclasses.dataclass(frozen=True)
class CallSpec:
    """One call of ``cached_jit(apply)`` in a fresh process.

    Attributes:
      store: the cache directory.
      workdir: where the model module is written.
      model: a built-in model name; ``config`` its keyword arguments.
      body: a key of :data:`BODIES`: which version of the code runs.
      batch_size: the inputs' batch size.
      batch_axes: ``None`` or the model's batch axes (symbolic batch dimension).
      compiler_options, lowering_platforms, donate_argnums: cached_jit's options.
      verify: also run ``jax.jit(apply)`` and report the largest difference.
    """

    store: str
    workdir: str
    model: str = "mlp"
    config: tuple[tuple[str, Any], ...] = ()
    body: str = "base"
    batch_size: int = 8
    batch_axes: tuple[Any, ...] | None = None
    compiler_options: tuple[tuple[str, Any], ...] = ()
    lowering_platforms: tuple[str, ...] | None = None
    donate_argnums: tuple[int, ...] = ()
    verify: bool = False

    def replace(self, **changes: Any) -> CallSpec:
        return dataclasses.replace(self, **changes)


def write_model_module(spec: CallSpec) -> Path:
    """Write ``model_under_test.py`` for ``spec`` into its workdir."""
    path = Path(spec.workdir, f"{MODULE_NAME}.py")
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _TEMPLATE.format(model=spec.model, config=dict(spec.config), body=BODIES[spec.body])
    path.write_text(source)
    return path


def run_fresh(spec: CallSpec, *, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``spec`` in a new Python process; its report as a dict (see :func:`_child`)."""
    write_model_module(spec)
    env = dict(os.environ)
    env.pop("PYTHONHASHSEED", None)
    return run_json_child(
        "mlcache_lab.stages.changes",
        [json.dumps(dataclasses.asdict(spec))],
        what="the fresh process",
        env=env,
        timeout=timeout,
    )


@dataclasses.dataclass(frozen=True)
class Change:
    """A row of the behaviour table: how to change a base call, what each level must do."""

    name: str
    description: str
    apply: Callable[[CallSpec], CallSpec]
    expected: dict[str, str]
    base: Callable[[CallSpec], CallSpec] = lambda spec: spec


def _batch(spec: CallSpec) -> tuple[Any, ...]:
    from ..models import get_model

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


def run_change(change: Change, spec: CallSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Warm the store with the base call, then run the changed call; both reports."""
    base = change.base(spec)
    return run_fresh(base), run_fresh(change.apply(base))


def _child(spec_json: str) -> dict[str, Any]:
    import time

    start = time.perf_counter()
    spec = CallSpec(**json.loads(spec_json))
    sys.path.insert(0, spec.workdir)
    import importlib

    import jax
    import numpy as np

    import mlcache_lab as mcl

    module = importlib.import_module(MODULE_NAME)
    model = module.MODEL
    args = model.example_args(spec.batch_size)
    batch_axes = tuple(spec.batch_axes) if spec.batch_axes is not None else None
    f = mcl.cached_jit(
        module.apply,
        store=mcl.CacheStore(spec.store),
        batch_axes=batch_axes,
        compiler_options=dict(spec.compiler_options) or None,
        lowering_platforms=tuple(spec.lowering_platforms) if spec.lowering_platforms else None,
        donate_argnums=tuple(spec.donate_argnums),
    )
    t_call = time.perf_counter()
    ref_args = jax.tree.map(np.asarray, args) if spec.verify else None
    out = jax.block_until_ready(f(*args))
    result: dict[str, Any] = {
        "call_seconds": time.perf_counter() - t_call,
        "process_seconds": time.perf_counter() - start,
        "report": f.last_report.as_dict() if f.last_report else None,
        "batch_size": spec.batch_size,
    }
    if spec.verify:
        assert ref_args is not None
        expected = jax.jit(module.apply)(*ref_args)
        result["max_abs_diff"] = float(np.max(np.abs(np.asarray(out) - np.asarray(expected))))
    return result


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1])))
