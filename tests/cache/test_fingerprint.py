"""The function fingerprint follows code, helpers and closed-over constants, not parameters."""

from __future__ import annotations

import functools
import importlib
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlcache_lab.cache.fingerprint import fingerprint_function, register_fingerprinter


def load_module(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


MODULE = """
import jax.numpy as jnp

SCALE = {scale}

def helper(x):
    return {helper}

def model(params, x):
    return helper(x @ params) * SCALE
"""


def fp(tmp_path, name, **fmt):
    values = {"scale": 2.0, "helper": "jnp.tanh(x)"} | fmt
    return fingerprint_function(load_module(tmp_path, name, MODULE.format(**values)).model)


def test_same_source_same_fingerprint(tmp_path):
    a, b = fp(tmp_path, "m_a"), fp(tmp_path, "m_b")
    assert a.reliable and a.digest == b.digest


def test_editing_a_helper_changes_it(tmp_path):
    assert fp(tmp_path, "m_c").digest != fp(tmp_path, "m_d", helper="jnp.sin(x)").digest


def test_changing_a_global_constant_changes_it(tmp_path):
    assert fp(tmp_path, "m_e").digest != fp(tmp_path, "m_f", scale=3.0).digest


def test_moving_code_does_not_change_it(tmp_path):
    moved = "\n\n\n# a comment\n" + MODULE
    a = fp(tmp_path, "m_g")
    mod = load_module(tmp_path, "m_h", moved.format(scale=2.0, helper="jnp.tanh(x)"))
    assert fingerprint_function(mod.model).digest == a.digest


def test_closed_over_arrays_by_value_parameters_never():
    def make(w):
        return lambda x: x @ w

    a = fingerprint_function(make(np.ones((2, 2))))
    b = fingerprint_function(make(np.ones((2, 2))))
    c = fingerprint_function(make(np.zeros((2, 2))))
    assert a.digest == b.digest != c.digest

    def f(params, x):
        return x @ params

    before = fingerprint_function(f).digest
    f(np.ones((2, 2)), np.ones(2))  # calling with any parameters changes nothing
    assert fingerprint_function(f).digest == before


def test_partial_jit_and_methods():
    def g(x, k):
        return x * k

    assert (
        fingerprint_function(functools.partial(g, k=2)).digest
        != fingerprint_function(functools.partial(g, k=3)).digest
    )
    assert fingerprint_function(jax.jit(g)).reliable

    class Layer:
        def __init__(self, k):
            self.k = k

        def __call__(self, x):
            return x * self.k

    assert fingerprint_function(Layer(2)).digest != fingerprint_function(Layer(3)).digest
    assert (
        fingerprint_function(Layer(2).__call__).digest
        == fingerprint_function(Layer(2).__call__).digest
    )


def test_library_functions_by_name_and_version():
    assert fingerprint_function(jnp.tanh).reliable
    assert fingerprint_function(jnp.tanh).digest != fingerprint_function(jnp.sin).digest


def test_recursion_terminates():
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    assert fingerprint_function(fact).reliable


def test_unreadable_state_is_unreliable():
    import threading

    lock = threading.Lock()

    def f(x):
        with lock:
            return x

    result = fingerprint_function(f)
    assert not result.reliable
    assert any("lock" in note.lower() for note in result.notes)


@pytest.mark.parametrize("value", [1, 1.0, "a", (1, 2), {"a": 1}, None])
def test_closed_over_values(value):
    def make(v):
        return lambda x: (x, v)

    assert fingerprint_function(make(value)).digest == fingerprint_function(make(value)).digest
    assert fingerprint_function(make(value)).digest != fingerprint_function(make([value])).digest


# Plain data (configs) is hashed as one canonical text: it must still tell every value apart.
DISTINCT_PLAIN = [
    1,
    1.0,
    True,
    "1",
    b"1",
    None,
    [1],
    (1,),
    {"a": 1},
    {"a": 1.0},
    {1: "a"},
    {"1": "a"},
    ["a,b"],
    ["a", "b"],
    {"a": [1, {"b": (2, 3)}]},
    {"a": [1, {"b": (2, 4)}]},
    ["a\nb"],
    [-0.0],
    [0.0],
]


def test_plain_data_is_told_apart():
    def make(v):
        return lambda x: (x, v)

    digests = [fingerprint_function(make(v)).digest for v in DISTINCT_PLAIN]
    assert len(set(digests)) == len(DISTINCT_PLAIN)


def test_plain_dicts_do_not_depend_on_insertion_order():
    def make(v):
        return lambda x: (x, v)

    a = {"units": 4, "activation": "relu", "nested": {"x": 1, "y": [1, 2]}}
    b = {"nested": {"y": [1, 2], "x": 1}, "activation": "relu", "units": 4}
    assert fingerprint_function(make(a)).digest == fingerprint_function(make(b)).digest


def test_containers_of_plain_and_other_values_follow_both():
    """Plain entries are hashed together, the others one by one: a change in either is seen."""

    def make(v):
        return lambda x: (x, v)

    def digest(**entries):
        return fingerprint_function(make(entries)).digest

    base = digest(units=4, act=jnp.tanh, w=np.ones(2))
    assert base == digest(units=4, act=jnp.tanh, w=np.ones(2))
    assert base != digest(units=5, act=jnp.tanh, w=np.ones(2))
    assert base != digest(units=4, act=jnp.sin, w=np.ones(2))
    assert base != digest(units=4, act=jnp.tanh, w=np.zeros(2))
    # The same values under other keys: each entry names its key.
    assert digest(a=1, b=jnp.tanh) != digest(a=jnp.tanh, b=1)
    assert fingerprint_function(make([1, jnp.tanh])).digest != (
        fingerprint_function(make([jnp.tanh, 1])).digest
    )


def test_scalar_subclasses_are_not_plain():
    """A subclass's repr may look like its base's: it is walked with its class."""

    class Units(int):
        pass

    def make(v):
        return lambda x: (x, v)

    assert fingerprint_function(make([Units(4)])).digest != fingerprint_function(make([4])).digest


# ------------------------------------------------------- fingerprinters by type
class Opaque:
    """State a walk must not read (a lock), described by a registered fingerprinter."""

    __slots__ = ("lock", "scale")

    def __init__(self, scale):
        self.lock = threading.Lock()
        self.scale = scale


class OpaqueChild(Opaque):
    __slots__ = ()


def closing_over(obj):
    return lambda x: x * obj.scale


def test_without_a_fingerprinter_the_note_names_the_object_and_the_fix():
    result = fingerprint_function(closing_over(Opaque(2.0)))
    assert not result.reliable
    (note,) = [n for n in result.notes if "lock" in n]
    assert "<closure obj>" in note
    assert "register_fingerprinter(" in note and "pass it as an argument" in note


def test_a_registered_fingerprinter_describes_the_class_and_its_subclasses():
    register_fingerprinter(Opaque, lambda o: {"scale": o.scale})
    a = fingerprint_function(closing_over(Opaque(2.0)))
    b = fingerprint_function(closing_over(OpaqueChild(2.0)))
    c = fingerprint_function(closing_over(Opaque(3.0)))
    assert a.reliable and b.reliable and c.reliable
    assert a.digest == fingerprint_function(closing_over(Opaque(2.0))).digest
    assert len({a.digest, b.digest, c.digest}) == 3  # the class enters, and the value
    changed = [label for label, d in a.parts if dict(c.parts).get(label) != d]
    assert any(label.endswith("<closure obj>.scale") for label in changed), changed

    # The most specific registration along the MRO wins.
    register_fingerprinter(OpaqueChild, lambda o: {"scale": 0})
    assert fingerprint_function(closing_over(OpaqueChild(2.0))).digest == (
        fingerprint_function(closing_over(OpaqueChild(5.0))).digest
    )


def test_registration_by_qualified_name_and_a_failing_fingerprinter():
    class Named:
        def __init__(self, w):
            self.w = w
            self.lock = threading.Lock()

    register_fingerprinter(f"{__name__}.{Named.__qualname__}", lambda o: {"w": o.w})
    a = fingerprint_function(closing_over_w(Named(np.ones(3))))
    b = fingerprint_function(closing_over_w(Named(np.zeros(3))))
    assert a.reliable and a.digest != b.digest

    class Broken:
        pass

    register_fingerprinter(Broken, lambda o: 1 / 0)
    broken = Broken()
    result = fingerprint_function(lambda x: (x, broken))
    assert not result.reliable
    assert "fingerprinter raised ZeroDivisionError" in result.notes[0]


def closing_over_w(obj):
    return lambda x: x @ obj.w


@pytest.mark.parametrize(
    ("cls", "fn", "error", "match"),
    [
        ("Net", len, ValueError, r"module-qualified, like 'mylib.models.Net'. Got cls='Net'"),
        (3, len, TypeError, r"'cls' must be a class .* Got cls=3"),
        (Opaque, "f", TypeError, r"'fingerprinter' must be a callable .* Got 'f'"),
    ],
)
def test_bad_registrations_name_the_argument(cls, fn, error, match):
    with pytest.raises(error, match=match):
        register_fingerprinter(cls, fn)


def test_library_closures_keep_their_values():
    optax = pytest.importorskip("optax")

    def make(learning_rate):
        tx = optax.adam(learning_rate)
        return lambda g, s: tx.update(g, s)

    fa, fb = fingerprint_function(make(1e-3)), fingerprint_function(make(1e-2))
    assert fa.reliable and fa.digest != fb.digest
    assert fingerprint_function(make(1e-3)).digest == fa.digest


def test_closed_over_prng_keys_by_their_bits():
    def make(seed):
        k = jax.random.key(seed)
        return lambda x: x + jax.random.normal(k, x.shape)

    a, b = fingerprint_function(make(0)), fingerprint_function(make(1))
    assert a.reliable and a.digest != b.digest
    assert a.digest == fingerprint_function(make(0)).digest
