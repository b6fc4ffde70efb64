"""cached_jit as a drop-in for jax.jit: the same values, arguments, errors and identity."""

from __future__ import annotations

import functools
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax._src import test_util as jtu
from jax.extend import core

import mlcache_lab as mcl
from mlcache_lab.stages import pipeline
from mlcache_lab.stages.signature import make_signature


def assert_same(a, b):
    """Equal values and equal dtypes (jax.jit's result is the reference)."""
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x, y, strict=True), a, b)


# ------------------------------------------------------------- wrong values
@pytest.mark.parametrize("order", [(1, True, 1.0), (1.0, True, 1), (True, 1, 1.0)])
def test_equal_statics_of_other_types_are_other_programs(store, order):
    f = mcl.cached_jit(lambda k: k * 1, static_argnums=0, store=store)
    ref = jax.jit(lambda k: k * 1, static_argnums=0)
    for value in order:
        assert_same(f(value), ref(value))
    assert f(1.0).dtype == jnp.float32


def test_equal_statics_of_other_types_on_disk(tmp_path):
    # A fresh function object reads the trace key, not the fast path: it must differ too.
    mcl.cached_jit(lambda k: k * 1, static_argnums=0, store=mcl.CacheStore(tmp_path))(1)
    g = mcl.cached_jit(lambda k: k * 1, static_argnums=0, store=mcl.CacheStore(tmp_path))
    assert g(1.0).dtype == jnp.float32
    assert "static_args" in g.last_report.reason("trace")


def test_enclosing_axis_size_is_in_the_key(store):
    g = mcl.cached_jit(lambda: lax.axis_size("i"), store=store)
    sizes = [int(jax.vmap(g, axis_name="i", axis_size=n, out_axes=None)()) for n in (2, 3, 2)]
    assert sizes == [2, 3, 2]


def test_axis_size_from_a_shared_disk_store(tmp_path):
    """A new function object of the same code, on the same disk store, in a new process."""

    def size():
        return lax.axis_size("i") * jnp.ones(())

    first = mcl.cached_jit(size, store=mcl.CacheStore(tmp_path))
    assert int(jax.vmap(first, axis_name="i", axis_size=2, out_axes=None)()) == 2
    fresh = mcl.CacheStore(tmp_path)  # nothing in memory: what another process sees
    second = mcl.cached_jit(size, store=fresh)
    assert int(jax.vmap(second, axis_name="i", axis_size=3, out_axes=None)()) == 3
    assert "trace_context" in second.last_report.reason("trace")
    third = mcl.cached_jit(size, store=mcl.CacheStore(tmp_path))
    assert int(jax.vmap(third, axis_name="i", axis_size=2, out_axes=None)()) == 2
    assert third.last_report.status("compile") == "disk"  # the size-2 entry, found again


def test_rank_promotion_set_after_the_first_call(store):
    f = mcl.cached_jit(lambda a, b: a + b, store=store)
    a, b = jnp.ones((2, 2)), jnp.ones(2)
    f(a, b)
    with (
        jax.numpy_rank_promotion("raise"),
        pytest.raises(ValueError, match=r"rank_promotion=.raise"),
    ):
        f(a, b)
    assert_same(f(a, b), jax.jit(lambda a, b: a + b)(a, b))


def test_x64_set_after_the_first_call(store):
    f = mcl.cached_jit(lambda a: a * 2, store=store)
    f(np.arange(3))
    with jax.enable_x64(True):
        out = f(np.arange(3))
        assert out.dtype == np.int64
        assert_same(out, jax.jit(lambda a: a * 2)(np.arange(3)))
    assert f(np.arange(3)).dtype == np.int32


def test_matmul_precision_changes_the_program(store):
    f = mcl.cached_jit(lambda a, b: a @ b, store=store)
    a = jnp.ones((4, 4))
    f(a, a)
    with jax.default_matmul_precision("highest"):
        f(a, a)
        assert not f.last_report.fast_path
        assert "HIGHEST" in f.trace(a, a).lower().as_text()


def test_default_device_is_in_the_compile_key():
    # The same StableHLO compiles for another device under jax.default_device: a content
    # hit at compile (same lowered program) must not serve the other device's executable.
    sig = make_signature((jnp.ones(2),), {}, static_argnums=(), donate_argnums=(), batch_axes=None)
    device = jax.devices()[-1]
    assert pipeline.compile_config(sig, None).as_dict()["device"] == "default"
    with jax.default_device(device):
        chosen = pipeline.compile_config(sig, None).as_dict()["device"]
    assert chosen == f"{device.platform}:{device.id}"


def test_jit_of_grad_of_a_cached_function(store):
    # jax.grad copies the inner CachedFunction's __dict__ onto its wrapper; the outer
    # CachedFunction must not take that state for its own (it computed x * x).
    side = []

    @mcl.cached_jit
    def f(x):
        side.append(None)
        return x * x

    g = mcl.cached_jit(jax.grad(f), store=store)
    assert_same(g(1.0), jax.jit(jax.grad(jax.jit(lambda x: x * x)))(1.0))
    assert float(g(2.0)) == 4.0
    assert len(side) == 1


def test_same_jaxpr_other_output_tree(store):
    # The flat program is the same; the output structure is not: the levels found by
    # content must still give each function its own tree.
    assert isinstance(mcl.cached_jit(lambda x: (x * 2,), store=store)(1.0), tuple)
    g = mcl.cached_jit(lambda x: {"y": x * 2}, store=store)
    assert_same(g(1.0), {"y": jnp.asarray(2.0)})
    h = mcl.cached_jit(lambda x: x * 2, store=store)
    assert_same(h(1.0), jax.jit(lambda x: x * 2)(1.0))


def test_a_function_in_the_argument_tree_is_jax_jits(store):
    _, vjp_fun = jax.vjp(lambda x: 2.0 * x, 1.0)
    call = mcl.cached_jit(lambda f, x: f(x), store=store)
    assert call(vjp_fun, 3.0) == (6.0,)
    _, lin_fun = jax.linearize(lambda x: 2.0 * x, 1.0)
    assert_same(call(lin_fun, 3.0), jnp.asarray(6.0))


# ---------------------------------------------------------------- arguments
def scaled(x, n=2, *, scale=1.0):
    return x * n * scale


def test_static_by_keyword_and_from_default(store):
    f = mcl.cached_jit(scaled, static_argnums=1, store=store)
    ref = jax.jit(scaled, static_argnums=1)
    x = jnp.arange(3.0)
    for call in (lambda g: g(x), lambda g: g(x, n=3), lambda g: g(x, 4), lambda g: g(x, 3)):
        assert_same(call(f), call(ref))


def test_static_argnames_resolve_to_numbers(store):
    f = mcl.cached_jit(scaled, static_argnames="n", store=store)
    x = jnp.arange(3.0)
    assert_same(f(x, 5), x * 5)  # n passed by position is static too
    assert_same(f(x, n=6), x * 6)
    g = mcl.cached_jit(scaled, static_argnames="scale", store=store)
    assert_same(g(x, scale=3.0), x * 6)
    assert_same(g(x, scale=4.0), x * 8)
    assert "static_args" in g.last_report.reason("trace")


def test_negative_static_argnums(store):
    f = mcl.cached_jit(lambda x, n: x * n, static_argnums=-1, store=store)
    assert_same(f(jnp.ones(2), 3), jnp.full(2, 3.0))
    assert_same(f(jnp.ones(2), 4), jnp.full(2, 4.0))  # the last argument is the static one
    assert "static_args" in f.last_report.reason("trace")


def test_donation_by_keyword_frees_the_buffer(store):
    f = mcl.cached_jit(lambda x, y: x + y, donate_argnames="y", store=store)
    y = jnp.ones(3)
    assert_same(f(jnp.ones(3), y=y), jnp.full(3, 2.0))
    assert y.is_deleted()
    g = mcl.cached_jit(lambda x, y: x + y, donate_argnums=1, store=store)
    y = jnp.ones(3)
    g(jnp.ones(3), y=y)  # a number reaches a keyword through the signature
    assert y.is_deleted()


class Scaler:
    def __init__(self, k):
        self.k = k

    @mcl.cached_jit
    def apply(self, x):
        return x * self.k


jax.tree_util.register_pytree_node(Scaler, lambda s: ((s.k,), None), lambda _, c: Scaler(*c))


def test_decorated_method_receives_self():
    assert_same(Scaler(jnp.float32(3)).apply(jnp.ones(2)), jnp.full(2, 3.0))
    assert_same(Scaler(jnp.float32(4)).apply(jnp.ones(2)), jnp.full(2, 4.0))
    assert isinstance(Scaler.__dict__["apply"], mcl.CachedFunction)


# ------------------------------------------------------------------- errors
def test_unhashable_static_is_jax_error(store):
    f = mcl.cached_jit(lambda x, s: x, static_argnums=1, store=store)
    with pytest.raises(ValueError, match="Non-hashable static arguments are not supported"):
        f(1.0, {"a": 1})


def test_static_whose_eq_raises_is_jax_error(store):
    class HashableWithoutEq:
        def __hash__(self):
            return 1

        def __eq__(self, other):
            raise NotImplementedError("no __eq__")

    f = mcl.cached_jit(lambda x, y: x + 3, static_argnums=1, store=store)
    f(1, 1)
    with pytest.raises(ValueError, match=r"static arguments should be comparable using __eq__"):
        f(1, HashableWithoutEq())
        f(1, HashableWithoutEq())


# ------------------------------------------------------------ non-array inputs
def test_tokens_as_arguments_captured_and_outputs(store):
    assert isinstance(mcl.cached_jit(lax.create_token, store=store)(1.0), core.Token)
    tok = lax.create_token()
    _, out = mcl.cached_jit(lambda x: (x + 2, tok), store=store)(7)
    assert isinstance(out, core.Token)
    arr, out = mcl.cached_jit(lambda a, t: (a, t), store=store)(jnp.ones(2), tok)
    assert_same(arr, jnp.ones(2))
    assert isinstance(out, core.Token) and out is not tok


def test_shape_dtype_struct_under_eval_shape(store):
    inner = mcl.cached_jit(lambda x: x + 1, store=store)
    out = jax.eval_shape(lambda: inner(jax.ShapeDtypeStruct((2,), jnp.float32)))
    assert out.shape == (2,) and out.dtype == jnp.float32


# --------------------------------------------------- closures over a tracer
def test_closure_over_an_outer_jvp_tracer(store):
    def outer(x):
        return mcl.cached_jit(lambda y: jnp.sin(x) * y, store=store)(2.0)

    def reference(x):
        return jax.jit(lambda y: jnp.sin(x) * y)(2.0)

    assert_same(jax.jvp(outer, (3.0,), (1.0,)), jax.jvp(reference, (3.0,), (1.0,)))


def test_closure_over_an_outer_remat_tracer(store):
    def outer(x):
        return mcl.cached_jit(lambda y: jnp.sin(x) * y, store=store)(2.0)

    np.testing.assert_allclose(jax.grad(jax.remat(outer))(3.0), 2 * np.cos(3.0), rtol=1e-6)


# ----------------------------------------------------- unpicklable outputs
@pytest.mark.parametrize(
    "make",
    [
        lambda x: jax.vjp(jnp.sin, x),
        lambda x: jax.linearize(jnp.sin, x),
        lambda x: (x, jax.linear_transpose(lambda t: 2 * t, x)),
    ],
    ids=["vjp", "linearize", "linear_transpose"],
)
@pytest.mark.parametrize("on_disk", [False, True])
def test_outputs_that_cannot_be_pickled(tmp_path, make, on_disk):
    store = mcl.CacheStore(tmp_path if on_disk else None)
    f = mcl.cached_jit(make, store=store)
    value, fn = f(1.5)
    ref_value, ref_fn = jax.jit(make)(1.5)
    assert_same(value, ref_value)
    assert_same(fn(1.0), ref_fn(1.0))
    assert "output tree cannot be pickled" in f.last_report.levels["trace"].note
    f(1.5)
    assert f.last_report.fast_path


# --------------------------------------------------------- other behaviour
def test_disable_jit_runs_python(store):
    effects = []

    def f(x):
        effects.append(1)
        return x

    cf = mcl.cached_jit(f, store=store)
    with jax.disable_jit():
        cf(2)
        cf(2)
    assert len(effects) == 2
    cf(2)
    cf(2)
    assert len(effects) == 3


@pytest.mark.parametrize("num_args", [2, 3, 4])
def test_unused_arguments_are_not_transferred(store, num_args):
    def f(*args):
        return args[1] + np.array(2)

    cf = mcl.cached_jit(f, store=store)
    with jtu.count_device_put() as count:
        np.testing.assert_allclose(cf(*range(num_args)), 3)
    assert count() == 1


def test_unused_arguments_pruned_after_a_disk_load(tmp_path):
    def f(x, unused):
        return x * 2

    args = (jnp.ones(3), jnp.ones(5))
    mcl.cached_jit(f, store=mcl.CacheStore(tmp_path))(*args)
    g = mcl.cached_jit(f, store=mcl.CacheStore(tmp_path))
    assert_same(g(*args), jnp.full(3, 2.0))
    assert g.last_report.status("compile") == "disk"


def test_nested_jit_under_grad_lowers_like_jax(store):
    jax.grad(jax.jit(lambda x: x))(1.0)  # JAX's own helpers lowered once, as JAX's test does
    f = mcl.cached_jit(jnp.sin, store=store)
    with jtu.count_jit_and_pmap_lowerings() as count:
        jax.grad(f)(3.0)
    assert count() == 2  # one for the forward pass, one for the backward pass
    with jtu.count_jit_and_pmap_lowerings() as count:
        jax.grad(f)(3.0)
        jax.grad(f)(4.0)
    assert count() == 0


def test_store_drops_closed_over_values_with_the_function():
    x = jnp.ones(10)
    fn = (lambda x: lambda: x)(x)  # x is in fn's closure
    g = mcl.cached_jit(fn, store=mcl.CacheStore(None))
    ref = weakref.ref(x)
    del x
    g()
    g()
    del fn
    assert ref() is not None
    g()
    del g
    gc.collect()
    assert ref() is None


def test_clear_cache_and_cache_size(store):
    f = mcl.cached_jit(lambda x: (x**2).sum(), store=mcl.CacheStore(None))
    assert f._cache_size() == 0
    for _ in range(3):
        f(jnp.arange(5.0))
    assert f._cache_size() == 1
    f.clear_cache()
    assert f._cache_size() == 0
    f(jnp.arange(5.0))
    assert f.last_report.status("trace") == "miss"  # nothing left in the store's memory


def my_function():
    """The docstring of my_function."""
    return 1


my_function.some_value = 4


def test_identity_reads_as_the_wrapped_function():
    f = mcl.cached_jit(my_function)
    assert f.__wrapped__ is my_function
    assert f.__module__ == __name__ and f.__name__ == "my_function"
    assert f.__doc__ == my_function.__doc__ and f.some_value == 4
    assert f.__getstate__()["function_name"] == "my_function"
    assert mcl.cached_jit(functools.partial(my_function)).__getstate__()["function_name"] == (
        "my_function"
    )
    assert repr(f) == f"<CachedFunction of {my_function!r}>"

    class BadRepr:
        def __call__(self):
            return 1

        def __repr__(self):
            raise ValueError("no repr")

    assert repr(mcl.cached_jit(BadRepr())) == "<CachedFunction>"
