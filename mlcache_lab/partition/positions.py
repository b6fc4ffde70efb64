"""Positions along the batch: an ``iota`` over ``B``, run per chunk from the chunk's first row.

``jnp.arange(x.shape[0])`` or ``lax.broadcasted_iota(..., dimension=batch)``
gives row ``i`` the value ``i``: a sample's position in the batch. It depends on
no sample, so a chunk can make it, but not at the chunk's own positions
(``0, 1, ...``): at the rows it covers, ``start, start + 1, ...``. A program
that runs per chunk therefore takes the chunk's first row as one more input,
an ``int32[]``, and adds it to every such ``iota``
(:func:`offset_positions`). The program still holds for every batch size, so a
new batch size of seen chunk sizes compiles nothing; padded rows (past the
chunk's real rows) get the positions they would have, ``start + i``, and are
dropped with the rest of the padding.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax import lax
from jax.extend.core import ClosedJaxpr, JaxprEqn, Literal

from ..jax_internals import bind_equation
from .dims import is_batch_dim, is_symbolic

__all__ = ["is_batch_iota", "offset_positions", "shift"]


def is_batch_iota(eqn: JaxprEqn) -> bool:
    """Whether ``eqn`` is an ``iota`` along ``B`` whose other dimensions are concrete.

    Such an iota's row ``i`` holds ``i`` (its position); an iota that also has
    another symbolic dimension (``[B, B]``) needs the whole batch and is not one.
    """
    if eqn.primitive.name != "iota":
        return False
    dims = tuple(eqn.params["shape"])
    symbolic = [d for d in dims if is_symbolic(d)]
    return len(symbolic) == 1 and is_batch_dim(dims[eqn.params["dimension"]])


def shift(positions: Any, start: Any) -> Any:
    """``positions + start``, in the iota's dtype (``start`` is an ``int32[]``)."""
    return lax.add(positions, lax.convert_element_type(start, positions.dtype))


def offset_positions(closed: ClosedJaxpr) -> ClosedJaxpr:
    """``closed`` with one more, last, input: the chunk's first row, added to each batch iota.

    Args:
      closed: a program of a symbolic graph, run per chunk.

    Returns:
      the same program, but each :func:`is_batch_iota` output shifted by the
      new ``int32[]`` input.
    """
    jaxpr = closed.jaxpr

    def run(*args: Any) -> list[Any]:
        *xs, start = args
        env: dict[Any, Any] = dict(zip(jaxpr.constvars, closed.consts, strict=True))
        env.update(zip(jaxpr.invars, xs, strict=True))

        def read(v: Any) -> Any:
            return v.val if isinstance(v, Literal) else env[v]

        for e in jaxpr.eqns:
            outs = bind_equation(e, [read(v) for v in e.invars])
            if is_batch_iota(e):
                outs = [shift(outs[0], start)]
            env.update(zip(e.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    specs = [
        jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, weak_type=v.aval.weak_type)
        for v in jaxpr.invars
    ]
    return jax.make_jaxpr(run)(*specs, jax.ShapeDtypeStruct((), np.int32))
