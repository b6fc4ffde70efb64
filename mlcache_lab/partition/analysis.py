"""Batch analysis: the batch axis of every value of a jaxpr and a label per equation.

The analysis is one forward pass over the equations. Each equation's operands
have a batch axis (or ``None``); the primitive's rule (:mod:`.rules`) gives the
outputs' axes and whether the equation keeps samples apart. The label is

* ``batched``: some operand carries the batch axis and every output sample
  depends only on the same sample of the operands; or, in a symbolic graph,
  the equation makes a batch-sized value from no sample that holds the same
  rows at any batch size (a ``broadcast_in_dim`` to ``[B, ...]`` of an operand
  without ``B``, an ``iota`` along a non-batch axis), or each row's position
  (an ``iota`` along ``B``, made from the chunk's first row, see
  :mod:`.positions`): a chunk makes it at its own size, so it runs with the
  batched work that reads it instead of at the whole batch (where it would
  compile once per batch size);
* ``non_batched`` / ``invariant``: no operand carries the batch axis, nor was
  computed from one (weight preprocessing, constants, masks);
* ``reduces`` / ``reduces``: a reduction over the batch axis whose combine is
  associative and commutative (a sum, a ``dot_general`` contracting the batch
  axis, a ``scatter-add`` of per-sample updates into zeros such as an
  embedding's gradient, max, min, argmax/argmin, and/or): it splits into a partial result per
  chunk and a combine across chunks (the reason names the primitive and the
  combine). Its outputs have no batch axis;
* ``non_batched`` / ``mixes``: the equation combines samples in another way
  (the reason names the primitive and the axis), or reads values that were
  already combined across samples (a batch mean, say) without a batch axis to
  split them on.

When a rule *promotes* an operand (see :mod:`.rules`), that variable gets the
batch axis; if an earlier equation already read it without one, the pass starts
again with the variable's axis fixed from the start. Each restart fixes one more
variable, so the pass ends; in practice promoted values (broadcast constants)
are read right after they are made and no restart happens.

In a graph traced with the symbolic batch dimension ``B`` (see :mod:`.dims`)
one more fact is checked: a batched equation carries ``B`` on the batch axes
of its operands and outputs and nowhere else. A value such as ``x @ x.T``
(``[B, B]``) read per sample, or a ``[B, d, B]`` broadcast, would need the
whole batch's size inside a chunk; the equation is labelled ``mixes``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal as TypingLiteral

import numpy as np
from jax.extend.core import Jaxpr, JaxprEqn, Literal, Var

from .dims import is_batch_dim, is_symbolic, shape_text
from .positions import is_batch_iota
from .rules import Axis, RuleResult, ndim, rule_for, shape

__all__ = ["Axis", "JaxprAnalysis", "Label", "analyze"]

Kind = TypingLiteral["batched", "non_batched", "reduces"]
Category = TypingLiteral["batched", "invariant", "mixes", "reduces"]

INVARIANT = "invariant: touches no batched value"
FOLLOWS = "mixes: reads values computed across samples, with no batch axis to split them on"
NOT_ZEROS = (
    "{name} sums over the batch axis into its operand {k}, which is not zeros: each chunk "
    "would add it again. Fix: start from zeros and add it after, e.g. "
    "jnp.zeros_like(t).at[idx].add(u) + t, or a scan's sum from jnp.zeros(...) plus the start"
)


@dataclasses.dataclass(slots=True)
class Label:
    """What the analysis says about one equation.

    Attributes:
      kind: ``"batched"``, ``"non_batched"`` or ``"reduces"``.
      category: ``"batched"``, ``"invariant"``, ``"mixes"`` or ``"reduces"`` (the
        reason's class).
      out_batch_axes: batch axis of each output (``None``: none).
      reason: one line; for ``mixes`` it names the primitive and the axis.
      in_batch_axes: batch axis of each operand, promotions included.
      mixes_samples: ``True`` when this equation itself combines samples (as
        opposed to reading values combined earlier); a reduction too (inside a
        loop body, which runs whole or per chunk, nothing splits it).
      inner: analyses of sub-jaxprs (``scan``/``while``/``cond`` bodies).
      reduced: for ``reduces``, the outputs that are reductions (empty: all).
    """

    kind: Kind
    category: Category
    out_batch_axes: tuple[Axis, ...]
    reason: str
    in_batch_axes: tuple[Axis, ...]
    mixes_samples: bool = False
    inner: tuple[JaxprAnalysis, ...] = ()
    reduced: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class JaxprAnalysis:
    """The batch axis of every variable of ``jaxpr`` and a label per equation.

    Attributes:
      jaxpr: the analysed jaxpr.
      axes: batch axis of every variable (constvars, invars, equation outputs).
      labels: ``labels[i]`` is about ``jaxpr.eqns[i]``.
    """

    jaxpr: Jaxpr
    axes: dict[Var, Axis]
    labels: list[Label]

    @property
    def in_axes(self) -> tuple[Axis, ...]:
        """Final batch axis of each input (promotions included)."""
        return tuple(self.axes[v] for v in self.jaxpr.invars)

    @property
    def const_axes(self) -> tuple[Axis, ...]:
        """Final batch axis of each constvar (promotions included)."""
        return tuple(self.axes[v] for v in self.jaxpr.constvars)

    @property
    def out_axes(self) -> tuple[Axis, ...]:
        """Batch axis of each output."""
        return tuple(self.axis_of(v) for v in self.jaxpr.outvars)

    def axis_of(self, atom: object) -> Axis:
        """Batch axis of a variable; ``None`` for a literal."""
        return None if isinstance(atom, Literal) else self.axes[atom]  # type: ignore[index]

    def first_mix(self) -> str | None:
        """Why this (body) jaxpr does not keep samples apart, or ``None`` if it does.

        The reason of the first equation that itself mixes samples; or, for a
        body, a closed-over constant that would have to be split with the batch.
        """
        why = next((lab.reason for lab in self.labels if lab.mixes_samples), None)
        if why is None and any(a is not None for a in self.const_axes):
            why = "mixes: a closed-over constant is aligned with the batch axis"
        for eqn, lab in zip(self.jaxpr.eqns, self.labels, strict=True):
            if why is None and lab.kind == "non_batched" and not _remakeable(eqn, lab):
                why = f"mixes: {eqn.primitive.name} makes a batch-sized value inside a loop body"
            if why is None and is_batch_iota(eqn):
                # A body runs as one equation: nothing passes it the chunk's first row.
                why = "mixes: an iota along the batch axis (row positions) inside a loop body"
        return why


class _Restart(Exception):
    """A variable read without a batch axis got one later: analyse again."""


def analyze(
    jaxpr: Jaxpr,
    in_axes: Sequence[Axis],
    *,
    const_axes: Sequence[Axis] | None = None,
    in_depends: Sequence[bool] | None = None,
    out_promote: Mapping[int, int] | None = None,
) -> JaxprAnalysis:
    """Propagate batch axes through ``jaxpr``.

    Args:
      jaxpr: an open jaxpr (for a ``ClosedJaxpr`` pass ``closed.jaxpr``).
      in_axes: batch axis of each invar, already normalised to ``>= 0``.
      const_axes: batch axis of each constvar (default: none).
      in_depends: whether each invar was computed from batched data (default:
        the invars that have an axis).
      out_promote: outputs that must carry a given axis (a loop carry whose input
        has one); an output variable without an axis is promoted to it.

    Returns:
      the :class:`JaxprAnalysis`.
    """
    forced: dict[Var, int] = {}
    limit = len(jaxpr.eqns) + len(jaxpr.invars) + len(jaxpr.constvars) + 2
    for _ in range(limit):
        try:
            return _forward(jaxpr, in_axes, const_axes, in_depends, out_promote or {}, forced)
        except _Restart:
            continue
    raise AssertionError("batch analysis did not settle")  # unreachable: one new var per restart


def _forward(
    jaxpr: Jaxpr,
    in_axes: Sequence[Axis],
    const_axes: Sequence[Axis] | None,
    in_depends: Sequence[bool] | None,
    out_promote: Mapping[int, int],
    forced: dict[Var, int],
) -> JaxprAnalysis:
    axes: dict[Var, Axis] = {}
    tainted: set[Var] = set()
    for v, a in zip(jaxpr.constvars, const_axes or (None,) * len(jaxpr.constvars), strict=True):
        axes[v] = a if a is not None else forced.get(v)
    depends = in_depends or [a is not None for a in in_axes]
    for v, a, d in zip(jaxpr.invars, in_axes, depends, strict=True):
        axes[v] = a if a is not None else forced.get(v)
        if d:
            tainted.add(v)
    producer: dict[Var, tuple[int, int]] = {}
    zeros: set[Var] = set()  # made as zeros (a broadcast of a literal 0)
    consumed: set[Var] = set()
    labels: list[Label] = []

    def promote(var: Var, axis: int) -> None:
        if var in consumed:
            forced[var] = axis
            raise _Restart
        axes[var] = axis
        if var in producer:
            i, k = producer[var]
            _give_output_axis(labels[i], k, axis, jaxpr.eqns[i].primitive.name)

    for i, eqn in enumerate(jaxpr.eqns):
        invars = [v for v in eqn.invars if not isinstance(v, Literal)]
        in_ax = tuple(None if isinstance(v, Literal) else axes[v] for v in eqn.invars)
        n_out = len(eqn.outvars)
        dep = any(v in tainted for v in invars)
        made = _made_per_chunk(eqn) if all(a is None for a in in_ax) else None
        if made is not None:
            # A batch-sized value from no sample (a bias broadcast to [B, d], a
            # mask from ones((B, T, T)), the rows' positions): made per chunk,
            # with the batched work that reads it, rather than once at the whole
            # batch (which would compile once per batch size).
            what = (
                "iota along the batch axis makes each row's position (made per chunk, "
                "offset by the chunk's first row)"
                if is_batch_iota(eqn)
                else f"{eqn.primitive.name} makes a batch-sized value from no sample "
                "(made per chunk)"
            )
            label = Label("batched", "batched", (made,), f"batched: {what}", in_ax)
            dep = True  # reads of it depend on B: a reduction over it mixes
        elif all(a is None for a in in_ax):
            label = Label(
                "non_batched",
                "mixes" if dep else "invariant",
                (None,) * n_out,
                FOLLOWS if dep else INVARIANT,
                in_ax,
            )
        else:
            res = _apply_rule(eqn, in_ax)
            for idx, axis in res.promote.items():
                atom = eqn.invars[idx]
                if isinstance(atom, Literal):
                    if ndim(atom) > 0:  # an array literal cannot be split
                        res = RuleResult(
                            (None,) * n_out,
                            f"{eqn.primitive.name} reads an array "
                            f"literal aligned with the batch axis {axis}",
                        )
                        break
                elif axes[atom] is None:
                    promote(atom, axis)
            in_ax = tuple(None if isinstance(v, Literal) else axes[v] for v in eqn.invars)
            if res.mixes is None:
                stray = _stray_batch_size(eqn, in_ax, res.out_axes)
                if stray is not None:
                    res = RuleResult(res.out_axes, stray, inner=res.inner)
            nonzero = [k for k in res.zeros if not _is_zeros(eqn.invars[k], zeros)]
            if res.reduces is not None and nonzero:
                res = RuleResult(
                    res.out_axes,
                    NOT_ZEROS.format(name=eqn.primitive.name, k=nonzero[0]),
                    inner=res.inner,
                )
            if res.mixes is None and res.reduces is not None:
                label = Label(
                    "reduces",
                    "reduces",
                    res.out_axes,
                    f"reduces: {res.reduces}",
                    in_ax,
                    True,
                    res.inner,
                    res.reduced,
                )
            elif res.mixes is None:
                label = Label(
                    "batched",
                    "batched",
                    res.out_axes,
                    f"batched: {eqn.primitive.name} keeps samples apart",
                    in_ax,
                    False,
                    res.inner,
                )
            else:
                label = Label(
                    "non_batched",
                    "mixes",
                    res.out_axes,
                    f"mixes: {res.mixes}",
                    in_ax,
                    True,
                    res.inner,
                )
        labels.append(label)
        if eqn.primitive.name == "broadcast_in_dim" and _is_zeros(eqn.invars[0], zeros):
            zeros.add(eqn.outvars[0])
        for k, v in enumerate(eqn.outvars):
            axes[v] = label.out_batch_axes[k]
            producer[v] = (i, k)
            if dep:
                tainted.add(v)
            if v in forced and axes[v] != forced[v]:
                axes[v] = forced[v]
                _give_output_axis(label, k, forced[v], eqn.primitive.name)
        consumed.update(invars)
    for k, axis in out_promote.items():
        atom = jaxpr.outvars[k]
        if not isinstance(atom, Literal) and axes[atom] is None:
            promote(atom, axis)
    return JaxprAnalysis(jaxpr, axes, labels)


def _is_zeros(atom: object, zeros: set[Var]) -> bool:
    """Whether ``atom`` is a literal 0 or a variable made as zeros."""
    if isinstance(atom, Literal):
        return not np.any(np.asarray(atom.val))
    return atom in zeros


def _stray_batch_size(eqn: JaxprEqn, in_ax: Sequence[Axis], out_ax: Sequence[Axis]) -> str | None:
    """Why a batched equation of a symbolic graph cannot run on a chunk, or ``None``.

    Run on ``n`` samples, its export gives ``B = n`` everywhere: only dimensions
    that are exactly ``B`` and sit on batch axes shrink with the chunk. A concrete
    graph has no symbolic dimension and always passes.
    """
    for what, atoms, axes in (("operand", eqn.invars, in_ax), ("output", eqn.outvars, out_ax)):
        for k, (atom, a) in enumerate(zip(atoms, axes, strict=True)):
            dims = shape(atom)
            if all(type(d) is int for d in dims):
                continue
            for i, d in enumerate(dims):
                if is_symbolic(d) and (i != a or not is_batch_dim(d)):
                    where = "no batch axis" if a is None else f"batch axis {a}"
                    return (
                        f"{eqn.primitive.name} {what} {k} has size {d} on axis {i} (shape "
                        f"{shape_text(dims)}, {where}): a chunk would need the whole batch"
                    )
    return None


def _made_per_chunk(eqn: JaxprEqn) -> int | None:
    """Batch axis of a value an equation without batched operands makes per chunk, or ``None``.

    In a symbolic graph, an output with exactly one symbolic dimension, ``B``
    itself, made by a ``broadcast_in_dim`` of an operand that does not mention
    ``B`` (every row the same) or an ``iota`` along another dimension (every row
    ``0, 1, ...``) holds the same rows at any batch size: a chunk of ``n``
    samples makes it at ``n``. An ``iota`` along ``B`` (row ``i`` holds ``i``)
    depends on where the chunk starts: a chunk makes it too, from its first row
    (:func:`~.positions.offset_positions`). ``dim_as_value`` or a random draw
    of ``B`` rows depend on the whole batch: those are not made per chunk.
    """
    name = eqn.primitive.name
    if name not in ("broadcast_in_dim", "iota") or len(eqn.outvars) != 1:
        return None
    dims = shape(eqn.outvars[0])
    symbolic = [i for i, d in enumerate(dims) if is_symbolic(d)]
    if len(symbolic) != 1 or not is_batch_dim(dims[symbolic[0]]):
        return None
    axis = symbolic[0]
    if name == "iota":
        return axis
    if any(any(is_symbolic(d) for d in shape(v)) for v in eqn.invars):
        return None  # the batch-sized operand of a dynamic-shape broadcast
    return axis


def _remakeable(eqn: JaxprEqn, label: Label) -> bool:
    """Whether a non-batched equation's batch-aligned outputs can be made for a chunk.

    Inside a loop body that runs on a chunk of the batch, a value without batch
    data but with the batch size (``zeros_like(x)``) must be made at the chunk's
    size: a broadcast that creates the batch dimension, or an iota along another
    dimension, can be; anything else (``arange(B)``) depends on the position.
    """
    axis = next((a for a in label.out_batch_axes if a is not None), None)
    if axis is None:
        return True
    name = eqn.primitive.name
    if name == "broadcast_in_dim":
        return axis not in eqn.params["broadcast_dimensions"]
    return name == "iota" and eqn.params["dimension"] != axis


def _apply_rule(eqn: object, in_ax: tuple[Axis, ...]) -> RuleResult:
    name = eqn.primitive.name  # type: ignore[attr-defined]
    rule = rule_for(name)
    if rule is None:
        n_out = len(eqn.outvars)  # type: ignore[attr-defined]
        return RuleResult(
            (None,) * n_out,
            f"{name} has no batching rule and reads batched values (operand batch axes "
            f"{in_ax}): assumed to mix samples",
        )
    return rule(eqn, in_ax)  # type: ignore[arg-type]


def _give_output_axis(label: Label, k: int, axis: int, name: str) -> None:
    """Output ``k`` of a labelled equation is read per sample on ``axis``."""
    before = label.out_batch_axes[k]
    label.out_batch_axes = (*label.out_batch_axes[:k], axis, *label.out_batch_axes[k + 1 :])
    if label.kind in ("batched", "reduces") and before != axis:
        # Run on a chunk of the batch this output would not be the chunk's slice
        # on ``axis`` (it has no batch axis, or another one), yet it is read so.
        label.kind, label.category, label.mixes_samples = "non_batched", "mixes", True
        label.reason = (
            f"mixes: {name} output {k} is read per sample on axis {axis} but has axis {before}"
        )
