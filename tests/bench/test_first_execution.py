"""The first-execution benchmark's quick mode: it runs and writes a well-formed CSV.

No timing thresholds: only that every case produced positive, finite numbers.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from mlcache_lab.bench import first_execution


@pytest.mark.slow
def test_quick_mode_writes_every_case(tmp_path: Path) -> None:
    out = tmp_path / "first_execution.csv"
    assert first_execution.main(["--quick", "--out", str(out)]) == 0

    lines = out.read_text().splitlines()
    assert lines[0].startswith("# made by: python -m mlcache_lab.bench.first_execution --quick")
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert tuple(rows[0]) == first_execution.COLUMNS

    transformer = {r["scenario"] for r in rows if r["model"] == "transformer"}
    assert transformer == set(first_execution.SCENARIOS)
    assert {r["scenario"] for r in rows if r["model"] == "mlp"} == set(
        first_execution.SWEEP_SCENARIOS
    )
    for row in rows:
        assert row["xla_flags"] == "default"
        assert int(row["repeats"]) == 1
        for column in ("setup_s", "exec1_s", "exec2_s", "exec3_s", "first_over_later"):
            value = float(row[column])
            assert math.isfinite(value) and value > 0, (row["scenario"], column, value)
        for column in ("minflt1", "minflt2", "minflt3"):
            assert float(row[column]) >= 0
        assert float(row["param_mb"]) > 0
    warm = {r["scenario"]: r for r in rows}
    assert float(warm["warmup_zeros"]["warmup_s"]) > 0
    assert float(warm["warmup_async"]["other_work_s"]) > 0


def test_rejects_zero_repeats(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="repeats"):
        first_execution.run_benchmark([], 0, tmp_path / "x.csv", "cmd")
