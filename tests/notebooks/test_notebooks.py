"""The notebooks: committed without outputs, set up by their first cell, run top to bottom."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import NOTEBOOKS

EXPECTED = (
    "01_quickstart.ipynb",
    "02_multilevel_cache.ipynb",
    "03_batch_partitioning.ipynb",
    "04_ablation.ipynb",
)


def _cells(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["cells"]  # type: ignore[no-any-return]


def _source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def test_the_notebooks_exist() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == list(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs_and_first_cell_installs_what_is_missing(name: str) -> None:
    cells = _cells(NOTEBOOKS / name)
    code = [c for c in cells if c["cell_type"] == "code"]
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, _source(cell)[:80]
    first = _source(code[0])
    assert "find_spec" in first and '"pip", "install"' in first
    assert 'os.environ.get("MLCACHE_LAB_SMALL") == "1"' in first
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# 0")


def _execute(name: str) -> Any:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    return nb


def _mimetypes(nb: Any) -> list[str]:
    return [
        mime
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        for mime in out.get("data", {})
    ]


def _stream(nb: Any) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.get("name") == "stdout"
    )


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_env")
@pytest.mark.parametrize("name", EXPECTED)
def test_runs_top_to_bottom(name: str) -> None:
    nb = _execute(name)
    assert "small (CI) run" in _stream(nb)  # the parameter reached the kernel
    mimes = _mimetypes(nb)
    assert "image/png" in mimes  # every notebook ends with plots
    if name == "03_batch_partitioning.ipynb":
        assert "image/svg+xml" in mimes  # the cluster graphs
        assert "application/vnd.jupyter.widget-view+json" in mimes  # the Explorer
