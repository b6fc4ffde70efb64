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

A loop or branch whose body sums over the batch *reduces* (combined by add)
when each sum reaches the outputs linearly (:func:`_summed`): into ``ys``
(a backward scan's weight gradients), into a carry that accumulates it from
zeros (``acc + x_t.sum(0)``, a loss summed over time steps, a backward scan's
gradients of its constants), or into a ``cond``'s outputs when every branch
sums into the same ones (the predicate is batch-invariant). Run per chunk, each
such output is the chunk's partial sum. What cannot split stays ``mixes``
with the reason: a ``while`` whose condition reads a sum over the batch (its
trip count depends on every sample), a max or argmax inside a body, a sum read
by batched work or non-linearly in the same body.
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
    carry_in = inner.jaxpr.invars[nc : nc + nk]
    reduced = _summed(inner, carry_in, nk, _accumulators(inner, carry_in)) if why else None
    if reduced is not None:  # per-iteration sums over the batch (weight gradients)
        ys = [None if a is None else a + 1 for a in inner.out_axes[nk:]]
        out = tuple(None if k in reduced else a for k, a in enumerate((*carry, *ys)))
        promote = _outer_promotions(eqn, in_axes, consts + carry + xs)
        promote.update(_unread_batch_sized(eqn, in_axes, inner))
        return RuleResult(
            out,
            None,
            promote,
            (inner,),
            reduces=f"scan body sums over the batch axis into {_where(reduced, nk)}, "
            "combined across chunks by add",
            reduced=reduced,
            zeros=tuple(nc + k for k in reduced if k < nk),
        )
    if why is not None:
        return RuleResult((None,) * len(eqn.outvars), f"scan body {_body_why(why)}", inner=(inner,))
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


def _where(reduced: Sequence[int], nk: int) -> str:
    carries = [k for k in reduced if k < nk]
    ys = [k - nk for k in reduced if k >= nk]
    parts = ([f"carries {carries} (accumulated from zeros)"] if carries else []) + (
        [f"ys {ys}"] if ys else []
    )
    return " and ".join(parts)


def _body_why(why: str) -> str:
    """A body's first mixing step, said as a mix (a reduction there did not split)."""
    if why.startswith("reduces: "):
        return (
            f"mixes: {why.removeprefix('reduces: ').split(', combined')[0]}, and it does not "
            "reach the outputs as a plain sum (only sums into ys, accumulating carries or "
            "branch outputs, read linearly, split inside a body)"
        )
    return why


def _accumulators(inner: JaxprAnalysis, carry_in: Sequence[Any]) -> frozenset[int]:
    """Carries (by index) that a reduction over the batch flows into, through any steps.

    A fixpoint: a carry whose output depends on a reduction, or on such a carry,
    accumulates it (``acc + x_t.sum(0)``); a counter (``i + 1``) does not.
    """
    jaxpr = inner.jaxpr
    nk = len(carry_in)
    acc: frozenset[int] = frozenset()
    while True:
        tainted = {carry_in[k] for k in acc}
        for e, lab in zip(jaxpr.eqns, inner.labels, strict=True):
            if lab.kind == "reduces" or any(
                not isinstance(v, Literal) and v in tainted for v in e.invars
            ):
                tainted.update(e.outvars)
        new = frozenset(
            k
            for k in range(nk)
            if not isinstance(jaxpr.outvars[k], Literal)
            and jaxpr.outvars[k] in tainted
            and inner.axes[carry_in[k]] is None
        )
        if new == acc:
            return acc
        acc = new


def _summed(
    inner: JaxprAnalysis, carry_in: Sequence[Any], nk: int, accumulate: frozenset[int]
) -> tuple[int, ...] | None:
    """The outputs a body makes as sums over the batch, if that is all it mixes.

    The body may reduce with ``add`` only, and what reads a sum must be linear
    in it (sums of sums, transposes, reshapes, scaling by values that are the
    same for every chunk), feeding outputs only: never batched work. The first
    ``nk`` outputs are carries (``carry_in`` their body inputs): a carry in
    ``accumulate`` starts as a sum (from zeros, which the analysis checks) and
    must leave the body as one; the others must not read a sum. Then, run per
    chunk, each such output is the chunk's partial sum.

    Returns:
      the summed outputs' indices (carries first), or ``None``.
    """
    from ..analysis import _remakeable

    jaxpr = inner.jaxpr
    if any(a is not None for a in inner.const_axes):
        return None
    summed: set[Any] = {carry_in[k] for k in accumulate}
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
    made = [not isinstance(v, Literal) and v in summed for v in outs]
    if any(made[k] != (k in accumulate) for k in range(nk)):
        return None
    reduced = tuple(k for k, m in enumerate(made) if m)
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
    if why is not None and why.startswith("reduces: "):
        return RuleResult(
            (None,) * len(eqn.outvars),
            f"while condition {why.removeprefix('reduces: ').split(', combined')[0]}: {TRIP_COUNT}",
            inner=(cond, body),
        )
    if why is not None:
        return RuleResult(
            (None,) * len(eqn.outvars),
            f"while condition reads batched values ({why})",
            inner=(cond, body),
        )
    why = body.first_mix()
    carry_in = body.jaxpr.invars[bn:]
    acc = _accumulators(body, carry_in) if why is not None else frozenset()
    read = _reads_from(cond.jaxpr, [cond.jaxpr.invars[cn + k] for k in sorted(acc)])
    if read is not None:
        return RuleResult(
            (None,) * len(eqn.outvars),
            f"while condition reads carry {sorted(acc)[read]}, a sum over the batch the body "
            f"accumulates: {TRIP_COUNT}",
            inner=(cond, body),
        )
    reduced = _summed(body, carry_in, len(carry), acc) if why is not None else None
    if reduced is not None:
        promote = _outer_promotions(eqn, in_axes, cconsts + bconsts + carry)
        return RuleResult(
            tuple(None if k in reduced else a for k, a in enumerate(carry)),
            None,
            promote,
            (cond, body),
            reduces=f"while body sums over the batch axis into {_where(reduced, len(carry))}, "
            "combined across chunks by add",
            reduced=reduced,
            zeros=tuple(cn + bn + k for k in reduced),
        )
    if why is not None:
        return RuleResult(
            (None,) * len(eqn.outvars), f"while body {_body_why(why)}", inner=(cond, body)
        )
    promote = _outer_promotions(eqn, in_axes, cconsts + bconsts + carry)
    return RuleResult(tuple(carry), None, promote, (cond, body))


TRIP_COUNT = (
    "the trip count depends on every sample, so no chunk can run the loop alone "
    "(it runs at the whole batch)"
)


def _reads_from(jaxpr: Any, sources: Sequence[Any]) -> int | None:
    """Which of ``sources`` (by position) the outputs of ``jaxpr`` depend on, or ``None``."""
    for k, source in enumerate(sources):
        reach = {source}
        for e in jaxpr.eqns:
            if any(not isinstance(v, Literal) and v in reach for v in e.invars):
                reach.update(e.outvars)
        if any(not isinstance(v, Literal) and v in reach for v in jaxpr.outvars):
            return k
    return None


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
    whys = [inner.first_mix() for inner in inners]
    if any(whys):
        # The predicate is the same for every chunk (it is not batched): each chunk
        # takes the same branch, so branches that all sum into the same outputs split.
        found = [
            _summed(inner, (), 0, frozenset()) if w else ()
            for inner, w in zip(inners, whys, strict=True)
        ]
        first = next(w for w in whys if w)
        sums = [s for s in found if s is not None]
        if len(sums) < len(found):
            return RuleResult(
                (None,) * n_out, f"cond branch {_body_why(first)}", inner=tuple(inners)
            )
        if len(set(sums)) > 1:
            return RuleResult(
                (None,) * n_out,
                f"cond branches sum over the batch into different outputs {sorted(set(sums))}: "
                "a chunk's partial would not add up to the whole batch's",
                inner=tuple(inners),
            )
        reduced = sums[0]
        promote = _outer_promotions(eqn, in_axes[1:], ops, offset=1)
        return RuleResult(
            tuple(None if k in reduced else a for k, a in enumerate(outs)),
            None,
            promote,
            tuple(inners),
            reduces=f"cond branches sum over the batch axis into outputs {list(reduced)}, "
            "combined across chunks by add",
            reduced=reduced,
        )
    promote = _outer_promotions(eqn, in_axes[1:], ops, offset=1)
    return RuleResult(tuple(outs), None, promote, tuple(inners))
