"""Rules for elementwise primitives, conversions, random-key ops and identities.

Elementwise operands all have the output's shape (lax does not broadcast, bar
rank-0 operands such as ``clamp``'s bounds or ``select_n``'s scalar predicate), so
a batched operand fixes the batch axis of every other operand: those without one
are promoted (split along the same axis), those with another one make the
equation mix samples (``x + x.T``).
"""

from __future__ import annotations

from collections.abc import Sequence

from jax.extend.core import JaxprEqn

from . import Axis, RuleResult, batch_axis, batched, mixes, ndim, register, same_size, shape

ELEMENTWISE = (  # noqa: SIM905  (a word list reads better than 85 quoted names)
    "abs acos acosh add add_any and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil "
    "clamp clz complex conj convert_element_type copy cos cosh digamma div eq erf erf_inv erfc "
    "exp exp2 expm1 floor ge gt igamma igamma_grad_a igammac imag integer_pow is_finite le lgamma "
    "log log1p logistic lt max min mul mulhi ne neg nextafter not or polygamma population_count "
    "pow real reduce_precision regularized_incomplete_beta rem round rsqrt select_n shift_left "
    "shift_right_arithmetic shift_right_logical sign sin sinh sqrt square stop_gradient sub tan "
    "tanh xor zeta random_seed random_fold_in random_clone threefry2x32"
).split()


@register(*ELEMENTWISE)
def elementwise_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """All outputs carry the operands' common batch axis; rank-0 operands broadcast."""
    axes = sorted({a for a in in_axes if a is not None})
    if len(axes) > 1:
        return mixes(eqn, f"combines operands batched on different axes {axes}")
    axis = axes[0]
    size = shape(eqn.outvars[0])[axis]
    # An operand of size 1 on the axis broadcasts (threefry2x32 allows it): it is
    # read whole by every sample. One of the batch's size (``B`` itself, in a
    # symbolic graph: an ``iota`` or ``zeros`` made with ``x.shape[0]``) is
    # aligned sample by sample.
    promote = {
        i: axis
        for i, (atom, a) in enumerate(zip(eqn.invars, in_axes, strict=True))
        if a is None and ndim(atom) > axis and same_size(shape(atom)[axis], size)
    }
    return batched(eqn, axis, promote)


@register("optimization_barrier", "device_put")
def identity_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Each output is its operand, so it keeps the operand's axis."""
    return RuleResult(tuple(in_axes))


@register("bitcast_convert_type")
def bitcast_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """A bitcast to a narrower/wider type adds/drops a trailing dimension only."""
    (operand,) = in_axes
    axis = batch_axis(operand)
    if axis >= ndim(eqn.outvars[0]):
        return mixes(eqn, f"folds the batch axis {axis} into the element type")
    return batched(eqn, axis)


@register("random_bits", "random_split", "random_unwrap")
def random_trailing_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Outputs have the key array's shape plus trailing dimensions: one stream per key."""
    return batched(eqn, in_axes[0])


@register("random_wrap")
def random_wrap_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """``uint32[..., n]`` key data becomes ``key[...]``: the trailing axis disappears."""
    (operand,) = in_axes
    axis = batch_axis(operand)
    if axis >= ndim(eqn.outvars[0]):
        return mixes(eqn, f"turns the batch axis {axis} into key data")
    return batched(eqn, axis)
