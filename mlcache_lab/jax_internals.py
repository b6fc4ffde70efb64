"""Every private JAX internal mlcache_lab relies on, behind one module.

mlcache_lab persists JAX's own objects (jaxprs, equation contexts, trace
contexts) and mirrors ``jax.stages`` exactly, which needs a few things JAX
does not make public. They all live here, each with a test in
``tests/test_jax_internals.py`` that checks it exists *and* behaves as we rely
on it, so a JAX release that moves or changes one breaks here, at import or in
that test, with a message naming it, not deep inside a cache lookup.

Everything JAX does expose publicly is used from its public home instead
(``jax.extend.core`` for jaxpr types and primitives, ``jax.export`` for
symbolic dimensions, ``jax.tree.broadcast``, ``jax.typeof``, ``jax.config``
flags, ``jax.extend.backend``, ``jax.extend.mlir.ir``); do not add those here.

This module is a leaf: it imports only jax (and the standard library), so
every package of mlcache_lab may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import jax

__all__ = [
    "PICKLED_FUNCTIONS",
    "PICKLED_FUNCTION_MODULE_PREFIXES",
    "ArrayImpl",
    "TypedNdArray",
    "bind_equation",
    "compiled_executable",
    "default_device",
    "describe_axis_env",
    "eqn_context_fields",
    "evaluate_dim",
    "fun_name",
    "hlo_cost_analysis",
    "hlo_text",
    "is_eqn_context",
    "jit_disabled",
    "make_ir_context",
    "pytree_differences",
    "rebuild_eqn_context",
    "rebuild_var",
    "resolve_argnums",
    "stablehlo_to_xla_computation",
    "symbolic_scope",
    "trace_context",
    "trace_context_items",
    "traceback_in_locations_limit",
    "uses_pjrt_c_api",
    "var_state",
]

UNSUPPORTED_JAX = (
    "mlcache_lab relies on the private JAX internal {what}, which JAX {version} does not "
    "provide ({error}). Fix: install a JAX version mlcache_lab supports, or update "
    "mlcache_lab/jax_internals.py for this release (tests/test_jax_internals.py checks "
    "each internal)."
)


def _unsupported(what: str, err: Exception) -> ImportError:
    return ImportError(
        UNSUPPORTED_JAX.format(
            what=what, version=jax.__version__, error=f"{type(err).__name__}: {err}"
        )
    )


try:
    from jax._src import api_util as _api_util
    from jax._src import config as _config
    from jax._src import core as _core
    from jax._src import literals as _literals
    from jax._src import tree_util as _tree_util
    from jax._src import util as _util
    from jax._src import xla_bridge as _xla_bridge
    from jax._src.array import ArrayImpl
    from jax._src.interpreters import mlir as _mlir
    from jax._src.lib import _jax
    from jax._src.lib import hlo as _hlo
except ImportError as _err:
    raise _unsupported(f"module {_err.name}", _err) from _err

try:
    # Bound once, at import: an attribute a release removed fails here, named.
    _what = "jax._src.config.trace_context"
    trace_context: Callable[[], Any] = _config.trace_context
    """JAX's trace context: the hashable tuple of every setting JAX keys its own caches on.

    Called per ``cached_jit`` call (the fast path's key), so it is the function itself.
    """
    _what = "jax._src.config.trace_context_names"
    _trace_context_names = _config.trace_context_names
    _what = "jax._src.config.disable_jit"
    _disable_jit = _config.disable_jit
    _what = "jax._src.config.default_device"
    _default_device = _config.default_device
    _what = "jax._src.config.traceback_in_locations_limit"
    _traceback_limit = _config.traceback_in_locations_limit
    _what = "jax._src.api_util.resolve_argnums"
    _resolve_argnums = _api_util.resolve_argnums
    _what = "jax._src.api_util.fun_signature"
    _fun_signature = _api_util.fun_signature
    _what = "jax._src.util.fun_name"
    _fun_name = _util.fun_name
    _what = "jax._src.core.AxisEnv"
    _AxisEnv = _core.AxisEnv
    _what = "jax._src.core.JaxprEqnContext"
    _JaxprEqnContext = _core.JaxprEqnContext
    _create_eqn_context = _core.JaxprEqnContext._create
    _what = "jax._src.core.Var"
    _Var = _core.Var
    _what = "jax._src.literals.TypedNdArray"
    TypedNdArray = _literals.TypedNdArray
    """Host-side array (an ``np.ndarray`` subclass) that carries its JAX aval."""
    _what = "jax._src.tree_util.equality_errors_pytreedef"
    _equality_errors = _tree_util.equality_errors_pytreedef
    _what = "jax._src.xla_bridge.using_pjrt_c_api"
    _uses_pjrt_c_api = _xla_bridge.using_pjrt_c_api
    _what = "jax._src.interpreters.mlir.make_ir_context"
    _make_ir_context = _mlir.make_ir_context
    _what = "jax._src.lib._jax.mlir.mlir_module_to_xla_computation"
    _to_xla_computation = _jax.mlir.mlir_module_to_xla_computation
    _what = "jax._src.lib._jax.hlo_module_cost_analysis"
    _cost_analysis = _jax.hlo_module_cost_analysis
    _what = "jax._src.lib.hlo.HloPrintOptions"
    _HloPrintOptions = _hlo.HloPrintOptions
except AttributeError as _err:
    raise _unsupported(_what, _err) from _err

# How JAX's own objects inside a jaxpr pickle: the functions pickle refers to by
# name, which the jaxpr codec's unpickler must allow (and nothing else). The
# aval of every array holds a NamedSharding (reduced by this function); a PRNG
# key's dtype holds its implementation's functions (threefry, rbg, ...).
PICKLED_FUNCTIONS = frozenset({("jax._src.named_sharding", "_unpickle_named_sharding")})
"""``(module, name)`` of the functions JAX's jaxpr objects pickle by reference."""
PICKLED_FUNCTION_MODULE_PREFIXES = ("jax._src.random.",)
"""Modules whose functions JAX's PRNG implementations (inside key dtypes) pickle by reference."""


# ------------------------------------------------------------ configuration
def trace_context_items() -> list[tuple[str, Any]]:
    """``(name, value)`` of every item of :func:`trace_context`, in order."""
    return list(zip(_trace_context_names(), trace_context(), strict=True))


# jax.config.jax_disable_jit and jax.config.jax_default_device read the same
# values publicly, but untyped (Config.__getattr__) and three times slower.
def jit_disabled() -> bool:
    """Whether ``jax.disable_jit()`` (or ``JAX_DISABLE_JIT``) is in effect here."""
    return bool(_disable_jit.value)


def default_device() -> Any:
    """``jax.default_device``'s current value: None, a ``jax.Device``, or a platform name."""
    return _default_device.value


def traceback_in_locations_limit(limit: int) -> AbstractContextManager[Any]:
    """A context in which lowering records at most ``limit`` frames per source location.

    ``0`` drops source locations from the StableHLO, so the same jaxpr lowers to
    the same bytes from any caller.
    """
    manager: AbstractContextManager[Any] = _traceback_limit(limit)
    return manager


def describe_axis_env(value: Any) -> str | None:
    """A trace context's axis environment as text valid in any process; None for other values.

    Its ``repr`` is only an address; the text names the axis sizes, the SPMD
    axes and the explicit mesh axes (what an enclosing ``vmap``/``shard_map`` sets).
    """
    if not isinstance(value, _AxisEnv):
        return None
    sizes = ", ".join(f"{k!r}: {v}" for k, v in value.axis_sizes.items())
    spmd = sorted(map(repr, value.spmd_axis_names))
    explicit = sorted(map(repr, value.explicit_mesh_axis_names))
    return f"AxisEnv({{{sizes}}}, spmd={spmd}, explicit_mesh={explicit})"


# ------------------------------------------------------------ jax.jit's surface
def resolve_argnums(
    fn: Callable[..., Any],
    donate_argnums: int | Sequence[int] | None,
    donate_argnames: str | Iterable[str] | None,
    static_argnums: int | Sequence[int] | None,
    static_argnames: str | Iterable[str] | None,
) -> tuple[tuple[int, ...], tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """``jax.jit``'s resolution of argument numbers and names against ``fn``'s signature.

    Returns:
      ``(donate_argnums, donate_argnames, static_argnums, static_argnames)``, each
      completed from the other (a name gives its position and back), as ``jax.jit``
      resolves them, with its errors.
    """
    donate, donate_names, static, static_names = _resolve_argnums(
        fn,
        _fun_signature(fn),
        donate_argnums,
        donate_argnames,
        static_argnums,
        static_argnames,
    )
    return tuple(donate), tuple(donate_names), tuple(static), tuple(static_names)


def fun_name(fn: Callable[..., Any]) -> str:
    """A callable's name as JAX prints it (``functools.partial`` unwrapped)."""
    return str(_fun_name(fn))


def pytree_differences(actual: Any, expected: Any) -> list[tuple[Any, str, str, str]]:
    """Where two treedefs differ: ``(key path, actual, expected, explanation)`` per difference.

    What ``jax.stages.Compiled.__call__`` reports when called with another pytree.
    """
    return list(_equality_errors(actual, expected))


def compiled_executable(compiled: jax.stages.Compiled) -> Any:
    """The executable object inside a ``jax.stages.Compiled`` (its ``_executable``)."""
    return compiled._executable


# ------------------------------------------------------------ StableHLO and HLO
def make_ir_context() -> Any:
    """A fresh MLIR context with JAX's dialects registered (what JAX lowers into)."""
    return _make_ir_context()


def stablehlo_to_xla_computation(bytecode: bytes) -> Any:
    """An ``XlaComputation`` from a StableHLO module's bytecode."""
    return _to_xla_computation(bytecode, use_tuple_args=False)


def hlo_text(computation: Any, *, debug_info: bool) -> str:
    """An ``XlaComputation``'s HLO text as ``jax.stages.Lowered.as_text("hlo")`` prints it."""
    options = _HloPrintOptions.short_parsable()
    options.print_metadata = debug_info
    return str(computation.as_hlo_module().to_string(options))


def uses_pjrt_c_api(backend: Any) -> bool:
    """Whether a backend (``jax.extend.backend.get_backend()``) runs through the PJRT C API.

    As ``jax.stages.Lowered.cost_analysis``: such a backend has no cost analysis of
    unoptimized HLO.
    """
    return bool(_uses_pjrt_c_api(backend))


def hlo_cost_analysis(backend: Any, computation: Any) -> Any:
    """XLA's cost estimates of an unoptimized ``XlaComputation`` on ``backend``."""
    return _cost_analysis(backend, computation.as_hlo_module())


# ------------------------------------------------------------ jaxpr internals
def is_eqn_context(obj: Any) -> bool:
    """Whether ``obj`` is a ``JaxprEqnContext`` (the settings an equation is bound under)."""
    return isinstance(obj, _JaxprEqnContext)


def eqn_context_fields(ctx: Any) -> tuple[Any, ...]:
    """A ``JaxprEqnContext`` as plain values, the arguments of :func:`rebuild_eqn_context`.

    ``xla_metadata`` becomes a sorted tuple of pairs, so equal contexts give equal fields.
    """
    xla_metadata = ctx.xla_metadata
    return (
        ctx.compute_type,
        ctx.threefry_partitionable,
        ctx.cur_abstract_mesh,
        ctx.remove_size_one_mesh_axis,
        None if xla_metadata is None else tuple(sorted(xla_metadata.items())),
    )


def rebuild_eqn_context(*fields: Any) -> Any:
    """The (interned) ``JaxprEqnContext`` of :func:`eqn_context_fields`' values."""
    return _create_eqn_context(*fields)


def bind_equation(eqn: Any, values: Sequence[Any], params: Any = None) -> list[Any]:
    """Bind a ``JaxprEqn``'s primitive to ``values``, as ``jax.core.eval_jaxpr`` binds it.

    In the equation's context (compute type, mesh, PRNG settings), with the
    primitive's bind parameters made from ``params`` (the equation's own when None).

    Returns:
      the outputs, as a list even for a primitive with one result.
    """
    prim = eqn.primitive
    bind_params = prim.get_bind_params(eqn.params if params is None else params)
    with eqn.ctx.manager:
        out = prim.bind(*values, **bind_params)
    return list(out) if prim.multiple_results else [out]


def var_state(var: Any) -> tuple[Any, Any, Any]:
    """A ``Var``'s ``(aval, initial_qdd, final_qdd)``: what :func:`rebuild_var` takes."""
    return var.aval, var.initial_qdd, var.final_qdd


def rebuild_var(cls: type, aval: Any, initial_qdd: Any, final_qdd: Any) -> Any:
    """A new ``Var`` (or ``DropVar``, as ``cls``) with this state."""
    var: Any = object.__new__(cls)
    _Var.__init__(var, aval, initial_qdd, final_qdd)
    return var


def evaluate_dim(dim: Any, values: dict[str, int]) -> int:
    """A symbolic dimension expression (``B``, ``3*B``) at concrete values of its variables."""
    return int(dim._evaluate(values))


def symbolic_scope(dim: Any) -> jax.export.SymbolicScope:
    """The ``jax.export.SymbolicScope`` a symbolic dimension belongs to."""
    scope: jax.export.SymbolicScope = dim.scope
    return scope
