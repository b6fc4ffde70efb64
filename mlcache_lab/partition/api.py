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

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Literal, Var

from ..stages import pipeline
from ..stages.signature import (
    AXIS_OUT_OF_RANGE,
    BAD_AXIS_TYPE,
    BATCH_AXES_PREFIX,
    BATCH_AXES_STRUCTURE,
    BATCH_SIZES_DIFFER,
    Signature,
    common_batch_size,
    leaf_batch_axes,
)
from .analysis import Axis, JaxprAnalysis, analyze
from .cluster import build_clusters
from .clustering import ClusterPlan, grow_clusters
from .dims import BATCH_DIM, eqn_mentions_batch, pinned_batch_size
from .graph import ClusterGraph
from .inline import inline_calls

__all__ = [
    "AXIS_OUT_OF_RANGE",
    "BAD_AXIS_TYPE",
    "BATCH_AXES_PREFIX",
    "BATCH_AXES_STRUCTURE",
    "BATCH_DIM",
    "BATCH_SIZES_DIFFER",
    "GROWTHS",
    "arg_specs",
    "cluster_plan",
    "graph_from_jaxpr",
    "partition",
    "trace",
]

GROWTHS = ("gather", "plain")
"""Values of ``partition(..., growth=...)``: see :func:`cluster_plan`."""

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


def normalize_batch_axes(args: tuple[Any, ...], batch_axes: Any) -> tuple[list[Axis], int]:
    """One non-negative axis (or ``None``) per argument leaf, and the batch size.

    Raises:
      ValueError: bad structure or axis, differing batch sizes, no batched
        argument, a batch of fewer than 2 samples, or a non-array argument.
    """
    paths_leaves = jax.tree_util.tree_flatten_with_path(args)[0]
    for p, leaf in paths_leaves:
        if not _is_array(leaf):
            path = f"example_args{jax.tree_util.keystr(p)}"
            raise ValueError(NON_ARRAY_ARGUMENT.format(path=path, type_name=type(leaf).__name__))
    shapes = [tuple(np.shape(leaf)) for _, leaf in paths_leaves]
    # The one normaliser cached_jit uses too (stages.signature), naming example_args.
    axes, paths = leaf_batch_axes(batch_axes, args, shapes, what="example_args")
    common_batch_size(axes, shapes, paths)
    sizes = {
        path: shape[a] for path, a, shape in zip(paths, axes, shapes, strict=True) if a is not None
    }
    if not sizes:
        raise ValueError(NO_BATCHED_ARGUMENT.format(batch_axes=batch_axes))
    path, size = next(iter(sizes.items()))
    if size < 2:
        raise ValueError(BATCH_TOO_SMALL.format(size=size, path=path))
    return list(axes), size


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

    The trace is ``cached_jit``'s trace stage (:func:`~mlcache_lab.stages.pipeline.run_trace`):
    one tracer for both halves of the toolkit.

    Raises:
      whatever ``fn`` raises while tracing; symbolically, typically
      ``InconclusiveDimensionOperation`` or a shape ``TypeError``.
    """
    art = pipeline.run_trace(_checking_outputs(fn), trace_signature(args, in_axes), bool(in_axes))
    return inline_calls(art.jaxpr), jax.tree.structure(args), art.out_tree


def trace_signature(args: tuple[Any, ...], in_axes: Sequence[Axis] | None) -> Signature:
    """The trace stage's :class:`Signature` of argument specs (no statics, no keywords)."""
    leaves = [_spec(x) for x in jax.tree.leaves(args)]
    avals = tuple(core_aval(s) for s in leaves)
    axes = tuple(in_axes) if in_axes is not None else (None,) * len(leaves)
    sizes = {s.shape[a] for s, a in zip(leaves, axes, strict=True) if a is not None}
    return Signature(
        leaves, jax.tree.structure((tuple(args), {})), avals, axes, min(sizes, default=None), (), ()
    )


def core_aval(spec: jax.ShapeDtypeStruct) -> Any:
    """The ``ShapedArray`` of a spec."""
    return jax.core.ShapedArray(spec.shape, spec.dtype, weak_type=spec.weak_type)


def _checking_outputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, raising :data:`NON_ARRAY_OUTPUT` (naming the output) for a non-array output."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        for p, leaf in jax.tree_util.tree_flatten_with_path(out)[0]:
            if not _is_array(leaf):
                raise ValueError(
                    NON_ARRAY_OUTPUT.format(
                        path=f"output{jax.tree_util.keystr(p)}", type_name=type(leaf).__name__
                    )
                )
        return out

    checked.__name__ = getattr(fn, "__name__", type(fn).__name__)
    return checked


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
    return graph_from_jaxpr(
        fn, specs, closed, in_tree, out_tree, in_axes, batch_size, min_cluster_size, growth, reason
    )


def graph_from_jaxpr(
    fn: Callable[..., Any] | None,
    specs: tuple[Any, ...] | None,
    closed: ClosedJaxpr,
    in_tree: Any,
    out_tree: Any,
    in_axes: Sequence[Axis],
    batch_size: int,
    min_cluster_size: int = 1,
    growth: str = "gather",
    symbolic_reason: str = "",
    analysis: JaxprAnalysis | None = None,
    plan: ClusterPlan | None = None,
) -> ClusterGraph:
    """The graph of a traced jaxpr (calls inlined): analysed and clustered, unless given.

    ``analysis`` and ``plan`` come from the ``partition`` cache level, when
    ``batched_jit`` rebuilds a graph it partitioned in another process.
    """
    if analysis is None:
        analysis = analyze(closed.jaxpr, in_axes, const_axes=[None] * len(closed.jaxpr.constvars))
    if plan is None:
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
        symbolic=not symbolic_reason,
        symbolic_reason=symbolic_reason,
        fn=fn,
        arg_specs=specs,
        declared_batch_axes=tuple(in_axes),
    )
