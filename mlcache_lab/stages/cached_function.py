"""cached_jit: a ``jax.jit`` whose trace, lower and compile stages are cached on disk.

How a call finds its executable (DESIGN.md, "Cache keys"):

1. In-process fast path: a call whose signature was seen before goes straight
   to the loaded executable.
2. Otherwise the chain keys of the three levels are computed (no tracing
   needed: the trace config is the function's fingerprint plus the abstract
   inputs) and looked up *deepest first*: a hit at ``compile`` bypasses
   ``trace`` and ``lower`` (they are not even loaded), a hit at ``lower``
   bypasses ``trace``.
3. Each level after the deepest hit is looked up by *content* (hash of the
   previous level's artifact and this level's config) before it is
   regenerated, so an edit that leaves the jaxpr unchanged reuses the
   StableHLO and the executable already on disk.
4. Every regenerated level is written under its content key, with a pointer
   from its chain key, and its named components are recorded so the next
   miss can say which one changed.

A function whose fingerprint is unreliable (see
:mod:`mlcache_lab.cache.fingerprint`) skips step 2: it is always traced, and
the levels after trace are found by content.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax._src import config as jax_config
from jax._src.array import ArrayImpl

from ..cache.fingerprint import Fingerprint, fingerprint_function
from ..cache.keys import KeyComponents, chain_key, content_key, explain_change
from ..cache.store import LEVELS, CacheStore, Lookup, default_store
from . import pipeline
from .report import LevelReport, StageReport
from .signature import Signature, _TracerArgument, make_signature, normalize_argnums

__all__ = ["CachedFunction", "cached_jit"]

Artifact = pipeline.TraceArtifact | pipeline.LowerArtifact | pipeline.CompileArtifact
_DECODERS: dict[str, Any] = {
    "trace": pipeline.TraceArtifact,
    "lower": pipeline.LowerArtifact,
    "compile": pipeline.CompileArtifact,
}


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
    ) -> None:
        if not callable(fn):
            raise TypeError(f"cached_jit expects a callable 'fn'. Got fn={fn!r}.")
        if store is not None and not isinstance(store, CacheStore):
            raise TypeError(
                f"'store' must be a mlcache_lab.CacheStore or None (the default store). "
                f"Got store={store!r}; use store=mcl.CacheStore(path)."
            )
        if compiler_options is not None and not isinstance(compiler_options, Mapping):
            raise TypeError(
                f"'compiler_options' must be a mapping of XLA option names to values. Got "
                f"compiler_options={compiler_options!r}; e.g. "
                "{'xla_backend_optimization_level': 0}."
            )
        if isinstance(lowering_platforms, str):
            raise TypeError(
                f"'lowering_platforms' must be a sequence of platform names. Got "
                f"lowering_platforms={lowering_platforms!r}; write ({lowering_platforms!r},)."
            )
        self._fn = fn
        self._store = store
        self._batch_axes = batch_axes
        self._static = normalize_argnums("static_argnums", static_argnums)
        self._donate = normalize_argnums("donate_argnums", donate_argnums)
        overlap = set(self._static) & set(self._donate)
        if overlap:
            raise ValueError(
                f"arguments {sorted(overlap)} are both static and donated; an argument can be "
                "one or the other. Remove them from static_argnums or donate_argnums."
            )
        self._compiler_options = dict(compiler_options) if compiler_options else None
        self._platforms = tuple(lowering_platforms) if lowering_platforms else None
        if device is not None and not isinstance(device, jax.Device):
            raise TypeError(
                f"'device' must be a jax.Device or None. Got device={device!r}; "
                "pick one from jax.devices()."
            )
        self._device = device
        self._fingerprint: Fingerprint | None = None
        self._fast: dict[Any, tuple[pipeline.CompileArtifact, StageReport]] = {}
        self.last_report: StageReport | None = None
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        self.__name__ = getattr(fn, "__name__", name)
        self.__qualname__ = name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn
        self._function_id = f"{getattr(fn, '__module__', '?')}.{name}"

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
        return f"cached_jit({self.__qualname__}, store={self.store!r})"

    def with_options(
        self,
        *,
        compiler_options: Any = ...,
        lowering_platforms: Any = ...,
        donate_argnums: Any = ...,
        device: Any = ...,
    ) -> CachedFunction:
        """The same function and store with another config (``...`` keeps the current one)."""
        return CachedFunction(
            self._fn,
            store=self._store,
            batch_axes=self._batch_axes,
            static_argnums=self._static,
            donate_argnums=self._donate if donate_argnums is ... else donate_argnums,
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
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        if self._static:
            statics = tuple(args[i] for i in self._static if i < len(args))
            dynamic = tuple(a for i, a in enumerate(args) if i not in self._static)
        else:
            statics, dynamic = (), args
        leaves, treedef = jax.tree_util.tree_flatten((dynamic, kwargs))
        # The fast path keys on what jax.jit keys on: tree, statics, leaf types.
        key: Any = (treedef, statics, tuple(map(_leaf_key, leaves)))
        try:
            fast = self._fast.get(key)
        except TypeError:  # an unhashable static: make_signature explains
            fast, key = None, None
        if fast is not None:
            art, self.last_report = fast
            return jax.tree_util.tree_unflatten(art.out_tree, art.compiled(*leaves))
        try:
            sig = self._signature(args, kwargs)
        except _TracerArgument:  # under grad/vmap/jit: behave exactly like jax.jit
            return jax.jit(self._fn, static_argnums=self._static, donate_argnums=self._donate)(
                *args, **kwargs
            )
        arts, report = self._resolve(sig, upto="compile")
        art = arts["compile"]  # type: ignore[assignment]
        report.total_seconds = time.perf_counter() - start
        self.last_report = report
        if key is not None:
            self._fast[key] = (art, _fast_report(report))
        out = art.compiled(*sig.dynamic)
        return jax.tree_util.tree_unflatten(art.out_tree, out)

    # ----------------------------------------------------------- AOT stages
    def trace(self, *args: Any, **kwargs: Any) -> Traced:
        """Trace (or load the jaxpr) at these arguments; like ``jax.jit(fn).trace``."""
        sig = self._signature(args, kwargs)
        arts, report = self._resolve(sig, upto="trace")
        return Traced(self, sig, arts, report)

    # ------------------------------------------------------------- resolution
    def _configs(
        self, sig: Signature, platforms: tuple[str, ...] | None, options: Mapping[str, Any] | None
    ) -> dict[str, KeyComponents]:
        symbolic = self._batch_axes is not None
        return {
            "trace": pipeline.trace_config(
                self.fingerprint.digest, sig, symbolic, self.fingerprint.parts
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
        configs = self._configs(sig, platforms, options)
        chain, prev = {}, "root"
        for level in LEVELS:
            chain[level] = chain_key(prev, configs[level])
            prev = chain[level]
        wanted = LEVELS[: LEVELS.index(upto) + 1]
        arts: dict[str, Artifact] = dict(given or {})
        report = report or StageReport(self.__qualname__)
        reasons: dict[str, str] = {}
        reliable = self.fingerprint.reliable
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
            why = "; ".join(self.fingerprint.notes)
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
                        self.store.remember(level, ckey, art, art.meta(), chain[level])
            note = ""
            if art is None:
                art = self._run_level(level, sig, arts, platforms, options)
                note = getattr(art, "note", "")
                self._persist(
                    level,
                    art,
                    ckey,
                    chain[level],
                    reliable and i < chained,
                    time.perf_counter() - t0,
                )
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
            return pipeline.run_trace(self._fn, sig, self._static, symbolic)
        if level == "lower":
            # Source locations would be the stack of *this* call (the jaxpr is re-bound
            # here), so the same jaxpr would lower to different bytes from different
            # callers and miss by content. Without them (name stacks stay) lowering is
            # deterministic, as JAX's own cache key is (it strips debug info).
            with jax_config.traceback_in_locations_limit(0):
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
    ) -> None:
        key = ckey or (chain if reliable else None)
        if key is None:
            return
        self.store.remember(level, key, art, art.meta(), chain if reliable else None)
        payload = {
            "trace": getattr(art, "encoded", None),
            "lower": getattr(art, "serialized", None),
            "compile": getattr(art, "serialized", None),
        }[level]
        if payload is not None:
            self.store.write(
                level,
                key,
                payload,
                art.meta(),
                chain_key=chain if reliable else None,
                duration=seconds,
            )

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
        assert found.content_key is not None
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


def _leaf_key(leaf: Any) -> Any:
    kind = type(leaf)
    if kind is ArrayImpl:
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


class Traced:
    """The trace stage: a jaxpr (loaded or traced), like ``jax.stages.Traced``."""

    def __init__(
        self, fn: CachedFunction, sig: Signature, arts: dict[str, Artifact], report: StageReport
    ) -> None:
        self._fn, self._sig, self._arts, self.report = fn, sig, arts, report

    @property
    def jaxpr(self) -> Any:
        """The ``ClosedJaxpr`` (forward-only: custom-derivative calls inlined)."""
        art = self._arts["trace"]
        assert isinstance(art, pipeline.TraceArtifact)
        return art.jaxpr

    def as_text(self) -> str:
        return str(self.jaxpr)

    def lower(self, *, lowering_platforms: Any = ...) -> Lowered:
        """Lower (or load the StableHLO) for these platforms (``...``: the function's own)."""
        platforms: Any = lowering_platforms
        if platforms is not ...:
            platforms = tuple(platforms) if platforms else None
        arts, report = self._fn._resolve(
            self._sig,
            upto="lower",
            given=dict(self._arts),
            report=_copy(self.report),
            platforms=platforms,
        )
        return Lowered(self._fn, self._sig, arts, report, platforms)


class Lowered:
    """The lower stage: StableHLO in a ``jax.export.Exported``."""

    def __init__(
        self,
        fn: CachedFunction,
        sig: Signature,
        arts: dict[str, Artifact],
        report: StageReport,
        platforms: Any,
    ) -> None:
        self._fn, self._sig, self._arts, self.report = fn, sig, arts, report
        self._platforms = platforms

    @property
    def exported(self) -> Any:
        return self._arts["lower"].exported  # type: ignore[union-attr]

    def as_text(self) -> str:
        """The StableHLO module text."""
        return str(self.exported.mlir_module())

    def compile(self, *, compiler_options: Mapping[str, Any] | object | None = ...) -> Compiled:
        """Compile (or load the executable) with these XLA options."""
        arts, report = self._fn._resolve(
            self._sig,
            upto="compile",
            given=dict(self._arts),
            report=_copy(self.report),
            platforms=self._platforms,
            options=compiler_options,
        )
        return Compiled(arts["compile"], report)  # type: ignore[arg-type]


class Compiled:
    """The compile stage: a loaded executable, callable with the original arguments' pytree."""

    def __init__(self, art: pipeline.CompileArtifact, report: StageReport) -> None:
        self._art, self.report = art, report

    def as_text(self) -> str:
        """The optimized HLO text."""
        return str(self._art.compiled.as_text())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves = jax.tree_util.tree_leaves((args, kwargs))
        return jax.tree_util.tree_unflatten(self._art.out_tree, self._art.compiled(*leaves))


def _copy(report: StageReport) -> StageReport:
    new = StageReport(report.function)
    new.levels = {k: LevelReport(**vars(v)) for k, v in report.levels.items()}
    return new


def cached_jit(
    fn: Callable[..., Any],
    *,
    store: CacheStore | None = None,
    batch_axes: Any = None,
    static_argnums: int | Sequence[int] | None = (),
    donate_argnums: int | Sequence[int] | None = (),
    compiler_options: Mapping[str, Any] | None = None,
    lowering_platforms: Sequence[str] | None = None,
    device: Any = None,
) -> CachedFunction:
    """Like ``jax.jit(fn)``, with every compilation stage cached in ``store``.

    Args:
      fn: a pure function of arrays (pytrees allowed), as for ``jax.jit``.
      store: where to cache; ``None`` uses the default store
        (``$MLCACHE_LAB_DIR`` or ``~/.cache/mlcache_lab``).
      batch_axes: ``jax.vmap``-style ``in_axes``; when given, the batch
        dimension is symbolic at trace and lower, so a new batch size only
        compiles.
      static_argnums: positions of hashable arguments baked into the program.
      donate_argnums: positions whose buffers the executable may reuse.
      compiler_options: XLA compiler options (compile level).
      lowering_platforms: platforms to lower for (lower level), e.g. ``("cpu",)``.
      device: the ``jax.Device`` the executable runs on (compile level); default:
        JAX's default device.

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
    )
