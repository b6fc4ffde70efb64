"""Scenarios: each pipeline change of the cache table, as an object an ablation runs.

A :class:`Scenario` prepares the store and the code (``setup``: calls made
first, each in its own fresh process, on the cell's empty store) and names the
call that is measured next, in another fresh process (``measured``). The
code-edit scenarios edit the model's module on disk between the two (see
:data:`~mlcache_lab.experiments.calls.BODIES`).

Each change scenario also says which stored artifacts stay valid after the
change, by chain key (the full config is unchanged up to that level) and by
content (the previous level's artifact and this level's config are
unchanged). :meth:`ChangeScenario.expected` derives from those the statuses
every cache-level setting must give, by the rules of
:mod:`mlcache_lab.stages.cached_function`: the deepest level found by chain key
bypasses those before it, but only levels whose predecessors are all cached
are looked up by chain key; every later level is found by content or runs.
The fresh-process tests check each run against it, and ``compile_only``
against JAX's own persistent cache.

Register your own with :func:`register_scenario` (a subclass instance, or the
class itself when it takes no arguments).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from ..cache.store import LEVELS
from .calls import Call
from .changes import CHANGES, Change
from .levels import CACHE_LEVELS, JAX_PERSISTENT

__all__ = [
    "SCENARIOS",
    "ChangeScenario",
    "Scenario",
    "ServingTrace",
    "available_scenarios",
    "get_scenario",
    "register_scenario",
]

# The levels a cached_jit call goes through, in order: those the behaviour table names (the
# store may hold more, e.g. the partitioned path's, which such a call never consults).
CALL_LEVELS = tuple(lvl for lvl in LEVELS if lvl in CHANGES[0].expected)


class Scenario:
    """A pipeline change measured in a fresh process; subclass it for your own.

    Attributes:
      name: the registry name (a column of the results table).
      description: one line for tables and plots.
      factors: names of the grid factors this scenario reads, with default values
        (e.g. ``{"policy": ("chunk",), "micro_batch": (16,)}``).
    """

    name: str = ""
    description: str = ""
    factors: Mapping[str, tuple[Any, ...]] = {}

    def setup(self, base: Call, factors: Mapping[str, Any]) -> list[Call]:
        """The calls that prepare the store, each in a fresh process, in order."""
        return [base]

    def measured(self, base: Call, factors: Mapping[str, Any]) -> Call:
        """The call that is measured, in a fresh process after the setup."""
        return base

    def supports(self, cache_levels: str) -> bool:
        """Whether this scenario can run under a cache-level setting (grids skip the others)."""
        return True

    def expected(self, cache_levels: str) -> dict[str, str] | None:
        """The statuses the measured call must give, or None when not known."""
        return None

    def params(self) -> dict[str, Any]:
        """What identifies this scenario's runs besides its name (part of the memo key)."""
        return {
            k: v
            for k, v in vars(self).items()
            if not k.startswith("_") and isinstance(v, str | int | float | bool | tuple)
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


@dataclasses.dataclass(frozen=True)
class Validity:
    """Which stored artifacts a change leaves usable: by chain key and by content."""

    chain: frozenset[str]
    content: frozenset[str]


def _validity(chain: str = "", content: str = "") -> Validity:
    return Validity(frozenset(chain.split()), frozenset(content.split()))


class ChangeScenario(Scenario):
    """The base call in one fresh process, then the changed call in another.

    Args:
      name, description: as in :class:`Scenario`.
      change: a row of :data:`~mlcache_lab.experiments.changes.CHANGES` (``None``: no change).
      validity: what stays valid after the change (``None``: a cold store).
      jax_supported: whether ``jax.jit`` can run the changed call (``jax_persistent``).
    """

    def __init__(
        self,
        name: str,
        description: str,
        change: Change | None,
        validity: Validity | None,
        *,
        jax_supported: bool = True,
    ) -> None:
        self.name, self.description = name, description
        self._change, self._validity = change, validity
        self.jax_supported = jax_supported

    def setup(self, base: Call, factors: Mapping[str, Any]) -> list[Call]:
        if self._validity is None:
            return []
        return [self._base(base)]

    def measured(self, base: Call, factors: Mapping[str, Any]) -> Call:
        base = self._base(base)
        if self._change is None:
            return base
        return base.replace(spec=self._change.apply(base.spec))

    def _base(self, base: Call) -> Call:
        return base if self._change is None else base.replace(spec=self._change.base(base.spec))

    def supports(self, cache_levels: str) -> bool:
        return self.jax_supported or cache_levels != JAX_PERSISTENT

    def expected(self, cache_levels: str) -> dict[str, str] | None:
        setting = "compile_only" if cache_levels == JAX_PERSISTENT else cache_levels
        on = CACHE_LEVELS[setting]
        valid = self._validity or _validity()
        chained = 0
        while chained < len(CALL_LEVELS) and CALL_LEVELS[chained] in on:
            chained += 1
        statuses = dict.fromkeys(CALL_LEVELS, "miss")
        first = 0
        for i in reversed(range(chained)):
            if CALL_LEVELS[i] in valid.chain:
                statuses.update(dict.fromkeys(CALL_LEVELS[:i], "bypassed"))
                statuses[CALL_LEVELS[i]] = "disk"
                first = i + 1
                break
        for level in CALL_LEVELS[first:]:
            if level in on and level in valid.content:
                statuses[level] = "disk"
        return statuses


def _change(name: str) -> Change:
    return next(c for c in CHANGES if c.name == name)


class ServingTrace(Scenario):
    """The scheduling benchmark's serving trace through ``batched_jit``, in a fresh process.

    Batch sizes are drawn log-uniformly (:func:`~mlcache_lab.bench.serving_trace.serving_trace`);
    ``policy`` and ``micro_batch`` are grid factors. With ``warm=True`` a first
    process serves another trace (seed + 1) on the same store, so the measured
    process shows what the cache levels keep across processes.
    """

    factors: Mapping[str, tuple[Any, ...]] = {"policy": ("chunk",), "micro_batch": (16,)}

    def __init__(
        self,
        name: str = "serving_trace",
        *,
        calls: int = 16,
        max_batch: int = 64,
        seed: int = 2026,
        warm: bool = False,
    ) -> None:
        self.name = name
        self.description = f"serving trace, {calls} calls up to batch {max_batch}" + (
            " (store warmed by another trace)" if warm else ""
        )
        self.calls, self.max_batch, self.seed, self.warm = calls, max_batch, seed, warm

    def _call(self, base: Call, factors: Mapping[str, Any], seed: int) -> Call:
        from ..bench.serving_trace import serving_trace

        return base.replace(
            program="serving",
            policy=str(factors.get("policy", "chunk")),
            micro_batch=int(factors.get("micro_batch", 16)),
            sizes=tuple(serving_trace(self.calls, self.max_batch, seed)),
        )

    def setup(self, base: Call, factors: Mapping[str, Any]) -> list[Call]:
        return [self._call(base, factors, self.seed + 1)] if self.warm else []

    def measured(self, base: Call, factors: Mapping[str, Any]) -> Call:
        return self._call(base, factors, self.seed)

    def supports(self, cache_levels: str) -> bool:
        return cache_levels != JAX_PERSISTENT


SCENARIOS: dict[str, Scenario] = {}

S = TypeVar("S", bound="Scenario | type[Scenario]")


def register_scenario(scenario: S) -> S:
    """Register a :class:`Scenario` (instance, or a class taking no arguments) by its name.

    Usable as a class decorator. A name already taken is replaced.
    """
    obj = scenario() if isinstance(scenario, type) else scenario
    if not isinstance(obj, Scenario):
        raise TypeError(
            f"register_scenario expects a Scenario subclass or instance. Got {scenario!r}; "
            "subclass mlcache_lab.experiments.Scenario."
        )
    if not obj.name or not isinstance(obj.name, str):
        raise ValueError(f"a scenario needs a non-empty 'name'. Got name={obj.name!r}.")
    SCENARIOS[obj.name] = obj
    return scenario


def available_scenarios() -> list[str]:
    return list(SCENARIOS)


def get_scenario(scenario: str | Scenario) -> Scenario:
    """A registered scenario by name (a Scenario passes through)."""
    if isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS[scenario]
    except (KeyError, TypeError):
        raise ValueError(
            f"Valid options for 'scenarios' are {available_scenarios()}. Got {scenario!r} "
            "instead; add your own with ex.register_scenario(MyScenario())."
        ) from None


for _scenario in (
    ChangeScenario("cold", "cold start (empty store)", None, None),
    ChangeScenario(
        "warm_process",
        "nothing changed (new process, warm store)",
        None,
        _validity("trace lower compile", "lower compile"),
    ),
    ChangeScenario(
        "compiler_option",
        "compiler option",
        _change("compiler_option"),
        _validity("trace lower", "lower"),
    ),
    ChangeScenario(
        "lowering_option",
        "lowering option (donate_argnums)",
        _change("donate_argnums"),
        _validity("trace"),
    ),
    ChangeScenario(
        "lowering_platforms",
        "lowering option (lowering_platforms)",
        _change("lowering_platforms"),
        _validity("trace"),
        jax_supported=False,  # jax.jit cannot compile a lowering for two platforms
    ),
    ChangeScenario(
        "code_edit_same_jaxpr",
        "code edit, same jaxpr",
        _change("code_edit_same_jaxpr"),
        _validity("", "lower compile"),
    ),
    ChangeScenario("code_edit", "code edit, new jaxpr", _change("code_edit"), _validity()),
    ChangeScenario(
        "new_batch_size",
        "new batch size (no batch_axes)",
        _change("new_batch_size"),
        _validity(),
    ),
    ChangeScenario(
        "new_batch_size_batch_axes",
        "new batch size, batch_axes given",
        _change("new_batch_size_batch_axes"),
        _validity("trace lower", "lower"),
    ),
    ServingTrace(),
    ServingTrace("serving_trace_warm", warm=True),
):
    register_scenario(_scenario)
