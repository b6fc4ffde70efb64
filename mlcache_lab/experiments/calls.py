"""One measured call in a fresh Python process: what to run, against which store, how cached.

A :class:`Call` wraps the :class:`~mlcache_lab.stages.changes.CallSpec` of the
cache's behaviour table (model, code version written to a real module on disk,
batch size, options) with what an ablation adds: the cache-level setting, the
program (one ``cached_jit`` call, or a serving trace through ``batched_jit``)
and modules the child imports first (where users register their own models).
:func:`run_call` runs it with ``python -m mlcache_lab.experiments.child`` and
returns what the child printed (see :mod:`mlcache_lab.experiments.child`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..stages.changes import CallSpec, write_model_module
from ..stages.processes import run_json_child
from .levels import check_setting

__all__ = ["PROGRAMS", "Call", "run_call"]

PROGRAMS = ("cached_jit", "serving")
# Variables that would change what a child measures behind the study's back.
_SCRUBBED_ENV = ("PYTHONHASHSEED", "JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE")


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
