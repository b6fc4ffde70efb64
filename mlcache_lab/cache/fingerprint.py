"""Fingerprint of a function's code: what it runs, calls and closes over.

The trace level's chain key must change whenever tracing could give another
jaxpr. This module walks, from the function:

* its bytecode, constants (nested code objects included), names, defaults and
  keyword defaults; line numbers are left out, so moving code changes nothing;
* the values of its closure cells and of the globals it names, recursively:
  Python functions and classes defined outside installed packages are walked
  the same way, a user module contributes the attributes the code names;
* arrays closed over (they become constants of the program): their bytes;
* code from installed packages (site-packages, the standard library) by its
  qualified name and the package version, not its bytecode.

An object may describe itself with a ``__mlcache_fingerprint__()`` method
returning a string (the cluster programs of a schedule do: their jaxpr text).
Parameter values never enter: they are arguments, not closed over. What the
walk cannot vouch for (an object with no ``__dict__`` from outside installed
packages, a value whose ``repr`` holds a memory address) makes the fingerprint
*unreliable*: the caller then always traces and relies on content keys, and
the report says why.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import os
import re
import sys
import sysconfig
import types
from typing import Any

import numpy as np

__all__ = ["Fingerprint", "fingerprint_function"]

_MAX_DEPTH = 12
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SCALARS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Digest of a function's code and closed-over values.

    Attributes:
      digest: 32 hex digits.
      reliable: False when something could not be fingerprinted faithfully.
      notes: why it is unreliable (empty when reliable).
    """

    digest: str
    reliable: bool
    notes: tuple[str, ...] = ()


@functools.cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


@functools.cache
def _is_library_module(name: str) -> bool:
    if name in sys.builtin_module_names or name in ("builtins", "__builtin__"):
        return True
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    if path is None:
        # Namespace packages and frozen modules: library if the top-level is.
        top = name.partition(".")[0]
        return top != name and _is_library_module(top)
    return os.path.realpath(path).startswith(_library_roots())


@functools.cache
def _package_version(module_name: str) -> str:
    top = module_name.partition(".")[0]
    try:
        return importlib.metadata.version(top)
    except importlib.metadata.PackageNotFoundError:
        return sys.version.split()[0] if _is_library_module(top) else "?"


class _Walker:
    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)
        self.notes: list[str] = []
        self._seen: dict[int, int] = {}
        self._alive: list[Any] = []  # keeps ids in _seen from being reused

    def emit(self, *parts: Any) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            self.hash.update(len(data).to_bytes(8, "little"))
            self.hash.update(data)

    def visit(self, obj: Any, where: str, depth: int = 0) -> None:
        if isinstance(obj, _SCALARS):
            self.emit("v", type(obj).__name__, repr(obj))
            return
        if id(obj) in self._seen:  # recursion and shared objects: a back-reference
            self.emit("ref", self._seen[id(obj)])
            return
        self._seen[id(obj)] = len(self._seen)
        self._alive.append(obj)
        if depth > _MAX_DEPTH:
            self.notes.append(f"{where}: nested deeper than {_MAX_DEPTH} levels")
            return
        self._visit_new(obj, where, depth + 1)

    def _visit_new(self, obj: Any, where: str, depth: int) -> None:
        custom = getattr(obj, "__mlcache_fingerprint__", None)
        if custom is not None and not isinstance(obj, type):
            # Generated programs (a cluster's jaxpr) say what they are themselves.
            self.emit("custom", type(obj).__qualname__, custom())
            return
        if isinstance(obj, types.ModuleType):
            self.emit("module", obj.__name__)
            return
        if isinstance(obj, np.ndarray | np.generic) or _is_jax_array(obj):
            arr = np.asarray(obj)
            self.emit("array", arr.dtype.str, arr.shape, hashlib.blake2b(arr.tobytes()).digest())
            return
        if isinstance(obj, tuple | list | set | frozenset):
            items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
            self.emit(type(obj).__name__, len(items))
            for i, item in enumerate(items):
                self.visit(item, f"{where}[{i}]", depth)
            return
        if isinstance(obj, dict):
            self.emit("dict", len(obj))
            for k in sorted(obj, key=repr):
                self.emit(repr(k))
                self.visit(obj[k], f"{where}[{k!r}]", depth)
            return
        if isinstance(obj, functools.partial):
            self.emit("partial")
            self.visit(obj.func, f"{where}.func", depth)
            self.visit(obj.args, f"{where}.args", depth)
            self.visit(obj.keywords, f"{where}.keywords", depth)
            return
        if isinstance(obj, types.MethodType):
            self.emit("method")
            self.visit(obj.__func__, f"{where}.__func__", depth)
            self.visit(obj.__self__, f"{where}.__self__", depth)
            return
        wrapped = getattr(obj, "__wrapped__", None)  # jax.jit, functools.wraps
        if wrapped is not None and not isinstance(obj, type):
            self.emit("wrapped", type(obj).__qualname__)
            self.visit(wrapped, f"{where}.__wrapped__", depth)
            return
        if isinstance(obj, types.FunctionType):
            self._function(obj, where, depth)
            return
        if isinstance(obj, type):
            self._class(obj, where, depth)
            return
        if isinstance(obj, types.CodeType):
            self._code(obj, where, depth, globals_={})
            return
        self._instance(obj, where, depth)

    def _library(self, obj: Any) -> bool:
        module = getattr(obj, "__module__", None) or ""
        if module and _is_library_module(module):
            self.emit("lib", module, getattr(obj, "__qualname__", ""), _package_version(module))
            return True
        return False

    def _function(self, fn: types.FunctionType, where: str, depth: int) -> None:
        if self._library(fn):
            return
        self.emit("function", fn.__qualname__)
        self._code(fn.__code__, where, depth, fn.__globals__)
        self.visit(fn.__defaults__, f"{where}.__defaults__", depth)
        self.visit(fn.__kwdefaults__, f"{where}.__kwdefaults__", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: a name bound later
                self.emit("empty-cell", name)
                continue
            self.emit("cell", name)
            self.visit(value, f"{fn.__qualname__}.<closure {name}>", depth)

    def _code(self, code: types.CodeType, where: str, depth: int, globals_: dict[str, Any]) -> None:
        self.emit(
            "code",
            code.co_code,
            code.co_names,
            code.co_varnames,
            code.co_argcount,
            code.co_kwonlyargcount,
            code.co_flags,
        )
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const, where, depth, globals_)
            else:
                self.visit(const, f"{where}.<const>", depth)
        names = set(_all_names(code))
        for name in sorted(names):
            if name not in globals_:
                continue
            value = globals_[name]
            self.emit("global", name)
            if isinstance(value, types.ModuleType) and not _is_library_module(value.__name__):
                # A user module: the attributes this code names are what it uses.
                self.emit("user-module", value.__name__)
                for attr in sorted(names):
                    if attr in vars(value):
                        self.emit("attr", attr)
                        self.visit(vars(value)[attr], f"{value.__name__}.{attr}", depth)
                continue
            self.visit(value, f"global {name!r} of {where}", depth)

    def _class(self, cls: type, where: str, depth: int) -> None:
        if self._library(cls):
            return
        self.emit("class", cls.__qualname__)
        for base in cls.__mro__[1:]:
            self.visit(base, f"{cls.__qualname__} base", depth)
        for name, value in sorted(vars(cls).items()):
            if name in ("__dict__", "__weakref__", "__doc__", "__module__"):
                continue
            self.emit("member", name)
            self.visit(value, f"{cls.__qualname__}.{name}", depth)

    def _instance(self, obj: Any, where: str, depth: int) -> None:
        cls = type(obj)
        self.emit("instance")
        self.visit(cls, f"type of {where}", depth)
        state = getattr(obj, "__dict__", None)
        if state is not None:
            self.visit(state, f"{where}.__dict__", depth)
            return
        if _is_library_module(cls.__module__ or ""):
            text = repr(obj)
            if not _ADDRESS.search(text):
                self.emit("repr", text)
                return
        slots = [s for c in cls.__mro__ for s in getattr(c, "__slots__", ())]
        if slots:
            for slot in slots:
                self.emit("slot", slot)
                self.visit(getattr(obj, slot, None), f"{where}.{slot}", depth)
            return
        self.notes.append(f"{where}: a {cls.__module__}.{cls.__qualname__} has no readable state")


def _all_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_all_names(const))
    return names


def _is_jax_array(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("jax") and hasattr(obj, "__array__") and hasattr(obj, "dtype")


def fingerprint_function(fn: Any) -> Fingerprint:
    """Fingerprint ``fn`` (a function, method, partial, jitted or callable object)."""
    walker = _Walker()
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if inspect.isclass(fn):
        walker.emit("constructor")
    walker.visit(fn, name)
    return Fingerprint(walker.hash.hexdigest(), not walker.notes, tuple(walker.notes))
