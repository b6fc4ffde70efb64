"""The three pure stages and their configs: trace, lower, compile.

Each stage is ``artifact + config -> artifact``:

* **trace**: function + abstract inputs -> a forward-only ``ClosedJaxpr``
  (``jax.jit(fn).trace``, batch dimension symbolic when ``batch_axes`` is given);
* **lower**: jaxpr -> StableHLO, as a ``jax.export.Exported`` (serializable,
  shape-polymorphic, multi-platform);
* **compile**: StableHLO -> an XLA executable (``jax.jit(exported.call)``
  at concrete shapes, persisted with ``jax.experimental.serialize_executable``).

Each level's config is a :class:`~mlcache_lab.cache.keys.KeyComponents` of
named, readable values; each artifact has a codec (``encode_*``/``decode_*``)
giving the bytes the store keeps and a digest for the next level's content key.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jaxlib
from jax import export as jax_export
from jax.core import ShapedArray
from jax.experimental import serialize_executable
from jax.extend import backend as jex_backend
from jax.extend.core import ClosedJaxpr, jaxpr_as_fun
from jax.sharding import SingleDeviceSharding

from .. import jax_internals
from ..cache.jaxpr_codec import (
    CODEC_VERSION,
    JaxprCodecError,
    canonical_jaxpr,
    decode_jaxpr,
    encode_jaxpr,
)
from ..cache.keys import KeyComponents, digest
from .signature import Signature

__all__ = [
    "CompileArtifact",
    "LowerArtifact",
    "NotCacheable",
    "TraceArtifact",
    "check_compiler_options",
    "compile_config",
    "has_address",
    "lower_config",
    "run_compile",
    "run_lower",
    "run_trace",
    "trace_config",
]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
EXPORT_FORMAT = 1
_CALLING_CONVENTION = jax_export.maximum_supported_calling_convention_version
EXECUTABLE_FORMAT = 2  # 2: unused inputs pruned


class NotCacheable(Exception):
    """A program the stages cannot carry (e.g. tokens in or out): ``jax.jit`` runs it."""


# ---------------------------------------------------------------- artifacts
@dataclasses.dataclass
class TraceArtifact:
    """A traced program. ``encoded`` is None when the codec refused it (``note`` says why)."""

    jaxpr: ClosedJaxpr
    out_tree: Any
    encoded: bytes | None
    note: str = ""

    @property
    def digest(self) -> str | None:
        # The output tree is part of the program: two functions with the same flat jaxpr
        # but other output structures must not share the levels after trace.
        return None if self.encoded is None else digest(self.encoded, str(self.out_tree))

    def meta(self) -> dict[str, Any]:
        return {"out_tree": _dump_tree(self.out_tree)}

    @classmethod
    def decode(cls, payload: bytes, meta: Mapping[str, Any]) -> TraceArtifact:
        return cls(decode_jaxpr(payload), _load_tree(meta["out_tree"]), payload)


@dataclasses.dataclass
class LowerArtifact:
    """A lowered program (``jax.export.Exported``) and its serialized bytes."""

    exported: jax_export.Exported
    out_tree: Any
    serialized: bytes

    @property
    def digest(self) -> str:
        return digest(self.serialized, str(self.out_tree))  # the tree: as for the trace

    def meta(self) -> dict[str, Any]:
        return {"out_tree": _dump_tree(self.out_tree)}

    @classmethod
    def decode(cls, payload: bytes, meta: Mapping[str, Any]) -> LowerArtifact:
        return cls(
            jax_export.deserialize(bytearray(payload)), _load_tree(meta["out_tree"]), payload
        )

    def as_text(self) -> str:
        return self.exported.mlir_module()


@dataclasses.dataclass
class CompileArtifact:
    """A loaded executable taking the flat dynamic leaves, returning flat outputs."""

    compiled: jax.stages.Compiled
    out_tree: Any
    serialized: bytes | None
    note: str = ""

    def meta(self) -> dict[str, Any]:
        return {"out_tree": _dump_tree(self.out_tree), "runtime": _runtime()}

    @classmethod
    def decode(cls, payload: bytes, meta: Mapping[str, Any]) -> CompileArtifact:
        # An executable only runs on the backend and devices it was built for.
        if meta.get("runtime") != _runtime():
            raise ValueError(
                f"executable built for {meta.get('runtime')!r}, this is {_runtime()!r}"
            )
        executable, in_tree, out_tree = pickle.loads(payload)
        compiled = serialize_executable.deserialize_and_load(executable, in_tree, out_tree)
        return cls(compiled, _load_tree(meta["out_tree"]), payload)


def _runtime() -> str:
    """The backend and devices an executable is built for (checked when one is loaded)."""
    device = jax.devices()[0]
    backend = jex_backend.get_backend()
    return (
        f"{backend.platform} {backend.platform_version}; {device.device_kind} x{jax.device_count()}"
    )


def _dump_tree(tree: Any) -> bytes:
    return pickle.dumps(tree)


def _load_tree(data: bytes) -> Any:
    return pickle.loads(data)


# ------------------------------------------------------------------ configs
def has_address(tree: Any) -> bool:
    """Whether a treedef's text holds a memory address (a function in its aux data)."""
    return _ADDRESS.search(str(tree)) is not None


def describe_trace_context() -> tuple[str, str]:
    """JAX's trace context (the state JAX keys its own caches on), readably, by name.

    Returns ``(digest, problem)``: the digest of every item of JAX's trace
    context (:func:`mlcache_lab.jax_internals.trace_context`: x64, rank
    promotion, matmul precision, default device, meshes, the enclosing axis
    environment of ``vmap`` and ``shard_map``, ...), and ``""``, or a sentence
    naming an item that has no description valid in another process (its text
    would hold a memory address): such a context cannot key an entry another
    process reads.
    """
    parts, problems = [], []
    for name, value in jax_internals.trace_context_items():
        text = _context_text(value)
        if _ADDRESS.search(text):
            problems.append(f"{name}={_ADDRESS.sub('', text)}")
        parts.append(f"{name}={text}")
    problem = ""
    if problems:
        problem = "the trace context has no stable description (" + "; ".join(problems) + ")"
    return digest(*parts), problem


def _context_text(value: Any) -> str:
    """One trace-context item as text that means the same in every process."""
    axis_env = jax_internals.describe_axis_env(value)  # its repr is only an address
    if axis_env is not None:
        return axis_env
    if isinstance(value, jax.sharding.Mesh):  # its repr leaves the devices out
        return f"{value!r} devices={value.device_ids.tolist()}"
    if isinstance(value, jax.Device):
        return f"{value.platform}:{value.id}"
    if isinstance(value, tuple):
        return "(" + ", ".join(map(_context_text, value)) + ")"
    return repr(value)


def trace_config(
    function_digest: str,
    sig: Signature,
    symbolic: bool,
    context: str,
    function_parts: Sequence[tuple[str, str]] = (),
) -> KeyComponents:
    """Everything that can change the jaxpr, by name.

    ``context`` is the first item of :func:`describe_trace_context`.
    ``function_parts`` are the named parts of the function's fingerprint
    (:attr:`~mlcache_lab.cache.fingerprint.Fingerprint.parts`): each is a
    component of its own, so a miss says which closed-over value changed.
    """
    # By type and value, as JAX keys static arguments: 1, True and 1.0 are three programs.
    statics = ";".join(f"{i}:{type(v).__qualname__}:{v!r}" for i, v in sig.statics)
    return KeyComponents(
        "trace",
        {
            **{f"function {label}": value for label, value in function_parts},
            "function": function_digest,
            "inputs": sig.describe(symbolic),
            "in_tree": str(sig.in_tree),
            "static_args": _ADDRESS.sub("", statics),
            "trace_context": context,
            "versions": f"jax={jax.__version__} jaxlib={jaxlib.__version__}",
            "jaxpr_codec": str(CODEC_VERSION),
        },
    )


def lower_config(
    sig: Signature, symbolic: bool, lowering_platforms: tuple[str, ...] | None
) -> KeyComponents:
    """Everything that can change the StableHLO given the jaxpr, by name."""
    platforms = lowering_platforms or (jax_export.default_export_platform(),)
    return KeyComponents(
        "lower",
        {
            "platforms": ",".join(platforms),
            "shape_polymorphism": "batch dimension symbolic" if symbolic else "static shapes",
            "donate": ",".join(map(str, sig.flat_donate)),
            "shardings": "unspecified (single device)",
            "export_format": f"{EXPORT_FORMAT}/cc{_CALLING_CONVENTION}",
        },
    )


def check_compiler_options(compiler_options: Any) -> dict[str, Any] | None:
    """``compiler_options`` as a dict (``None`` when empty or not given).

    Raises:
      TypeError: it is not a mapping of XLA option names to values.
    """
    if compiler_options is None:
        return None
    if not isinstance(compiler_options, Mapping) or not all(
        isinstance(k, str) for k in compiler_options
    ):
        raise TypeError(
            "'compiler_options' must be a mapping of XLA option names to values. Got "
            f"compiler_options={compiler_options!r}; e.g. "
            "{'xla_backend_optimization_level': 0}."
        )
    return dict(compiler_options) or None


def compile_config(
    sig: Signature, compiler_options: Mapping[str, Any] | None, device: Any = None
) -> KeyComponents:
    """Everything that can change the executable given the StableHLO, by name."""
    default = jax.devices()[0]
    backend = jex_backend.get_backend()
    options = ";".join(f"{k}={v!r}" for k, v in sorted((compiler_options or {}).items()))
    return KeyComponents(
        "compile",
        {
            "compiler_options": options,
            # Under jax.default_device the same StableHLO compiles for another device.
            "device": _device_text(device) if device is not None else _default_device(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "backend": f"{backend.platform} {backend.platform_version}",
            "device_kind": f"{(device or default).device_kind} x{len(jax.devices())}",
            "concrete_inputs": sig.describe(False),
            "donate": ",".join(map(str, sig.flat_donate)),
            "jaxlib": jaxlib.__version__,
            "executable_format": str(EXECUTABLE_FORMAT),
        },
    )


def _device_text(device: jax.Device) -> str:
    return f"{device.platform}:{device.id}"


def _default_device() -> str:
    chosen = jax_internals.default_device()
    if chosen is None:
        return "default"
    return _device_text(chosen) if isinstance(chosen, jax.Device) else f"default on {chosen}"


# ------------------------------------------------------------------- stages
def call_with_leaves(fn: Callable[..., Any], sig: Signature, leaves: list[Any]) -> Any:
    """Call ``fn`` with the signature's static arguments and these dynamic leaves."""
    dyn_args, kwargs = jax.tree_util.tree_unflatten(sig.in_tree, leaves)
    by_position = {i: v for i, v in sig.statics if isinstance(i, int)}
    args, it = [], iter(dyn_args)
    for i in range(len(dyn_args) + len(by_position)):
        args.append(by_position[i] if i in by_position else next(it))
    by_name = {k: v for k, v in sig.statics if isinstance(k, str)}
    return fn(*args, **kwargs, **by_name)


def flat_function(fn: Callable[..., Any], sig: Signature) -> Callable[..., list[Any]]:
    """``fn`` as a function of the flat dynamic leaves returning flat outputs."""

    def flat(*leaves: Any) -> list[Any]:
        return jax.tree_util.tree_leaves(call_with_leaves(fn, sig, list(leaves)))

    return flat


def run_trace(fn: Callable[..., Any], sig: Signature, symbolic: bool) -> TraceArtifact:
    """Trace ``fn`` at the signature's abstract inputs (its static arguments bound)."""
    specs = sig.specs(symbolic)
    given = getattr(fn, "__mlcache_jaxpr__", None)
    if given is not None:  # a program already traced (a cluster): no tracing to do
        closed = canonical_jaxpr(given)
        out_tree = jax.tree_util.tree_structure([0] * len(closed.out_avals))
    else:
        # A new partial each time: JAX caches traces by the function's identity,
        # so after a closed-over value changed (a Keras model's weights,
        # assigned in place) it would hand back the old jaxpr.
        traced = jax.jit(functools.partial(call_with_leaves, fn, sig)).trace(specs)
        closed, out_tree = canonical_jaxpr(traced.jaxpr), traced.out_tree
    if len(closed.in_avals) != len(specs):
        raise AssertionError(
            f"internal error: traced {len(closed.in_avals)} inputs for {len(specs)} leaves"
        )
    odd = [a for a in (*closed.in_avals, *closed.out_avals) if not isinstance(a, ShapedArray)]
    if odd:  # a token (or another non-array type) cannot cross jax.export
        raise NotCacheable(f"the program takes or returns {odd[0]}")
    try:
        encoded: bytes | None = encode_jaxpr(closed)
        note = ""
    except JaxprCodecError as err:
        encoded, note = None, f"jaxpr kept in memory only: {err}"
    return TraceArtifact(closed, out_tree, encoded, note)


def run_lower(
    art: TraceArtifact,
    sig: Signature,
    symbolic: bool,
    lowering_platforms: tuple[str, ...] | None,
    fn: Callable[..., Any],
) -> LowerArtifact:
    """Lower the jaxpr to a serializable ``Exported``.

    The program is lowered from the *decoded* jaxpr, so a fresh trace and one
    read from disk give the same StableHLO bytes. A jaxpr the codec refused is
    lowered by re-tracing ``fn`` inside ``jax.export`` instead.
    """
    specs = sig.specs(symbolic)
    donate = sig.flat_donate
    if art.encoded is not None:
        closed = decode_jaxpr(art.encoded)
        flat_fn: Any = jax.jit(jaxpr_as_fun(closed), donate_argnums=donate)
        specs = [
            jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in closed.in_avals
        ]
    else:
        flat_fn = jax.jit(flat_function(fn, sig), donate_argnums=donate)
    exported = jax_export.export(flat_fn, platforms=lowering_platforms)(*specs)
    return LowerArtifact(exported, art.out_tree, bytes(exported.serialize()))


def _kept_inputs_call(exported: jax_export.Exported) -> Callable[..., Any]:
    """``exported.call`` whose unused inputs the executable does not take.

    The StableHLO module drops unused arguments (``module_kept_var_idx``) but
    ``exported.call`` still binds them all, so an executable compiled from it
    would transfer every input. Passing zeros of the same type in their place
    leaves them unused in the outer program too, and ``jax.jit`` prunes them
    (``keep_unused=False``, its default): as with ``jax.jit(fn)``, only the
    inputs the program reads are transferred.
    """
    kept = set(exported.module_kept_var_idx)
    if len(kept) == len(exported.in_avals):
        return exported.call

    def call(*leaves: Any) -> Any:
        inputs = [x if i in kept else jax.numpy.zeros_like(x) for i, x in enumerate(leaves)]
        return exported.call(*inputs)

    return call


def run_compile(
    art: LowerArtifact,
    sig: Signature,
    compiler_options: Mapping[str, Any] | None,
    device: Any = None,
) -> CompileArtifact:
    """Compile the StableHLO at the call's concrete shapes; serialize the executable."""
    concrete = sig.specs(False)
    placement: dict[str, Any] = {}
    if device is not None:  # an executable runs on the device it was compiled for
        sharding = SingleDeviceSharding(device)
        placement = {"in_shardings": sharding, "out_shardings": sharding}
    jitted = jax.jit(_kept_inputs_call(art.exported), donate_argnums=sig.flat_donate, **placement)
    compiled = (
        jitted.trace(*concrete)
        .lower()
        .compile(compiler_options=dict(compiler_options) if compiler_options else None)
    )
    try:
        payload = serialize_executable.serialize(compiled)
        serialized: bytes | None = pickle.dumps(payload)
        note = ""
    except Exception as err:  # backends without executable serialization
        serialized, note = None, f"executable kept in memory only: {type(err).__name__}: {err}"
    return CompileArtifact(compiled, art.out_tree, serialized, note)
