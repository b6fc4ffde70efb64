"""The command line: the demo tour, a quick study, the cache commands, help and bad arguments."""

from __future__ import annotations

import csv

import pytest

from mlcache_lab import cli
from mlcache_lab.experiments import load

TINY = ["--layers", "1", "--seq", "8", "--width", "16", "--batch-size", "2"]


@pytest.mark.slow
def test_demo_writes_changes_graph_schedule_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    rc = cli.main(
        [
            "demo",
            "--out",
            str(out),
            "--store",
            str(tmp_path / "store"),
            *TINY,
            "--sizes",
            "3,5,7",
            "--micro-batch",
            "4",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "every row as expected: yes" in printed
    with (out / "cache_changes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["change"] for r in rows][:3] == ["cold", "nothing", "compiler_option"]
    assert rows[1]["compile_status"] == "disk" and rows[1]["trace_status"] == "bypassed"
    assert all(r["as_expected"] in ("", "yes") for r in rows)
    assert (out / "cache_changes.png").stat().st_size > 1000
    assert (out / "cluster_graph.dot").read_text().startswith("digraph")
    assert (out / "cluster_graph.svg").read_text().lstrip().startswith("<?xml")
    with (out / "schedule.csv").open() as fh:
        schedule = list(csv.DictReader(fh))
    assert [int(r["batch_size"]) for r in schedule] == [3, 5, 7]
    assert [int(r["jax_jit_compilations"]) for r in schedule] == [1, 1, 1]
    assert (out / "schedule.png").stat().st_size > 1000
    assert f"files to {out}" in printed


def test_demo_without_graphviz_writes_the_dot_file_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.shutil, "which", lambda name: None)
    args = cli.build_parser().parse_args(["demo", *TINY])
    written = cli._demo_graph(args, tmp_path)
    assert [p.name for p in written] == ["cluster_graph.dot"]
    assert "`dot` program is not installed" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_runs_a_quick_ablation_and_writes_csv_and_plots(tmp_path, capsys):
    out = tmp_path / "bench"
    rc = cli.main(
        [
            "bench",
            "jax_parity",
            "--quick",
            "--out",
            str(out),
            "--path",
            str(tmp_path / "study"),
            "--n-jobs",
            "2",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    results = load(out / "jax_parity_quick.csv")
    assert len(results) == 4
    assert all(r["as_expected"] for r in results.table)
    assert (
        "made by: mlcache-lab bench jax_parity --quick"
        in (out / "jax_parity_quick.csv").read_text()
    )
    for kind in ("levels", "speedup"):
        assert (out / f"jax_parity_quick_{kind}.png").stat().st_size > 1000
    assert "0 with statuses other than expected" in printed


def test_cache_info_prune_and_clear(tmp_path, capsys):
    import jax.numpy as jnp

    import mlcache_lab as mcl

    store = tmp_path / "store"
    mcl.cached_jit(jnp.sin, store=mcl.CacheStore(store))(jnp.ones(3))
    assert cli.main(["cache", "info", "--store", str(store)]) == 0
    info = capsys.readouterr().out
    assert "compile" in info and f"store: {store}" in info
    assert cli.main(["cache", "prune", "--store", str(store), "--max-bytes", "3"]) == 0
    assert "pruned" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--store", str(store)]) == 0
    assert mcl.CacheStore(store).stats()["compile"]["entries"] == 0
    assert cli.main(["cache", "info", "--store", str(tmp_path / "none")]) == 0
    assert "no store at" in capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["demo"], ["bench"], ["cache"]])
def test_help_on_every_command(command, capsys):
    assert cli.main([*command, "--help"]) == 0
    assert "usage: mlcache-lab" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--layers", "0"], "--layers must be a positive integer; got 0"),
        (["demo", "--sizes", "4,x"], "--sizes must be positive batch sizes"),
        (["bench", "nope"], "invalid choice: 'nope'"),
        (["bench", "ablation", "--n-jobs", "0"], "--n-jobs must be a positive integer or -1"),
        (["cache", "prune"], "--max-bytes is required"),
        (["cache", "prune", "--max-bytes", "-5"], "--max-bytes must be a positive integer"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
