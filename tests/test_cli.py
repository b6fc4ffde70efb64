"""The command line: the demo tour on a tiny transformer, and argument errors."""

from __future__ import annotations

import csv

import pytest

from mlcache_lab import cli


@pytest.mark.slow
def test_demo_writes_table_csv_and_plot(tmp_path, capsys):
    rc = cli.main(
        [
            "demo",
            "--out",
            str(tmp_path / "out"),
            "--store",
            str(tmp_path / "store"),
            "--layers",
            "1",
            "--seq",
            "8",
            "--width",
            "16",
            "--batch-size",
            "2",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "every row as expected: yes" in printed
    with (tmp_path / "out" / "cache_changes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["change"] for r in rows][:3] == ["cold", "nothing", "compiler_option"]
    assert rows[1]["compile_status"] == "disk" and rows[1]["trace_status"] == "bypassed"
    assert all(r["as_expected"] in ("", "yes") for r in rows)
    assert (tmp_path / "out" / "cache_changes.png").stat().st_size > 1000


def test_bad_arguments_exit_with_a_message(capsys):
    assert cli.main(["demo", "--layers", "0"]) == 2
    assert "--layers must be a positive integer; got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
