"""The AOT stage objects against jax.jit's, on the same function and arguments.

Every check runs on an in-memory store and a disk store, cold (everything generated) and
warm (a second CachedFunction on the same store: for the disk store, a new CacheStore
object on the same folder, so every artifact is decoded from disk).
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.mlir import ir

import mlcache_lab as mcl
from mlcache_lab.models import get_model

WARM = {"memory": "memory", "disk": "disk"}


def make_store(kind: str, tmp_path) -> mcl.CacheStore:
    return mcl.CacheStore(None if kind == "memory" else tmp_path / "store")


def reopen(kind: str, store: mcl.CacheStore, tmp_path) -> mcl.CacheStore:
    """The warm store: the same object in memory, a fresh one on the same folder on disk."""
    return store if kind == "memory" else mcl.CacheStore(tmp_path / "store")


def pytree_fn(params: dict[str, Any], x: jax.Array, *, scale: jax.Array) -> dict[str, Any]:
    h = jnp.tanh(x @ params["w"] + params["b"]) * scale
    # The updated params reuse the donated buffers (same shapes), as a training step does.
    new = {"w": params["w"] * 0.9, "b": params["b"] + 1.0}
    return {"out": h, "norm": jnp.sum(h**2), "params": new}


def pytree_args() -> tuple[tuple[Any, ...], dict[str, Any]]:
    k1, k2 = jax.random.split(jax.random.key(3))
    params = {"w": jax.random.normal(k1, (4, 3)), "b": jnp.arange(3.0)}
    # A Python float is weakly typed: the weak type must survive the disk round trip.
    return (params, jax.random.normal(k2, (5, 4))), {"scale": 0.5}


def assert_same_tree(ours: Any, theirs: Any) -> None:
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def sds_fields(tree: Any) -> list[tuple[Any, Any]]:
    return [(s.shape, s.dtype) for s in jax.tree.leaves(tree)]


def arg_infos(tree: Any) -> list[tuple[Any, bool]]:
    return [(i._aval, i.donated) for i in jax.tree.leaves(tree)]


def stages_of(cf: mcl.CachedFunction, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    lowered = cf.lower(*args, **kwargs)
    return lowered, lowered.compile()


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_lowered_and_compiled_match_jax(kind, tmp_path):
    args, kwargs = pytree_args()
    jitted = jax.jit(pytree_fn, donate_argnums=0)
    j_low = jitted.lower(*args, **kwargs)
    j_comp = j_low.compile()
    expected = jitted(*jax.tree.map(jnp.copy, args), **kwargs)
    assert float(expected["norm"]) > 0.0  # not a degenerate reference

    store = make_store(kind, tmp_path)
    cold = stages_of(mcl.cached_jit(pytree_fn, store=store, donate_argnums=0), args, kwargs)
    warm_cf = mcl.cached_jit(pytree_fn, store=reopen(kind, store, tmp_path), donate_argnums=0)
    warm = stages_of(warm_cf, args, kwargs)
    assert cold[1].report.statuses() == {"trace": "miss", "lower": "miss", "compile": "miss"}
    # A warm f.lower() hits the lower level: the trace level is not even loaded.
    assert (warm[0].report.status("trace"), warm[0].report.status("lower")) == (
        "bypassed",
        WARM[kind],
    )
    assert warm[1].report.status("compile") == WARM[kind]

    for low, comp in (cold, warm):
        for ours, theirs in ((low, j_low), (comp, j_comp)):
            assert ours.in_tree == theirs.in_tree
            assert ours.in_avals == theirs.in_avals
            assert arg_infos(ours.args_info) == arg_infos(theirs.args_info)
            assert jax.tree.structure(ours.args_info) == jax.tree.structure(theirs.args_info)
            assert ours.donate_argnums == theirs.donate_argnums == (0, 1)
            assert ours.out_tree == theirs.out_tree
            assert sds_fields(ours.out_info) == sds_fields(theirs.out_info)
        # The compiled object's shardings and output info are the executable's.
        assert comp.out_info == j_comp.out_info
        assert comp.input_shardings == j_comp.input_shardings
        assert comp.output_shardings == j_comp.output_shardings
        assert comp.input_formats == j_comp.input_formats
        assert comp.output_formats == j_comp.output_formats
        fresh = jax.tree.map(jnp.copy, args)
        assert_same_tree(comp(*fresh, **kwargs), expected)
        assert fresh[0]["w"].is_deleted()  # donated, as with jax.jit


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_text_ir_and_analyses_match_jax(kind, tmp_path):
    def f(x, y):
        return jnp.sin(x) @ y + 4.0

    x, y = jnp.ones((8, 16)), jnp.ones((16, 4))
    j_low = jax.jit(f).lower(x, y)
    j_comp = j_low.compile()
    store = make_store(kind, tmp_path)
    stages_of(mcl.cached_jit(f, store=store), (x, y), {})  # cold: fills the store
    for low, comp in (
        stages_of(mcl.cached_jit(f, store=store), (x, y), {}),
        stages_of(mcl.cached_jit(f, store=reopen(kind, store, tmp_path)), (x, y), {}),
    ):
        text = low.as_text()
        assert text == low.as_text(dialect="stablehlo")
        assert "stablehlo.dot_general" in text and "stablehlo.sine" in text
        assert "mhlo.num_partitions = 1" in text and "mhlo.num_replicas = 1" in text
        assert "loc(" not in text and "loc(" in low.as_text(debug_info=True)
        assert "HloModule" in low.as_text("hlo") and "dot(" in low.as_text("hlo")
        assert type(low.compiler_ir()) is type(j_low.compiler_ir()) is ir.Module
        assert type(low.compiler_ir("hlo")) is type(j_low.compiler_ir("hlo"))
        with pytest.raises(ValueError, match="unknown dialect: mhlo"):
            low.as_text(dialect="mhlo")
        with pytest.raises(ValueError, match="unknown dialect"):
            j_low.as_text(dialect="mhlo")
        # Same program, same XLA estimates: 2*8*16*4 flops for the matmul, sine, add.
        assert low.cost_analysis()["flops"] == j_low.cost_analysis()["flops"] > 1024
        assert comp.cost_analysis()["flops"] == j_comp.cost_analysis()["flops"]
        ours_mem, theirs_mem = comp.memory_analysis(), j_comp.memory_analysis()
        assert type(ours_mem) is type(theirs_mem)
        assert ours_mem.argument_size_in_bytes == theirs_mem.argument_size_in_bytes
        assert ours_mem.output_size_in_bytes == theirs_mem.output_size_in_bytes
        assert type(comp.runtime_executable()) is type(j_comp.runtime_executable())
        assert "HloModule" in comp.as_text()
        np.testing.assert_allclose(comp(x, y), j_comp(x, y), rtol=1e-6)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_traced_matches_jax(kind, tmp_path):
    args, kwargs = pytree_args()
    j_tr = jax.jit(pytree_fn).trace(*args, **kwargs)
    store = make_store(kind, tmp_path)
    cold = mcl.cached_jit(pytree_fn, store=store).trace(*args, **kwargs)
    warm = mcl.cached_jit(pytree_fn, store=reopen(kind, store, tmp_path)).trace(*args, **kwargs)
    assert (cold.report.status("trace"), warm.report.status("trace")) == ("miss", WARM[kind])
    for tr in (cold, warm):
        assert tr.fun_name == j_tr.fun_name == "pytree_fn"
        assert tr.in_tree == j_tr.in_tree
        assert tr.in_avals == j_tr.in_avals
        assert arg_infos(tr.args_info) == arg_infos(j_tr.args_info)
        assert tr.out_tree == j_tr.out_tree
        assert tr.out_avals == j_tr.out_avals
        assert sds_fields(tr.out_info) == sds_fields(j_tr.out_info)
        assert tr.jaxpr.in_avals == j_tr.jaxpr.in_avals
        assert_same_tree(tr(*args, **kwargs), j_tr(*args, **kwargs))
        lowered = tr.lower()
        assert lowered.in_avals == j_tr.lower().in_avals


def test_lower_with_batch_axes_is_symbolic_and_runs():
    model = get_model("mlp", features=8, hidden=16, depth=2, classes=4)
    params, x = model.example_args(6)
    cf = mcl.cached_jit(model.apply, store=mcl.CacheStore(None), batch_axes=model.batch_axes)
    traced = cf.trace(params, x)
    lowered = traced.lower()
    batch_dim = lowered.in_avals[0][1].shape[0]
    assert not isinstance(batch_dim, int) and str(batch_dim) == "B"
    assert lowered.out_info.shape[1] == 4
    expected = jax.jit(model.apply)(params, x)
    assert float(jnp.std(expected)) > 0.0
    np.testing.assert_allclose(lowered.compile()(params, x), expected, rtol=1e-5)
    np.testing.assert_allclose(traced(params, x), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_compiled_call_errors_match_jax(kind, tmp_path):
    def f(x, y):
        return jnp.sqrt(x**2) + y

    x, y = jnp.float32(1.0), jnp.ones(3)
    j_exe = jax.jit(f).lower(x, y).compile()
    store = make_store(kind, tmp_path)
    mcl.cached_jit(f, store=store).lower(x, y).compile()
    for exe in (
        mcl.cached_jit(f, store=store).lower(x, y).compile(),
        mcl.cached_jit(f, store=reopen(kind, store, tmp_path)).lower(x, y).compile(),
    ):
        for bad in (([1.0], y), (x,), (x, y, y)):
            with pytest.raises(TypeError) as theirs:
                j_exe(*bad)
            with pytest.raises(TypeError, match="^" + re.escape(str(theirs.value)) + "$"):
                exe(*bad)
        with pytest.raises(TypeError) as theirs:
            j_exe(x.astype(jnp.int32), y)
        assert "Argument 'x' compiled with float32[] and called with int32[]" in str(theirs.value)
        with pytest.raises(TypeError, match="^" + re.escape(str(theirs.value)) + "$"):
            exe(x.astype(jnp.int32), y)
        with pytest.raises(TypeError, match=r"Detected argument of Tracer type .*BatchTracer"):
            jax.vmap(lambda v, exe=exe: exe(v, y))(jnp.ones(3))
        np.testing.assert_allclose(exe(x, y), j_exe(x, y))


def test_static_arguments_and_kwargs_are_called_as_in_jax():
    def f(n, x, *rest, bias):
        return x * n + bias + sum(rest)

    x, b = jnp.arange(3.0), jnp.float32(2.0)
    j_exe = jax.jit(f, static_argnums=0).lower(3, x, x, bias=b).compile()
    exe = mcl.cached_jit(f, store=mcl.CacheStore(None), static_argnums=0)
    exe = exe.lower(3, x, x, bias=b).compile()
    assert exe.in_tree == j_exe.in_tree  # the static argument is not an input
    np.testing.assert_allclose(exe(x, x, bias=b), j_exe(x, x, bias=b))
    with pytest.raises(TypeError) as theirs:
        j_exe(x, x.astype(jnp.int32), bias=b)
    with pytest.raises(TypeError, match=re.escape(str(theirs.value))):
        exe(x, x.astype(jnp.int32), bias=b)
    assert "Argument 'rest[0]'" in str(theirs.value)  # JAX's name for *args leaves


def test_compile_options_and_errors():
    def f(x):
        return jnp.sqrt(x**2) + 1.0

    cf = mcl.cached_jit(f, store=mcl.CacheStore(None))
    lowered = cf.lower(1.0)
    plain, embedded = lowered.compile(), lowered.compile({"xla_embed_ir_in_executable": True})
    assert plain is not embedded
    assert embedded.report.status("compile") == "miss"  # options are in the compile key
    assert lowered.compile().report.status("compile") == "memory"
    with pytest.raises(jax.errors.JaxRuntimeError, match="No such compile option: 'invalid_key'"):
        lowered.compile(compiler_options={"invalid_key": "invalid_value"})
    with pytest.raises(jax.errors.JaxRuntimeError, match="No such compile option: 'invalid_key'"):
        jax.jit(f).lower(1.0).compile(compiler_options={"invalid_key": "invalid_value"})
    with pytest.raises(TypeError, match="'compiler_options' must be a mapping"):
        lowered.compile(compiler_options=[("xla_embed_ir_in_executable", True)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"device_assignment=.*not supported.*device="):
        lowered.compile(device_assignment=tuple(jax.devices()))
    with pytest.raises(TypeError, match=r"write \('cpu',\)"):
        cf.trace(1.0).lower(lowering_platforms="cpu")
    # The function's own options stay, the given ones are added.
    own = mcl.cached_jit(
        f, store=mcl.CacheStore(None), compiler_options={"xla_backend_optimization_level": 0}
    )
    assert own.lower(1.0).compile({"xla_embed_ir_in_executable": True})(2.0) == 3.0


def test_lowering_platforms_from_traced():
    cf = mcl.cached_jit(lambda x: x * 2, store=mcl.CacheStore(None))
    both = cf.trace(1.0).lower(lowering_platforms=("cpu", "cuda"))
    assert both.exported.platforms == ("cpu", "cuda")
    assert both.report.status("lower") == "miss"
    cpu = cf.trace(1.0).lower()
    assert cpu.exported.platforms == ("cpu",)
    assert "HloModule" in cpu.as_text("hlo")
    # The cost analysis uses the first listed platform this process has (cuda is absent).
    cuda_first = cf.trace(1.0).lower(lowering_platforms=("cuda", "cpu"))
    assert cuda_first.cost_analysis()["flops"] == cpu.cost_analysis()["flops"] == 1.0
