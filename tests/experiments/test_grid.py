"""Grids expand into cells; scenarios know what each cache-level setting must give."""

from __future__ import annotations

import pytest

from mlcache_lab import experiments as ex
from mlcache_lab.experiments import CHANGES

RENAMED = {"nothing": "warm_process", "donate_argnums": "lowering_option"}


def test_cells_cover_every_combination_repeat_by_repeat():
    grid = ex.Grid(
        models=["mlp", ex.ModelSpec("transformer", layers=1)],
        scenarios=["cold", "code_edit"],
        cache_levels=["none", "all"],
        repeats=3,
    )
    cells = grid.cells()
    assert len(cells) == len(grid) == 2 * 2 * 2 * 3
    assert [c.repeat for c in cells] == sorted(c.repeat for c in cells)
    assert len({c.id for c in cells}) == len(cells)
    assert {c.model.label for c in cells} == {"mlp", "transformer(layers=1)"}


def test_cell_keys_are_stable_and_name_what_changes_a_run():
    a = ex.Grid(scenarios=["cold"], cache_levels=["all"], repeats=1).cells()[0]
    b = ex.Grid(scenarios=["cold"], cache_levels=["all"], repeats=1).cells()[0]
    c = ex.Grid(scenarios=["cold"], cache_levels=["all"], repeats=1, batch_size=4).cells()[0]
    assert a.key() == b.key() and a.id == b.id
    assert a.id != c.id


def test_factors_expand_only_the_scenarios_that_read_them():
    grid = ex.Grid(
        scenarios=["cold", "serving_trace"],
        cache_levels=["all"],
        repeats=1,
        factors={"policy": ["chunk", "whole"], "micro_batch": [4, 8]},
    )
    by = {}
    for cell in grid.cells():
        by.setdefault(cell.scenario.name, []).append(dict(cell.factors))
    assert by["cold"] == [{}]
    assert len(by["serving_trace"]) == 4
    assert {"policy": "whole", "micro_batch": 8} in by["serving_trace"]


def test_unsupported_combinations_are_skipped():
    grid = ex.Grid(
        scenarios=["lowering_platforms", "serving_trace", "cold"],
        cache_levels=["all", "jax_persistent"],
        repeats=1,
    )
    pairs = {(c.scenario.name, c.cache_levels) for c in grid.cells()}
    assert ("cold", "jax_persistent") in pairs
    assert ("lowering_platforms", "jax_persistent") not in pairs
    assert ("serving_trace", "jax_persistent") not in pairs
    assert ("serving_trace", "all") in pairs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scenarios": ["colt"]}, ValueError, r"Valid options for 'scenarios' are .*'colt'"),
        ({"models": ["gpt9"]}, ValueError, r"Valid options for 'models' are .*register_model"),
        ({"cache_levels": ["some"]}, ValueError, r"Valid options for 'cache_levels'"),
        ({"repeats": 0}, ValueError, r"'repeats' must be a positive int"),
        ({"scenarios": "cold"}, TypeError, r"write scenarios=\['cold'\]"),
        ({"factors": {"policy": ["chunk"]}}, ValueError, r"no scenario of this grid reads"),
        (
            {"scenarios": ["serving_trace"], "factors": {"policy": "chunk"}},
            TypeError,
            r"needs a non-empty list",
        ),
    ],
)
def test_bad_grids_name_the_argument_and_the_fix(kwargs, error, match):
    with pytest.raises(error, match=match):
        ex.Grid(**kwargs)


@pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
def test_expected_statuses_with_all_levels_are_the_cache_table(change):
    scenario = ex.get_scenario(RENAMED.get(change.name, change.name))
    assert scenario.expected("all") == change.expected


def test_compile_only_expectations_are_jax_persistent_cache():
    for name, scenario in ex.SCENARIOS.items():
        if isinstance(scenario, ex.ChangeScenario):
            expected = scenario.expected("compile_only")
            assert expected == scenario.expected("jax_persistent"), name
            # JAX traces and lowers in every new process.
            assert (expected["trace"], expected["lower"]) == ("miss", "miss"), name


def test_each_level_adds_a_hit_after_a_warm_process():
    warm = ex.get_scenario("warm_process")
    ladder = [warm.expected(s) for s in ("none", "compile_only", "lower_compile", "all")]
    assert [tuple(e.values()) for e in ladder] == [
        ("miss", "miss", "miss"),
        ("miss", "miss", "disk"),
        ("miss", "disk", "disk"),
        ("bypassed", "bypassed", "disk"),
    ]


class Halved(ex.Scenario):
    """A user scenario: the changed call runs at half the batch size."""

    name = "halved_batch"

    def measured(self, base, factors):
        return base.with_spec(batch_size=max(1, base.spec.batch_size // 2))


def test_users_register_scenarios_by_class_or_instance():
    ex.register_scenario(Halved)
    try:
        grid = ex.Grid(scenarios=["halved_batch"], cache_levels=["all"], repeats=1, batch_size=6)
        (cell,) = grid.cells()
        call = cell.scenario.measured(cell.base_call("s", "w"), {})
        assert call.spec.batch_size == 3
        assert len(cell.scenario.setup(cell.base_call("s", "w"), {})) == 1
    finally:
        ex.SCENARIOS.pop("halved_batch")
    with pytest.raises(TypeError, match=r"subclass mlcache_lab\.experiments\.Scenario"):
        ex.register_scenario(object())


def make_tiny_mlp(**config):
    from mlcache_lab.models import get_model

    return get_model("mlp", **config)


def test_registered_models_are_imported_by_fresh_processes():
    ex.register_model("tiny_mlp_for_tests", make_tiny_mlp)
    (cell,) = ex.Grid(
        models=["tiny_mlp_for_tests"], scenarios=["cold"], cache_levels=["all"], repeats=1
    ).cells()
    assert cell.imports == (__name__,)
    make_tiny_mlp.__module__ = "__main__"
    try:
        with pytest.raises(ValueError, match="a fresh process cannot import"):
            ex.register_model("from_a_notebook", make_tiny_mlp)
    finally:
        make_tiny_mlp.__module__ = __name__


def test_calls_round_trip_through_json():
    (cell,) = ex.Grid(
        scenarios=["new_batch_size_batch_axes"], cache_levels=["compile_only"], repeats=1
    ).cells()
    call = cell.scenario.measured(cell.base_call("store", "work"), {})
    assert ex.Call.from_json(call.to_json()) == call
    assert call.spec.batch_axes == (None, 0)
