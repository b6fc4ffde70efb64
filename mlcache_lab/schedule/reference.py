"""The executor's reference mode: segment programs evaluated uncompiled, the oracle of the tests.

:meth:`Plan.reference <mlcache_lab.schedule.Plan.reference>` runs a plan the
way :meth:`Plan.run <mlcache_lab.schedule.Plan.run>` does (the same chunks,
the same padding, the same combines and rounds, the same routing of values
between segments) but hands each segment's program to a
:class:`ReferenceFunction` instead of ``cached_jit``: no store, no program-level
compilation. So a test that compares ``plan.run`` with ``plan.reference``
checks the compiled path (stages, cache, executables) against a plain
evaluation of the very same programs, and a test that compares
``plan.reference`` with ``fn`` checks the partition and the schedule's data
routing without XLA compiling any segment.

A segment program of a symbolic graph has the symbolic batch dimension ``B``
in its shapes and parameters, which JAX cannot evaluate eagerly. The reference
first makes it concrete (:func:`concrete_program`: every dimension evaluated
at the run's batch size, nested jaxprs too, ``dim_as_value`` replaced by its
value), then binds its equations one by one, as ``jax.core.eval_jaxpr`` does.
JAX's eager dispatch still compiles each primitive (and a control-flow
primitive's body) on its own, once per shape: what is never compiled is a
segment as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn, Literal, Var, jaxpr_as_fun

from ..jax_internals import evaluate_dim
from ..partition.dims import BATCH_DIM, is_symbolic, jaxpr_mentions_batch

__all__ = ["ReferenceFunction", "concrete_program"]

NO_BATCH_SIZE = (
    "Segment program {name} has the symbolic batch dimension B, and none of its "
    "{count} arguments has a batch axis to read its size from. This is a bug in the "
    "schedule's segments (such a program takes an int8[B] carrier first); please report it."
)


def _size(d: Any, batch_size: int) -> Any:
    """A dimension at ``B = batch_size`` (an int stays as it is)."""
    return int(evaluate_dim(d, {BATCH_DIM: batch_size})) if is_symbolic(d) else d


def _concrete_aval(aval: Any, batch_size: int) -> Any:
    shape = getattr(aval, "shape", None)
    if shape is None or not any(is_symbolic(d) for d in shape):
        return aval
    return aval.update(shape=tuple(_size(d, batch_size) for d in shape))


def _concrete_param(value: Any, batch_size: int) -> Any:
    """A parameter with its dimensions at ``batch_size``; nested jaxprs made concrete."""
    if is_symbolic(value):
        return _size(value, batch_size)
    if isinstance(value, ClosedJaxpr):
        return _concrete_closed(value, batch_size)
    if isinstance(value, Jaxpr):
        return _concrete_jaxpr(value, batch_size)
    if isinstance(value, tuple | list):
        items = [_concrete_param(v, batch_size) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value  # unchanged: keep the object (and its type) as it is
        if hasattr(value, "_fields"):  # a NamedTuple, e.g. gather's dimension numbers
            return type(value)(*items)
        return type(value)(items)
    return value


def _concrete_closed(closed: ClosedJaxpr, batch_size: int) -> ClosedJaxpr:
    return ClosedJaxpr(_concrete_jaxpr(closed.jaxpr, batch_size), list(closed.consts))


def _concrete_jaxpr(jaxpr: Jaxpr, batch_size: int) -> Jaxpr:
    """``jaxpr`` with every variable, parameter and nested jaxpr at ``B = batch_size``."""
    new: dict[Var, Any] = {}

    def binder(v: Var) -> Var:
        new[v] = Var(_concrete_aval(v.aval, batch_size))
        return new[v]

    def atom(v: Any) -> Any:
        return v if isinstance(v, Literal) else new[v]

    constvars = [binder(v) for v in jaxpr.constvars]
    invars = [binder(v) for v in jaxpr.invars]
    eqns: list[JaxprEqn] = []
    for e in jaxpr.eqns:
        if e.primitive.name == "dim_as_value":  # JAX has no eager rule for it: use its value
            (out,) = e.outvars
            aval: Any = out.aval
            new[out] = Literal(np.asarray(_size(e.params["dim"], batch_size), aval.dtype), aval)
            continue
        params = {k: _concrete_param(p, batch_size) for k, p in e.params.items()}
        eqns.append(
            e.replace(
                invars=[atom(v) for v in e.invars],
                outvars=[binder(v) for v in e.outvars],
                params=params,
            )
        )
    return jaxpr.replace(
        constvars=constvars,
        invars=invars,
        outvars=[atom(v) for v in jaxpr.outvars],
        eqns=eqns,
    )


def concrete_program(closed: ClosedJaxpr, batch_size: int) -> ClosedJaxpr:
    """``closed`` at ``B = batch_size``: shapes, parameters and nested jaxprs concrete.

    A program without the symbolic ``B`` (a concrete graph's, or batch
    invariant work) is returned as it is.
    """
    if not jaxpr_mentions_batch(closed.jaxpr):
        return closed
    return _concrete_closed(closed, batch_size)


class ReferenceFunction:
    """A segment program evaluated uncompiled; it stands where the executor puts a ``cached_jit``.

    Called with the program's flat arguments (the carrier, the inputs, the size
    and row-count inputs, as :attr:`Segment.batch_axes
    <mlcache_lab.schedule.segments.Segment.batch_axes>` lists them), it reads
    the batch size from the first argument that has a batch axis, makes the
    program concrete at that size (kept per size) and evaluates it equation by
    equation.

    Attributes:
      last_report: always ``None``: nothing goes through the stages, so the
        executor's timeline records no compilation.
    """

    last_report = None

    def __init__(self, program: Any, batch_axes: Sequence[int | None]) -> None:
        self.program: ClosedJaxpr = program.__mlcache_jaxpr__
        self.name = program.__name__
        self.batch_axes = tuple(batch_axes)
        self._at: dict[int | None, Any] = {}

    def _batch_size(self, args: Sequence[Any]) -> int | None:
        for x, a in zip(args, self.batch_axes, strict=True):
            if a is not None:
                return int(np.shape(x)[a])
        if jaxpr_mentions_batch(self.program.jaxpr):
            raise RuntimeError(NO_BATCH_SIZE.format(name=self.name, count=len(args)))
        return None

    def __call__(self, *args: Any) -> list[Any]:
        n = self._batch_size(args)
        if n not in self._at:
            self._at[n] = jaxpr_as_fun(
                self.program if n is None else concrete_program(self.program, n)
            )
        return list(self._at[n](*args))
