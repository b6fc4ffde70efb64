"""Batch-axis rules, one per primitive: how the batch axis flows through an equation.

A rule receives the equation and the batch axis of each operand (``None`` for an
operand without one; at least one operand has an axis) and returns a
:class:`RuleResult`: the batch axis of each output, and, when the equation does
not keep samples apart, a ``mixes`` text naming the primitive and the axis.

A rule may also ask to *promote* an operand that has no batch axis to one
(``promote={operand_index: axis}``). That happens where the operand is aligned
with a batched operand along the batch axis, e.g. ``x + zeros((B, d))``: sample
``i`` then reads row ``i`` of the operand, so the operand must be split with the
batch rather than passed whole. The analysis gives the operand's variable that
batch axis (its producer keeps its own label).

A rule may instead say the equation *reduces* over the batch axis with an
associative and commutative combine (``reduces=...``, see :func:`reduces`): a sum,
max, min, argmax/argmin or and/or over the batch axis, or a ``dot_general``
contracting it. Its outputs have no batch axis; a scheduler computes a partial
result per chunk and combines the partials (:data:`COMBINES`).

Primitives without a rule are treated as mixing samples, conservatively.

Sizes are compared with :func:`same_size` only (definite equality, see
:mod:`..dims`). In a graph traced with the symbolic batch dimension ``B`` that
is exact: an operand's dimension is aligned with the batch iff it is ``B``, a
size-1 dimension broadcasts, and a slice or window covers the whole batch iff
its size is ``B``. In a concretely traced graph (the fallback) the same
comparisons are between ints and the batch axis comes from the analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from jax.extend.core import JaxprEqn, Literal

from ..dims import is_symbolic, same_size

if TYPE_CHECKING:
    from ..analysis import JaxprAnalysis

__all__ = [
    "COMBINES",
    "RULES",
    "Axis",
    "Rule",
    "RuleResult",
    "batch_axis",
    "batched",
    "is_symbolic",
    "mixes",
    "reduces",
    "register",
    "rule_for",
    "same_size",
]

Axis = int | None
"""The batch axis of a value: a non-negative dimension index, or ``None`` for none."""

_NO_PROMOTION: Mapping[int, int] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class RuleResult:
    """What a rule decided about one equation.

    Attributes:
      out_axes: batch axis of each output. A mixing equation may keep an axis
        where its output is still laid out along the batch (``cumsum``, ``sort``).
      mixes: ``None`` when every output sample depends only on the same sample of
        the inputs; otherwise why not, naming the primitive and the axis.
      promote: operands without a batch axis that must be split along the given
        axis (see the module docstring).
      inner: analyses of the equation's sub-jaxprs (control flow), if any.
      reduces: ``None``, or why the equation is a reduction over the batch axis
        that splits into per-chunk partials and a combine (names the primitive,
        the axis and the combine). Exclusive with ``mixes``.
      reduced: with ``reduces``, the outputs that are reductions (combined
        across chunks); empty means all of them. A ``scan`` whose body makes
        weight gradients has batched outputs (the carry) besides.
      zeros: with ``reduces``, operands that must be zeros for the per-chunk
        partials to add up (a ``scatter-add``'s operand, the initial value of
        a carry that accumulates a sum over the batch): each chunk starts from
        them. The analysis checks it, else the equation mixes.
    """

    out_axes: tuple[Axis, ...]
    mixes: str | None = None
    promote: Mapping[int, int] = dataclasses.field(default_factory=lambda: _NO_PROMOTION)
    inner: tuple[JaxprAnalysis, ...] = ()
    reduces: str | None = None
    reduced: tuple[int, ...] = ()
    zeros: tuple[int, ...] = ()


Rule = Callable[[JaxprEqn, Sequence[Axis]], RuleResult]

RULES: dict[str, Rule] = {}


def register(*names: str) -> Callable[[Rule], Rule]:
    """Decorator registering a rule for the primitives called ``names``."""

    def decorate(rule: Rule) -> Rule:
        for name in names:
            RULES[name] = rule
        return rule

    return decorate


def rule_for(name: str) -> Rule | None:
    """The rule for primitive ``name``, or ``None`` when there is none."""
    return RULES.get(name)


def batch_axis(axis: Axis) -> int:
    """``axis`` where the analysis guarantees an operand is batched, as an int.

    Rules run only on equations with at least one batched operand, so an
    unbatched one here is a bug in the dispatch (checked even under ``-O``).
    """
    if axis is None:
        raise AssertionError("internal error: a batching rule ran without a batched operand")
    return axis


def batched(eqn: JaxprEqn, axis: Axis, promote: Mapping[int, int] | None = None) -> RuleResult:
    """A per-sample result: every output carries ``axis``."""
    return RuleResult((axis,) * len(eqn.outvars), None, promote or _NO_PROMOTION)


def mixes(eqn: JaxprEqn, why: str, axis: Axis = None) -> RuleResult:
    """A mixing result; outputs carry ``axis`` (default none)."""
    return RuleResult((axis,) * len(eqn.outvars), f"{eqn.primitive.name} {why}")


COMBINES: Mapping[str, str] = MappingProxyType(
    {
        "reduce_sum": "add",
        "dot_general": "add",
        "scatter-add": "add",
        "reduce_max": "max",
        "reduce_min": "min",
        "argmax": "argmax",
        "argmin": "argmin",
        "reduce_and": "and",
        "reduce_or": "or",
    }
)
"""Primitives that can reduce over the batch axis in chunks, and how partials combine.

``argmax``/``argmin`` combine chunk indices offset to positions in the whole
batch, choosing the chunk whose extreme value wins (the first on ties). A
``scatter-add`` reduces only into zeros (each chunk scatters its samples'
updates; see :mod:`.indexing`).
"""


def reduces(
    eqn: JaxprEqn, axis: int, promote: Mapping[int, int] | None = None, what: str = "reduces over"
) -> RuleResult:
    """A reduction over the batch axis ``axis``: outputs have no batch axis."""
    name = eqn.primitive.name
    return RuleResult(
        (None,) * len(eqn.outvars),
        None,
        promote or _NO_PROMOTION,
        reduces=f"{name} {what} the batch axis {axis}, combined across chunks by {COMBINES[name]}",
    )


def ndim(atom: Any) -> int:
    """Rank of a jaxpr atom (variable or literal)."""
    return len(getattr(atom.aval, "shape", ()))


def shape(atom: Any) -> tuple[Any, ...]:
    """Shape of a jaxpr atom (ints, or symbolic dimensions in ``B``)."""
    return tuple(getattr(atom.aval, "shape", ()))


def is_literal(atom: Any) -> bool:
    """Whether ``atom`` is a literal rather than a variable."""
    return isinstance(atom, Literal)


# Importing the rule modules registers their rules.
from . import control_flow as _control_flow  # noqa: E402, F401
from . import elementwise as _elementwise  # noqa: E402, F401
from . import indexing as _indexing  # noqa: E402, F401
from . import structural as _structural  # noqa: E402, F401
