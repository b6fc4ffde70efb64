"""Models the schedule is tested on: the zoo and real flax.nnx / equinox layers.

Each case builds ``(fn, params, make_inputs)`` where ``make_inputs(batch, key)``
returns the batched inputs, so the same function runs at any batch size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
from flax import nnx

from mlcache_lab.models import available_models, get_model

Case = tuple[Callable[..., Any], Any, Callable[[int, jax.Array], tuple[Any, ...]]]

SMALL = {"transformer": dict(vocab=32, seq=8, width=16, layers=2, num_heads=2)}


def zoo_case(name: str) -> Case:
    model = get_model(name, **SMALL.get(name, {}))
    return model.apply, model.init(jax.random.key(0)), model.make_inputs


def _nnx(module: nnx.Module, shape: tuple[int, ...], ints: int | None = None) -> Case:
    graphdef, state = nnx.split(module)

    def apply(state: Any, x: jax.Array) -> Any:
        return nnx.merge(graphdef, state)(x)

    def make(batch: int, key: jax.Array) -> tuple[jax.Array]:
        if ints is not None:
            return (jax.random.randint(key, (batch, *shape), 0, ints),)
        return (jax.random.normal(key, (batch, *shape)),)

    return apply, state, make


def nnx_cases() -> dict[str, Callable[[], Case]]:
    def bn(train: bool) -> Case:
        layer = nnx.BatchNorm(3, rngs=nnx.Rngs(0))
        if not train:
            layer.eval()
        return _nnx(layer, (3,))

    return {
        "nnx.Linear": lambda: _nnx(nnx.Linear(3, 5, rngs=nnx.Rngs(0)), (3,)),
        "nnx.Conv": lambda: _nnx(nnx.Conv(2, 4, (3, 3), rngs=nnx.Rngs(0)), (6, 6, 2)),
        "nnx.LayerNorm": lambda: _nnx(nnx.LayerNorm(3, rngs=nnx.Rngs(0)), (3,)),
        "nnx.BatchNorm-train": lambda: bn(True),
        "nnx.BatchNorm-eval": lambda: bn(False),
        "nnx.MultiHeadAttention": lambda: _nnx(
            nnx.MultiHeadAttention(num_heads=2, in_features=4, decode=False, rngs=nnx.Rngs(0)),
            (5, 4),
        ),
        "nnx.Embed": lambda: _nnx(nnx.Embed(10, 4, rngs=nnx.Rngs(0)), (5,), ints=10),
    }


def _eqx(module: Any, call: Callable[..., Any], shape: tuple[int, ...]) -> Case:
    params, static = eqx.partition(module, eqx.is_array)

    def apply(params: Any, x: jax.Array) -> Any:
        return call(eqx.combine(params, static), x)

    def make(batch: int, key: jax.Array) -> tuple[jax.Array]:
        return (jax.random.normal(key, (batch, *shape)),)

    return apply, params, make


def eqx_cases() -> dict[str, Callable[[], Case]]:
    k = jax.random.key(2)
    return {
        "eqx.MLP": lambda: _eqx(eqx.nn.MLP(3, 2, 8, 2, key=k), lambda m, x: jax.vmap(m)(x), (3,)),
        "eqx.Conv2d": lambda: _eqx(
            eqx.nn.Conv2d(2, 4, 3, key=k), lambda m, x: jax.vmap(m)(x), (2, 6, 6)
        ),
        "eqx.MultiheadAttention": lambda: _eqx(
            eqx.nn.MultiheadAttention(2, 4, key=k),
            lambda m, x: jax.vmap(lambda t: m(t, t, t))(x),
            (5, 4),
        ),
    }


def all_cases() -> dict[str, Callable[[], Case]]:
    cases: dict[str, Callable[[], Case]] = {
        f"zoo.{name}": (lambda name=name: zoo_case(name)) for name in available_models()
    }
    return cases | nnx_cases() | eqx_cases()
