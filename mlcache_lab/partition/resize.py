"""Re-specialise a batched cluster's jaxpr to another batch size.

A cluster's jaxpr has the analysed batch size ``B`` baked into its shapes and
into a few parameters (``broadcast_in_dim``'s shape, ``reshape``'s sizes, full
slices, gather slice sizes, loop bodies). Because the analysis knows the batch
axis of every value, the jaxpr can be traced again for ``n`` samples: each
equation is bound anew with those parameters rewritten, loop bodies recursively.
The result is what a scheduler compiles to run the cluster on a chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn, Literal, Var

from .analysis import Axis, JaxprAnalysis, Label

__all__ = ["specialize"]


def specialize(
    jaxpr: Jaxpr,
    labels: Sequence[Label],
    axes: Mapping[Var, Axis],
    batch_size: int,
    consts: Sequence[Any] = (),
) -> ClosedJaxpr:
    """``jaxpr`` traced again with ``batch_size`` samples on every batch axis.

    Args:
      jaxpr: a jaxpr all of whose equations are labelled batched.
      labels: the label of each of its equations.
      axes: the batch axis of each of its variables.
      batch_size: the new number of samples.
      consts: values of ``jaxpr.constvars`` (kept whole).
    """
    in_avals = [_resized(v.aval, axes[v], batch_size) for v in jaxpr.invars]

    def run(*args: Any) -> list[Any]:
        return _eval(jaxpr, consts, args, labels, batch_size)

    return jax.make_jaxpr(run)(*in_avals)


def _resized(aval: Any, axis: Axis, n: int) -> jax.ShapeDtypeStruct:
    shape = tuple(aval.shape)
    if axis is not None:
        shape = (*shape[:axis], n, *shape[axis + 1 :])
    return jax.ShapeDtypeStruct(shape, aval.dtype, weak_type=getattr(aval, "weak_type", False))


def _eval(
    jaxpr: Jaxpr, consts: Sequence[Any], args: Sequence[Any], labels: Sequence[Label], n: int
) -> list[Any]:
    env: dict[Var, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, Literal) else env[atom]

    for eqn, label in zip(jaxpr.eqns, labels, strict=True):
        params = _resized_params(eqn, label, n)
        bind_params = eqn.primitive.get_bind_params(params)
        with eqn.ctx.manager:
            out = eqn.primitive.bind(*map(read, eqn.invars), **bind_params)
        outs = out if eqn.primitive.multiple_results else [out]
        for v, val, axis in zip(eqn.outvars, outs, label.out_batch_axes, strict=True):
            want = _resized(v.aval, axis, n).shape
            if tuple(val.shape) != want:
                raise NotImplementedError(
                    f"Cannot re-specialise {eqn.primitive.name} to batch size {n}: it produced "
                    f"shape {tuple(val.shape)}, expected {want}. Its parameters hold the batch "
                    "size in a way mlcache_lab.partition.resize does not rewrite yet."
                )
            env[v] = val
    return [read(v) for v in jaxpr.outvars]


def _with(seq: Sequence[int], axis: int, n: int) -> tuple[int, ...]:
    return (*seq[:axis], n, *seq[axis + 1 :])


def _resized_params(eqn: JaxprEqn, label: Label, n: int) -> dict[str, Any]:
    p, name = dict(eqn.params), eqn.primitive.name
    in_axis, out_axis = label.in_batch_axes[0] if label.in_batch_axes else None, None
    if label.out_batch_axes:
        out_axis = label.out_batch_axes[0]
    if name in ("broadcast_in_dim", "iota") and out_axis is not None:
        p["shape"] = _with(p["shape"], out_axis, n)
    elif name == "reshape" and out_axis is not None:
        p["new_sizes"] = _with(p["new_sizes"], out_axis, n)
    elif name == "slice" and in_axis is not None:
        p["limit_indices"] = _with(p["limit_indices"], in_axis, n)
    elif name == "dynamic_slice" and in_axis is not None:
        p["slice_sizes"] = _with(p["slice_sizes"], in_axis, n)
    elif name == "gather" and in_axis is not None:
        if in_axis not in p["dimension_numbers"].operand_batching_dims:
            p["slice_sizes"] = _with(p["slice_sizes"], in_axis, n)
    elif name == "scan":
        p["jaxpr"] = _retrace(p["jaxpr"], label.inner[0], n)
    elif name == "while":
        p["cond_jaxpr"] = _retrace(p["cond_jaxpr"], label.inner[0], n)
        p["body_jaxpr"] = _retrace(p["body_jaxpr"], label.inner[1], n)
    elif name == "cond":
        p["branches"] = tuple(
            _retrace(b, inner, n) for b, inner in zip(p["branches"], label.inner, strict=True)
        )
    return p


def _retrace(body: ClosedJaxpr, inner: JaxprAnalysis, n: int) -> ClosedJaxpr:
    return specialize(body.jaxpr, inner.labels, inner.axes, n, body.consts)
