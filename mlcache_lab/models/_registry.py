"""A small registry of built-in models: name -> factory returning a :class:`Model`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

__all__ = ["Model", "available_models", "get_model", "register_model"]


@dataclasses.dataclass(frozen=True)
class Model:
    """A built-in model: a pure function plus how to make its parameters and inputs.

    Attributes:
      name: registry name, e.g. ``"transformer"``.
      apply: ``apply(params, *inputs) -> outputs``, a pure JAX function.
      init: ``init(key) -> params``.
      make_inputs: ``make_inputs(batch_size, key) -> tuple of inputs`` (without params).
      batch_axes: ``jax.vmap``-style ``in_axes`` for ``(params, *inputs)``.
      config: the keyword arguments the factory was called with.
    """

    name: str
    apply: Callable[..., Any]
    init: Callable[[jax.Array], Any]
    make_inputs: Callable[[int, jax.Array], tuple[Any, ...]]
    batch_axes: tuple[Any, ...]
    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def example_args(self, batch_size: int, seed: int = 0) -> tuple[Any, ...]:
        """``(params, *inputs)`` for ``batch_size`` samples, deterministic in ``seed``."""
        k_params, k_inputs = jax.random.split(jax.random.key(seed))
        return (self.init(k_params), *self.make_inputs(batch_size, k_inputs))


_FACTORIES: dict[str, Callable[..., Model]] = {}


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator registering ``factory(**config) -> Model`` under ``name``."""

    def decorate(factory: Callable[..., Model]) -> Callable[..., Model]:
        _FACTORIES[name] = factory
        return factory

    return decorate


def available_models() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_FACTORIES)


def get_model(name: str, **config: Any) -> Model:
    """Build the built-in model ``name`` with keyword ``config`` overriding its defaults.

    Raises:
      ValueError: ``name`` is not a registered model.
    """
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"Valid options for 'name' are {available_models()}. Got name={name!r} instead."
        ) from None
    return factory(**config)
