"""The AOT stage objects of a :class:`~mlcache_lab.stages.cached_function.CachedFunction`.

``f.trace(*args)`` -> :class:`Traced` -> ``.lower()`` -> :class:`Lowered` ->
``.compile()`` -> :class:`Compiled` (or ``f.lower(*args)`` directly), mirroring
``jax.jit``'s ``jax.stages``: the same attributes and methods, with the same types and
errors, so a JAX user already knows them. Each object is backed by the cached artifact of
its own level: :class:`Traced` by the jaxpr, :class:`Lowered` by the ``jax.export.Exported``
(StableHLO), :class:`Compiled` by the loaded executable. On a warm store a deeper hit
bypasses the earlier levels, and none of these attributes needs them: ``f.lower(x)`` on a
lower-level hit neither traces nor loads the jaxpr.

Beyond JAX's surface, every stage carries the :class:`StageReport` of the lookups that
produced it (``.report``), and :class:`Lowered` its ``Exported`` (``.exported``).
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import jax
from jax import export as jax_export
from jax.core import ShapedArray, Tracer
from jax.extend import backend as jex_backend
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun
from jax.extend.mlir import ir

from .. import jax_internals
from . import pipeline
from .report import LevelReport, StageReport
from .signature import Signature

if TYPE_CHECKING:
    from .cached_function import Artifact, CachedFunction

__all__ = ["Compiled", "Lowered", "Traced"]

_Art = TypeVar("_Art", pipeline.TraceArtifact, pipeline.LowerArtifact, pipeline.CompileArtifact)


class _Stage:
    """What every stage knows from the call signature (as ``jax.stages.Stage``)."""

    def __init__(
        self, fn: CachedFunction, sig: Signature, arts: dict[str, Artifact], report: StageReport
    ) -> None:
        self._fn, self._sig, self._arts, self.report = fn, sig, arts, report

    def _flat_in_avals(self) -> list[Any]:
        return list(self._sig.avals)

    def _artifact(self, level: str, kind: type[_Art]) -> _Art:
        """This stage's artifact of ``level`` (every stage is built holding its own)."""
        art = self._arts.get(level)
        if not isinstance(art, kind):  # a bug in how the stage was built, not a user error
            raise RuntimeError(
                f"internal error: the {level} artifact of this {type(self).__name__} is "
                f"{type(art).__name__}, not {kind.__name__}"
            )
        return art

    @property
    def in_tree(self) -> Any:
        """Tree structure of the pair (positional arguments, keyword arguments), statics removed."""
        return self._sig.in_tree

    @property
    def in_avals(self) -> Any:
        """Tree of input avals, shaped like ``(args, kwargs)``."""
        return self.in_tree.unflatten(self._flat_in_avals())

    @property
    def args_info(self) -> Any:
        """Tree of ``jax.stages.ArgInfo`` (aval and whether the buffer is donated)."""
        donated = set(self._sig.flat_donate)
        return self.in_tree.unflatten(
            [jax.stages.ArgInfo(a, i in donated) for i, a in enumerate(self._flat_in_avals())]
        )

    @property
    def donate_argnums(self) -> tuple[int, ...]:
        """Flat indices of the donated input leaves."""
        return tuple(self._sig.flat_donate)

    @property
    def out_tree(self) -> Any:
        """Tree structure of the outputs."""
        level = next(lv for lv in ("compile", "lower", "trace") if lv in self._arts)
        return self._arts[level].out_tree

    def _leaves(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The call's flat leaves, with JAX's error when the pytree differs from the lowered one."""
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        if tree != self.in_tree:
            errs = jax_internals.pytree_differences(tree, self.in_tree)
            msg = [
                "Function compiled with input pytree does not match the input pytree it was "
                f"called with. There are {len(errs)} mismatches, including:"
            ]
            for path, thing1, thing2, explanation in errs:
                fst, *rest = path
                base = ["args", "kwargs"][fst.idx]
                msg.append(
                    f"    * at {base}{jax.tree_util.keystr(tuple(rest))}, seen {thing2} but now "
                    f"given {thing1}, so {explanation}"
                )
            raise TypeError("\n".join(msg))
        return leaves


class Traced(_Stage):
    """The trace stage: a jaxpr (loaded or traced), like ``jax.stages.Traced``."""

    @property
    def jaxpr(self) -> ClosedJaxpr:
        """The ``ClosedJaxpr`` (forward-only: custom-derivative calls inlined)."""
        return self._artifact("trace", pipeline.TraceArtifact).jaxpr

    def _flat_in_avals(self) -> list[Any]:
        # The jaxpr's own: the batch dimension is symbolic when batch_axes was given.
        return list(self.jaxpr.in_avals)

    @property
    def fun_name(self) -> str:
        """The traced function's name, as JAX gives it."""
        return jax_internals.fun_name(self._fn._fn)

    @property
    def out_avals(self) -> Any:
        """Tree of output avals."""
        return self.out_tree.unflatten(self.jaxpr.out_avals)

    @property
    def out_info(self) -> Any:
        """Tree of output ``jax.ShapeDtypeStruct``."""
        return self.out_tree.unflatten(
            [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in self.jaxpr.out_avals]
        )

    def as_text(self) -> str:
        """The jaxpr, printed."""
        return str(self.jaxpr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate the traced program eagerly, like ``jax.stages.Traced.__call__``."""
        leaves = self._leaves(args, kwargs)
        if any(jax_export.is_symbolic_dim(d) for a in self.jaxpr.in_avals for d in a.shape):
            # A jaxpr with the symbolic batch dimension cannot run on concrete shapes:
            # run the function it was traced from, statics put back.
            out = pipeline.call_with_leaves(self._fn._fn, self._sig, leaves)
            return out
        return self.out_tree.unflatten(jaxpr_as_fun(self.jaxpr)(*leaves))

    def lower(self, *, lowering_platforms: Any = None) -> Lowered:
        """Lower (or load the StableHLO), like ``jax.stages.Traced.lower``.

        Args:
          lowering_platforms: platforms to lower for, e.g. ``("cpu", "cuda")``; None: the
            function's own (``cached_jit(lowering_platforms=...)``, else the default backend).
        """
        platforms: Any = ...
        if lowering_platforms is not None:
            if isinstance(lowering_platforms, str):
                raise TypeError(
                    "'lowering_platforms' must be a sequence of platform names. Got "
                    f"lowering_platforms={lowering_platforms!r}; write ({lowering_platforms!r},)."
                )
            platforms = tuple(lowering_platforms)
        arts, report = self._fn._resolve(
            self._sig,
            upto="lower",
            given=dict(self._arts),
            report=_copy(self.report),
            platforms=platforms,
        )
        return Lowered(self._fn, self._sig, arts, report, platforms)


class Lowered(_Stage):
    """The lower stage: StableHLO in a ``jax.export.Exported``, like ``jax.stages.Lowered``."""

    def __init__(
        self,
        fn: CachedFunction,
        sig: Signature,
        arts: dict[str, Artifact],
        report: StageReport,
        platforms: Any,
    ) -> None:
        super().__init__(fn, sig, arts, report)
        self._platforms = platforms

    @property
    def exported(self) -> jax.export.Exported:
        """The ``jax.export.Exported`` this level caches (serializable StableHLO)."""
        return self._artifact("lower", pipeline.LowerArtifact).exported

    def _flat_in_avals(self) -> list[Any]:
        # The Exported's shapes (symbolic batch dimension with batch_axes; unused inputs
        # included), the call's weak types: a deserialized Exported has lost them.
        return [
            ShapedArray(ex.shape, ex.dtype, weak_type=call.weak_type)
            for ex, call in zip(self.exported.in_avals, self._sig.avals, strict=True)
        ]

    @property
    def out_info(self) -> Any:
        """Tree of output ``jax.ShapeDtypeStruct``."""
        return self.out_tree.unflatten(
            [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in self.exported.out_avals]
        )

    def _module(self) -> ir.Module:
        # Parsed in a fresh context each time, as JAX builds a fresh module per lowering.
        with jax_internals.make_ir_context():
            return ir.Module.parse(self.exported.mlir_module())

    def _hlo(self) -> Any:
        bytecode = io.BytesIO()
        self._module().operation.write_bytecode(file=bytecode)
        return jax_internals.stablehlo_to_xla_computation(bytecode.getvalue())

    def as_text(self, dialect: str | None = None, *, debug_info: bool = False) -> str:
        """A human-readable text of the lowering: ``"stablehlo"`` (default) or ``"hlo"``."""
        dialect = _dialect(dialect)
        if dialect == "stablehlo":
            text = io.StringIO()
            self._module().operation.print(file=text, enable_debug_info=debug_info)
            return text.getvalue()
        return jax_internals.hlo_text(self._hlo(), debug_info=debug_info)

    def compiler_ir(self, dialect: str | None = None) -> Any:
        """The lowering as an object: an MLIR ``ir.Module`` (stablehlo) or an ``XlaComputation``."""
        dialect = _dialect(dialect)
        return self._module() if dialect == "stablehlo" else self._hlo()

    def cost_analysis(self) -> Any:
        """XLA's cost estimates before optimization (a dict), or None where unavailable."""
        backend = None
        for platform in self.exported.platforms:  # the first one this process has
            try:
                backend = jex_backend.get_backend(platform)
                break
            except RuntimeError:
                continue
        if backend is None or jax_internals.uses_pjrt_c_api(backend):
            return None  # as JAX: no backend, or the C API, has no uncompiled cost analysis
        return jax_internals.hlo_cost_analysis(backend, self._hlo())

    def compile(
        self,
        compiler_options: Mapping[str, Any] | None = None,
        *,
        device_assignment: Any = None,
    ) -> Compiled:
        """Compile (or load the executable), like ``jax.stages.Lowered.compile``.

        Args:
          compiler_options: XLA options, added to (and overriding) the function's own
            ``cached_jit(compiler_options=...)``; they are part of the compile key.
          device_assignment: not supported: the executable runs on the function's device.
        """
        if device_assignment is not None:
            raise ValueError(
                f"Lowered.compile(device_assignment=...) is not supported by cached_jit. Got "
                f"device_assignment={device_assignment!r}; use cached_jit(fn, device=...) or "
                "f.with_options(device=...) to choose the device."
            )
        compiler_options = pipeline.check_compiler_options(compiler_options)
        options: Any = ...
        if compiler_options:
            options = {**(self._fn._compiler_options or {}), **compiler_options}
        arts, report = self._fn._resolve(
            self._sig,
            upto="compile",
            given=dict(self._arts),
            report=_copy(self.report),
            platforms=self._platforms,
            options=options,
        )
        return Compiled(self._fn, self._sig, arts, report)


class Compiled(_Stage):
    """The compile stage: a loaded executable, like ``jax.stages.Compiled``.

    Call it with the dynamic arguments (static ones removed), in the pytree it was
    lowered for; a different pytree, argument types or a JAX transformation raise the
    ``TypeError`` JAX raises.
    """

    _expected: list[Any] | None = None

    @property
    def _art(self) -> pipeline.CompileArtifact:
        return self._artifact("compile", pipeline.CompileArtifact)

    @property
    def _inner(self) -> jax.stages.Compiled:
        # JAX's Compiled of the executable, over the flat dynamic leaves.
        return self._art.compiled

    @property
    def _executable(self) -> Any:
        """JAX's executable object (``jax.stages.Compiled._executable``), for introspection."""
        return jax_internals.compiled_executable(self._inner)

    def _inner_flat(self, tree: Any, value: Any) -> list[Any]:
        return list(tree.flatten_up_to(value))

    def _flat_in_avals(self) -> list[Any]:
        return self._inner_flat(self._inner.in_tree, self._inner.in_avals)

    @property
    def out_info(self) -> Any:
        """Tree of output ``jax.ShapeDtypeStruct`` (with sharding and layout)."""
        inner = self._inner
        return self.out_tree.unflatten(self._inner_flat(inner.out_tree, inner.out_info))

    @property
    def input_shardings(self) -> Any:
        """Tree of the input shardings, shaped like ``(args, kwargs)``."""
        inner = self._inner
        return self.in_tree.unflatten(self._inner_flat(inner.in_tree, inner.input_shardings))

    @property
    def output_shardings(self) -> Any:
        """Tree of the output shardings."""
        inner = self._inner
        return self.out_tree.unflatten(self._inner_flat(inner.out_tree, inner.output_shardings))

    @property
    def input_formats(self) -> Any:
        """Tree of the input formats (layout and sharding)."""
        inner = self._inner
        return self.in_tree.unflatten(self._inner_flat(inner.in_tree, inner.input_formats))

    @property
    def output_formats(self) -> Any:
        """Tree of the output formats (layout and sharding)."""
        inner = self._inner
        return self.out_tree.unflatten(self._inner_flat(inner.out_tree, inner.output_formats))

    def as_text(self) -> str | None:
        """The optimized HLO text, or None where the backend gives none."""
        return self._inner.as_text()

    def cost_analysis(self) -> Any:
        """XLA's cost estimates of the executable, or None where unavailable."""
        return self._inner.cost_analysis()

    def memory_analysis(self) -> Any:
        """XLA's memory estimates of the executable, or None where unavailable."""
        return self._inner.memory_analysis()

    def runtime_executable(self) -> Any:
        """The runtime's loaded executable object."""
        return self._inner.runtime_executable()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves = self._leaves(args, kwargs)
        for leaf in leaves:
            if isinstance(leaf, Tracer):
                raise TypeError(
                    "Cannot apply JAX transformations to a function lowered and compiled "
                    "for a particular signature. Detected argument of Tracer type "
                    f"{type(leaf)}."
                )
        self._check_types(leaves)
        return self.out_tree.unflatten(self._inner(*leaves))

    def _check_types(self, leaves: list[Any]) -> None:
        """JAX's check and message (``pxla.check_arg_avals_for_call``): shapes and dtypes."""
        if self._expected is None:  # the executable's input types, read once
            self._expected = self._flat_in_avals()
        expected = self._expected
        wrong = []
        for i, (ref, leaf) in enumerate(zip(expected, leaves, strict=True)):
            try:
                got = jax.typeof(leaf)
            except TypeError:
                continue  # not an array: the executable's own error names it
            if (ref.shape, ref.dtype) != (got.shape, got.dtype):
                wrong.append((i, ref, got))
        if wrong:
            names = _arg_names(self._fn._fn, self._sig)  # only when there is an error
            errors = []
            for i, ref, got in wrong:
                name = f"'{names[i]}'" if names else f"{i + 1}/{len(expected)}"
                errors.append(
                    f"Argument {name} compiled with {ref.str_short()} and called with "
                    f"{got.str_short()}"
                )
            shown = "\n".join(errors[:5])
            count = f"The first 5 of {len(errors)}" if len(errors) >= 5 else "The"
            raise TypeError(
                "Argument types differ from the types for which this computation was "
                "compiled. Perhaps you are calling the compiled executable with a "
                "different enable_x64 mode than when it was AOT compiled? "
                f"{count} mismatches are:\n{shown}"
            )


def _dialect(dialect: str | None) -> str:
    if dialect is None:
        return "stablehlo"
    if dialect not in ("stablehlo", "hlo"):
        raise ValueError(
            f"unknown dialect: {dialect}. Valid options for 'dialect' are ('stablehlo', 'hlo')."
        )
    return dialect


def _arg_names(fn: Any, sig: Signature) -> list[str] | None:
    """Each dynamic leaf's name as JAX writes it (``x``, ``params['w']``, ``args[1]``)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    n = len(sig.avals)
    dyn_args, kwargs = sig.in_tree.unflatten(list(range(n)))
    static = {i for i, _ in sig.statics}
    positions = [p for p in range(len(dyn_args) + len(static)) if p not in static]
    names: list[str] = [""] * n

    def name_of(pos: int) -> str:
        for k, param in enumerate(params):
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                return f"{param.name}[{pos - k}]"
            if k == pos and param.kind is not inspect.Parameter.KEYWORD_ONLY:
                return param.name
        return f"args[{pos}]"

    for pos, arg in zip(positions, dyn_args, strict=True):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            names[leaf] = name_of(pos) + jax.tree_util.keystr(path)
    for key, value in kwargs.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(value)[0]:
            names[leaf] = key + jax.tree_util.keystr(path)
    return names


def _copy(report: StageReport) -> StageReport:
    new = StageReport(report.function)
    new.levels = {k: LevelReport(**vars(v)) for k, v in report.levels.items()}
    return new
