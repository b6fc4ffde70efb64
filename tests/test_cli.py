"""The command line: the demo tour, a quick study, the cache commands, help and bad arguments."""

from __future__ import annotations

import ast
import csv
import logging
import shutil
from pathlib import Path

import pytest

from mlcache_lab import cli
from mlcache_lab.experiments import CHANGES, load
from mlcache_lab.partition.display import RENDERER_ENV

TINY = ["--layers", "1", "--seq", "8", "--width", "16", "--batch-size", "2"]


@pytest.mark.slow
def test_demo_writes_changes_graph_schedule_and_plots(demo_run):
    out, printed = demo_run.out, demo_run.stdout
    assert demo_run.rc == 0, printed
    assert "every row as expected: yes" in printed
    # Progress: a bar over the changes on stderr, and the table's rows on stdout.
    assert (
        "pipeline changes: 100%" in demo_run.stderr
        and f"{len(CHANGES)}/{len(CHANGES)}" in demo_run.stderr
    )
    assert printed.rstrip().splitlines()[-1].startswith(f"Open first: {out / 'cache_changes.png'}")
    with (out / "cache_changes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["change"] for r in rows][:3] == ["cold", "nothing", "compiler_option"]
    assert rows[1]["compile_status"] == "disk" and rows[1]["trace_status"] == "bypassed"
    assert all(r["as_expected"] in ("", "yes") for r in rows)
    assert (out / "cache_changes.png").stat().st_size > 1000
    assert (out / "cluster_graph.dot").read_text().startswith("digraph")
    assert (out / "cluster_graph.svg").read_text().lstrip().startswith("<?xml")  # any machine
    assert (out / "cluster_graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "schedule.csv").open() as fh:
        schedule = list(csv.DictReader(fh))
    assert [int(r["batch_size"]) for r in schedule] == [3, 5, 7]
    assert [int(r["jax_jit_compilations"]) for r in schedule] == [1, 1, 1]
    assert (out / "schedule.png").stat().st_size > 1000
    assert f"files to {out}" in printed


def _demo_graph_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The demo's cluster graph drawn into tmp_path; what the demo said about it."""
    args = cli.build_parser().parse_args(["demo", *TINY])
    written = cli._demo_graph(args, tmp_path)
    assert [p.name for p in written] == [
        "cluster_graph.dot",
        "cluster_graph.svg",
        "cluster_graph.png",
    ]
    assert "#0 " in (tmp_path / "cluster_graph.svg").read_text()
    assert (tmp_path / "cluster_graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return capsys.readouterr().out


def test_demo_draws_the_cluster_graph_with_whichever_renderer_there_is(tmp_path, capsys, renderer):
    said = {"graphviz": "drawn by Graphviz", "layered": "drawn by the layered renderer"}
    assert said[renderer] in _demo_graph_said(tmp_path, capsys)


def test_demo_draws_with_dot_when_it_is_on_path_else_with_the_layered_renderer(
    tmp_path, capsys, monkeypatch
):
    """The demo's own choice (nothing forced): CI runs this again with `dot` hidden."""
    monkeypatch.delenv(RENDERER_ENV, raising=False)
    said = "drawn by Graphviz" if shutil.which("dot") else "drawn by the layered renderer"
    assert said in _demo_graph_said(tmp_path, capsys)


def test_the_schedule_plot_counts_compilations_in_whole_numbers():
    rows = [
        {
            "batch_size": n,
            "batched_jit_seconds": 0.1,
            "batched_jit_compilations": c,
            "jax_jit_seconds": 0.2,
            "jax_jit_compilations": 1,
        }
        for n, c in ((1, 1), (5, 0), (8, 0))
    ]
    fig = cli._schedule_figure(rows)
    fig.canvas.draw()  # ticks are placed at draw time
    ax = fig.axes[1]
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_library_logs_reach_the_command_line_only_while_it_runs(capsys):
    log = logging.getLogger("mlcache_lab.experiments.studies")
    with cli._library_log_to_stdout():
        log.info("3 runs; 0 with statuses other than expected")
    log.info("after the command: not printed")
    assert capsys.readouterr().out == "3 runs; 0 with statuses other than expected\n"


# Modules that are command lines of their own (python -m ...), or children whose stdout is
# a JSON protocol: they print. Everything else reports through the `mlcache_lab` logger.
# The command line, and the child programs that print their one JSON result line.
PRINTING = {"cli.py", "experiments/child.py", "experiments/batched_changes.py"}


def test_only_the_command_lines_print():
    package = Path(cli.__file__).parent
    printing = set()
    for path in package.rglob("*.py"):
        name = path.relative_to(package).as_posix()
        if name in PRINTING or name.startswith("bench/"):
            continue
        tree = ast.parse(path.read_text())
        if any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
            for node in ast.walk(tree)
        ):
            printing.add(name)
    assert printing == set(), f"use logging.getLogger(__name__) in {sorted(printing)}"


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
