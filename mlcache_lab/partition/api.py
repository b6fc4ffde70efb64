"""``partition(fn, *example_args, batch_axes=...)``: trace, inline, analyse, cluster.

Tracing is symbolic in the batch when it can be: every batched argument's
batch dimension becomes the symbolic ``B`` (``jax.export`` shape
polymorphism), so the graph, and each cluster's export, holds for every batch
size. A function that is not polymorphic in the batch (it hardcodes the batch
size: ``x.reshape(4, 15)``, ``jnp.ones((4, 3)) + x``, ``jnp.arange(4)``; branches
on it: ``if x.shape[0] > 2``; or uses a primitive whose shape rule needs a
concrete size) fails to trace that way; it is then traced at the example
batch size, and the graph says so (:attr:`ClusterGraph.symbolic` is ``False``,
:attr:`ClusterGraph.symbolic_reason` gives the error).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal, Var

from .analysis import Axis, JaxprAnalysis, analyze
from .cluster import build_clusters
from .clustering import ClusterPlan, grow_clusters
from .dims import BATCH_DIM, batch_dim, eqn_mentions_batch, pinned_batch_size
from .graph import ClusterGraph
from .inline import inline_calls

__all__ = ["BATCH_DIM", "GROWTHS", "arg_specs", "cluster_plan", "partition", "trace"]

GROWTHS = ("gather", "plain")
"""Values of ``partition(..., growth=...)``: see :func:`cluster_plan`."""

BATCH_AXES_STRUCTURE = (
    "batch_axes must be an int, None, or a tuple with one entry per positional argument, each "
    "an int, None or a pytree prefix of that argument (jax.vmap's in_axes convention). "
    "Got batch_axes={batch_axes!r} for {n} argument(s). Fix: e.g. batch_axes=(None, 0) for "
    "fn(params, x)."
)
BAD_AXIS_TYPE = (
    "batch_axes entries must be int or None. Got {value!r} (type {type_name}) for {path}. "
    "Fix: give an axis index, or None for an argument without a batch axis."
)
AXIS_OUT_OF_RANGE = (
    "batch_axes gives axis {axis} for {path} of shape {shape}, out of range for its {ndim} "
    "dimension(s). Fix: use an axis in [-{ndim}, {ndim}), or None for no batch axis."
)
BATCH_SIZES_DIFFER = (
    "Batched arguments must share one batch size. Got {sizes}. Fix: pass arrays with the same "
    "size on their batch axes, or set batch_axes=None for arguments that are not batched."
)
NO_BATCHED_ARGUMENT = (
    "batch_axes={batch_axes!r} gives no argument a batch axis, so there is nothing to split. "
    "Fix: give the batched inputs an axis, e.g. batch_axes=(None, 0) for fn(params, x)."
)
BATCH_TOO_SMALL = (
    "The example batch size is {size} (on {path}); partition needs at least 2 samples to tell "
    "the batch axis from broadcasting. Fix: trace with example arguments of batch size >= 2."
)
NON_ARRAY_ARGUMENT = (
    "example_args must be pytrees of arrays. Got {path} of type {type_name}. Fix: close over "
    "non-array values (functools.partial or a lambda) and pass only arrays."
)
NON_ARRAY_OUTPUT = (
    "fn must return a pytree of arrays. Got output {path} of type {type_name}. Fix: return "
    "only arrays (drop non-array values, or return them from another function)."
)
NOT_POLYMORPHIC = (
    "partition(..., symbolic=True) needs fn to trace with a symbolic batch dimension B, and it "
    "does not: {why}. Fix: derive batch-sized shapes from the inputs (x.shape[0], not 4), or "
    "pass symbolic=None to fall back to tracing at the example batch size."
)
BAD_SYMBOLIC = (
    "symbolic must be None (symbolic if fn allows it, else concrete), True or False. "
    "Got symbolic={value!r}. Fix: leave it out."
)
BAD_MIN_CLUSTER_SIZE = (
    "min_cluster_size must be an int >= 1. Got min_cluster_size={value!r}. Fix: 1 disables "
    "merging; TF's XLA auto-clustering uses 4, OpenVINO's TF integration 6."
)

BAD_GROWTH = (
    "Valid options for 'growth' are {options}. Got growth={value!r} instead. Fix: 'gather' "
    "(default) gathers batch-invariant and batched work into as few clusters as acyclicity "
    "allows; 'plain' is the patent's growth, for ablations."
)

_SCALARS = (bool, int, float, complex, np.generic)


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, *_SCALARS))


def _flat_axes(batch_axes: Any, args: tuple[Any, ...]) -> list[Any]:
    """Broadcast the ``batch_axes`` prefix to one entry per argument leaf."""
    if batch_axes is None or isinstance(batch_axes, numbers.Integral):
        return [batch_axes] * len(jax.tree.leaves(args))
    if not isinstance(batch_axes, tuple | list) or len(batch_axes) != len(args):
        raise ValueError(BATCH_AXES_STRUCTURE.format(batch_axes=batch_axes, n=len(args)))
    out: list[Any] = []
    for prefix, arg in zip(batch_axes, args, strict=True):
        try:
            per_leaf = jax.tree.map(
                lambda a, sub: [a] * len(jax.tree.leaves(sub)),
                prefix,
                arg,
                is_leaf=lambda x: x is None,
            )
        except (ValueError, TypeError):
            raise ValueError(
                BATCH_AXES_STRUCTURE.format(batch_axes=batch_axes, n=len(args))
            ) from None
        out.extend(
            a
            for chunk in jax.tree.leaves(per_leaf, is_leaf=lambda x: isinstance(x, list))
            for a in chunk
        )
    return out


def normalize_batch_axes(args: tuple[Any, ...], batch_axes: Any) -> tuple[list[Axis], int]:
    """One non-negative axis (or ``None``) per argument leaf, and the batch size.

    Raises:
      ValueError: bad structure or axis, differing batch sizes, no batched
        argument, a batch of fewer than 2 samples, or a non-array argument.
    """
    paths_leaves = jax.tree_util.tree_flatten_with_path(args)[0]
    paths = [f"example_args{jax.tree_util.keystr(p)}" for p, _ in paths_leaves]
    for path, (_, leaf) in zip(paths, paths_leaves, strict=True):
        if not _is_array(leaf):
            raise ValueError(NON_ARRAY_ARGUMENT.format(path=path, type_name=type(leaf).__name__))
    flat = _flat_axes(batch_axes, args)
    axes: list[Axis] = []
    sizes: dict[str, int] = {}
    for path, (_, leaf), a in zip(paths, paths_leaves, flat, strict=True):
        if a is not None and (not isinstance(a, numbers.Integral) or isinstance(a, bool)):
            raise ValueError(BAD_AXIS_TYPE.format(value=a, type_name=type(a).__name__, path=path))
        shape = np.shape(leaf)
        if a is not None and not -len(shape) <= int(a) < len(shape):
            raise ValueError(
                AXIS_OUT_OF_RANGE.format(axis=a, path=path, shape=shape, ndim=len(shape))
            )
        axis = None if a is None else int(a) % len(shape)
        axes.append(axis)
        if axis is not None:
            sizes[path] = shape[axis]
    if not sizes:
        raise ValueError(NO_BATCHED_ARGUMENT.format(batch_axes=batch_axes))
    if len(set(sizes.values())) > 1:
        raise ValueError(BATCH_SIZES_DIFFER.format(sizes=sizes))
    path, size = next(iter(sizes.items()))
    if size < 2:
        raise ValueError(BATCH_TOO_SMALL.format(size=size, path=path))
    return axes, size


def _spec(x: Any) -> jax.ShapeDtypeStruct:
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    aval = jax.typeof(x)
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=aval.weak_type)


def arg_specs(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with every leaf replaced by its ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(_spec, args)


def trace(
    fn: Callable[..., Any], args: tuple[Any, ...], in_axes: Sequence[Axis] | None = None
) -> tuple[ClosedJaxpr, Any, Any]:
    """``fn``'s jaxpr (calls inlined) on flat arguments, with in/out trees.

    ``args`` are arrays or ``jax.ShapeDtypeStruct`` s; only shapes and dtypes
    are used. With ``in_axes`` (one entry per leaf), every batched dimension is
    the one symbolic dimension ``B`` (``jax.export`` shape polymorphism): the
    jaxpr holds for any batch size, and no other dimension can be mistaken for
    the batch because it happens to have the same size. Without, the jaxpr has
    the arguments' concrete shapes.

    Raises:
      whatever ``fn`` raises while tracing; symbolically, typically
      ``InconclusiveDimensionOperation`` or a shape ``TypeError``.
    """
    leaves, in_tree = jax.tree.flatten(args)
    out_tree_box: list[Any] = []

    def flat_fn(*flat: Any) -> list[Any]:
        out = fn(*jax.tree.unflatten(in_tree, flat))
        for p, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
            if not _is_array(leaf):
                raise ValueError(
                    NON_ARRAY_OUTPUT.format(
                        path=f"output{jax.tree_util.keystr(p)}", type_name=type(leaf).__name__
                    )
                )
        out_leaves, out_tree = jax.tree.flatten(out)
        out_tree_box.append(out_tree)
        return out_leaves

    specs = [_spec(x) for x in leaves]
    if in_axes is not None:
        batch = batch_dim()
        specs = [
            s
            if a is None
            else jax.ShapeDtypeStruct(
                (*s.shape[:a], batch, *s.shape[a + 1 :]), s.dtype, weak_type=s.weak_type
            )
            for s, a in zip(specs, in_axes, strict=True)
        ]
    closed = jax.make_jaxpr(flat_fn)(*specs)
    return inline_calls(closed), in_tree, out_tree_box[0]


def cluster_plan(
    closed: ClosedJaxpr,
    analysis: JaxprAnalysis,
    min_cluster_size: int = 1,
    growth: str = "gather",
) -> ClusterPlan:
    """Grow clusters over ``closed``'s equations from their labels.

    ``growth="plain"`` is the claims' growth (see :mod:`.clustering`): a
    cluster takes consumers only, so every equation that reads no other
    cluster's work (a weight transpose, a bias broadcast, a sibling branch of
    the input) seeds a cluster of its own; a real model's graph becomes a wall
    of tiny invariant clusters. ``growth="gather"`` (the default) lets such a
    seed join an existing cluster of its group instead, where no cycle closes.
    The groups are

    * batched work, including batch-sized values made from no sample (a bias
      broadcast to ``[B, d]``, a mask from ``x.shape``, the rows' positions
      ``arange(B)``; see :mod:`.analysis`), which then run per chunk *inside*
      the batched cluster that reads them;
    * batch-invariant work that never sees ``B`` (weight preprocessing, run
      once per call and compiled once for every batch size);
    * batch-invariant work that depends on ``B`` (``dim_as_value``, an
      ``iota`` of ``[B, B]``), compiled per batch size, kept apart so it does
      not drag the weight preprocessing along.

    Work that mixes samples is not gathered: each such step stays where growth
    puts it. Reductions over the batch are gathered afterwards, one reducing
    cluster per round (see :mod:`.clustering`). Invariant work reads only
    invariant values, so gathering it never closes a cycle; batched work is
    gathered where acyclicity allows (batched work after a step that mixes
    samples cannot join work before it).
    """
    eqns = closed.jaxpr.eqns
    made_by: dict[Var, int] = {}
    producers: list[list[int]] = []
    for i, eqn in enumerate(eqns):
        producers.append(
            [made_by[v] for v in eqn.invars if not isinstance(v, Literal) and v in made_by]
        )
        for v in eqn.outvars:
            made_by[v] = i
    keys = [(lab.kind, lab.category) for lab in analysis.labels]
    groups = None
    if growth == "gather":
        groups = [
            None  # never gathered by growth; reductions are gathered per round later
            if lab.category in ("mixes", "reduces")
            else lab.category
            if lab.category == "batched"
            else ("invariant", eqn_mentions_batch(eqn))
            for eqn, lab in zip(eqns, analysis.labels, strict=True)
        ]
    return grow_clusters(producers, keys, min_cluster_size, groups)


def partition(
    fn: Callable[..., Any],
    *example_args: Any,
    batch_axes: Any = 0,
    min_cluster_size: int = 1,
    symbolic: bool | None = None,
    growth: str = "gather",
) -> ClusterGraph:
    """Partition ``fn``'s jaxpr into batched and non-batched clusters.

    Args:
      fn: a function of pytrees of arrays returning a pytree of arrays, as for
        ``jax.jit`` (static arguments are not supported: close over them).
      *example_args: arguments to trace ``fn`` with (only their shapes and
        dtypes are used); the batch needs >= 2 samples.
      batch_axes: ``jax.vmap``'s ``in_axes`` convention: an int or ``None`` for
        every argument, or a tuple with one entry per argument, each an int,
        ``None`` or a pytree prefix of that argument. Negative axes count from
        the end. Default ``0``.
      min_cluster_size: clusters smaller than this merge into a neighbour where
        that keeps the graph acyclic (an ablation knob; 1 disables merging).
      growth: ``"gather"`` (default): batched work, and batch-invariant work,
        are gathered into as few clusters as acyclicity allows, so a real
        model's graph fits on a screen; ``"plain"``: the patent's growth, a
        cluster takes only consumers of its nodes (an ablation; see
        :func:`cluster_plan`).
      symbolic: ``None`` (default): trace with the symbolic batch dimension
        ``B`` and, if ``fn`` does not allow it, fall back to the example batch
        size (see the module docstring). ``True``: symbolic or a ``ValueError``.
        ``False``: concrete.

    Returns:
      the :class:`ClusterGraph`. When symbolic, it and its clusters run at any
      batch size; when concrete, at the example batch size, and
      :meth:`ClusterGraph.at_batch_size` re-partitions ``fn`` at another.

    Raises:
      ValueError: ``batch_axes`` does not match the arguments, an axis is out of
        range, batched arguments disagree on the batch size, the batch has one
        sample, an argument or output is not an array, ``min_cluster_size`` is
        not a positive int, ``growth`` is unknown, or ``symbolic=True`` and
        ``fn`` is not polymorphic.
    """
    if (
        not isinstance(min_cluster_size, int)
        or isinstance(min_cluster_size, bool)
        or (min_cluster_size < 1)
    ):
        raise ValueError(BAD_MIN_CLUSTER_SIZE.format(value=min_cluster_size))
    if symbolic not in (None, True, False):
        raise ValueError(BAD_SYMBOLIC.format(value=symbolic))
    if not isinstance(growth, str) or growth not in GROWTHS:
        raise ValueError(BAD_GROWTH.format(options=GROWTHS, value=growth))
    in_axes, batch_size = normalize_batch_axes(example_args, batch_axes)
    return build_graph(
        fn, arg_specs(example_args), in_axes, batch_size, min_cluster_size, symbolic, growth
    )


def _why(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = f"{type(err).__name__}: {lines[0] if lines else ''}".strip()
    return text if len(text) <= 240 else text[:237] + "..."


def build_graph(
    fn: Callable[..., Any],
    specs: tuple[Any, ...],
    in_axes: Sequence[Axis],
    batch_size: int,
    min_cluster_size: int = 1,
    symbolic: bool | None = None,
    growth: str = "gather",
) -> ClusterGraph:
    """:func:`partition` on argument specs whose batch axes and size are already known.

    Any exception while tracing symbolically means "not polymorphic in the
    batch": a function with a genuine bug fails the concrete trace too, and
    that error is the one raised. A symbolic trace that went through but
    assumed one batch size (a ``reshape`` to hardcoded sizes, see
    :func:`.dims.pinned_batch_size`) falls back too.
    """
    reason = "partition(..., symbolic=False) asked for a concrete trace"
    traced = None
    if symbolic is not False:
        try:
            traced = trace(fn, specs, in_axes)
            reason = ""
        except Exception as err:
            if symbolic:
                raise ValueError(NOT_POLYMORPHIC.format(why=_why(err))) from err
            reason = f"tracing with a symbolic batch dimension B failed: {_why(err)}"
        pinned = None if traced is None else pinned_batch_size(traced[0].jaxpr)
        if pinned is not None:
            if symbolic:
                raise ValueError(NOT_POLYMORPHIC.format(why=pinned))
            traced, reason = None, f"the symbolic trace pins the batch size: {pinned}"
    if traced is None:
        traced = trace(fn, specs)
    closed, in_tree, out_tree = traced
    analysis = analyze(closed.jaxpr, in_axes, const_axes=[None] * len(closed.jaxpr.constvars))
    plan = cluster_plan(closed, analysis, min_cluster_size, growth)
    clusters = build_clusters(closed, analysis, plan, batch_size)
    return ClusterGraph(
        jaxpr=closed,
        labels=analysis.labels,
        clusters=clusters,
        dependencies=plan.dependencies,
        queue=plan.queue,
        in_tree=in_tree,
        out_tree=out_tree,
        in_batch_axes=analysis.in_axes,
        batch_size=batch_size,
        min_cluster_size=min_cluster_size,
        growth=growth,
        name=getattr(fn, "__name__", type(fn).__name__),
        analysis=analysis,
        symbolic=not reason,
        symbolic_reason=reason,
        fn=fn,
        arg_specs=specs,
        declared_batch_axes=tuple(in_axes),
    )
