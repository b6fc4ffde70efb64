"""cached_jit: a ``jax.jit`` whose trace, lower and compile stages are cached on disk.

How a call finds its executable (DESIGN.md, "Cache keys"):

1. In-process fast path: a call whose signature was seen before goes straight
   to the loaded executable. The signature is what ``jax.jit`` keys its own
   cache on: JAX's trace context (x64, rank promotion, matmul precision,
   default device, the enclosing ``vmap``/``shard_map`` axis environment,
   ...), the argument tree, the static arguments by type and value, and each
   leaf's type, shape, dtype and weak type.
2. Otherwise the chain keys of the three levels are computed (no tracing
   needed: the trace config is the function's fingerprint plus the abstract
   inputs and the trace context) and looked up *deepest first*: a hit at
   ``compile`` bypasses ``trace`` and ``lower`` (they are not even loaded), a
   hit at ``lower`` bypasses ``trace``.
3. Each level after the deepest hit is looked up by *content* (hash of the
   previous level's artifact and this level's config) before it is
   regenerated, so an edit that leaves the jaxpr unchanged reuses the
   StableHLO and the executable already on disk.
4. Every regenerated level is written under its content key, with a pointer
   from its chain key, and its named components are recorded so the next
   miss can say which one changed.

A function whose fingerprint is unreliable (see
:mod:`mlcache_lab.cache.fingerprint`), or a trace context with no stable
description, skips step 2: it is always traced, and the levels after trace
are found by content.

Where caching cannot apply, the call is ``jax.jit(fn)``'s, with the same
arguments, exactly: under a transformation (an argument or a closed-over value
is a tracer), under ``jax.disable_jit()``, for inputs JAX accepts that are not
arrays (tokens, ``ShapeDtypeStruct`` under ``eval_shape``), for programs that
take or return tokens, and for every input ``jax.jit`` rejects (so the errors
are JAX's own).
"""

from __future__ import annotations

import functools
import time
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from .. import jax_internals
from ..cache.fingerprint import Fingerprint, fingerprint_function
from ..cache.keys import KeyComponents, chain_key, content_key, explain_change
from ..cache.store import LEVELS, CacheStore, Lookup, default_store
from . import pipeline
from .aot import Lowered, Traced
from .report import LevelReport, StageReport
from .signature import NotAnArray, Signature, TracerArgument, make_signature, positions

__all__ = ["CachedFunction", "cached_jit"]

Artifact = pipeline.TraceArtifact | pipeline.LowerArtifact | pipeline.CompileArtifact
_DECODERS: dict[str, Any] = {
    "trace": pipeline.TraceArtifact,
    "lower": pipeline.LowerArtifact,
    "compile": pipeline.CompileArtifact,
}
_trace_context = jax_internals.trace_context
_tree_flatten = jax.tree_util.tree_flatten
_ArrayImpl = jax_internals.ArrayImpl
_tree_unflatten = jax.tree_util.tree_unflatten
_JAX = "jax.jit"  # a fast-path entry meaning: this signature is jax.jit's to run


class CachedFunction:
    """A callable like ``jax.jit(fn)`` whose compilation stages are cached in a :class:`CacheStore`.

    Create it with :func:`cached_jit`. After each call, :attr:`last_report`
    says what every level did.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        store: CacheStore | None,
        batch_axes: Any,
        static_argnums: int | Sequence[int] | None,
        donate_argnums: int | Sequence[int] | None,
        compiler_options: Mapping[str, Any] | None,
        lowering_platforms: Sequence[str] | None,
        device: Any = None,
        static_argnames: str | Iterable[str] | None = None,
        donate_argnames: str | Iterable[str] | None = None,
    ) -> None:
        # jax.jit validates fn and the argument numbers and names, with its own errors
        # (a non-callable, a generator function, a staticmethod, a name fn does not take).
        self._jitted: Any = jax.jit(
            fn,
            static_argnums=static_argnums,
            static_argnames=static_argnames,
            donate_argnums=donate_argnums,
            donate_argnames=donate_argnames,
        )
        donate, donate_names, static, static_names = jax_internals.resolve_argnums(
            fn,
            donate_argnums,
            donate_argnames,
            static_argnums,
            static_argnames,
        )
        if store is not None and not isinstance(store, CacheStore):
            raise TypeError(
                f"'store' must be a mlcache_lab.CacheStore or None (the default store). "
                f"Got store={store!r}; use store=mcl.CacheStore(path)."
            )
        if isinstance(lowering_platforms, str):
            raise TypeError(
                f"'lowering_platforms' must be a sequence of platform names. Got "
                f"lowering_platforms={lowering_platforms!r}; write ({lowering_platforms!r},)."
            )
        self._fn = fn
        self._store = store
        self._batch_axes = batch_axes
        self._static, self._static_names = tuple(static), tuple(static_names)
        self._donate, self._donate_names = tuple(donate), tuple(donate_names)
        self._compiler_options = pipeline.check_compiler_options(compiler_options)
        self._platforms = tuple(lowering_platforms) if lowering_platforms else None
        if device is not None and not isinstance(device, jax.Device):
            raise TypeError(
                f"'device' must be a jax.Device or None. Got device={device!r}; "
                "pick one from jax.devices()."
            )
        self._device = device
        self._fingerprint: Fingerprint | None = None
        self._fast: dict[Any, Any] = {}
        self._static_positions: dict[int, tuple[int, ...]] = {}
        self._has_statics = bool(self._static or self._static_names)
        self.last_report: StageReport | None = None
        # Identity reads as the wrapped function's, as jax.jit's does. Not its __dict__:
        # a wrapper of another CachedFunction (jax.grad copies that one's state into its
        # own) would overwrite this one's state with the inner function's.
        functools.update_wrapper(self, fn, updated=())
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        self.__qualname__ = name
        self.__name__ = getattr(fn, "__name__", name)
        self._function_id = f"{getattr(fn, '__module__', '?')}.{name}"
        # The traced programs this function put in the store's memory hold the values it
        # closes over: they go when the function does, as jax.jit's cache entries do.
        # (Executables and StableHLO stay, for the next function object of this code.)
        self._remembered: list[tuple[str, str]] = []
        weakref.finalize(self, _forget, self._store, self._remembered, ("trace",))
        # fn's own attributes read through, as through jax.jit, without replacing this
        # object's state (a wrapper of a CachedFunction carries a copy of that one's).
        for name_, value in getattr(fn, "__dict__", {}).items():
            self.__dict__.setdefault(name_, value)

    # ------------------------------------------------------------ properties
    @property
    def store(self) -> CacheStore:
        return self._store if self._store is not None else default_store()

    @property
    def fingerprint(self) -> Fingerprint:
        """The function's code fingerprint (computed once per CachedFunction)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_function(self._fn)
        return self._fingerprint

    def __repr__(self) -> str:
        try:
            return f"<CachedFunction of {self._fn!r}>"
        except Exception:  # a repr never raises, as jax.jit's does not
            return "<CachedFunction>"

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        """Decorating a method binds ``self`` like a function does (as ``jax.jit``)."""
        return self if instance is None else types.MethodType(self, instance)

    def __getstate__(self) -> dict[str, Any]:
        return {"function_name": jax_internals.fun_name(self._fn)}

    def clear_cache(self) -> None:
        """Forget this function's executables in this process, as ``jax.jit``'s ``clear_cache``.

        The fast path is emptied and what this function put in the store's
        memory is dropped; entries on disk stay (``store.clear()`` removes those).
        """
        self._fast.clear()
        self._jitted.clear_cache()
        _forget(self._store, self._remembered)
        self._remembered.clear()

    def _cache_size(self) -> int:
        """Signatures the fast path holds (``jax.jit``'s ``_cache_size`` counterpart)."""
        return len(self._fast)

    def with_options(
        self,
        *,
        compiler_options: Any = ...,
        lowering_platforms: Any = ...,
        donate_argnums: Any = ...,
        device: Any = ...,
    ) -> CachedFunction:
        """The same function and store with another config (``...`` keeps the current one)."""
        donating = donate_argnums is not ...
        return CachedFunction(
            self._fn,
            store=self._store,
            batch_axes=self._batch_axes,
            static_argnums=self._static,
            static_argnames=self._static_names,
            donate_argnums=donate_argnums if donating else self._donate,
            donate_argnames=None if donating else self._donate_names,
            compiler_options=(
                self._compiler_options if compiler_options is ... else compiler_options
            ),
            lowering_platforms=(
                self._platforms if lowering_platforms is ... else lowering_platforms
            ),
            device=self._device if device is ... else device,
        )

    # ------------------------------------------------------------------ call
    def _signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Signature:
        return make_signature(
            args,
            kwargs,
            static_argnums=self._static,
            donate_argnums=self._donate,
            batch_axes=self._batch_axes,
            static_argnames=self._static_names,
            donate_argnames=self._donate_names,
        )

    def _fast_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, list[Any]]:
        """What jax.jit keys its cache on, and the dynamic leaves.

        Raises:
          TypeError: a static argument is not hashable.
        """
        static = self._static_positions.get(len(args))
        if static is None:
            static = self._static_positions[len(args)] = positions(self._static, len(args))
        # By type and value, as JAX does: 1, True and 1.0 are equal but three programs.
        statics: list[Any] = [(type(args[i]), args[i]) for i in static]
        if kwargs and self._static_names:
            names = self._static_names
            statics.extend((k, type(v), v) for k, v in sorted(kwargs.items()) if k in names)
            kwargs = {k: v for k, v in kwargs.items() if k not in names}
        dynamic = tuple(a for i, a in enumerate(args) if i not in static) if static else args
        leaves, treedef = jax.tree_util.tree_flatten((dynamic, kwargs))
        key = (_trace_context(), treedef, tuple(statics), tuple(map(_leaf_key, leaves)))
        hash(key)
        return key, leaves

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._has_statics:
            try:
                key, leaves = self._fast_key(args, kwargs)
            except TypeError:  # an unhashable static argument: jax.jit raises its own error
                return self._jitted(*args, **kwargs)
        else:  # the common case, inline: this is the per-call overhead
            leaves, treedef = _tree_flatten((args, kwargs))
            key = (_trace_context(), treedef, tuple(map(_leaf_key, leaves)))
        try:
            fast = self._fast.get(key)
        except TypeError:  # a leaf whose shape or dtype is not hashable: jax.jit's to judge
            return self._jitted(*args, **kwargs)
        except Exception as err:  # a static argument's __eq__ raised: JAX's error
            raise ValueError(
                "static arguments should be comparable using __eq__. The following error "
                "was raised when comparing this call's static arguments with an earlier "
                f"call's: {type(err).__name__}: {err}"
            ) from err
        if fast is not None:
            if fast is _JAX:
                return self._jitted(*args, **kwargs)
            art, self.last_report = fast
            return _tree_unflatten(art.out_tree, art.compiled(*leaves))
        return self._miss(key, args, kwargs)

    def _miss(self, key: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call the fast path has not seen: resolve it, or hand it to jax.jit."""
        start = time.perf_counter()
        sig = self._cacheable_signature(args, kwargs)
        if sig is None:
            self._fast[key] = _JAX
            return self._jitted(*args, **kwargs)
        try:
            arts, report = self._resolve(sig, upto="compile")
        except pipeline.NotCacheable:  # e.g. a program that takes or returns a token
            self._fast[key] = _JAX
            return self._jitted(*args, **kwargs)
        art = arts["compile"]
        if not isinstance(art, pipeline.CompileArtifact):  # what _resolve(upto="compile") gives
            raise RuntimeError(f"internal error: the compile level gave a {type(art)}")
        report.total_seconds = time.perf_counter() - start
        self.last_report = report
        self._fast[key] = (art, _fast_report(report))
        out = art.compiled(*sig.dynamic)
        return jax.tree_util.tree_unflatten(art.out_tree, out)

    def _cacheable_signature(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Signature | None:
        """The call's signature, or None where the call is ``jax.jit``'s to run."""
        if jax_internals.jit_disabled():
            return None
        try:
            sig = self._signature(args, kwargs)
        except (TracerArgument, NotAnArray):  # under a transformation; a token; a bad input
            return None
        if pipeline.has_address(sig.in_tree):
            # An argument tree holding a function (a vjp function passed in): its text
            # names the function by address, which another function may reuse later, so
            # it cannot key anything; jax.jit compares the function itself.
            return None
        try:
            self.fingerprint  # noqa: B018 - computed here so that a tracer in it is seen
        except (jax.errors.TracerArrayConversionError, jax.errors.JaxRuntimeError):
            # fn closes over a value with no bytes to read: a tracer of an outer
            # transformation (jvp, remat, ...), which only jax.jit can stage out into
            # that transformation, or a token.
            return None
        return sig

    # ----------------------------------------------------------- AOT stages
    def trace(self, *args: Any, **kwargs: Any) -> Traced:
        """Trace (or load the jaxpr) at these arguments; like ``jax.jit(fn).trace``."""
        try:
            sig = self._signature(args, kwargs)
        except (TracerArgument, NotAnArray):
            self._jitted.trace(*args, **kwargs)  # raises JAX's own error for a bad input
            raise TypeError(
                "cached_jit(...).trace needs array arguments outside transformations, got "
                f"args={args!r:.200}, kwargs={kwargs!r:.200}; use jax.jit(fn).trace for these."
            ) from None
        arts, report = self._resolve(sig, upto="trace")
        return Traced(self, sig, arts, report)

    def lower(self, *args: Any, **kwargs: Any) -> Lowered:
        """Lower (or load the StableHLO) at these arguments; like ``jax.jit(fn).lower``.

        Unlike ``f.trace(*args).lower()``, a hit at the lower level bypasses the trace
        level: the jaxpr is neither traced nor loaded.
        """
        sig = self._signature(args, kwargs)
        arts, report = self._resolve(sig, upto="lower")
        return Lowered(self, sig, arts, report, ...)

    # ------------------------------------------------------------- resolution
    def _configs(
        self,
        sig: Signature,
        platforms: tuple[str, ...] | None,
        options: Mapping[str, Any] | None,
        context: str,
    ) -> dict[str, KeyComponents]:
        symbolic = self._batch_axes is not None
        return {
            "trace": pipeline.trace_config(
                self.fingerprint.digest, sig, symbolic, context, self.fingerprint.parts
            ),
            "lower": pipeline.lower_config(sig, symbolic, platforms),
            "compile": pipeline.compile_config(sig, options, self._device),
        }

    def _resolve(
        self,
        sig: Signature,
        *,
        upto: str,
        given: dict[str, Artifact] | None = None,
        report: StageReport | None = None,
        platforms: Any = ...,
        options: Any = ...,
    ) -> tuple[dict[str, Artifact], StageReport]:
        """Artifacts for every level up to ``upto``, from the deepest valid one."""
        platforms = self._platforms if platforms is ... else platforms
        options = self._compiler_options if options is ... else options
        context, context_problem = pipeline.describe_trace_context()
        configs = self._configs(sig, platforms, options, context)
        chain, prev = {}, "root"
        for level in LEVELS:
            chain[level] = chain_key(prev, configs[level])
            prev = chain[level]
        wanted = LEVELS[: LEVELS.index(upto) + 1]
        arts: dict[str, Artifact] = dict(given or {})
        report = report or StageReport(self.__qualname__)
        reasons: dict[str, str] = {}
        notes = [*self.fingerprint.notes, *([context_problem] if context_problem else [])]
        reliable = not notes
        first = start = len(arts)  # levels already given are not looked up again
        store = self.store
        # A level is found by chain key only when it and every level before it
        # are cached: nothing bypasses a level the store has turned off.
        chained = 0
        while chained < len(LEVELS) and store.caches(LEVELS[chained]):
            chained += 1

        # Deepest valid chain entry first: it bypasses everything before it.
        if reliable:
            for i in reversed(range(first, len(wanted))):
                level = wanted[i]
                if i >= chained:
                    reasons[level] = _not_chained(store, level)
                    if store.caches(level):  # on a content miss, still say what changed
                        why = self._explain(level, configs, chain, "no entry")
                        reasons[level] = f"{why} ({reasons[level]})"
                    report.levels[level] = LevelReport("miss", 0.0, chain[level], reasons[level])
                    continue
                t0 = time.perf_counter()
                found = self.store.lookup_chain(level, chain[level])
                art = self._materialize(level, found)
                if art is not None:
                    arts[level] = art
                    report.levels[level] = LevelReport(
                        found.status, time.perf_counter() - t0, chain[level], "found by chain key"
                    )
                    first = i + 1
                    break
                reasons[level] = self._explain(level, configs, chain, found.reason)
                report.levels[level] = LevelReport(
                    "miss", time.perf_counter() - t0, chain[level], reasons[level]
                )
        else:
            why = "; ".join(notes)
            for level in wanted[first:]:
                reasons[level] = f"function fingerprint unreliable ({why}): chain keys unused"
        for level in wanted[start : max(first - 1, start)]:
            report.levels[level] = LevelReport("bypassed", 0.0, "", "a deeper level hit")

        # Every later level: by content first, regenerated otherwise.
        for i in range(first, len(wanted)):
            level = wanted[i]
            t0 = time.perf_counter()
            lookup_seconds = report.levels[level].seconds if level in reasons else 0.0
            previous = arts.get(LEVELS[i - 1]) if i else None
            previous_digest = getattr(previous, "digest", None)
            ckey = content_key(previous_digest, configs[level]) if previous_digest else None
            art, status, reason = None, "miss", reasons.get(level, "")
            if ckey is not None:
                found = self.store.lookup_content(level, ckey)
                art = self._materialize(level, found)
                if art is not None:
                    status = found.status
                    reason = f"found by content: the {LEVELS[i - 1]} artifact is unchanged"
                    if reliable and i < chained:
                        self.store.write(level, ckey, None, {}, chain_key=chain[level])
                        self.store.remember(level, ckey, art, _meta(art)[0], chain[level])
            note = ""
            if art is None:
                art = self._run_level(level, sig, arts, platforms, options)
                note = getattr(art, "note", "")
                kept = self._persist(
                    level,
                    art,
                    ckey,
                    chain[level],
                    reliable and i < chained,
                    time.perf_counter() - t0,
                )
                note = "; ".join(n for n in (note, kept) if n)
            if reliable:
                self.store.record_components(
                    level, self._function_id, self._components(level, configs, chain)
                )
            arts[level] = art
            report.levels[level] = LevelReport(
                status, lookup_seconds + time.perf_counter() - t0, chain[level], reason, note
            )
        return arts, report

    def _run_level(
        self,
        level: str,
        sig: Signature,
        arts: dict[str, Artifact],
        platforms: tuple[str, ...] | None,
        options: Mapping[str, Any] | None,
    ) -> Artifact:
        symbolic = self._batch_axes is not None
        if level == "trace":
            return pipeline.run_trace(self._fn, sig, symbolic)
        if level == "lower":
            # Source locations would be the stack of *this* call (the jaxpr is re-bound
            # here), so the same jaxpr would lower to different bytes from different
            # callers and miss by content. Without them (name stacks stay) lowering is
            # deterministic, as JAX's own cache key is (it strips debug info).
            with jax_internals.traceback_in_locations_limit(0):
                return pipeline.run_lower(
                    arts["trace"],  # type: ignore[arg-type]
                    sig,
                    symbolic,
                    platforms,
                    self._fn,
                )
        return pipeline.run_compile(arts["lower"], sig, options, self._device)  # type: ignore[arg-type]

    def _persist(
        self,
        level: str,
        art: Artifact,
        ckey: str | None,
        chain: str,
        reliable: bool,
        seconds: float,
    ) -> str:
        """Keep ``art`` in memory and write it to the store; a note if it stays in memory."""
        key = ckey or (chain if reliable else None)
        if key is None:
            return ""
        meta, note = _meta(art)
        self.store.remember(level, key, art, meta, chain if reliable else None)
        self._remembered.append((level, key))
        payload = {
            "trace": getattr(art, "encoded", None),
            "lower": getattr(art, "serialized", None),
            "compile": getattr(art, "serialized", None),
        }[level]
        if payload is not None and not note:
            self.store.write(
                level,
                key,
                payload,
                meta,
                chain_key=chain if reliable else None,
                duration=seconds,
            )
        return note

    def _materialize(self, level: str, found: Lookup) -> Artifact | None:
        if found.status == "memory":
            return found.payload  # type: ignore[no-any-return]
        if found.status != "disk":
            return None
        try:
            art = _DECODERS[level].decode(found.payload, found.meta)
        except Exception as err:  # a damaged or foreign entry: regenerate, never trust
            found.status, found.reason = (
                "miss",
                (f"entry could not be loaded ({type(err).__name__}: {err}); regenerating"),
            )
            return None
        if found.content_key is None:  # a hit always names its content key
            raise RuntimeError(f"internal error: a {level} hit without its content key")
        self.store.remember(level, found.content_key, art, found.meta)
        return art  # type: ignore[no-any-return]

    def _components(
        self, level: str, configs: dict[str, KeyComponents], chain: dict[str, str]
    ) -> dict[str, str]:
        values = configs[level].as_dict()
        i = LEVELS.index(level)
        if i:
            values[f"{LEVELS[i - 1]}_key"] = chain[LEVELS[i - 1]]
        return values

    def _explain(
        self,
        level: str,
        configs: dict[str, KeyComponents],
        chain: dict[str, str],
        lookup_reason: str,
    ) -> str:
        if lookup_reason != "no entry":  # there was an entry, and it was unusable
            return lookup_reason
        old = self.store.last_components(level, self._function_id)
        return explain_change(old, self._components(level, configs, chain))


def _not_chained(store: CacheStore, level: str) -> str:
    """Why ``level`` was not looked up by chain key: it, or a level before it, is not cached."""
    if not store.caches(level):
        return f"the {level} level is off in this store (levels={store.levels!r}): it always runs"
    off = [lvl for lvl in LEVELS[: LEVELS.index(level)] if not store.caches(lvl)]
    names = " and ".join(off) + (" levels before it are" if len(off) > 1 else " level before it is")
    return f"not looked up by chain key: the {names} off; by content only"


def _meta(art: Artifact) -> tuple[dict[str, Any], str]:
    """The artifact's metadata, or ``({}, why)`` when it cannot be written (kept in memory)."""
    try:
        return art.meta(), ""
    except Exception as err:  # pickle's errors vary by object: any means "not on disk"
        # A vjp, linearize or linear_transpose function in the output: its tree holds
        # local functions. The executable works in this process; no other can load it.
        return {}, (
            f"kept in memory only: the output tree cannot be pickled ({type(err).__name__}: {err})"
        )


def _forget(
    store: CacheStore | None, remembered: list[tuple[str, str]], levels: tuple[str, ...] = LEVELS
) -> None:
    """Drop from the store's memory the artifacts of ``levels`` a function put there.

    Called with the trace level when the function is collected (its traced
    programs hold the values it closes over), with all by
    :meth:`CachedFunction.clear_cache`.
    """
    target = store if store is not None else default_store()
    for level, key in remembered:
        if level in levels:
            target.forget(level, key)


def _leaf_key(leaf: Any) -> Any:
    kind = type(leaf)
    if kind is _ArrayImpl:
        return leaf.aval  # shape, dtype and weak type; a Tracer has another type
    if kind is np.ndarray:
        return (kind, leaf.shape, leaf.dtype)
    return (kind, getattr(leaf, "shape", None), getattr(leaf, "dtype", None))


def _fast_report(report: StageReport) -> StageReport:
    fast = StageReport(report.function, fast_path=True)
    for level in LEVELS:
        fast.levels[level] = LevelReport(
            "memory", 0.0, report.levels[level].key, "in-process fast path"
        )
    return fast


def cached_jit(
    fn: Callable[..., Any],
    *,
    store: CacheStore | None = None,
    batch_axes: Any = None,
    static_argnums: int | Sequence[int] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    lowering_platforms: Sequence[str] | None = None,
    device: Any = None,
    static_argnames: str | Iterable[str] | None = None,
    donate_argnames: str | Iterable[str] | None = None,
) -> CachedFunction:
    """Like ``jax.jit(fn)``, with every compilation stage cached in ``store``.

    Args:
      fn: a pure function of arrays (pytrees allowed), as for ``jax.jit``.
      store: where to cache; ``None`` uses the default store
        (``$MLCACHE_LAB_DIR`` or ``~/.cache/mlcache_lab``).
      batch_axes: ``jax.vmap``-style ``in_axes``; when given, the batch
        dimension is symbolic at trace and lower, so a new batch size only
        compiles.
      static_argnums: positions of hashable arguments baked into the program
        (keyed by type and value, as ``jax.jit``); negative counts from the end.
      donate_argnums: positions whose buffers the executable may reuse.
      compiler_options: XLA compiler options (compile level).
      lowering_platforms: platforms to lower for (lower level), e.g. ``("cpu",)``.
      device: the ``jax.Device`` the executable runs on (compile level); default:
        JAX's default device.
      static_argnames: names of static arguments; numbers and names complete each
        other through ``fn``'s signature, as in ``jax.jit``.
      donate_argnames: names of donated arguments, likewise.

    Returns:
      A :class:`CachedFunction`; after each call ``f.last_report`` is a :class:`StageReport`.
    """
    return CachedFunction(
        fn,
        store=store,
        batch_axes=batch_axes,
        static_argnums=static_argnums,
        donate_argnums=donate_argnums,
        compiler_options=compiler_options,
        lowering_platforms=lowering_platforms,
        device=device,
        static_argnames=static_argnames,
        donate_argnames=donate_argnames,
    )
