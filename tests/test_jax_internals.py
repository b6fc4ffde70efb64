"""One test per private JAX internal in mlcache_lab.jax_internals: it exists and behaves as used.

A JAX release that moves or changes one of them fails here, by name, before
anything deeper in the cache (a codec round trip, a trace key) goes wrong.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import io
import pathlib
import pickle
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export as jax_export
from jax import lax
from jax.extend.core import DropVar, Literal, Var

from mlcache_lab import jax_internals as ji


def _eqns(fn, *args):
    return jax.make_jaxpr(fn)(*args).jaxpr.eqns


# ------------------------------------------------------------ loading the module
def test_a_missing_internal_fails_at_import_naming_it(monkeypatch):
    """A release without one of the internals breaks in one place, with the fix."""
    import jax._src.core as jax_core

    monkeypatch.delattr(jax_core, "AxisEnv")
    spec = importlib.util.spec_from_file_location("_jax_internals_probe", ji.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    with pytest.raises(ImportError, match=r"jax\._src\.core\.AxisEnv.*mlcache_lab/jax_internals"):
        spec.loader.exec_module(module)
    assert "_jax_internals_probe" not in sys.modules


def test_only_jax_is_imported():
    """A leaf: every package of mlcache_lab may import it without a cycle."""
    tree = ast.parse(pathlib.Path(ji.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: not a leaf"
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "collections", "contextlib", "typing", "jax"}, roots


# ------------------------------------------------------------ configuration
def test_trace_context_is_hashable_and_tracks_settings():
    before = ji.trace_context()
    hash(before)
    with jax.numpy_rank_promotion("raise"):
        inside = ji.trace_context()
    assert inside != before
    assert ji.trace_context() == before


def test_trace_context_items_name_every_item():
    items = ji.trace_context_items()
    assert [v for _, v in items] == list(ji.trace_context())
    names = [n for n, _ in items]
    assert all(isinstance(n, str) for n in names)
    assert "jax_enable_x64" in names and "jax_numpy_rank_promotion" in names
    with jax.numpy_rank_promotion("raise"):
        assert dict(ji.trace_context_items())["jax_numpy_rank_promotion"] == "raise"


def test_jit_disabled_follows_disable_jit():
    assert ji.jit_disabled() is False
    with jax.disable_jit():
        assert ji.jit_disabled() is True
    assert ji.jit_disabled() is False


def test_default_device_follows_the_context():
    assert ji.default_device() is None
    device = jax.devices()[0]
    with jax.default_device(device):
        assert ji.default_device() == device
    with jax.default_device("cpu"):
        assert ji.default_device() == "cpu"


def test_traceback_in_locations_limit_zero_drops_source_locations():
    def lowered_text() -> str:
        def fn(x):  # a new function each time: JAX caches lowerings per function
            return jnp.sin(x) * 2

        return jax.jit(fn).lower(jnp.ones(3)).as_text(debug_info=True)

    assert "test_jax_internals.py" in lowered_text()
    with ji.traceback_in_locations_limit(0):
        assert "test_jax_internals.py" not in lowered_text()


def test_describe_axis_env_names_vmap_axes_without_an_address():
    seen = []

    def fn(x):
        seen.extend(t for _, v in ji.trace_context_items() if (t := ji.describe_axis_env(v)))
        return x

    jax.vmap(fn, axis_name="i")(jnp.ones(3))
    assert seen == ["AxisEnv({'i': 3}, spmd=[], explicit_mesh=[])"]
    assert ji.describe_axis_env(3) is None
    assert ji.describe_axis_env(None) is None


# ------------------------------------------------------------ jax.jit's surface
def test_resolve_argnums_completes_numbers_and_names_as_jit_does():
    def fn(a, b, *, c=1):
        return a

    assert ji.resolve_argnums(fn, None, "b", (0,), None) == ((1,), ("b",), (0,), ("a",))
    with pytest.raises(ValueError):
        jax.jit(fn, static_argnames="nope")  # jax.jit's own check, which we rely on first
    assert ji.resolve_argnums(fn, 1, None, None, "c") == ((1,), ("b",), (), ("c",))


def test_fun_name_unwraps_partials():
    def named(a, b):
        return a

    assert ji.fun_name(named) == "named"
    assert ji.fun_name(functools.partial(named, 1)) == "named"
    assert ji.fun_name(lambda: 0) == "<lambda>"


def test_pytree_differences_report_path_and_explanation():
    seen = jax.tree.structure(((1, 2), {}))
    lowered = jax.tree.structure(((1,), {}))
    ((path, got, expected, why),) = ji.pytree_differences(seen, lowered)
    assert path[0].idx == 0  # aot.py reads args/kwargs from the first key's index
    assert (got, expected) == ("tuple of length 2", "tuple of length 1")
    assert "length" in why
    assert ji.pytree_differences(seen, seen) == []


def test_compiled_executable_is_the_runtime_executables_owner():
    compiled = jax.jit(jnp.sin).lower(jnp.ones(3)).compile()
    executable = ji.compiled_executable(compiled)
    assert executable.runtime_executable() is compiled.runtime_executable()


# ------------------------------------------------------------ StableHLO and HLO
@pytest.fixture(scope="module")
def exported():
    return jax_export.export(jax.jit(lambda a, b: jnp.tanh(a @ b)))(
        jnp.ones((4, 8)), jnp.ones((8, 2))
    )


def _computation(exported):
    from jax.extend.mlir import ir

    with ji.make_ir_context():
        module = ir.Module.parse(exported.mlir_module())
    out = io.BytesIO()
    module.operation.write_bytecode(file=out)
    return module, ji.stablehlo_to_xla_computation(out.getvalue())


def test_make_ir_context_parses_stablehlo(exported):
    module, _ = _computation(exported)
    assert "stablehlo.dot_general" in str(module)


def test_stablehlo_to_xla_computation_gives_an_hlo_module(exported):
    _, computation = _computation(exported)
    assert computation.as_hlo_module().name


def test_hlo_text_is_parsable_hlo(exported):
    _, computation = _computation(exported)
    text = ji.hlo_text(computation, debug_info=False)
    assert text.startswith("HloModule") and "ENTRY" in text and "tanh" in text
    assert "metadata=" not in text


def test_uses_pjrt_c_api_reads_the_backend():
    backend = jax.extend.backend.get_backend()
    assert ji.uses_pjrt_c_api(backend) == ("PJRT C API" in backend.platform_version)


def test_hlo_cost_analysis_counts_flops(exported):
    backend = jax.extend.backend.get_backend()
    if ji.uses_pjrt_c_api(backend):
        pytest.skip("the PJRT C API has no cost analysis of unoptimized HLO")
    _, computation = _computation(exported)
    costs = ji.hlo_cost_analysis(backend, computation)
    assert costs["flops"] >= 2 * 4 * 8 * 2


# ------------------------------------------------------------ jaxpr internals
def test_eqn_context_round_trips_through_its_fields():
    (eqn, *_) = _eqns(lambda x: x * 2.0, jnp.ones(3))
    assert ji.is_eqn_context(eqn.ctx) and not ji.is_eqn_context(object())
    fields = ji.eqn_context_fields(eqn.ctx)
    assert len(fields) == 5
    hash(fields)  # plain values: the codec pickles them
    assert ji.rebuild_eqn_context(*fields) is eqn.ctx  # interned: the same object back


def test_bind_equation_evaluates_as_eval_jaxpr():
    x = jnp.arange(5.0)
    (sin,) = _eqns(jnp.sin, x)
    (out,) = ji.bind_equation(sin, [x])
    np.testing.assert_allclose(out, np.sin(np.arange(5.0)), rtol=1e-6)
    (top_k,) = _eqns(lambda v: lax.top_k(v, 2), x)
    values, indices = ji.bind_equation(top_k, [x])  # several results: a list
    np.testing.assert_array_equal(indices, [4, 3])
    (values,) = ji.bind_equation(_eqns(lambda v: jnp.sum(v, axis=0), x)[0], [x], None)
    assert float(values) == 10.0


def test_var_state_rebuilds_a_new_var_of_the_same_kind():
    (eqn,) = _eqns(lambda x: x + 1, jnp.ones(3))
    var = eqn.outvars[0]
    state = ji.var_state(var)
    assert state[0] == var.aval
    new = ji.rebuild_var(type(var), *state)
    assert type(new) is Var and new is not var and new.aval == var.aval
    drop = ji.rebuild_var(DropVar, *state)
    assert isinstance(drop, DropVar)


def test_typed_ndarray_is_what_literals_hold_and_rebuilds_with_its_aval():
    (eqn,) = _eqns(lambda x: x * 2.0, jnp.ones(3))
    (literal,) = [v for v in eqn.invars if isinstance(v, Literal)]
    value = literal.val
    assert isinstance(value, ji.TypedNdArray) and isinstance(value, np.ndarray)
    again = ji.TypedNdArray(np.asarray(value).view(np.ndarray), value.aval)
    assert again.aval == value.aval and np.asarray(again) == np.asarray(value)


def test_array_impl_is_the_type_of_jax_arrays():
    x = jnp.ones((2, 3))
    assert type(x) is ji.ArrayImpl
    assert x.aval == jax.typeof(x)  # the fast path keys on it


def test_symbolic_scope_is_the_scope_a_dimension_was_made_in():
    scope = jax_export.SymbolicScope()
    b, two_b = jax_export.symbolic_shape("B, 2*B", scope=scope)
    assert ji.symbolic_scope(b) is scope and ji.symbolic_scope(two_b) is scope


def test_evaluate_dim_gives_an_expression_at_concrete_sizes():
    b, three_b_plus_1 = jax_export.symbolic_shape("B, 3*B + 1")
    assert ji.evaluate_dim(b, {"B": 7}) == 7
    assert ji.evaluate_dim(three_b_plus_1, {"B": 7}) == 22


class _Recorder(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.functions: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        obj = super().find_class(module, name)
        if not isinstance(obj, type):
            self.functions.add((module, name))
        return obj


def test_pickled_functions_are_all_jax_objects_refer_to():
    """The codec's unpickler allows exactly these functions; JAX's avals need no others."""
    avals = [
        jax.typeof(jnp.ones(3)),  # every aval holds a NamedSharding
        jax.typeof(jax.random.key(0)),  # a key's dtype holds its PRNG implementation
        jax.typeof(jax.random.key(0, impl="rbg")),
    ]
    recorder = _Recorder(pickle.dumps(avals, protocol=5))
    assert recorder.load() == avals
    outside = {
        f
        for f in recorder.functions
        if f not in ji.PICKLED_FUNCTIONS
        and not f[0].startswith(ji.PICKLED_FUNCTION_MODULE_PREFIXES)
    }
    assert not outside, outside
    assert recorder.functions >= ji.PICKLED_FUNCTIONS  # no stale entry
    assert any(f[0].startswith(ji.PICKLED_FUNCTION_MODULE_PREFIXES) for f in recorder.functions)
