"""Rules for ``scan``, ``while`` and ``cond``: analyse the bodies, settle the carries.

Calls (``pjit``, ``closed_call``, ``remat``, custom JVP/VJP) never reach these
rules: :mod:`..inline` inlines them, inside bodies too.

A loop is batched when no equation of its body (or of a ``while``'s condition)
itself mixes samples and every carry keeps its batch axis from one iteration to
the next. Carry axes are found by iteration as in ``jax.vmap``'s scan rule: a
carry that becomes batched in the body is batched from the start, its initial
value promoted. A ``while`` whose condition reads batched values mixes samples
(the trip count would depend on every sample); so does a ``scan`` over the batch
axis, conservatively, as each step sees one sample and the carry may pass it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jax.extend.core import ClosedJaxpr, JaxprEqn, Literal

from . import COMBINES, Axis, RuleResult, mixes, ndim, register

if TYPE_CHECKING:
    from ..analysis import JaxprAnalysis


def _analyze(body: ClosedJaxpr, in_axes: Sequence[Axis], out_promote: dict[int, int]):  # type: ignore[no-untyped-def]
    from ..analysis import analyze  # the analysis imports these rules

    return analyze(body.jaxpr, in_axes, out_promote=out_promote)


def _settle_carries(
    carry: list[Axis], out: Sequence[Axis], promote_out: dict[int, int]
) -> tuple[bool, str | None]:
    """Update carry axes from one body analysis; returns (changed, conflict)."""
    changed = False
    for i, (a, b) in enumerate(zip(carry, out, strict=True)):
        if a is None and b is not None:
            carry[i], changed = b, True
        elif a is not None and b is None and promote_out.get(i) != a:
            promote_out[i], changed = a, True
        elif a is not None and b is not None and a != b:
            return changed, f"carry {i} moves its batch axis from {a} to {b}"
    return changed, None


def _outer_promotions(
    eqn: JaxprEqn, given: Sequence[Axis], final: Sequence[Axis], offset: int = 0
) -> dict[int, int]:
    """Operands (from ``offset``) without an axis that the bodies gave one."""
    return {
        i + offset: f
        for i, (g, f) in enumerate(zip(given, final, strict=True))
        if g is None and f is not None and ndim(eqn.invars[i + offset]) > 0
    }


@register("scan")
def scan_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Consts and xs keep their axes in the body (xs shifted by the scanned axis)."""
    p = eqn.params
    nc, nk = p["num_consts"], p["num_carry"]
    consts, carry, xs = list(in_axes[:nc]), list(in_axes[nc : nc + nk]), list(in_axes[nc + nk :])
    if 0 in xs:
        return mixes(eqn, f"iterates over the batch axis 0 of xs operand {xs.index(0)}")
    promote_out: dict[int, int] = {}
    for _ in range(2 * nk + 2):
        x_body = [None if a is None else a - 1 for a in xs]
        inner = _analyze(p["jaxpr"], consts + carry + x_body, promote_out)
        final = inner.in_axes
        consts = list(final[:nc])
        xs = [None if a is None else a + 1 for a in final[nc + nk :]]
        changed = [c for c, f in zip(carry, final[nc : nc + nk], strict=True) if c != f] != []
        carry = list(final[nc : nc + nk])
        moved, conflict = _settle_carries(carry, inner.out_axes[:nk], promote_out)
        if conflict:
            return mixes(eqn, conflict)
        if not (changed or moved):
            break
    why = inner.first_mix()
    reduced = _summed_ys(inner, nk) if why is not None else None
    if reduced is not None:  # per-iteration sums over the batch (weight gradients) as ys
        ys = [None if a is None else a + 1 for a in inner.out_axes[nk:]]
        out = (*carry, *(None if k in reduced else a for k, a in enumerate(ys)))
        promote = _outer_promotions(eqn, in_axes, consts + carry + xs)
        promote.update(_unread_batch_sized(eqn, in_axes, inner))
        return RuleResult(
            out,
            None,
            promote,
            (inner,),
            reduces=f"scan body sums over the batch axis into ys {list(reduced)}, "
            "combined across chunks by add",
            reduced=tuple(nk + k for k in reduced),
        )
    if why is not None:
        return RuleResult((None,) * len(eqn.outvars), f"scan body {why}", inner=(inner,))
    ys = [None if a is None else a + 1 for a in inner.out_axes[nk:]]
    out = tuple(carry) + tuple(ys)
    promote = _outer_promotions(eqn, in_axes, consts + carry + xs)
    return RuleResult(out, None, promote, (inner,))


def _unread_batch_sized(
    eqn: JaxprEqn, in_axes: Sequence[Axis], inner: JaxprAnalysis
) -> dict[int, int]:
    """Operands of the batch's size that the body never reads: split them harmlessly.

    (A backward scan carries such residuals along unused.) Splitting an unread
    operand along its ``B`` dimension changes nothing and lets the scan run
    on a chunk.
    """
    from ..dims import is_batch_dim

    read = {v for e in inner.jaxpr.eqns for v in e.invars if not isinstance(v, Literal)}
    read.update(v for v in inner.jaxpr.outvars if not isinstance(v, Literal))
    out = {}
    for i, (atom, body_var, a) in enumerate(
        zip(eqn.invars, inner.jaxpr.invars, in_axes, strict=True)
    ):
        if a is None and body_var not in read and not isinstance(atom, Literal):
            dims = tuple(getattr(atom.aval, "shape", ()))
            axis = next((d for d, size in enumerate(dims) if is_batch_dim(size)), None)
            if axis is not None:
                out[i] = axis
    return out


# Equations through which a sum over the batch stays a sum of per-chunk partials.
_LINEAR_UNARY = frozenset(
    {
        "neg",
        "transpose",
        "reshape",
        "squeeze",
        "expand_dims",
        "broadcast_in_dim",
        "convert_element_type",
        "reduce_sum",
        "copy",
        "copy_p",
    }
)
_LINEAR_SUM = frozenset({"add", "add_any", "sub"})
_LINEAR_SCALE = frozenset({"mul", "div", "dot_general"})


def _summed_ys(inner: JaxprAnalysis, nk: int) -> tuple[int, ...] | None:
    """The ys a scan body makes as sums over the batch, if that is all it mixes.

    The body may reduce with ``add`` only, and what reads a sum must be linear
    in it (sums of sums, transposes, reshapes, scaling by values that are the
    same for every chunk), feeding ys only: never the carry, never batched
    work. Then, run per chunk, each such ys output is the chunk's partial sum.
    """
    from ..analysis import _remakeable

    jaxpr = inner.jaxpr
    if any(a is not None for a in inner.const_axes):
        return None
    summed: set[Any] = set()
    batchy: set[Any] = {
        v for v, a in zip(jaxpr.invars, inner.in_axes, strict=True) if a is not None
    }
    for e, lab in zip(jaxpr.eqns, inner.labels, strict=True):
        names = [v for v in e.invars if not isinstance(v, Literal)]
        reads = [v in summed for v in names]
        if lab.kind == "reduces":
            if COMBINES.get(e.primitive.name) != "add" or lab.reduced or any(reads):
                return None
            summed.update(e.outvars)
            continue
        if any(reads):
            name = e.primitive.name
            others = [v for v, r in zip(names, reads, strict=True) if not r]
            if lab.kind == "batched" or any(v in batchy for v in others):
                return None
            ok = (
                (name in _LINEAR_UNARY and len(names) == 1)
                or (name in _LINEAR_SUM and all(reads) and len(names) == len(e.invars))
                or (name in _LINEAR_SCALE and sum(reads) == 1 and (name != "div" or reads[0]))
            )
            if not ok:
                return None
            summed.update(e.outvars)
            continue
        if lab.mixes_samples or (lab.kind == "non_batched" and not _remakeable(e, lab)):
            return None
        if lab.kind == "non_batched" and lab.category == "mixes":
            return None
        if lab.kind == "batched" or any(v in batchy for v in names):
            batchy.update(e.outvars)
    outs = jaxpr.outvars
    if any(v in summed for v in outs[:nk] if not isinstance(v, Literal)):
        return None
    reduced = tuple(
        k for k, v in enumerate(outs[nk:]) if not isinstance(v, Literal) and v in summed
    )
    return reduced or None


@register("while")
def while_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Operands are ``cond_consts, body_consts, carry``; outputs are the carry."""
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts = list(in_axes[:cn]), list(in_axes[cn : cn + bn])
    carry = list(in_axes[cn + bn :])
    promote_out: dict[int, int] = {}
    for _ in range(2 * len(carry) + 2):
        body = _analyze(p["body_jaxpr"], bconsts + carry, promote_out)
        cond = _analyze(p["cond_jaxpr"], cconsts + carry, {})
        bconsts, cconsts = list(body.in_axes[:bn]), list(cond.in_axes[:cn])
        new = [
            b if b is not None else c
            for b, c in zip(body.in_axes[bn:], cond.in_axes[cn:], strict=True)
        ]
        changed = new != carry
        carry = new
        moved, conflict = _settle_carries(carry, body.out_axes, promote_out)
        if conflict:
            return mixes(eqn, conflict)
        if not (changed or moved):
            break
    why = cond.first_mix()
    if why is not None:
        return RuleResult(
            (None,) * len(eqn.outvars),
            f"while condition reads batched values ({why})",
            inner=(cond, body),
        )
    why = body.first_mix()
    if why is not None:
        return RuleResult((None,) * len(eqn.outvars), f"while body {why}", inner=(cond, body))
    promote = _outer_promotions(eqn, in_axes, cconsts + bconsts + carry)
    return RuleResult(tuple(carry), None, promote, (cond, body))


@register("cond")
def cond_rule(eqn: JaxprEqn, in_axes: Sequence[Axis]) -> RuleResult:
    """Every branch sees the operands' axes; outputs must agree across branches."""
    if in_axes[0] is not None:
        return mixes(eqn, f"selects its branch by a batched index (axis {in_axes[0]})")
    ops = list(in_axes[1:])
    n_out = len(eqn.outvars)
    promote_out: dict[int, int] = {}
    for _ in range(2 * (len(ops) + n_out) + 2):
        inners = [_analyze(b, ops, promote_out) for b in eqn.params["branches"]]
        new = list(ops)
        for inner in inners:
            for i, a in enumerate(inner.in_axes):
                if new[i] is None:
                    new[i] = a
        outs: list[Axis] = [None] * n_out
        for inner in inners:
            for k, a in enumerate(inner.out_axes):
                if a is not None and outs[k] is not None and outs[k] != a:
                    return mixes(eqn, f"branches put output {k} on batch axes {outs[k]} and {a}")
                outs[k] = a if a is not None else outs[k]
        want = {k: a for k, a in enumerate(outs) if a is not None}
        if new == ops and want == promote_out:
            break
        ops, promote_out = new, want
    for inner in inners:
        why = inner.first_mix()
        if why is not None:
            return RuleResult((None,) * n_out, f"cond branch {why}", inner=tuple(inners))
    promote = _outer_promotions(eqn, in_axes[1:], ops, offset=1)
    return RuleResult(tuple(outs), None, promote, tuple(inners))
