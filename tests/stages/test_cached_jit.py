"""cached_jit in one process: same values as jax.jit, statuses, stage objects, composition."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mlcache_lab as mcl
from mlcache_lab.models import get_model


def mlp_like(params, x):
    return {"out": jnp.tanh(x @ params["w"] + params["b"]), "norm": jnp.sum(x * x, axis=-1)}


@pytest.fixture
def mlp_args(key):
    k1, k2 = jax.random.split(key)
    params = {"w": jax.random.normal(k1, (6, 3)), "b": jnp.zeros(3)}
    return params, jax.random.normal(k2, (5, 6))


def assert_same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_values_equal_jax_jit(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    assert_same(f(*mlp_args), jax.jit(mlp_like)(*mlp_args))


@pytest.mark.parametrize("name", ["transformer", "mlp"])
def test_builtin_models_equal_jax_jit(store, name):
    model = get_model(name, **({"layers": 2} if name == "transformer" else {}))
    args = model.example_args(3)
    f = mcl.cached_jit(model.apply, store=store, batch_axes=model.batch_axes)
    np.testing.assert_allclose(f(*args), jax.jit(model.apply)(*args), rtol=1e-5, atol=1e-5)


def test_first_call_misses_then_fast_path(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    f(*mlp_args)
    assert f.last_report.statuses() == {"trace": "miss", "lower": "miss", "compile": "miss"}
    f(*mlp_args)
    assert f.last_report.fast_path
    assert f.last_report.statuses() == {"trace": "memory", "lower": "memory", "compile": "memory"}


def test_second_function_object_hits_memory_then_disk(store, tmp_path, mlp_args):
    mcl.cached_jit(mlp_like, store=store)(*mlp_args)
    g = mcl.cached_jit(mlp_like, store=store)
    g(*mlp_args)
    assert g.last_report.statuses() == {
        "trace": "bypassed",
        "lower": "bypassed",
        "compile": "memory",
    }
    h = mcl.cached_jit(mlp_like, store=mcl.CacheStore(tmp_path / "store"))
    assert_same(h(*mlp_args), jax.jit(mlp_like)(*mlp_args))
    assert h.last_report.statuses() == {"trace": "bypassed", "lower": "bypassed", "compile": "disk"}


def test_in_memory_store(mlp_args):
    store = mcl.CacheStore(None)
    assert not store.on_disk
    mcl.cached_jit(mlp_like, store=store)(*mlp_args)
    g = mcl.cached_jit(mlp_like, store=store)
    g(*mlp_args)
    assert g.last_report.status("compile") == "memory"
    assert store.stats()["compile"]["entries"] == 0


def test_new_batch_size_with_batch_axes_only_compiles(store, mlp_args):
    params, x = mlp_args
    f = mcl.cached_jit(mlp_like, store=store, batch_axes=(None, 0))
    f(params, x)
    out = f(params, jnp.concatenate([x, x]))
    assert f.last_report.statuses() == {"trace": "bypassed", "lower": "memory", "compile": "miss"}
    assert_same(out, jax.jit(mlp_like)(params, jnp.concatenate([x, x])))


def test_batch_axis_other_than_zero(store, key):
    def f(w, x):  # x: [features, batch]
        return jnp.tanh(w @ x)

    w = jax.random.normal(key, (4, 6))
    cf = mcl.cached_jit(f, store=store, batch_axes=(None, 1))
    for batch in (3, 7):
        x = jnp.ones((6, batch))
        np.testing.assert_allclose(cf(w, x), jax.jit(f)(w, x), rtol=1e-6)
    assert cf.last_report.status("lower") == "memory"


def test_with_options_shares_the_store(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    f(*mlp_args)
    g = f.with_options(compiler_options={"xla_backend_optimization_level": 0})
    # Another optimization level may round differently: close, not identical.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), g(*mlp_args), f(*mlp_args)
    )
    assert g.last_report.statuses() == {"trace": "bypassed", "lower": "memory", "compile": "miss"}
    assert "compiler_options" in g.last_report.reason("compile")


def test_static_args_and_kwargs(store):
    def f(x, n, *, scale):
        return x * n * scale

    cf = mcl.cached_jit(f, store=store, static_argnums=(1,))
    x = jnp.arange(4.0)
    assert_same(cf(x, 3, scale=2.0), x * 6.0)
    assert_same(cf(x, 4, scale=2.0), x * 8.0)
    assert cf.last_report.status("trace") == "miss"
    assert "static_args" in cf.last_report.reason("trace")


def test_python_scalars_and_numpy_inputs(store):
    cf = mcl.cached_jit(lambda a, b: a * b + 1, store=store)
    assert_same(cf(np.arange(3, dtype=np.float32), 2.0), np.arange(3, dtype=np.float32) * 2 + 1)


def test_donation(store):
    def f(w, x):
        return jnp.tanh(x @ w)

    w, x = jnp.eye(4), jnp.ones((2, 4))
    expected = jax.jit(f)(w, x)
    cf = mcl.cached_jit(f, store=store, donate_argnums=(1,))
    assert_same(cf(w, x), expected)
    assert x.is_deleted()


def test_aot_stage_objects(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    traced = f.trace(*mlp_args)
    assert "tanh" in traced.as_text()
    assert traced.jaxpr.in_avals[0].shape == (3,)
    lowered = traced.lower()
    assert "stablehlo" in lowered.as_text()
    compiled = lowered.compile()
    assert "HloModule" in compiled.as_text()
    assert_same(compiled(*mlp_args), jax.jit(mlp_like)(*mlp_args))
    assert compiled.report.statuses() == {"trace": "miss", "lower": "miss", "compile": "miss"}
    again = f.trace(*mlp_args).lower().compile()
    assert again.report.statuses() == {"trace": "memory", "lower": "memory", "compile": "memory"}
    other = (
        f.trace(*mlp_args).lower().compile(compiler_options={"xla_backend_optimization_level": 0})
    )
    assert other.report.status("compile") == "miss"


def test_under_transformations_defers_to_jax(store):
    cf = mcl.cached_jit(lambda x: jnp.sum(jnp.sin(x)), store=store)
    x = jnp.arange(3.0)
    np.testing.assert_allclose(jax.grad(cf)(x), jnp.cos(x), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(cf)(x[:, None]), jnp.sin(x), rtol=1e-6)


def test_custom_jvp_and_control_flow_persist(store, tmp_path):
    def f(x):
        y = jax.nn.relu(x)  # custom_jvp

        def body(c, _):
            return jnp.where(c > 0, c * 0.5, c), None

        y, _ = jax.lax.scan(body, y, None, length=3)
        return jax.lax.cond(y.sum() > 0, jnp.sin, jnp.cos, y)

    x = jnp.linspace(-1, 1, 5)
    cf = mcl.cached_jit(f, store=store)
    cf(x)
    assert cf.last_report.levels["trace"].note == ""
    fresh = mcl.cached_jit(f, store=mcl.CacheStore(tmp_path / "store"))
    fresh.with_options(donate_argnums=(0,))  # a lowering change reads the jaxpr from disk
    g = fresh.with_options(lowering_platforms=("cpu", "cuda"))
    assert_same(g(x), jax.jit(f)(x))
    assert g.last_report.status("trace") == "disk"


def test_report_renders_as_text_and_html(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    f(*mlp_args)
    text = str(f.last_report)
    assert "trace" in text and "miss" in text
    html = f.last_report._repr_html_()
    assert "<table>" in html and "compile" in html
    assert f.last_report.as_dict()["compile_status"] == "miss"
    with pytest.raises(ValueError, match=r"Valid options for 'level'.*Got level='link'"):
        f.last_report.status("link")


def test_store_stats_count_entries_and_hits(store, mlp_args):
    f = mcl.cached_jit(mlp_like, store=store)
    f(*mlp_args)
    stats = store.stats()
    for level in ("trace", "lower", "compile"):
        assert stats[level]["entries"] == 1
        assert stats[level]["bytes"] > 0
        assert stats[level]["miss"] >= 1


def test_device_option_places_the_executable(store):
    device = jax.devices()[-1]
    f = mcl.cached_jit(lambda x: x * 2, store=store, device=device)
    out = f(jax.device_put(jnp.arange(3.0), device))
    assert list(out.devices()) == [device]
    assert f.last_report.status("compile") == "miss"
    with pytest.raises(TypeError, match=r"'device' must be a jax.Device or None"):
        mcl.cached_jit(lambda x: x, device="cpu:0")


class JaxprProgram:
    """A program given as a jaxpr: the trace stage takes it as traced."""

    def __init__(self, closed):
        self.__mlcache_jaxpr__ = closed
        self.__qualname__ = "JaxprProgram"

    def __mlcache_fingerprint__(self):
        return str(self.__mlcache_jaxpr__)

    def __call__(self, *leaves):
        from jax.extend.core import jaxpr_as_fun

        return jaxpr_as_fun(self.__mlcache_jaxpr__)(*leaves)


def test_a_given_jaxpr_is_cached_without_tracing(store):
    closed = jax.make_jaxpr(lambda x: jnp.sin(x) * 2)(jnp.ones(3))
    f = mcl.cached_jit(JaxprProgram(closed), store=store)
    np.testing.assert_allclose(f(jnp.arange(3.0))[0], jnp.sin(jnp.arange(3.0)) * 2, rtol=1e-6)
    other = jax.make_jaxpr(lambda x: jnp.cos(x) * 2)(jnp.ones(3))
    g = mcl.cached_jit(JaxprProgram(other), store=store)
    np.testing.assert_allclose(g(jnp.arange(3.0))[0], jnp.cos(jnp.arange(3.0)) * 2, rtol=1e-6)
    assert g.last_report.status("trace") == "miss"  # another program: another fingerprint
