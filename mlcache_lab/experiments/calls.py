"""One measured call in a fresh Python process: what to run, against which store, how cached.

A :class:`CallSpec` is a call of the cache's behaviour table
(:mod:`mlcache_lab.experiments.changes`): model, code version, batch size,
options. The model's code lives in a real module written to disk
(``model_under_test.py`` in ``workdir``, see :func:`write_model_module`), so a
code edit is an edit of a file, as it is for a user. A :class:`Call` wraps a
spec with what an ablation adds: the cache-level setting, the program (one
``cached_jit`` call, or a serving trace through ``batched_jit``) and modules
the child imports first (where users register their own models).
:func:`run_call` runs it with ``python -m mlcache_lab.experiments.child`` and
returns what the child printed (see :mod:`mlcache_lab.experiments.child`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from ..bench.fresh_process import run_json_child
from .levels import check_setting

__all__ = [
    "BODIES",
    "MODULE_NAME",
    "PROGRAMS",
    "Call",
    "CallSpec",
    "run_call",
    "write_model_module",
]

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

PROGRAMS = ("cached_jit", "serving")
# Variables that would change what a child measures behind the study's back.
_SCRUBBED_ENV = ("PYTHONHASHSEED", "JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")


@dataclasses.dataclass(frozen=True)
class CallSpec:
    """One call of ``cached_jit(apply)`` on a built-in model whose code is a module on disk.

    Attributes:
      store: the cache directory.
      workdir: where the model module is written.
      model: a built-in model name; ``config`` its keyword arguments.
      body: a key of :data:`BODIES`: which version of the code runs.
      batch_size: the inputs' batch size.
      batch_axes: ``None`` or the model's batch axes (symbolic batch dimension).
      compiler_options, lowering_platforms, donate_argnums: cached_jit's options.
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

    def replace(self, **changes: Any) -> CallSpec:
        return dataclasses.replace(self, **changes)


def write_model_module(spec: CallSpec) -> Path:
    """Write ``model_under_test.py`` for ``spec`` into its workdir."""
    path = Path(spec.workdir, f"{MODULE_NAME}.py")
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _TEMPLATE.format(model=spec.model, config=dict(spec.config), body=BODIES[spec.body])
    path.write_text(source)
    return path


@dataclasses.dataclass(frozen=True)
class Call:
    """What one fresh process runs.

    Attributes:
      spec: model, code version, batch size and cached_jit options (``spec.store``
        is the cell's own store, ``spec.workdir`` where the model module is written).
      cache_levels: a setting of :data:`~mlcache_lab.experiments.levels.ALL_SETTINGS`.
      program: ``"cached_jit"`` (one call of ``cached_jit(apply)``) or ``"serving"``
        (``batched_jit(apply)`` serving ``sizes`` one after the other).
      policy, micro_batch: the schedule of a serving program.
      sizes: the batch sizes a serving program is called with, in order.
      imports: modules imported before the model is built (user registrations).
      verify: also compare the output with ``jax.jit(apply)`` (``max_abs_diff``).
    """

    spec: CallSpec
    cache_levels: str = "all"
    program: str = "cached_jit"
    policy: str = "chunk"
    micro_batch: int = 16
    sizes: tuple[int, ...] = ()
    imports: tuple[str, ...] = ()
    verify: bool = False

    def __post_init__(self) -> None:
        check_setting(self.cache_levels)
        if self.program not in PROGRAMS:
            raise ValueError(
                f"Valid options for 'program' are {PROGRAMS}. Got program={self.program!r}."
            )
        if self.program == "serving" and not self.sizes:
            raise ValueError("a serving call needs the batch sizes to serve: pass sizes=(...).")

    def replace(self, **changes: Any) -> Call:
        return dataclasses.replace(self, **changes)

    def with_spec(self, **changes: Any) -> Call:
        """This call with fields of its :class:`CallSpec` replaced."""
        return dataclasses.replace(self, spec=self.spec.replace(**changes))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Call:
        data = json.loads(text)
        spec = data.pop("spec")
        spec["config"] = tuple(tuple(kv) for kv in spec["config"])
        spec["compiler_options"] = tuple(tuple(kv) for kv in spec["compiler_options"])
        for name in ("batch_axes", "lowering_platforms"):
            if spec[name] is not None:
                spec[name] = tuple(spec[name])
        spec["donate_argnums"] = tuple(spec["donate_argnums"])
        for name in ("sizes", "imports"):
            data[name] = tuple(data[name])
        return cls(spec=CallSpec(**spec), **data)


def run_call(call: Call, *, timeout: float = 600.0) -> dict[str, Any]:
    """Write the model module, run ``call`` in a new Python process, return its result dict.

    Raises:
      RuntimeError: the child failed; the message ends with its stderr.
    """
    write_model_module(call.spec)
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    return run_json_child(
        "mlcache_lab.experiments.child",
        [call.to_json()],
        what=f"the fresh process for {call.spec.model}/{call.cache_levels}/{call.program}",
        env=env,
        timeout=timeout,
    )
