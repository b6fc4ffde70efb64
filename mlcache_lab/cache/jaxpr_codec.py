"""Persisting jaxprs: a pickle dialect that names primitives instead of copying them.

Jaxprs do not pickle as they are: their primitives are process-wide singletons
looked up by identity (a copy has no lowering rule), equations carry Python
tracebacks, and custom-derivative calls hold Python callables. This codec
writes a jaxpr for *forward execution*:

* a primitive is written as the module and attribute that define it, and read
  back as that very object (``persistent_id``); a primitive that no imported
  module exposes cannot be encoded;
* a symbolic dimension (``jax.export`` shape polymorphism) is written as its
  expression text and read back in one :class:`jax.export.SymbolicScope` per
  decoded jaxpr, so all dimensions of one program compare equal again;
* source locations and the debug info are dropped, so an edit that only moves
  code does not change the encoded bytes (the content key hashes them);
* ``custom_jvp_call`` / ``custom_vjp_call`` equations are replaced by a
  ``closed_call`` of their primal jaxpr: JAX lowers them the same way, and the
  cached program is only ever lowered and run, never differentiated (a
  ``CachedFunction`` given tracers defers to ``jax.jit``);
* anything else that pickle would copy blindly (functions, modules, objects
  from outside jax/numpy/ml_dtypes) raises :class:`JaxprCodecError`, and the
  caller keeps that level in memory only.

Format of an encoded jaxpr: the bytes ``b"MLCJ"``, one byte codec version
(:data:`CODEC_VERSION`), then a pickle (protocol 5) of the ``ClosedJaxpr``.
After encoding, :func:`encode_jaxpr` decodes once and compares the printed
programs, so a jaxpr the codec does not reproduce exactly is never persisted.
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import sys
import types
from typing import Any

import jax
import jax.numpy
import numpy as np
from jax import export as jax_export
from jax.extend import core
from jax.extend.core import primitives as _primitives

from .. import jax_internals

__all__ = ["CODEC_VERSION", "JaxprCodecError", "canonical_jaxpr", "decode_jaxpr", "encode_jaxpr"]

CODEC_VERSION = 1
_MAGIC = b"MLCJ"

# Packages whose plain objects (dtypes, enums, named tuples, meshes) may be
# pickled as values inside equation params; everything else is refused.
_TRUSTED_MODULE_PREFIXES = ("jax", "jaxlib", "numpy", "ml_dtypes", "builtins", "collections")


class JaxprCodecError(ValueError):
    """The jaxpr holds something this codec cannot persist faithfully."""


@functools.cache
def _closed_call_p() -> core.Primitive:
    return _primitives.closed_call_p


def _primitive_index() -> dict[int, tuple[str, str]]:
    """id(primitive) -> (module, attribute) over every imported module."""
    index: dict[int, tuple[str, str]] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not isinstance(module, types.ModuleType):
            continue
        try:
            items = list(vars(module).items())
        except TypeError:
            continue
        for attr, value in items:
            if isinstance(value, core.Primitive) and id(value) not in index:
                index[id(value)] = (name, attr)
    return index


_INDEX: dict[int, tuple[str, str]] = {}


def _locate_primitive(prim: core.Primitive) -> tuple[str, str]:
    global _INDEX
    where = _INDEX.get(id(prim))
    if where is None:  # a module imported since the index was built
        _INDEX = _primitive_index()
        where = _INDEX.get(id(prim))
    if where is None:
        raise JaxprCodecError(
            f"primitive {prim.name!r} is not exposed by any imported module, "
            "so it cannot be found again by name"
        )
    return where


def canonical_jaxpr(closed: core.ClosedJaxpr) -> core.ClosedJaxpr:
    """The forward-only program: custom-derivative calls replaced by closed calls."""
    return core.ClosedJaxpr(_canonical_open(closed.jaxpr), list(closed.consts))


def _canonical_open(jaxpr: core.Jaxpr) -> core.Jaxpr:
    eqns = []
    changed = False
    for eqn in jaxpr.eqns:
        new = _canonical_eqn(eqn)
        changed |= new is not eqn
        eqns.append(new)
    return jaxpr.replace(eqns=eqns) if changed else jaxpr


def _canonical_eqn(eqn: core.JaxprEqn) -> core.JaxprEqn:
    if eqn.primitive in (_primitives.custom_jvp_call_p, _primitives.custom_vjp_call_p):
        call = eqn.params["call_jaxpr"]
        if isinstance(call, core.Jaxpr):
            call = core.ClosedJaxpr(call, [])
        return eqn.replace(primitive=_closed_call_p(), params={"call_jaxpr": canonical_jaxpr(call)})
    params = {k: _canonical_param(v) for k, v in eqn.params.items()}
    if any(params[k] is not eqn.params[k] for k in params):
        return eqn.replace(params=params)
    return eqn


def _canonical_param(value: Any) -> Any:
    if isinstance(value, core.ClosedJaxpr):
        new = canonical_jaxpr(value)
        return value if new.jaxpr is value.jaxpr else new
    if isinstance(value, core.Jaxpr):
        return _canonical_open(value)
    if isinstance(value, tuple) and any(
        isinstance(v, core.Jaxpr | core.ClosedJaxpr) for v in value
    ):
        return tuple(_canonical_param(v) for v in value)
    return value


def _rebuild_eqn(
    invars: Any, outvars: Any, primitive: Any, params: Any, effects: Any, ctx: Any
) -> Any:
    return core.new_jaxpr_eqn(invars, outvars, primitive, params, effects, ctx=ctx)


def _rebuild_jaxpr(constvars: Any, invars: Any, outvars: Any, eqns: Any, effects: Any) -> Any:
    return core.Jaxpr(constvars, invars, outvars, eqns, effects, _DEBUG_INFO)


def _rebuild_array(value: np.ndarray) -> Any:
    return jax.numpy.asarray(value)


# The rebuild helpers keep their names: encoded bytes refer to them (and the
# content key hashes those bytes).
def _rebuild_var(cls: type, aval: Any, initial_qdd: Any, final_qdd: Any) -> Any:
    return jax_internals.rebuild_var(cls, aval, initial_qdd, final_qdd)


def _rebuild_ctx(*fields: Any) -> Any:
    return jax_internals.rebuild_eqn_context(*fields)


_DEBUG_INFO = core.DebugInfo("cached_jit", "<mlcache_lab cached jaxpr>", None, None)


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, core.Primitive):
            return ("primitive", *_locate_primitive(obj))
        if jax_export.is_symbolic_dim(obj):
            return ("dim", str(obj))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, core.JaxprEqn):
            return _rebuild_eqn, (
                obj.invars,
                obj.outvars,
                obj.primitive,
                obj.params,
                obj.effects,
                obj.ctx,
            )
        if isinstance(obj, core.Literal):
            return core.Literal, (obj.val, obj.aval)
        if isinstance(obj, core.Var):  # pickle's memo keeps one Var per original
            return _rebuild_var, (type(obj), *jax_internals.var_state(obj))
        if jax_internals.is_eqn_context(obj):
            return _rebuild_ctx, jax_internals.eqn_context_fields(obj)
        if isinstance(obj, core.Jaxpr):
            return _rebuild_jaxpr, (
                obj.constvars,
                obj.invars,
                obj.outvars,
                obj.eqns,
                obj.effects,
            )
        if isinstance(obj, jax.Array):  # a closed-over constant: persist its value
            return _rebuild_array, (np.asarray(obj),)
        if isinstance(obj, jax_internals.TypedNdArray):  # ndarray's pickle drops its aval
            return jax_internals.TypedNdArray, (np.asarray(obj).view(np.ndarray), obj.aval)
        if isinstance(obj, np.ndarray | np.generic):
            return NotImplemented
        if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
            # Pickled by reference (module + qualified name): fine for our own
            # rebuild helpers and for jax's named functions, a guess otherwise.
            module = getattr(obj, "__module__", None) or ""
        elif isinstance(obj, types.MethodType | types.ModuleType | functools.partial):
            raise JaxprCodecError(f"cannot encode the callable {obj!r}")
        else:
            module = type(obj).__module__ or ""
        if module != __name__ and not module.startswith(_TRUSTED_MODULE_PREFIXES):
            raise JaxprCodecError(f"cannot encode {obj!r} (from module {module!r})")
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self._scope = jax_export.SymbolicScope()

    def persistent_load(self, pid: Any) -> Any:
        kind, *rest = pid
        if kind == "primitive":
            module, attr = rest
            prim = getattr(importlib.import_module(module), attr, None)
            if not isinstance(prim, core.Primitive):
                raise JaxprCodecError(f"{module}.{attr} is no longer a primitive")
            return prim
        if kind == "dim":
            (dim,) = jax_export.symbolic_shape(rest[0], scope=self._scope)
            return dim
        raise JaxprCodecError(f"unknown persistent id {pid!r}")

    def find_class(self, module: str, name: str) -> Any:
        # Only what jaxprs are made of: classes from jax/numpy, a few named
        # reconstruction functions, and this module's rebuild helpers. Anything
        # else (eval, os.system, ...) is refused before it can be called.
        if module == __name__ and name.startswith("_rebuild_"):
            return super().find_class(module, name)
        if module.startswith(_TRUSTED_MODULE_PREFIXES):
            obj = super().find_class(module, name)
            if isinstance(obj, type):
                if module != "builtins" or name in _SAFE_BUILTIN_TYPES:
                    return obj
            elif (module, name) in _ALLOWED_FUNCTIONS or module.startswith(
                jax_internals.PICKLED_FUNCTION_MODULE_PREFIXES
            ):
                return obj
        raise JaxprCodecError(f"refusing to load {module}.{name} from an encoded jaxpr")


_SAFE_BUILTIN_TYPES = frozenset(
    {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    }
)
_ALLOWED_FUNCTIONS = (
    frozenset(
        {
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
        }
    )
    | jax_internals.PICKLED_FUNCTIONS
)


def encode_jaxpr(closed: core.ClosedJaxpr) -> bytes:
    """Encode ``closed`` (already :func:`canonical_jaxpr`-ed) to bytes.

    Raises:
      JaxprCodecError: the jaxpr holds something that cannot be persisted, or
        decoding does not give back the same program.
    """
    buf = io.BytesIO()
    buf.write(_MAGIC + bytes([CODEC_VERSION]))
    try:
        _Pickler(buf, protocol=5).dump(closed)
    except JaxprCodecError:
        raise
    except Exception as err:  # pickle reports unpicklable params in many ways
        raise JaxprCodecError(f"pickling failed: {type(err).__name__}: {err}") from err
    data = buf.getvalue()
    decoded = decode_jaxpr(data)
    if _program_text(decoded) != _program_text(closed):
        raise JaxprCodecError("the decoded jaxpr does not print like the original")
    return data


def decode_jaxpr(data: bytes) -> core.ClosedJaxpr:
    """Decode bytes written by :func:`encode_jaxpr`.

    Raises:
      JaxprCodecError: not an encoded jaxpr, another codec version, or damaged.
    """
    if data[:4] != _MAGIC:
        raise JaxprCodecError("not an encoded jaxpr (bad magic bytes)")
    if len(data) < 5 or data[4] != CODEC_VERSION:
        version = data[4] if len(data) > 4 else None
        raise JaxprCodecError(f"jaxpr codec version {version}, this build reads {CODEC_VERSION}")
    try:
        closed = _Unpickler(io.BytesIO(data[5:])).load()
    except JaxprCodecError:
        raise
    except Exception as err:
        raise JaxprCodecError(f"damaged encoded jaxpr: {type(err).__name__}: {err}") from err
    if not isinstance(closed, core.ClosedJaxpr):
        raise JaxprCodecError(f"decoded a {type(closed).__name__}, expected a ClosedJaxpr")
    return closed


def _program_text(closed: core.ClosedJaxpr) -> str:
    consts = "|".join(f"{np.asarray(c).dtype}{np.asarray(c).shape}" for c in closed.consts)
    return f"{closed.jaxpr}#{consts}"
