"""Fingerprint of a function's code: what it runs, calls and closes over.

The trace level's chain key must change whenever tracing could give another
jaxpr. This module walks, from the function:

* its bytecode, constants (nested code objects included), names, defaults and
  keyword defaults; line numbers are left out, so moving code changes nothing;
* the values of its closure cells and of the globals it names, recursively:
  Python functions and classes defined outside installed packages are walked
  the same way, a user module contributes the attributes the code names;
* arrays closed over (they become constants of the program): their bytes;
* plain data (exactly ints, floats, strings, bytes, bools, None, and
  lists, tuples and dicts of them: configs) as one canonical text, dict keys
  sorted; a container's plain entries are hashed together, its other
  entries one by one;
* code from installed packages (site-packages, the standard library) by its
  qualified name and the package version, not its bytecode.

* code from installed packages keeps the values its closures hold: an
  ``optax.adam(learning_rate)`` or a ``hk.transform(forward)`` closes over the
  hyperparameter or the user's function, which decide the trace.

How an object decides the trace is said, most specific first, by:

1. its own ``__mlcache_fingerprint__()`` method, returning a string (the
   cluster programs of a schedule do: their jaxpr text);
2. a *fingerprinter* registered for its class or a base class, with
   :func:`register_fingerprinter`. It returns a description of the object
   (any value this module can walk: dicts, arrays, functions, configs) that
   holds everything deciding the trace; a dict's keys become named parts of
   the fingerprint, so a miss says which one changed (``function
   apply.<closure net>.state['linear2.kernel.value'] changed``). A class may be
   named by its module-qualified name (``"flax.nnx.Module"`` style, as
   ``type.__module__ + "." + type.__qualname__``), so registering costs no
   import: Keras, Flax and haiku are imported by the adapters only when such
   an object appears. The built-in adapters (Keras layers and models, flax
   nnx and linen modules, haiku transforms) are registered that way, in
   :mod:`mlcache_lab.cache.adapters`;
3. otherwise the walk above, through the instance's ``__dict__`` or slots.

Parameter values never enter: they are arguments, not closed over. What the
walk cannot vouch for (an object with no ``__dict__`` from outside installed
packages, a value whose ``repr`` holds a memory address, an object graph
deeper than the walk goes) makes the fingerprint *unreliable*: the caller then
always traces and relies on content keys, and the report names the object and
the fix (register a fingerprinter for its class, or pass it as an argument).

Example, a user's class registered by name::

    register_fingerprinter("mylib.Net", lambda net: {"config": net.config, "w": net.w})
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import xxhash

__all__ = ["Fingerprint", "Fingerprinter", "fingerprint_function", "register_fingerprinter"]

_MAX_DEPTH = 12
# Values whose bytes cannot be read: a tracer of an outer transformation, a token.
# They reach the caller, which then runs jax.jit (never an unreliable, traced entry).
_VALUE_UNREADABLE = (jax.errors.TracerArrayConversionError, jax.errors.JaxRuntimeError)
# Named parts: closed-over values and the keys of fingerprinters' descriptions,
# nested this deep, at most this many (the rest still enters the digest).
_PART_NESTING = 6
_MAX_PARTS = 512
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SCALARS = (int, float, complex, str, bytes, bool, type(None), type(Ellipsis))
# Exactly these types (no subclass: its repr may hide state) make plain data.
_PLAIN_SCALARS = frozenset(_SCALARS)
_PLAIN_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN_NESTING = 32


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """Digest of a function's code and closed-over values.

    Attributes:
      digest: 32 hex digits.
      reliable: False when something could not be fingerprinted faithfully.
      notes: why it is unreliable (empty when reliable), each naming the
        object and the fix.
      parts: ``(label, digest)`` of the named parts that make up ``digest``
        (what the function closes over, the keys of fingerprinters'
        descriptions), so a changed key can say which part changed.
    """

    digest: str
    reliable: bool
    notes: tuple[str, ...] = ()
    parts: tuple[tuple[str, str], ...] = ()


Fingerprinter = Callable[[Any], Any]
"""``fingerprinter(obj) -> description``: any value the walk can fingerprint."""

_BY_TYPE: dict[type, Fingerprinter] = {}
_BY_NAME: dict[str, Fingerprinter] = {}


def register_fingerprinter(cls: type | str, fingerprinter: Fingerprinter) -> None:
    """Fingerprint instances of ``cls`` (and its subclasses) by ``fingerprinter(obj)``.

    The description returned must hold everything about the object that can
    change the trace (architecture, configuration, closed-over arrays, the
    code it runs) and nothing that cannot (caches, counters, addresses). It
    is walked like any closed-over value: arrays by their bytes, functions by
    their code; a dict's keys name the parts a miss reports. The most
    specific registration along the class's MRO wins; registering again
    replaces.

    Args:
      cls: a class, or its module-qualified name (``type.__module__ + "." +
        type.__qualname__``, e.g. ``"keras.src.layers.layer.Layer"``): a name
        matches without importing the library.
      fingerprinter: a callable taking the object.

    Raises:
      TypeError: ``cls`` is neither a class nor a string, or ``fingerprinter``
        is not callable.
      ValueError: ``cls`` is a string without a module part.
    """
    if not callable(fingerprinter):
        raise TypeError(
            f"'fingerprinter' must be a callable taking the object. Got {fingerprinter!r} instead."
        )
    if isinstance(cls, str):
        if "." not in cls:
            raise ValueError(
                "'cls' given by name must be module-qualified, like "
                f"'mylib.models.Net'. Got cls={cls!r} instead."
            )
        _BY_NAME[cls] = fingerprinter
    elif isinstance(cls, type):
        _BY_TYPE[cls] = fingerprinter
    else:
        raise TypeError(
            f"'cls' must be a class or its module-qualified name. Got cls={cls!r} instead."
        )
    _fingerprinter_for.cache_clear()


@functools.cache
def _fingerprinter_for(cls: type) -> Fingerprinter | None:
    for base in cls.__mro__:
        found = _BY_TYPE.get(base) or _BY_NAME.get(f"{base.__module__}.{base.__qualname__}")
        if found is not None:
            return found
    return None


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
        self.parts: dict[str, str] = {}
        self._hashes = [self.hash]  # the innermost open part is hashed last
        self._seen: dict[int, int] = {}
        self._alive: list[Any] = []  # keeps ids in _seen from being reused

    def emit(self, *parts: Any) -> None:
        h = self._hashes[-1]
        for part in parts:
            data = part if isinstance(part, bytes) else str(part).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)

    def room_for_part(self) -> bool:
        return len(self._hashes) <= _PART_NESTING and len(self.parts) < _MAX_PARTS

    @contextlib.contextmanager
    def part(self, label: str) -> Iterator[None]:
        """What is emitted inside is also a named part; its digest enters the enclosing one."""
        if not self.room_for_part():
            yield
            return
        h = hashlib.blake2b(digest_size=16)
        self._hashes.append(h)
        try:
            yield
        finally:
            self._hashes.pop()
        label = label if label not in self.parts else f"{label}#{len(self.parts)}"
        self.parts[label] = h.hexdigest()
        self.emit("part", label, self.parts[label])

    def unreliable(self, where: str, why: str, obj: Any) -> None:
        cls = type(obj)
        name = f"{cls.__module__}.{cls.__qualname__}"
        self.notes.append(
            f"{where}: {why}; register a fingerprinter for it "
            f"(mlcache_lab.cache.register_fingerprinter({name!r}, fn)) or pass it as an argument"
        )

    def visit(self, obj: Any, where: str, depth: int = 0) -> None:
        if isinstance(obj, _SCALARS):
            self.emit("v", type(obj).__name__, repr(obj))
            return
        if type(obj) in _PLAIN_CONTAINERS:
            # Configs are thousands of small values: one text for the whole
            # tree instead of one emit each (a Keras ResNet50 has ~30,000).
            text = _plain_text(obj, 0)
            if text is not None:
                self.emit("plain", text)
                return
        if id(obj) in self._seen:  # recursion and shared objects: a back-reference
            self.emit("ref", self._seen[id(obj)])
            return
        self._seen[id(obj)] = len(self._seen)
        self._alive.append(obj)
        if depth > _MAX_DEPTH:
            self.unreliable(where, f"nested deeper than {_MAX_DEPTH} levels", obj)
            return
        self._visit_new(obj, where, depth + 1)

    def _visit_new(self, obj: Any, where: str, depth: int) -> None:
        custom = getattr(obj, "__mlcache_fingerprint__", None)
        if custom is not None and not isinstance(obj, type):
            # Generated programs (a cluster's jaxpr) say what they are themselves.
            self.emit("custom", type(obj).__qualname__, custom())
            return
        cls: Any = type(obj)  # classes are hashable; mypy's type[Any] is not known to be
        fingerprinter = None if isinstance(obj, type) else _fingerprinter_for(cls)
        if fingerprinter is not None:
            self._described(obj, fingerprinter, where, depth)
            return
        if isinstance(obj, types.ModuleType):
            self.emit("module", obj.__name__)
            return
        if isinstance(obj, np.ndarray | np.generic) or _is_jax_array(obj):
            self._array(obj)
            return
        if isinstance(obj, tuple | list | set | frozenset):
            items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
            self.emit(type(obj).__name__, len(items))
            self._entries(list(enumerate(items)), lambda i: f"{where}[{i}]", depth)
            return
        if isinstance(obj, dict):
            self.emit("dict", len(obj))
            entries = [(repr(k), obj[k]) for k in sorted(obj, key=repr)]
            self._entries(entries, lambda k: f"{where}[{k}]", depth)
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

    def _entries(
        self, entries: list[tuple[Any, Any]], where: Callable[[Any], str], depth: int
    ) -> None:
        """A container's ``(key, value)`` entries: the plain ones in one emit, then the others.

        A layer's attributes are mostly numbers and strings next to a few
        objects; one emit per entry was most of a Keras model's fingerprint.
        Every entry names its key, so no two containers emit the same.
        """
        plain, others = [], []
        for key, value in entries:
            text = _plain_text(value, 0)
            if text is None:
                others.append((key, value))
            else:
                plain.append(f"{key}={text}")
        # Plain texts hold no raw newline (repr escapes them): the join is unambiguous.
        self.emit("plain-entries", "\n".join(plain))
        for key, value in others:
            self.emit(key)
            self.visit(value, where(key), depth)

    def _described(self, obj: Any, fingerprinter: Fingerprinter, where: str, depth: int) -> None:
        """An object a registered fingerprinter describes: its class, then its description."""
        cls = type(obj)
        self.emit("described", cls.__module__, cls.__qualname__)
        self.visit(cls, f"type of {where}", depth)
        try:
            description = fingerprinter(obj)
        except _VALUE_UNREADABLE:
            raise  # a tracer or token closed over: the caller runs jax.jit instead
        except Exception as err:  # a broken adapter must not give a stale hit
            self.unreliable(where, f"its fingerprinter raised {type(err).__name__}: {err}", obj)
            return
        self._alive.append(description)
        if isinstance(description, dict):
            self._named(description, where, depth, attribute=True)
            return
        self.visit(description, f"{where}.<description>", depth)

    def _named(self, mapping: dict[Any, Any], where: str, depth: int, attribute: bool) -> None:
        """A description's dict: its keys (and those of dicts in it) name parts."""
        self.emit("description", len(mapping))
        for k in sorted(mapping, key=repr):
            label = f"{where}.{k}" if attribute and isinstance(k, str) else f"{where}[{k!r}]"
            value = mapping[k]
            self.emit(repr(k))
            if not self.room_for_part():  # the rest is hashed as any value is
                self.visit(value, label, depth)
                continue
            with self.part(label):
                if isinstance(value, dict) and id(value) not in self._seen:
                    self._seen[id(value)] = len(self._seen)
                    self._alive.append(value)
                    self._named(value, label, depth + 1, attribute=False)
                else:
                    self.visit(value, label, depth)

    def _array(self, obj: Any) -> None:
        dtype = getattr(obj, "dtype", None)
        if dtype is not None and _is_key_dtype(dtype):
            import jax  # typed PRNG keys: their bits are the data

            self.emit("key", str(dtype))
            obj = jax.random.key_data(obj)
        arr = np.ascontiguousarray(obj)
        # A byte view hashes without a copy, and works for ml_dtypes (bfloat16) too.
        data: Any = arr.reshape(-1).view(np.uint8) if arr.size else b""
        # xxh3: ~30x blake2b's speed; a Keras ResNet50's 100 MB of weights in ms.
        self.emit("array", arr.dtype.str, arr.shape, xxhash.xxh3_128_digest(data))

    def _library(self, obj: Any) -> bool:
        module = getattr(obj, "__module__", None) or ""
        if module and _is_library_module(module):
            self.emit("lib", module, getattr(obj, "__qualname__", ""), _package_version(module))
            return True
        return False

    def _function(self, fn: types.FunctionType, where: str, depth: int) -> None:
        if not self._library(fn):
            self.emit("function", fn.__qualname__)
            self._code(fn.__code__, where, depth, fn.__globals__)
        # A library's code is fixed by its version, not what its closures hold:
        # optax.adam(lr) closes over lr, hk.transform(f) over the user's f.
        self.visit(fn.__defaults__, f"{where}.__defaults__", depth)
        self.visit(fn.__kwdefaults__, f"{where}.__kwdefaults__", depth)
        for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=True):
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell: a name bound later
                self.emit("empty-cell", name)
                continue
            self.emit("cell", name)
            label = f"{fn.__qualname__}.<closure {name}>"
            with self.part(label):
                self.visit(value, label, depth)

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
            # _abc_impl: the subclass-check cache of an ABC, state of no trace.
            if name in ("__dict__", "__weakref__", "__doc__", "__module__", "_abc_impl"):
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
        self.unreliable(where, f"a {cls.__module__}.{cls.__qualname__} has no readable state", obj)


def _plain_text(obj: Any, nesting: int) -> str | None:
    """A canonical text of plain data (exact scalars, lists, tuples, dicts), else None.

    ``repr`` tells 1, 1.0, True and '1' apart, and lists from tuples; dict
    keys are sorted by their ``repr`` (as the walk sorts them), so two
    processes that build the same dict in another order agree.
    """
    cls = type(obj)
    if cls in _PLAIN_SCALARS:
        return f"{cls.__name__}:{obj!r}"
    if nesting > _PLAIN_NESTING or cls not in _PLAIN_CONTAINERS:
        return None
    items: list[str] = []
    if cls is dict:
        for key in obj:
            if type(key) not in _PLAIN_SCALARS:
                return None
        for key in sorted(obj, key=repr):
            value = _plain_text(obj[key], nesting + 1)
            if value is None:
                return None
            items.append(f"{key!r}={value}")
        return "{" + ",".join(items) + "}"
    for item in obj:
        value = _plain_text(item, nesting + 1)
        if value is None:
            return None
        items.append(value)
    return ("[" if cls is list else "(") + ",".join(items) + ("]" if cls is list else ")")


def _all_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.extend(_all_names(const))
    return names


def _is_jax_array(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module.startswith("jax") and hasattr(obj, "__array__") and hasattr(obj, "dtype")


def _is_key_dtype(dtype: Any) -> bool:
    if isinstance(dtype, np.dtype):
        return False
    import jax

    return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))


def fingerprint_function(fn: Any) -> Fingerprint:
    """Fingerprint ``fn`` (a function, method, partial, jitted or callable object)."""
    walker = _Walker()
    name = getattr(fn, "__qualname__", type(fn).__qualname__)
    if inspect.isclass(fn):
        walker.emit("constructor")
    walker.visit(fn, name)
    return Fingerprint(
        walker.hash.hexdigest(), not walker.notes, tuple(walker.notes), tuple(walker.parts.items())
    )


# The built-in adapters register through the public function, as a user would.
from . import adapters as _adapters  # noqa: E402, F401
