"""Cache keys: deterministic, sensitive to every named component, explainable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlcache_lab.cache.keys import KeyComponents, chain_key, content_key, explain_change

names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
components = st.dictionaries(names, st.text(max_size=40), min_size=1, max_size=6)


@given(components, st.text(max_size=32))
def test_keys_are_deterministic_hex(values, previous):
    a = chain_key(previous, KeyComponents("lower", dict(values)))
    b = chain_key(previous, KeyComponents("lower", dict(reversed(list(values.items())))))
    assert a == b and len(a) == 32 and int(a, 16) >= 0


@given(components, st.data())
def test_any_changed_component_changes_the_key_and_is_named(values, data):
    name = data.draw(st.sampled_from(sorted(values)))
    new_value = data.draw(st.text(max_size=40).filter(lambda v: v != values[name]))
    changed = dict(values, **{name: new_value})
    old_cfg, new_cfg = KeyComponents("compile", values), KeyComponents("compile", changed)
    assert chain_key("p", old_cfg) != chain_key("p", new_cfg)
    assert content_key("d", old_cfg) != content_key("d", new_cfg)
    explanation = explain_change(values, changed)
    assert explanation.startswith(f"{name} changed")


@given(components)
def test_chain_and_content_keys_never_collide(values):
    cfg = KeyComponents("trace", values)
    assert chain_key("x", cfg) != content_key("x", cfg)
    assert chain_key("x", cfg) != chain_key("y", cfg)
    assert chain_key("x", cfg) != chain_key("x", KeyComponents("lower", values))


def test_explain_shows_where_long_values_differ():
    old = {"inputs": "float32[512,256] " * 5 + "int32[8,64]"}
    new = {"inputs": "float32[512,256] " * 5 + "int32[16,64]"}
    text = explain_change(old, new)
    assert "int32[8,64]" in text and "int32[16,64]" in text
    assert explain_change(None, new).startswith("no earlier entry")
    assert "absent" in explain_change({}, new)
