"""The abstract signature of a call: what the trace level sees of the arguments.

A call's arguments are split into static arguments (hashed by value) and a
pytree of dynamic leaves (arrays or scalars: only shape, dtype and weak type
matter). With ``batch_axes`` (``jax.vmap``'s ``in_axes`` convention) the batch
dimension of every batched leaf becomes one symbolic dimension ``B`` at trace
and lower time; the concrete size only enters the compile level.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from jax import core
from jax import export as jax_export

__all__ = ["Signature", "make_signature"]

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
        dim = jax_export.symbolic_shape(BATCH_DIM_NAME)[0] if symbolic else None
        out = []
        for aval, axis in zip(self.avals, self.leaf_batch_axes, strict=True):
            shape: tuple[Any, ...] = aval.shape
            if symbolic and axis is not None:
                shape = (*shape[:axis], dim, *shape[axis + 1 :])
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
    axes = _leaf_batch_axes(batch_axes, args, static_pos, len(leaves), avals)
    batch_size = _batch_size(axes, avals, leaf_arg)
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


def _leaf_batch_axes(
    batch_axes: Any,
    args: tuple[Any, ...],
    static_argnums: tuple[int, ...],
    n_leaves: int,
    avals: tuple[core.ShapedArray, ...],
) -> tuple[int | None, ...]:
    if batch_axes is None:
        return (None,) * n_leaves
    if isinstance(batch_axes, int):
        batch_axes = (batch_axes,) * len(args)
    if not isinstance(batch_axes, tuple | list) or len(batch_axes) != len(args):
        raise ValueError(
            f"'batch_axes' must be an int, None, or a tuple with one entry per positional "
            f"argument ({len(args)}), like jax.vmap's in_axes. Got batch_axes={batch_axes!r}; "
            f"e.g. batch_axes=(None, 0) for (params, batch)."
        )
    per_leaf: list[int | None] = []
    for i, (arg, axes) in enumerate(zip(args, batch_axes, strict=True)):
        if i in static_argnums:
            if axes is not None:
                raise ValueError(
                    f"batch_axes[{i}]={axes!r} but argument {i} is static; use None there."
                )
            continue
        try:
            full = jax.tree.broadcast(axes, arg, is_leaf=lambda x: x is None)
            treedef: Any = jax.tree.structure(arg)  # flatten_up_to is untyped
            flat = treedef.flatten_up_to(full)
        except ValueError as err:
            raise ValueError(
                f"batch_axes[{i}]={axes!r} does not match the structure of argument {i} "
                f"({jax.tree_util.tree_structure(arg)}): {err}. Give one axis for the whole "
                "argument, or a pytree prefix of it."
            ) from None
        per_leaf.extend(flat)
    per_leaf.extend([None] * (n_leaves - len(per_leaf)))  # keyword arguments are unbatched
    out: list[int | None] = []
    for j, (axis, aval) in enumerate(zip(per_leaf, avals, strict=True)):
        if axis is None:
            out.append(None)
            continue
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ValueError(f"batch_axes entries must be ints or None. Got {axis!r}.")
        rank = aval.ndim
        if not -rank <= axis < rank:
            raise ValueError(
                f"batch_axes gives axis {axis} for input leaf {j} of shape {aval.shape}, "
                f"which has rank {rank}; use an axis in [{-rank}, {rank}) or None."
            )
        out.append(axis % rank)
    return tuple(out)


def _batch_size(
    axes: tuple[int | None, ...], avals: tuple[core.ShapedArray, ...], leaf_arg: list[Any]
) -> int | None:
    sizes = {(leaf_arg[j], avals[j].shape[a]) for j, a in enumerate(axes) if a is not None}
    distinct = {s for _, s in sizes}
    if len(distinct) > 1:
        detail = ", ".join(f"argument {w}: {s}" for w, s in sorted(sizes, key=str))
        raise ValueError(
            f"batched arguments disagree on the batch size ({detail}); every argument with a "
            "batch axis in batch_axes must have the same size along it."
        )
    return distinct.pop() if distinct else None
