"""Rules for slicing, gathers and scatters (embedding lookups, ``x.at[...]``).

A gather or scatter keeps samples apart in three layouts:

* *window*: the batch axis is a full-size window (offset) dimension of the
  operand, indices have no batch axis (``x[:, idx]`` with ``x`` batched on 0);
* *lookup*: indices carry the batch axis, the operand is shared
  (``table[tokens]``, an embedding lookup);
* *batching dims*: operand and indices are paired by ``operand_batching_dims``
  (what ``vmap`` and ``take_along_axis`` produce).

A ``scatter-add`` of per-sample updates at per-sample indices into a shared
operand (the gradient of an embedding lookup) is a sum over the samples: it
*reduces* (combined by add) when the operand is zeros, which the analysis
checks (:mod:`..analysis`); a chunk's partial is its samples' scatter into
zeros, and padded rows' updates are zeroed.

Anything else, e.g. indexing *into* the batch axis, moves data across samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jax.extend.core import JaxprEqn

from . import (
    Axis,
    RuleResult,
    batch_axis,
    batched,
    mixes,
    ndim,
    reduces,
    register,
    same_size,
    shape,
)


@register("slice")
def slice_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Only a full slice of the batch axis keeps every sample in place."""
    axis = batch_axis(in_axes[0])
    p = eqn.params
    strides = p["strides"] or (1,) * ndim(eqn.invars[0])
    got = (p["start_indices"][axis], p["limit_indices"][axis], strides[axis])
    full = (0, shape(eqn.invars[0])[axis], 1)
    if not all(same_size(g, f) for g, f in zip(got, full, strict=True)):
        return mixes(eqn, f"selects a subset of samples on the batch axis {axis}")
    return batched(eqn, axis)


@register("dynamic_slice")
def dynamic_slice_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """A full-size slice of the batch axis is clamped to start 0, whatever the index."""
    axis = in_axes[0]
    if axis is None or any(a is not None for a in in_axes[1:]):
        return mixes(eqn, "slices at batched start indices")
    if not same_size(eqn.params["slice_sizes"][axis], shape(eqn.invars[0])[axis]):
        return mixes(eqn, f"selects a subset of samples on the batch axis {axis}")
    return batched(eqn, axis)


@register("dynamic_update_slice")
def dynamic_update_slice_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """An update covering the whole batch axis writes each sample into its own row."""
    oa, ua = in_axes[0], in_axes[1]
    if any(a is not None for a in in_axes[2:]) or (oa is not None and ua not in (None, oa)):
        return mixes(eqn, f"updates with operands batched on different axes ({oa}, {ua})")
    axis = batch_axis(oa if oa is not None else ua)
    if not same_size(shape(eqn.invars[1])[axis], shape(eqn.invars[0])[axis]):
        return mixes(eqn, f"updates a subset of samples on the batch axis {axis}")
    return batched(eqn, axis, {0 if oa is None else 1: axis})


def _match(
    eqn: JaxprEqn, in_axes: Sequence[Axis], want: Sequence[int], out: int, what: str
) -> RuleResult:
    """Batched on ``out`` if each operand has axis ``want[i]`` or none (then promoted)."""
    promote: dict[int, int] = {}
    for i, (a, w) in enumerate(zip(in_axes, want, strict=True)):
        if a is None:
            promote[i] = w
        elif a != w:
            return mixes(eqn, f"{what}: operand {i} is batched on axis {a}, expected {w}")
    return batched(eqn, out, promote)


@register("gather")
def gather_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Window, lookup or batching-dims gather (see the module docstring)."""
    oa, ia = in_axes
    dn = eqn.params["dimension_numbers"]
    op_nd, idx_nd, out_nd = ndim(eqn.invars[0]), ndim(eqn.invars[1]), ndim(eqn.outvars[0])
    skipped = set(dn.collapsed_slice_dims) | set(dn.operand_batching_dims)
    windows = [d for d in range(op_nd) if d not in skipped]
    out_batch = [d for d in range(out_nd) if d not in dn.offset_dims]
    if oa is not None and oa in dn.operand_batching_dims:
        k = tuple(dn.operand_batching_dims).index(oa)
        c = dn.start_indices_batching_dims[k]
        return _match(eqn, in_axes, (oa, c), out_batch[c], "gather batching dims")
    if ia is not None and ia in dn.start_indices_batching_dims:
        k = tuple(dn.start_indices_batching_dims).index(ia)
        return _match(eqn, in_axes, (dn.operand_batching_dims[k], ia), out_batch[ia], "gather")
    if oa is not None:
        if ia is not None:
            return mixes(eqn, f"reads every sample's rows for every sample (axes {oa}, {ia})")
        if oa not in windows or not same_size(
            eqn.params["slice_sizes"][oa], shape(eqn.invars[0])[oa]
        ):
            return mixes(eqn, f"indexes into the batch axis {oa} of its operand")
        return batched(eqn, dn.offset_dims[windows.index(oa)])
    ia = batch_axis(ia)  # the operand is unbatched: the indices are
    if ia == idx_nd - 1:
        return mixes(eqn, f"uses the batch axis {ia} as the index vector")
    return batched(eqn, out_batch[ia])


@register("scatter", "scatter-add", "scatter-mul", "scatter-min", "scatter-max", "scatter-sub")
def scatter_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Window or batching-dims scatter; a shared operand written by samples mixes them."""
    oa, ia, ua = in_axes
    dn = eqn.params["dimension_numbers"]
    op_shape, upd_shape = shape(eqn.invars[0]), shape(eqn.invars[2])
    skipped = set(dn.inserted_window_dims) | set(dn.operand_batching_dims)
    windows = [d for d in range(len(op_shape)) if d not in skipped]
    upd_scatter = [d for d in range(len(upd_shape)) if d not in dn.update_window_dims]
    obd, sibd = tuple(dn.operand_batching_dims), tuple(dn.scatter_indices_batching_dims)
    k = None
    if oa is not None and oa in obd:
        k = obd.index(oa)
    elif ia is not None and ia in sibd:
        k = sibd.index(ia)
    elif ua is not None and ua in upd_scatter and upd_scatter.index(ua) in sibd:
        k = sibd.index(upd_scatter.index(ua))
    if k is not None:
        want = (obd[k], sibd[k], upd_scatter[sibd[k]])
        return _match(eqn, in_axes, want, obd[k], "scatter batching dims")
    if ia is not None and oa is None and eqn.primitive.name == "scatter-add":
        return _summed_scatter(eqn, ia, ua, upd_scatter)
    if ia is not None:
        return mixes(eqn, f"scatters with indices batched on axis {ia} into a shared operand")
    w = None
    if oa is not None and oa in windows:
        w = windows.index(oa)
    elif oa is None and ua is not None and ua in dn.update_window_dims:
        w = tuple(dn.update_window_dims).index(ua)
    if w is None:
        return mixes(eqn, f"scatters into the batch axis (operand axis {oa}, updates axis {ua})")
    o, u = windows[w], dn.update_window_dims[w]
    if o in dn.scatter_dims_to_operand_dims or not same_size(upd_shape[u], op_shape[o]):
        return mixes(eqn, f"scatters into a subset of samples on the batch axis {o}")
    if ua is not None and ua != u:
        return mixes(eqn, f"scatter window: updates are batched on axis {ua}, expected {u}")
    promote = {i: a for i, a, has in ((0, o, oa), (2, u, ua)) if has is None}
    return batched(eqn, o, promote)


def _summed_scatter(eqn: JaxprEqn, ia: int, ua: Axis, upd_scatter: Sequence[int]) -> RuleResult:
    """A ``scatter-add`` whose samples each add their own updates at their own indices.

    Index dimension ``d`` (all but the last, the index vector) pairs with the
    updates' ``d``-th scatter dimension; the batch axes must pair so, else a
    sample's updates would land at another sample's indices.
    """
    idx_nd = ndim(eqn.invars[1])
    if ia == idx_nd - 1:
        return mixes(eqn, f"uses the batch axis {ia} as the index vector")
    want = upd_scatter[ia] if ia < len(upd_scatter) else None
    if want is None or (ua is not None and ua != want):
        return mixes(eqn, f"scatters updates batched on axis {ua} at indices batched on axis {ia}")
    if ua is None and not same_size(shape(eqn.invars[2])[want], shape(eqn.invars[1])[ia]):
        return mixes(eqn, f"scatters shared updates at indices batched on axis {ia}")
    promote = {2: want} if ua is None else None
    result = reduces(eqn, ia, promote, what="sums per-sample updates over")
    return dataclasses.replace(result, zeros=(0,))  # each chunk scatters into zeros
