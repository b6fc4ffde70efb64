"""Grid: models x scenarios x cache levels x factors x repeats, expanded into cells.

A *cell* is one run: its scenario's setup calls and measured call, each in a
fresh process, against the cell's own empty store. Cells are ordered repeat
by repeat (every setting once, then again), so slow drift on the machine hits
every setting alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..models import available_models
from ..models import register_model as _register_builtin
from .calls import Call, CallSpec
from .levels import CACHE_LEVELS, check_setting
from .scenarios import Scenario, get_scenario

__all__ = ["Cell", "Grid", "ModelSpec", "register_model"]

_IMPORTS: dict[str, str] = {}  # model name -> module a fresh process imports to find it


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registered model and the keyword config its factory is called with.

    ``ModelSpec("transformer", layers=2, seq=16)``; a plain name in a grid is
    ``ModelSpec(name)`` (the model's defaults).
    """

    name: str
    config: tuple[tuple[str, Any], ...] = ()

    def __init__(self, name: str, **config: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "config", tuple(sorted(config.items())))

    @property
    def label(self) -> str:
        """``name`` or ``name(k=v, ...)``: the model column of the results table."""
        if not self.config:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v}' for k, v in self.config)})"


def register_model(name: str, factory: Callable[..., Any]) -> None:
    """Register ``factory(**config) -> mlcache_lab.models.Model`` for grids, under ``name``.

    Runs happen in fresh processes, so the factory must live in an importable
    module (not a notebook's ``__main__``): the child imports that module and
    registers it again there.
    """
    module = getattr(factory, "__module__", None)
    if not module or module == "__main__":
        raise ValueError(
            f"the factory for model {name!r} is defined in {module!r}, which a fresh process "
            "cannot import. Move it to a .py file on the path (e.g. my_models.py), import it "
            "from there and register that; its module is imported in every run."
        )
    _register_builtin(name)(factory)
    _IMPORTS[name] = module


def _model(model: str | ModelSpec) -> ModelSpec:
    spec = model if isinstance(model, ModelSpec) else ModelSpec(model)
    if spec.name not in available_models():
        raise ValueError(
            f"Valid options for 'models' are {available_models()}. Got {spec.name!r} instead; "
            "add your own with ex.register_model(name, factory)."
        )
    return spec


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a grid: a scenario, a model, a cache-level setting, factor values, a repeat."""

    scenario: Scenario
    model: ModelSpec
    cache_levels: str
    repeat: int
    factors: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 8
    imports: tuple[str, ...] = ()

    def key(self) -> dict[str, Any]:
        """Plain values identifying the run (the memo key: change one, it runs again)."""
        return {
            "scenario": self.scenario.name,
            "scenario_type": f"{type(self.scenario).__module__}.{type(self.scenario).__name__}",
            "scenario_params": json.dumps(self.scenario.params(), sort_keys=True, default=str),
            "model": self.model.name,
            "config": json.dumps(self.model.config, default=str),
            "cache_levels": self.cache_levels,
            "repeat": self.repeat,
            "factors": json.dumps(self.factors, default=str),
            "batch_size": self.batch_size,
            "imports": list(self.imports),
        }

    @property
    def id(self) -> str:
        """A short stable digest of :meth:`key` (the run's folder name)."""
        text = json.dumps(self.key(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def base_call(self, store: str, workdir: str) -> Call:
        spec = CallSpec(
            store=store,
            workdir=workdir,
            model=self.model.name,
            config=self.model.config,
            batch_size=self.batch_size,
        )
        return Call(spec=spec, cache_levels=self.cache_levels, imports=self.imports)

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.factors)
        return f"{self.scenario.name} {self.model.label} {self.cache_levels}{extra} #{self.repeat}"


@dataclasses.dataclass
class Grid:
    """An ablation study: every combination, ``repeats`` times.

    Args:
      models: registered model names or :class:`ModelSpec` (name + config).
      scenarios: registered scenario names or :class:`Scenario` objects.
      cache_levels: settings from ``"none"``, ``"compile_only"`` (JAX's
        persistent cache's baseline), ``"lower_compile"``, ``"all"``, and
        ``"jax_persistent"`` (``jax.jit`` with JAX's own cache, for comparison).
      repeats: runs per combination (each in fresh processes, on an empty store).
      factors: values of scenario factors, e.g. ``{"policy": ["chunk", "buckets"],
        "micro_batch": [8, 16]}``; a scenario that does not read a factor runs once.
      batch_size: the batch size of every call (new-batch-size scenarios add 5).
      imports: modules every fresh process imports first (your model registrations).
      name: the study's name (its folder and the ``study`` column).
    """

    models: Sequence[str | ModelSpec] = ("mlp",)
    scenarios: Sequence[str | Scenario] = ("cold", "warm_process")
    cache_levels: Sequence[str] = tuple(CACHE_LEVELS)
    repeats: int = 5
    factors: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    batch_size: int = 8
    imports: Sequence[str] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        for arg in ("models", "scenarios", "cache_levels", "imports"):
            value = getattr(self, arg)
            if isinstance(value, str | ModelSpec | Scenario):
                raise TypeError(
                    f"'{arg}' must be a list. Got {arg}={value!r}; write {arg}=[{value!r}]."
                )
        self._models = [_model(m) for m in self.models]
        self._scenarios = [get_scenario(s) for s in self.scenarios]
        self._levels = [check_setting(c) for c in self.cache_levels]
        if not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"'repeats' must be a positive int. Got repeats={self.repeats!r}.")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(
                f"'batch_size' must be a positive int. Got batch_size={self.batch_size!r}."
            )
        known = {f for s in self._scenarios for f in s.factors}
        for factor, values in self.factors.items():
            if factor not in known:
                raise ValueError(
                    f"no scenario of this grid reads the factor {factor!r}; the scenarios' "
                    f"factors are {sorted(known)}. Remove it or add a scenario that reads it "
                    "(e.g. 'serving_trace' reads 'policy' and 'micro_batch')."
                )
            if isinstance(values, str) or not isinstance(values, Sequence) or not values:
                raise TypeError(
                    f"factor {factor!r} needs a non-empty list of values. Got {values!r}; "
                    f"write factors={{{factor!r}: [{values!r}]}}."
                )

    @property
    def study(self) -> str:
        """The study's name: ``name``, or a digest of the grid."""
        if self.name:
            return self.name
        keys = [c.key() for c in self.cells()]
        return "study-" + hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:10]

    def _factor_values(self, scenario: Scenario) -> list[tuple[tuple[str, Any], ...]]:
        names = sorted(scenario.factors)
        values = [list(self.factors.get(n, scenario.factors[n])) for n in names]
        return [tuple(zip(names, combo, strict=True)) for combo in itertools.product(*values)]

    def cells(self) -> list[Cell]:
        """Every run, repeat by repeat; combinations a scenario does not support are skipped."""
        imports = tuple(
            dict.fromkeys(
                [*self.imports, *(_IMPORTS.get(m.name) for m in self._models if m.name in _IMPORTS)]
            )
        )
        out = []
        for repeat in range(self.repeats):
            for scenario in self._scenarios:
                for model in self._models:
                    for factors in self._factor_values(scenario):
                        for level in self._levels:
                            if scenario.supports(level):
                                out.append(
                                    Cell(
                                        scenario,
                                        model,
                                        level,
                                        repeat,
                                        factors,
                                        self.batch_size,
                                        tuple(i for i in imports if i),
                                    )
                                )
        return out

    def __len__(self) -> int:
        return len(self.cells())
