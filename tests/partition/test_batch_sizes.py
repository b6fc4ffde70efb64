"""Re-specialising batched clusters to other batch sizes; chunked runs; the benchmark."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mlcache_lab.bench.partition_scaling import main as bench_main
from mlcache_lab.bench.partition_scaling import make_program
from mlcache_lab.partition import partition, split_run
from mlcache_lab.partition.cluster import NOT_BATCHED
from mlcache_lab.partition.run import BAD_SIZES, split_inputs

from .ground_truth import assert_tree_close


def f(w, x):  # type: ignore[no-untyped-def]
    h = jnp.tanh(x @ w) + jnp.arange(x.shape[0], dtype=x.dtype)[:, None]
    h = h.reshape(x.shape[0], 2, -1).sum(-1)
    return h - h.mean(0), jax.lax.scan(lambda c, s: (c * s + 1, None), h, jnp.ones(3))[0]


W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 6)), jnp.float32)
X = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)), jnp.float32)


def test_specialize_changes_only_batch_dims() -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    for c in g.clusters:
        if c.kind != "batched":
            continue
        small = c.specialize(3)
        for v, a, new in zip(c.inputs, c.in_batch_axes, small.jaxpr.invars, strict=True):
            expect = list(v.aval.shape)
            if a is not None:
                expect[a] = 3
            assert list(new.aval.shape) == expect
        assert c.specialize(g.batch_size) is c.jaxpr


@pytest.mark.parametrize("sizes", [[1, 5], [3, 3], [2, 2, 2], [1, 1, 1, 1, 1, 1]])
def test_split_run_equals_whole_for_any_chunking(sizes: list[int]) -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    env = g.evaluate(W, X)
    for c in g.clusters:
        if c.kind == "batched":
            inputs = [env[v] for v in c.inputs]
            assert_tree_close(split_run(c, inputs, sizes), c.run(*inputs))


def test_non_batched_cluster_cannot_be_specialized() -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    mixing = next(c for c in g.clusters if c.category == "mixes")
    with pytest.raises(ValueError, match=NOT_BATCHED.split("{")[0]):
        mixing.specialize(2)


def test_bad_chunk_sizes() -> None:
    g = partition(f, W, X, batch_axes=(None, 0))
    env = g.evaluate(W, X)
    c = next(c for c in g.clusters if c.kind == "batched")
    with pytest.raises(ValueError, match=BAD_SIZES.split("{")[0].replace("(", r"\(")):
        split_inputs(c, [env[v] for v in c.inputs], [2, 2])


def test_benchmark_program_and_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    fn, args = make_program(8)
    g = partition(fn, *args, batch_axes=(None, 0))
    assert {c.category for c in g.clusters} == {"batched", "invariant", "mixes"}
    out = tmp_path / "scaling.csv"
    bench_main(["--out", str(out), "--repeats", "1", "--layers", "2", "4"])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# made by: python -m mlcache_lab.bench.partition_scaling")
    assert lines[1].startswith("equations,") and len(lines) == 4
