"""The behaviour table: each pipeline change, each call in its own fresh process."""

from __future__ import annotations

import pytest

from mlcache_lab.cache import LEVELS
from mlcache_lab.experiments import CHANGES, CallSpec, run_change


@pytest.mark.slow
@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_change_gives_the_expected_status_per_level(change, tmp_path):
    spec = CallSpec(store=str(tmp_path / "store"), workdir=str(tmp_path / "work"))
    base, changed = run_change(change, spec, verify=True)

    # A row names the levels it is about (the store may have more than a cached_jit call uses).
    levels = list(change.expected)
    assert levels == [lvl for lvl in LEVELS if lvl in levels]
    assert {lvl: base["report"][f"{lvl}_status"] for lvl in levels} == dict.fromkeys(levels, "miss")
    statuses = {lvl: changed["report"][f"{lvl}_status"] for lvl in levels}
    assert statuses == change.expected, changed["report"]
    assert changed["max_abs_diff"] == 0.0
    for lvl in levels:
        if statuses[lvl] == "miss":
            assert "changed" in changed["report"][f"{lvl}_reason"], changed["report"]


@pytest.mark.slow
def test_code_edit_reason_names_the_function_component(tmp_path):
    change = next(c for c in CHANGES if c.name == "code_edit")
    spec = CallSpec(store=str(tmp_path / "store"), workdir=str(tmp_path / "work"))
    _, changed = run_change(change, spec)
    assert changed["report"]["trace_reason"].startswith("function changed")
    assert "trace_key changed" in changed["report"]["lower_reason"]


@pytest.mark.slow
def test_compiler_option_reason_names_the_option(tmp_path):
    change = next(c for c in CHANGES if c.name == "compiler_option")
    spec = CallSpec(store=str(tmp_path / "store"), workdir=str(tmp_path / "work"))
    _, changed = run_change(change, spec)
    assert "xla_backend_optimization_level" in changed["report"]["compile_reason"]
    assert changed["report"]["compile_reason"].startswith("compiler_options changed")
