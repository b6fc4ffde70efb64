"""The order of the variants in a benchmark's rounds: every variant at every position."""

from mlcache_lab.bench.fresh_process import round_order


def test_each_variant_takes_each_position_once_over_as_many_rounds():
    variants = ("a", "b", "c", "d", "e")
    rounds = [round_order(variants, r) for r in range(len(variants))]
    assert rounds[0] == variants
    for order in rounds:
        assert sorted(order) == sorted(variants)
    for position in range(len(variants)):
        assert {order[position] for order in rounds} == set(variants)
    assert round_order(variants, len(variants)) == variants


def test_two_variants_alternate():
    assert [round_order(("x", "y"), r) for r in range(3)] == [("x", "y"), ("y", "x"), ("x", "y")]
