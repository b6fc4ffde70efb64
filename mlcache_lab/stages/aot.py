"""The AOT stage objects of a :class:`~mlcache_lab.stages.cached_function.CachedFunction`.

``f.trace(*args)`` -> :class:`Traced` -> ``.lower()`` -> :class:`Lowered` ->
``.compile()`` -> :class:`Compiled`, mirroring ``jax.jit``'s ``jax.stages``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax

from . import pipeline
from .report import LevelReport, StageReport
from .signature import Signature

if TYPE_CHECKING:
    from .cached_function import Artifact, CachedFunction

__all__ = ["Compiled", "Lowered", "Traced"]


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
