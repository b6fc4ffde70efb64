"""The symbolic batch dimension ``B`` and the few facts about dimensions the partition needs.

:func:`~mlcache_lab.partition.partition` traces a function with every batched
argument's batch dimension replaced by one symbolic dimension ``B``
(``jax.export`` shape polymorphism), so a value's batch axis is the axis
whose size *is* ``B``. Dimensions derived from it (``B - 1`` after
``x[1:]``, ``3*B`` after a reshape merging the batch) mention ``B`` without
being it. A graph that falls back to concrete tracing has integer dimensions
only; there, sizes are compared as integers and the batch axis comes from the
analysis alone.

Symbolic dimensions are never converted to ``int`` or ordered (``B < 2`` is
inconclusive): they are only compared for definite equality, as
JAX's own ``definitely_equal`` does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any

from jax import export as jax_export
from jax.extend.core import ClosedJaxpr, Jaxpr

from ..jax_internals import symbolic_scope

__all__ = [
    "BATCH_DIM",
    "batch_dim",
    "eqn_mentions_batch",
    "format_shape",
    "is_batch_dim",
    "is_symbolic",
    "jaxpr_mentions_batch",
    "mentions_batch",
    "pinned_batch_size",
    "same_size",
    "shape_text",
]

BATCH_DIM = "B"
"""Name of the symbolic batch dimension every batched value carries."""


def is_symbolic(d: Any) -> bool:
    """Whether ``d`` is a symbolic dimension (an expression in ``B``), not an int."""
    return jax_export.is_symbolic_dim(d)


@functools.lru_cache(maxsize=16)
def _batch_in(scope: Any) -> Any:
    (b,) = jax_export.symbolic_shape(BATCH_DIM, scope=scope)
    return b


def batch_dim(scope: jax_export.SymbolicScope | None = None) -> Any:
    """The symbolic ``B`` (in ``scope``; a new scope when ``None``)."""
    if scope is None:
        (b,) = jax_export.symbolic_shape(BATCH_DIM)
        return b
    return _batch_in(scope)


def is_batch_dim(d: Any) -> bool:
    """Whether ``d`` is exactly ``B`` (not ``B - 1``, ``3*B``, nor an int)."""
    return type(d) is not int and is_symbolic(d) and _is_batch(d)


@functools.lru_cache(maxsize=4096)
def _is_batch(d: Any) -> bool:
    # Comparing symbolic dimensions subtracts them; a dict lookup finds the same
    # object (JAX passes one ``B`` along most shapes) by identity first.
    return same_size(d, _batch_in(symbolic_scope(d)))


def same_size(a: Any, b: Any) -> bool:
    """Whether two dimensions are definitely equal (never raises, unlike ``<``).

    For symbolic dimensions ``B == B`` holds and ``B == 1`` or ``B == B - 1``
    does not; an int equals only the same int.
    """
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # InconclusiveDimensionOperation: not definitely equal
        return False


def mentions_batch(shape: Sequence[Any]) -> bool:
    """Whether any dimension of ``shape`` is symbolic (depends on ``B``)."""
    return any(is_symbolic(d) for d in shape)


def _params_mention_batch(value: Any) -> bool:
    if is_symbolic(value):
        return True
    if isinstance(value, ClosedJaxpr):
        return jaxpr_mentions_batch(value.jaxpr)
    if isinstance(value, Jaxpr):
        return jaxpr_mentions_batch(value)
    if isinstance(value, tuple | list):
        return any(_params_mention_batch(v) for v in value)
    if isinstance(value, dict):
        return any(_params_mention_batch(v) for v in value.values())
    return False


def _vars(jaxpr: Jaxpr) -> Iterator[Any]:
    yield from jaxpr.constvars
    yield from jaxpr.invars
    for eqn in jaxpr.eqns:
        yield from eqn.outvars


def jaxpr_mentions_batch(jaxpr: Jaxpr) -> bool:
    """Whether the program depends on ``B``: in a shape, or in a parameter.

    Parameters count: ``dim_as_value[dim=B]`` (from ``x.mean(0)``) has a
    scalar output, yet the program needs the batch size to run.
    """
    if any(mentions_batch(getattr(v.aval, "shape", ())) for v in _vars(jaxpr)):
        return True
    return any(_params_mention_batch(e.params) for e in jaxpr.eqns)


def eqn_mentions_batch(eqn: Any) -> bool:
    """Whether one equation depends on ``B``: an operand's or output's shape, or a parameter."""
    atoms = (*eqn.invars, *eqn.outvars)
    if any(mentions_batch(getattr(getattr(v, "aval", None), "shape", ())) for v in atoms):
        return True
    return _params_mention_batch(eqn.params)


def shape_text(shape: Sequence[Any]) -> str:
    """A shape as text, symbolic dimensions included: ``(B, 3, 5)``, ``(3*B,)``."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def pinned_batch_size(jaxpr: Jaxpr) -> str | None:
    """Where a symbolic trace silently assumed one batch size, or ``None``.

    JAX's ``reshape`` does not check that element counts agree, so
    ``x.reshape(4, 15)`` on ``x: f32[B, 3, 5]`` traces, yet holds only for
    ``B = 4``. Other primitives raise while tracing instead. Sub-jaxprs
    (loop bodies, branches) are searched too.
    """
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "reshape":
            old = tuple(getattr(eqn.invars[0].aval, "shape", ()))
            new = tuple(eqn.params["new_sizes"])
            if not same_size(math.prod(old), math.prod(new)):
                return f"reshape {shape_text(old)} -> {shape_text(new)} holds for one batch size"
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = sub.jaxpr if isinstance(sub, ClosedJaxpr) else sub
                if isinstance(inner, Jaxpr):
                    found = pinned_batch_size(inner)
                    if found is not None:
                        return found
    return None


def format_shape(aval: Any, axis: int | None = None) -> str:
    """``f32[B,4]``: dtype and shape, the batch axis shown as ``B``.

    Symbolic dimensions print as themselves (``B``, ``B - 1``); in a concrete
    graph the batch axis ``axis`` prints as ``B`` instead of its size.
    """
    shape = getattr(aval, "shape", ())
    dims = ["B" if k == axis else str(d).replace(" ", "") for k, d in enumerate(shape)]
    short = aval.str_short(short_dtypes=True) if hasattr(aval, "str_short") else "?[]"
    return f"{short.split('[')[0]}[{','.join(dims)}]"
