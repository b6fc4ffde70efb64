"""The abstract signature of a call: what the trace level sees of the arguments.

A call's arguments are split into static arguments (hashed by value) and a
pytree of dynamic leaves (arrays or scalars: only shape, dtype and weak type
matter). With ``batch_axes`` (``jax.vmap``'s ``in_axes`` convention) the batch
dimension of every batched leaf becomes one symbolic dimension ``B`` at trace
and lower time; the concrete size only enters the compile level.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax import core
from jax import export as jax_export

__all__ = [
    "Signature",
    "batch_dim",
    "common_batch_size",
    "leaf_batch_axes",
    "make_signature",
    "with_batch_dim",
]

BATCH_DIM_NAME = "B"


@dataclasses.dataclass(frozen=True)
class Signature:
    """A call's arguments, seen abstractly.

    Attributes:
      dynamic: the dynamic leaves, flattened (the executable's inputs).
      in_tree: treedef of ``(dynamic args with statics removed, kwargs)``.
      avals: one ``ShapedArray`` per dynamic leaf, concrete.
      leaf_batch_axes: per dynamic leaf, its batch axis or None.
      batch_size: the common size of the batched axes, or None.
      statics: the static arguments: ``(position, value)`` then ``(name, value)``.
      flat_donate: indices of donated leaves.
    """

    dynamic: list[Any]
    in_tree: Any
    avals: tuple[core.ShapedArray, ...]
    leaf_batch_axes: tuple[int | None, ...]
    batch_size: int | None
    statics: tuple[tuple[int | str, Any], ...]
    flat_donate: tuple[int, ...]

    def specs(self, symbolic: bool) -> list[jax.ShapeDtypeStruct]:
        """``ShapeDtypeStruct`` per dynamic leaf; batch dims symbolic if asked."""
        dim = batch_dim() if symbolic else None
        out = []
        for aval, axis in zip(self.avals, self.leaf_batch_axes, strict=True):
            shape = with_batch_dim(aval.shape, axis if symbolic else None, dim)
            out.append(jax.ShapeDtypeStruct(shape, aval.dtype, weak_type=aval.weak_type))
        return out

    def describe(self, symbolic: bool) -> str:
        """Readable input types, e.g. ``f32[B,64] i32[]``."""
        parts = []
        for aval, axis in zip(self.avals, self.leaf_batch_axes, strict=True):
            dims = [str(d) for d in aval.shape]
            if symbolic and axis is not None:
                dims[axis] = BATCH_DIM_NAME
            weak = "~" if aval.weak_type else ""
            parts.append(f"{weak}{aval.dtype.name}[{','.join(dims)}]")
        return " ".join(parts)


def make_signature(
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    static_argnums: tuple[int, ...],
    donate_argnums: tuple[int, ...],
    batch_axes: Any,
    static_argnames: tuple[str, ...] = (),
    donate_argnames: tuple[str, ...] = (),
) -> Signature:
    """Validate and describe one call's arguments.

    Argument numbers and names follow ``jax.jit``: a negative number counts
    from the end of this call's positional arguments, a static number past
    them (an argument left to its default) is ignored, and a keyword argument
    is static or donated when its name is in ``static_argnames`` or
    ``donate_argnames``.

    Raises:
      NotAnArray: a dynamic leaf is not an array (the caller lets ``jax.jit``
        say so, with its own message, or run it when JAX accepts it).
      ValueError: ``batch_axes`` does not fit the arguments, or batch sizes differ.
    """
    static_pos = positions(static_argnums, len(args))
    donate_pos = positions(donate_argnums, len(args))
    statics: list[tuple[int | str, Any]] = [(i, args[i]) for i in static_pos]
    statics.extend((k, v) for k, v in kwargs.items() if k in static_argnames)
    if len(statics) > len(static_pos):
        kwargs = {k: v for k, v in kwargs.items() if k not in static_argnames}
    dyn_args = tuple(a for i, a in enumerate(args) if i not in static_pos)
    leaves, in_tree = jax.tree_util.tree_flatten((dyn_args, kwargs))
    dyn_positions = [i for i in range(len(args)) if i not in static_pos]
    leaf_arg = _leaf_argument_positions(dyn_args, kwargs, dyn_positions)
    avals = tuple(_aval(leaf) for leaf in leaves)
    shapes = [aval.shape for aval in avals]
    axes, paths = leaf_batch_axes(batch_axes, args, shapes, static_argnums=static_pos)
    batch_size = common_batch_size(axes, shapes, paths)
    donate = tuple(
        j
        for j, pos in enumerate(leaf_arg)
        if (pos in donate_pos if isinstance(pos, int) else pos in donate_argnames)
    )
    return Signature(leaves, in_tree, avals, axes, batch_size, tuple(statics), donate)


def positions(argnums: tuple[int, ...], n_args: int) -> tuple[int, ...]:
    """``argnums`` of a call with ``n_args`` positional arguments: negatives resolved, in range."""
    return tuple(sorted({i % n_args if i < 0 else i for i in argnums if -n_args <= i < n_args}))


def _leaf_argument_positions(
    dyn_args: tuple[Any, ...], kwargs: dict[str, Any], arg_positions: list[int]
) -> list[Any]:
    out: list[Any] = []
    for pos, arg in zip(arg_positions, dyn_args, strict=True):
        out.extend([pos] * len(jax.tree_util.tree_leaves(arg)))
    for name in sorted(kwargs):
        out.extend([name] * len(jax.tree_util.tree_leaves(kwargs[name])))
    return out


def _aval(leaf: Any) -> core.ShapedArray:
    if isinstance(leaf, core.Tracer):
        raise TracerArgument
    if isinstance(leaf, jax.Array | np.ndarray | np.generic | bool | int | float | complex):
        aval = jax.typeof(leaf)
        if isinstance(aval, core.ShapedArray):
            return aval
    raise NotAnArray(leaf)


class TracerArgument(Exception):
    """An argument is a tracer: the call is under a JAX transformation."""


class NotAnArray(Exception):
    """A dynamic leaf is not an array; ``jax.jit`` decides (it raises, or accepts a token)."""


BATCH_AXES_STRUCTURE = (
    "'batch_axes' must be an int, None, or a tuple with one entry per positional argument "
    "({n}), each an int, None or a pytree prefix of that argument (jax.vmap's in_axes "
    "convention). Got batch_axes={batch_axes!r}. Fix: e.g. batch_axes=(None, 0) for "
    "fn(params, x)."
)
BATCH_AXES_PREFIX = (
    "batch_axes[{i}]={axes!r} does not match the structure of argument {i} ({structure}). "
    "Fix: give one axis for the whole argument, or a pytree prefix of it."
)
BAD_AXIS_TYPE = (
    "batch_axes entries must be int or None. Got {value!r} (type {type_name}) for {path}. "
    "Fix: give an axis index, or None for an argument without a batch axis."
)
AXIS_OUT_OF_RANGE = (
    "batch_axes gives axis {axis} for {path} of shape {shape}, which has rank {ndim}. "
    "Fix: use an axis in [-{ndim}, {ndim}), or None for no batch axis."
)
STATIC_BATCHED = (
    "batch_axes[{i}]={axes!r} but argument {i} is static; use None there (a static argument "
    "is baked into the program, it has no batch axis)."
)
BATCH_SIZES_DIFFER = (
    "The batched arguments disagree on the batch size ({sizes}). Fix: pass arrays with the "
    "same size on their batch axes, or set batch_axes=None for arguments that are not batched."
)


def leaf_batch_axes(
    batch_axes: Any,
    args: tuple[Any, ...],
    shapes: Sequence[tuple[int, ...]],
    *,
    static_argnums: tuple[int, ...] = (),
    what: str = "args",
) -> tuple[tuple[int | None, ...], list[str]]:
    """``batch_axes`` (``jax.vmap``'s ``in_axes`` convention) as one axis per leaf.

    The one normaliser of ``batch_axes``: ``cached_jit`` and ``partition``
    both call it. An int (or ``None``) applies to every dynamic argument; a
    tuple has one entry per positional argument, each an int, ``None`` or a
    pytree prefix of that argument. Negative axes count from the end.

    Args:
      batch_axes: the user's ``batch_axes``.
      args: the positional arguments (static ones included).
      shapes: the shape of every leaf of the dynamic positional arguments, in
        flattening order; leaves after them (keyword arguments) are unbatched.
      static_argnums: positions of static arguments (resolved, non-negative).
      what: how messages name the arguments (``"args"``, ``"example_args"``).

    Returns:
      One non-negative axis or ``None`` per leaf of ``shapes``, and each leaf's
      path (``args[1]['x']``) for messages.

    Raises:
      ValueError: the structure does not fit the arguments, an entry is not an
        int or None, an axis is out of range, or a static argument is batched.
    """
    n = len(args)
    if batch_axes is None or (isinstance(batch_axes, numbers.Integral)):
        if isinstance(batch_axes, bool):
            raise ValueError(BATCH_AXES_STRUCTURE.format(n=n, batch_axes=batch_axes))
        batch_axes = tuple(None if i in static_argnums else batch_axes for i in range(n))
    if not isinstance(batch_axes, tuple | list) or len(batch_axes) != n:
        raise ValueError(BATCH_AXES_STRUCTURE.format(n=n, batch_axes=batch_axes))
    per_leaf: list[Any] = []
    paths: list[str] = []
    for i, (arg, axes) in enumerate(zip(args, batch_axes, strict=True)):
        if i in static_argnums:
            if axes is not None:
                raise ValueError(STATIC_BATCHED.format(i=i, axes=axes))
            continue
        try:
            spread = jax.tree.broadcast(axes, arg, is_leaf=lambda x: x is None)
        except (ValueError, TypeError):
            raise ValueError(
                BATCH_AXES_PREFIX.format(
                    i=i, axes=axes, structure=jax.tree_util.tree_structure(arg)
                )
            ) from None
        # Up to the argument's own structure: one entry per leaf, even where the
        # argument holds None (an empty subtree, which the broadcast keeps as None).
        per_leaf.extend(jax.tree.structure(arg).flatten_up_to(spread))  # type: ignore[attr-defined]
        paths.extend(
            f"{what}[{i}]{jax.tree_util.keystr(p)}"
            for p, _ in jax.tree_util.tree_flatten_with_path(arg)[0]
        )
    per_leaf.extend([None] * (len(shapes) - len(per_leaf)))  # keyword arguments are unbatched
    paths.extend(f"{what} keyword leaf {j}" for j in range(len(paths), len(shapes)))
    out: list[int | None] = []
    for path, axis, shape in zip(paths, per_leaf, shapes, strict=True):
        if axis is None:
            out.append(None)
            continue
        if not isinstance(axis, numbers.Integral) or isinstance(axis, bool):
            raise ValueError(
                BAD_AXIS_TYPE.format(value=axis, type_name=type(axis).__name__, path=path)
            )
        rank = len(shape)
        if not -rank <= int(axis) < rank:
            raise ValueError(
                AXIS_OUT_OF_RANGE.format(axis=axis, path=path, shape=tuple(shape), ndim=rank)
            )
        out.append(int(axis) % rank)
    return tuple(out), paths


def common_batch_size(
    axes: Sequence[int | None], shapes: Sequence[tuple[int, ...]], paths: Sequence[str]
) -> int | None:
    """The one size of every batched leaf along its batch axis, or None if none is batched.

    Raises:
      ValueError: batched leaves disagree (:data:`BATCH_SIZES_DIFFER`).
    """
    sizes = {
        path: shape[a] for path, a, shape in zip(paths, axes, shapes, strict=True) if a is not None
    }
    if len(set(sizes.values())) > 1:
        raise ValueError(BATCH_SIZES_DIFFER.format(sizes=sizes))
    return next(iter(sizes.values())) if sizes else None


def with_batch_dim(shape: Sequence[Any], axis: int | None, dim: Any) -> tuple[Any, ...]:
    """``shape`` with its batch axis (if any) replaced by ``dim`` (the symbolic ``B``, or a size).

    The one place a batch axis is replaced: symbolic specs for tracing, and
    concrete ones for re-tracing a concrete graph at another batch size.
    """
    shape = tuple(shape)
    return shape if axis is None else (*shape[:axis], dim, *shape[axis + 1 :])


def batch_dim() -> Any:
    """The symbolic batch dimension ``B`` that traces and segment programs share."""
    return jax_export.symbolic_shape(BATCH_DIM_NAME)[0]
