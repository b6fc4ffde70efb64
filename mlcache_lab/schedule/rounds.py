"""Rounds: reductions over the batch run as per-chunk partials, then a combine.

A split segment that holds ``reduces`` clusters (see
:mod:`mlcache_lab.partition.analysis`) is a *round*: its program runs on every
chunk like any split segment, and each reduction in it yields a partial result
for the chunk's samples; after the last chunk the partials are combined
(added, maxed, ...) into the value the whole batch would give. Batched work that
reads a combined value runs in a later round.

Padded rows (the copies that fill the last chunk up to ``micro_batch``) never
reach a reduction: the program takes the chunk's number of real rows and
replaces the padded rows of each reduced operand with the combine's identity
(0 for a sum or a contraction, -inf for a max, +inf for a min, True for an
and, False for an or). A mean divides by the true batch size: that division
reads ``B`` outside the round (see :func:`size_only`), so the chunk size never
enters it. Under ``buckets`` nothing is padded and no mask is built.

``argmax``/``argmin`` partials are indices into the chunk, plus the chunk's
extreme value (an extra program output); the combine keeps the first chunk
whose value wins and offsets its index by the chunk's first row.

A round that makes the rows' positions (an ``iota`` along ``B``, see
:mod:`mlcache_lab.partition.positions`) takes the chunk's first row as one
more input and adds it to them, like any split segment that makes positions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import ClosedJaxpr, DebugInfo, Jaxpr, JaxprEqn, Literal, Var

from ..jax_internals import bind_equation, evaluate_dim
from ..partition.analysis import Label
from ..partition.dims import BATCH_DIM, is_symbolic, jaxpr_mentions_batch
from ..partition.graph import ClusterGraph
from ..partition.positions import is_batch_iota, shift
from ..partition.rules import COMBINES

__all__ = ["Combine", "combine", "cut_rounds", "partial_program", "size_only", "size_values"]


@dataclasses.dataclass(frozen=True)
class Combine:
    """How one output of a round combines across chunks.

    Attributes:
      op: ``"add"``, ``"max"``, ``"min"``, ``"and"``, ``"or"``, ``"argmax"`` or
        ``"argmin"``.
      value: for ``argmax``/``argmin``, the index of the extra program output
        that holds the chunk's extreme value (after the segment's outputs).
    """

    op: str
    value: int | None = None


def cut_rounds(graph: ClusterGraph, cids: Sequence[int]) -> list[list[int]]:
    """Cut a run of split clusters (in topological order) so no cluster reads a
    reduction of its own piece: such a cluster needs the combined value, so it
    starts the next round.
    """
    producers: dict[int, set[int]] = {c: set() for c in cids}
    for a, b in graph.dependencies:
        if b in producers:
            producers[b].add(a)
    pieces: list[list[int]] = [[]]
    reducing: set[int] = set()
    for cid in cids:
        if producers[cid] & reducing:
            pieces.append([])
            reducing = set()
        pieces[-1].append(cid)
        if graph.clusters[cid].kind == "reduces":
            reducing.add(cid)
    return pieces


def size_only(jaxpr: Jaxpr) -> bool:
    """Whether ``jaxpr`` reads ``B`` only as a value (``dim_as_value``), never in a shape.

    Such a program (the ``1/B`` of a mean, read after a reduction's combine)
    is compiled once if ``B`` is passed to it as an input instead.
    """
    rest = [e for e in jaxpr.eqns if e.primitive.name != "dim_as_value"]
    if len(rest) == len(jaxpr.eqns):
        return False
    made = [v for e in jaxpr.eqns if e.primitive.name == "dim_as_value" for v in e.outvars]
    info = DebugInfo(
        "schedule",
        "size_only",
        tuple(f"in{k}" for k in range(len(jaxpr.invars) + len(made))),
        tuple(f"out{k}" for k in range(len(jaxpr.outvars))),
    )
    body = Jaxpr([], [*jaxpr.invars, *made], jaxpr.outvars, rest, jaxpr.effects, info)
    return not jaxpr_mentions_batch(body)


def size_values(segment: Any, batch_size: int) -> list[np.ndarray]:
    """The values of a segment's ``dim_as_value`` inputs (``B``, ``3*B``) at ``batch_size``."""
    out = []
    for dtype, dim in zip(segment.size_dtypes, segment.size_dims, strict=True):
        value = evaluate_dim(dim, {BATCH_DIM: batch_size}) if is_symbolic(dim) else dim
        out.append(np.asarray(value, dtype))
    return out


def _identity(op: str, dtype: Any) -> Any:
    dtype = np.dtype(dtype)
    if op in ("add", "or"):
        return np.zeros((), dtype)
    if op == "and":
        return np.ones((), dtype)
    high = op in ("min", "argmin")
    if dtype == np.bool_:
        return np.array(high, dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(np.inf if high else -np.inf, dtype)
    info = jnp.iinfo(dtype)
    return np.array(info.max if high else info.min, dtype)


def _mask(x: Any, axis: int, valid: Any, op: str) -> Any:
    rows = lax.broadcasted_iota(np.int32, x.shape, axis)
    fill = lax.full_like(x, _identity(op, x.dtype))
    return lax.select(rows < valid, x, fill)


def partial_program(
    graph: ClusterGraph,
    binders: Sequence[Var],
    n_carrier: int,
    outputs: Sequence[Var],
    eqns: Sequence[JaxprEqn],
    reducing: Mapping[int, Label],
    masked: bool,
    offset: bool = False,
) -> tuple[ClosedJaxpr, tuple[Combine | None, ...]]:
    """The program of a round: per-chunk partials of its reductions.

    Args:
      graph: the graph (its analysis gives the operands' batch axes).
      binders: the segment's program inputs (carrier first when ``n_carrier``).
      n_carrier: 1 when the first binder is the batch-size carrier, else 0.
      outputs: the segment's outputs.
      eqns: the segment's equations, in program order.
      reducing: the labels of the equations that reduce over the batch, by
        ``id(eqn)``. A ``scan``, ``while`` or ``cond`` among them sums into
        some of its outputs (its label's ``reduced``: ys, accumulating
        carries, branch outputs): its bodies are rebuilt with the mask inside.
      masked: append an ``int32[]`` input, the chunk's real rows, and mask the
        padded rows out of every reduction.
      offset: append (after the real rows) an ``int32[]`` input, the chunk's
        first row, added to every ``iota`` along the batch (see
        :mod:`mlcache_lab.partition.positions`).

    Returns:
      the program (outputs, then the extreme values of ``argmax``/``argmin``
      partials) and the :class:`Combine` of each output (``None``: not reduced).
    """
    axes = graph.analysis.axes
    made_by: dict[Var, tuple[str, int | None]] = {}
    extras: list[Var] = []
    for e in eqns:
        label = reducing.get(id(e))
        if label is None:
            continue
        if e.primitive.name in _BODIES:
            for k in label.reduced:
                made_by[e.outvars[k]] = ("add", None)
            continue
        op = COMBINES[e.primitive.name]
        value = None
        if op in ("argmax", "argmin"):
            value = len(extras)
            extras.append(e.outvars[0])
        made_by[e.outvars[0]] = (op, value)

    def run(*args: Any) -> list[Any]:
        ins = args[n_carrier : len(binders)]
        extra = args[len(binders) :]
        valid = extra[0] if masked else None
        start = extra[-1] if offset else None
        env: dict[Var, Any] = dict(zip(binders[n_carrier:], ins, strict=True))
        values: dict[Var, Any] = {}
        _interpret(eqns, env, axes, reducing, valid, values, start)
        return [_read(env, v) for v in outputs] + [values[v] for v in extras]

    avals: list[Any] = [v.aval for v in binders]
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    specs += [jax.ShapeDtypeStruct((), np.int32)] * (masked + offset)
    closed = jax.make_jaxpr(run)(*specs)
    combines = tuple(
        Combine(*made_by[v]) if isinstance(v, Var) and v in made_by else None for v in outputs
    )
    return closed, combines


def _read(env: dict[Var, Any], v: Any) -> Any:
    return v.val if isinstance(v, Literal) else env[v]


def _interpret(
    eqns: Sequence[JaxprEqn],
    env: dict[Var, Any],
    axes: Mapping[Var, Any],
    reducing: Mapping[int, Label],
    valid: Any,
    values: dict[Var, Any],
    start: Any = None,
) -> None:
    """Bind ``eqns`` in order; reductions see masked operands when ``valid`` is given,
    and an ``iota`` along the batch starts at ``start`` when it is given.
    """
    for e in eqns:
        vals = [_read(env, v) for v in e.invars]
        label = reducing.get(id(e))
        if label is not None and e.primitive.name in _BODIES:
            masked = _BODIES[e.primitive.name]
            outs = masked(e, vals, label, valid) if valid is not None else bind_equation(e, vals)
            env.update(zip(e.outvars, outs, strict=True))
            continue
        if label is not None:
            op = COMBINES[e.primitive.name]
            if valid is not None:
                vals = _masked_operands(e, vals, axes, valid, op)
            if op in ("argmax", "argmin"):
                reduce = lax.reduce_max if op == "argmax" else lax.reduce_min
                values[e.outvars[0]] = reduce(vals[0], tuple(e.params["axes"]))
        outs = bind_equation(e, vals)
        if start is not None and is_batch_iota(e):
            outs = [shift(outs[0], start)]
        env.update(zip(e.outvars, outs, strict=True))


def _masked_body(body: ClosedJaxpr, inner: Any) -> ClosedJaxpr:
    """``body`` (a loop body or a branch) with the chunk's real-row count as a first input,
    its sums over the batch skipping padded rows."""
    inner_reducing = {
        id(e): lab
        for e, lab in zip(inner.jaxpr.eqns, inner.labels, strict=True)
        if lab.kind == "reduces"
    }

    def masked(n_valid: Any, *args: Any) -> list[Any]:
        env: dict[Var, Any] = dict(zip(body.jaxpr.constvars, body.consts, strict=True))
        env.update(zip(body.jaxpr.invars, args, strict=True))
        _interpret(body.jaxpr.eqns, env, inner.axes, inner_reducing, n_valid, {})
        return [_read(env, v) for v in body.jaxpr.outvars]

    avals: list[Any] = [v.aval for v in body.jaxpr.invars]
    specs = [jax.ShapeDtypeStruct((), np.int32)] + [
        jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals
    ]
    return jax.make_jaxpr(masked)(*specs)


def _masked_scan(eqn: JaxprEqn, vals: list[Any], label: Label, valid: Any) -> list[Any]:
    """A scan whose body sums over the batch, rebuilt so the sums skip padded rows.

    The chunk's real-row count becomes the body's first constant.
    """
    (inner,) = label.inner
    params = dict(eqn.params)
    params["jaxpr"] = _masked_body(eqn.params["jaxpr"], inner)
    params["num_consts"] = eqn.params["num_consts"] + 1
    if "linear" in params:  # older scans flag linear operands
        params["linear"] = (False, *params["linear"])
    return bind_equation(eqn, [valid, *vals], params)


def _masked_while(eqn: JaxprEqn, vals: list[Any], label: Label, valid: Any) -> list[Any]:
    """A while whose body sums over the batch: the real-row count is the body's first constant."""
    _, body = label.inner
    cn = eqn.params["cond_nconsts"]
    params = dict(eqn.params)
    params["body_jaxpr"] = _masked_body(eqn.params["body_jaxpr"], body)
    params["body_nconsts"] = eqn.params["body_nconsts"] + 1
    operands = [*vals[:cn], valid, *vals[cn:]]
    return bind_equation(eqn, operands, params)


def _masked_cond(eqn: JaxprEqn, vals: list[Any], label: Label, valid: Any) -> list[Any]:
    """A cond whose branches sum over the batch: the real-row count is each branch's first input."""
    params = dict(eqn.params)
    params["branches"] = tuple(
        _masked_body(b, inner) for b, inner in zip(eqn.params["branches"], label.inner, strict=True)
    )
    operands = [vals[0], valid, *vals[1:]]
    return bind_equation(eqn, operands, params)


_BODIES = {"scan": _masked_scan, "while": _masked_while, "cond": _masked_cond}
"""Control flow that may reduce over the batch inside its bodies, and how to mask it."""


def _masked_operands(
    eqn: JaxprEqn, vals: list[Any], axes: Mapping[Var, Any], valid: Any, op: str
) -> list[Any]:
    """Operands of a reducing equation with the padded rows replaced by the identity.

    A contraction needs only one side masked: a zero row there zeroes the
    padded rows' products. A ``scatter-add`` masks its updates (a padded row's
    indices still point into the table).
    """
    updates = eqn.invars[2] if eqn.primitive.name == "scatter-add" else None
    if isinstance(updates, Var):
        vals = list(vals)
        vals[2] = _mask(vals[2], axes[updates], valid, op)
        return vals
    for k, v in enumerate(eqn.invars):
        a = None if isinstance(v, Literal) else axes.get(v)
        if a is not None:
            vals = list(vals)
            vals[k] = _mask(vals[k], a, valid, op)
            return vals
    raise AssertionError(f"{eqn.primitive.name} reduces over the batch but reads no batched value")


def _host() -> bool:
    return jax.default_backend() == "cpu"


def combine(
    op: str,
    parts: Sequence[Any],
    values: Sequence[Any] | None,
    starts: Sequence[int],
    home: Any,
) -> Any:
    """The whole batch's reduction from the chunks' partials (in chunk order).

    On a CPU backend it runs in NumPy (no compilation for any number of
    chunks); elsewhere in ``jax.numpy`` on shapes that do not depend on the
    batch size, so it compiles once.

    Args:
      op: the :class:`Combine` op.
      parts: per chunk, the partial result.
      values: per chunk, the extreme value (``argmax``/``argmin`` only).
      starts: per chunk, its first row in the batch.
      home: the device to gather onto (``None``: the default device).
    """
    xp: Any = np if _host() else jnp

    def load(x: Any) -> Any:
        if home is not None:
            x = jax.device_put(x, home)
        return np.asarray(x) if xp is np else x

    dtype = np.asarray(parts[0]).dtype if xp is np else parts[0].dtype
    if op in ("argmax", "argmin"):
        if values is None:
            raise ValueError(
                f"combine({op!r}, ...) needs each chunk's extreme value. Got values=None; pass "
                "values=[...] with one entry per part."
            )
        best_v, best_i = load(values[0]), load(parts[0]) + xp.asarray(starts[0], dtype)
        for p, v, s in zip(parts[1:], values[1:], starts[1:], strict=True):
            v, i = load(v), load(p) + xp.asarray(s, dtype)
            wins = v > best_v if op == "argmax" else v < best_v
            if xp.issubdtype(v.dtype, xp.floating):  # the first NaN wins, as in jnp.argmax
                wins = wins | (xp.isnan(v) & ~xp.isnan(best_v))
            best_v, best_i = xp.where(wins, v, best_v), xp.where(wins, i, best_i)
        out = best_i
    else:
        ufunc = {
            "add": xp.add,
            "max": xp.maximum,
            "min": xp.minimum,
            "and": xp.logical_and,
            "or": xp.logical_or,
        }[op]
        out = functools.reduce(ufunc, (load(p) for p in parts))
    if xp is np:
        return jax.device_put(np.asarray(out, dtype), home)
    return out.astype(dtype)
