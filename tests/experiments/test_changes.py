"""The behaviour table: each pipeline change, each call in its own fresh process.

The rows are the ones ``mlcache-lab demo`` measures (the session's ``demo_run``, on a tiny
transformer): the demo and these tests share one run of the table's fresh processes.
"""

from __future__ import annotations

import pytest

from mlcache_lab.cache import LEVELS
from mlcache_lab.experiments import CHANGES, CallSpec, run_change

# The reference is jax.jit at the default optimization level: on the demo's transformer the
# changed call, compiled at level 0, may differ from it in the last bits of a float32.
COMPILED_OTHERWISE = {"compiler_option": 1e-6}


@pytest.mark.slow
def test_the_demo_measured_every_change(demo_run):
    assert list(demo_run.changes) == [c.name for c in CHANGES]


@pytest.mark.slow
@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_change_gives_the_expected_status_per_level(change, demo_run):
    base, changed = demo_run.changes[change.name]

    # A row names the levels it is about (the store may have more than a cached_jit call uses).
    levels = list(change.expected)
    assert levels == [lvl for lvl in LEVELS if lvl in levels]
    assert {lvl: base["report"][f"{lvl}_status"] for lvl in levels} == dict.fromkeys(levels, "miss")
    statuses = {lvl: changed["report"][f"{lvl}_status"] for lvl in levels}
    assert statuses == change.expected, changed["report"]
    assert base["max_abs_diff"] == 0.0
    assert changed["max_abs_diff"] <= COMPILED_OTHERWISE.get(change.name, 0.0), changed
    for lvl in levels:
        if statuses[lvl] == "miss":
            assert "changed" in changed["report"][f"{lvl}_reason"], changed["report"]


@pytest.mark.slow
def test_compiler_option_on_the_mlp_gives_jax_jits_values_exactly(tmp_path):
    """The one row measured again (two fresh processes), on the mlp: bit for bit."""
    change = next(c for c in CHANGES if c.name == "compiler_option")
    spec = CallSpec(store=str(tmp_path / "store"), workdir=str(tmp_path / "work"))
    base, changed = run_change(change, spec, verify=True)
    assert {lvl: base["report"][f"{lvl}_status"] for lvl in LEVELS} == dict.fromkeys(LEVELS, "miss")
    assert {lvl: changed["report"][f"{lvl}_status"] for lvl in LEVELS} == change.expected
    assert base["max_abs_diff"] == changed["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_code_edit_reason_names_the_function_component(demo_run):
    _, changed = demo_run.changes["code_edit"]
    assert changed["report"]["trace_reason"].startswith("function changed")
    assert "trace_key changed" in changed["report"]["lower_reason"]


@pytest.mark.slow
def test_compiler_option_reason_names_the_option(demo_run):
    _, changed = demo_run.changes["compiler_option"]
    assert "xla_backend_optimization_level" in changed["report"]["compile_reason"]
    assert changed["report"]["compile_reason"].startswith("compiler_options changed")
