"""Rules for primitives that move, merge, reduce or contract dimensions.

These are where the batch axis moves (``transpose``, ``reshape``,
``broadcast_in_dim``, ``dot_general``'s output layout) or where samples meet
(a reduction, cumulative op, sort or contraction over the batch axis).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from jax.extend.core import JaxprEqn

from ..dims import shape_text
from . import (
    COMBINES,
    Axis,
    RuleResult,
    batch_axis,
    batched,
    is_symbolic,
    mixes,
    ndim,
    reduces,
    register,
    same_size,
    shape,
)


def _single(in_axes: Sequence[Axis]) -> int:
    return batch_axis(in_axes[0])


@register("broadcast_in_dim")
def broadcast_in_dim_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """The operand's axis ``a`` lands on ``broadcast_dimensions[a]``.

    Only a concrete batch of size 1 can be broadcast to another size (a
    symbolic ``B`` cannot: tracing would have failed).
    """
    axis = _single(in_axes)
    out = eqn.params["broadcast_dimensions"][axis]
    if not same_size(eqn.params["shape"][out], shape(eqn.invars[0])[axis]):
        return mixes(eqn, f"broadcasts the batch axis {axis} to size {eqn.params['shape'][out]}")
    return batched(eqn, out)


@register("reshape")
def reshape_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """The batch axis survives as a whole output dimension with as many elements before it.

    In row-major order, output dimension ``k`` holds sample ``i`` at index ``i``
    iff it has the batch's size and the dimensions before it hold as many
    elements as those before the batch axis. Otherwise the reshape merges the
    batch with other dimensions (a symbolic graph shows ``3*B``) or splits it,
    and a chunk of samples is no longer a slice of one output dimension.
    """
    axis = _single(in_axes)
    old = shape(eqn.invars[0])
    if eqn.params.get("dimensions") is not None:
        perm = tuple(eqn.params["dimensions"])
        axis, old = perm.index(axis), tuple(old[d] for d in perm)
    new = tuple(eqn.params["new_sizes"])
    before = math.prod(old[:axis])
    for out, size in enumerate(new):
        if same_size(size, old[axis]) and same_size(math.prod(new[:out]), before):
            return batched(eqn, out)
    what = "merges" if any(is_symbolic(d) for d in new) else "merges or splits"
    return mixes(
        eqn, f"{what} the batch axis {axis} (shape {shape_text(old)} -> {shape_text(new)})"
    )


@register("transpose")
def transpose_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """The batch axis moves to where the permutation puts it."""
    return batched(eqn, tuple(eqn.params["permutation"]).index(_single(in_axes)))


@register("squeeze")
def squeeze_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Removed dimensions before the batch axis shift it left."""
    axis, dims = _single(in_axes), tuple(eqn.params["dimensions"])
    if axis in dims:
        return mixes(eqn, f"removes the batch axis {axis}")
    return batched(eqn, axis - sum(d < axis for d in dims))


@register("rev")
def rev_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Reversing the batch axis reorders samples."""
    axis = _single(in_axes)
    if axis in eqn.params["dimensions"]:
        return mixes(eqn, f"reverses the batch axis {axis}", axis)
    return batched(eqn, axis)


@register(
    "reduce_sum",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_and",
    "reduce_or",
    "reduce_xor",
    "argmax",
    "argmin",
    "reduce",
)
def reduce_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Reducing the batch axis with a split-able combine *reduces*; other reductions
    over it (a product, xor, a generic ``reduce``) mix samples; reducing other
    axes shifts the batch axis.
    """
    dims = tuple(eqn.params["axes"] if "axes" in eqn.params else eqn.params["dimensions"])
    n_operands = len(eqn.invars) if eqn.primitive.name != "reduce" else len(eqn.invars) // 2
    axes = sorted({a for a in in_axes[:n_operands] if a is not None})
    if len(axes) != 1 or any(a is not None for a in in_axes[n_operands:]):
        return mixes(eqn, f"reduces operands batched on different axes {axes}")
    axis = axes[0]
    if axis in dims:
        if eqn.primitive.name in COMBINES and n_operands == 1:
            return reduces(eqn, axis)
        return mixes(eqn, f"reduces over the batch axis {axis} (axes={dims})")
    promote = {i: axis for i, a in enumerate(in_axes[:n_operands]) if a is None}
    return batched(eqn, axis - sum(d < axis for d in dims), promote)


@register("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
def cumulative_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """A scan along the batch axis accumulates across samples."""
    axis = _single(in_axes)
    if eqn.params["axis"] == axis:
        return mixes(eqn, f"accumulates along the batch axis {axis}", axis)
    return batched(eqn, axis)


def _common_axis(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> tuple[int | None, dict[int, int]]:
    axes = sorted({a for a in in_axes if a is not None})
    if len(axes) != 1:
        return None, {}
    axis = axes[0]
    return axis, {i: axis for i, a in enumerate(in_axes) if a is None and ndim(eqn.invars[i]) > 0}


@register("sort")
def sort_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Sorting along the batch axis reorders samples; other axes are per sample."""
    axis, promote = _common_axis(eqn, in_axes)
    if axis is None:
        return mixes(eqn, "sorts operands batched on different axes")
    if eqn.params["dimension"] == axis:
        return mixes(eqn, f"sorts along the batch axis {axis}", axis)
    return batched(eqn, axis, promote)


@register("top_k", "approx_top_k")
def top_k_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Selecting the top k along the batch axis compares samples."""
    axis = _single(in_axes)
    along = eqn.params.get("axis", eqn.params.get("reduction_dimension", -1))
    if along % ndim(eqn.invars[0]) == axis:
        return mixes(eqn, f"selects the top k along the batch axis {axis}")
    return batched(eqn, axis)


@register("split")
def split_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Splitting the batch axis hands different samples to different outputs."""
    axis = _single(in_axes)
    if eqn.params["axis"] == axis:
        return mixes(eqn, f"splits the batch axis {axis} into parts")
    return batched(eqn, axis)


@register("concatenate")
def concatenate_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Concatenating along the batch axis appends samples; along others it is per sample."""
    axis, promote = _common_axis(eqn, in_axes)
    if axis is None:
        return mixes(eqn, "concatenates operands batched on different axes")
    if eqn.params["dimension"] == axis:
        return mixes(eqn, f"concatenates along the batch axis {axis}")
    return batched(eqn, axis, promote)


@register("stack")
def stack_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Stacking inserts a new axis at ``axis``: each sample's rows stay its own."""
    axis, promote = _common_axis(eqn, in_axes)
    if axis is None:
        return mixes(eqn, "stacks operands batched on different axes")
    return batched(eqn, axis + (eqn.params["axis"] <= axis), promote)


@register("pad")
def pad_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Padding the batch axis adds rows that belong to no sample."""
    axis = in_axes[0]
    if axis is None or in_axes[1] is not None:
        return mixes(eqn, "pads with a batched padding value")
    if tuple(eqn.params["padding_config"][axis]) != (0, 0, 0):
        return mixes(eqn, f"pads the batch axis {axis} ({eqn.params['padding_config'][axis]})")
    return batched(eqn, axis)


@register("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window")
def reduce_window_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """A pooling window of size 1, stride 1 and no padding on the batch axis is per sample."""
    axis, promote = _common_axis(eqn, in_axes)
    p = eqn.params
    if axis is None or (
        p["window_dimensions"][axis] != 1
        or p["window_strides"][axis] != 1
        or tuple(p["padding"][axis]) != (0, 0)
        or p["base_dilation"][axis] != 1
    ):
        return mixes(eqn, f"pools a window across the batch axis {axis}")
    return batched(eqn, axis, promote)


@register("dot_general")
def dot_general_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Output layout is (batch dims, lhs free dims, rhs free dims).

    A batch axis that is a contracting dimension, contracted with the batch
    axis of the other side (or with a side without one, then promoted), is a
    sum over samples of per-sample products: it *reduces* (a weight gradient).
    Contracted with anything else it mixes samples. A batch axis that is a dot
    batch dimension pairs samples of both sides (the other side is promoted if
    it has no axis); one that is a free dimension needs the other side whole.
    """
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lc, rc, lb, rb = tuple(lc), tuple(rc), tuple(lb), tuple(rb)
    la, ra = in_axes
    lfree = [d for d in range(ndim(eqn.invars[0])) if d not in lc and d not in lb]
    rfree = [d for d in range(ndim(eqn.invars[1])) if d not in rc and d not in rb]
    if la is not None and la in lc and ra in (None, rc[lc.index(la)]):
        return reduces(eqn, la, {1: rc[lc.index(la)]} if ra is None else None, "contracts")
    if ra is not None and ra in rc and la is None:
        return reduces(eqn, ra, {0: lc[rc.index(ra)]}, "contracts")
    if la is not None and la in lc:
        return mixes(eqn, f"contracts the batch axis {la} of its left operand")
    if ra is not None and ra in rc:
        return mixes(eqn, f"contracts the batch axis {ra} of its right operand")
    if la is not None and ra is not None:
        if la in lb and ra in rb and lb.index(la) == rb.index(ra):
            return batched(eqn, lb.index(la))
        return mixes(eqn, f"pairs every sample with every other (left axis {la}, right axis {ra})")
    if la is not None:
        if la in lb:
            k = lb.index(la)
            return batched(eqn, k, {1: rb[k]})
        return batched(eqn, len(lb) + lfree.index(la))
    ra = batch_axis(ra)  # the left operand is unbatched: the right one is
    if ra in rb:
        k = rb.index(ra)
        return batched(eqn, k, {0: lb[k]})
    return batched(eqn, len(lb) + len(lfree) + rfree.index(ra))


@register("conv_general_dilated")
def conv_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Per sample when the batch axis is the lhs batch dimension and the kernel is shared."""
    la, ra = in_axes
    lhs_spec, _, out_spec = eqn.params["dimension_numbers"]
    if ra is not None:
        return mixes(eqn, f"uses a batched kernel (axis {ra} of the kernel)")
    if la != lhs_spec[0] or eqn.params["batch_group_count"] != 1:
        return mixes(eqn, f"convolves across the batch axis {la}")
    return batched(eqn, out_spec[0])
