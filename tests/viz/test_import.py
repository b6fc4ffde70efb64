"""``mcl.viz`` is reachable from the package and importing it loads no display library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("matplotlib", "ipywidgets", "graphviz", "igraph", "IPython")


def test_importing_the_package_and_viz_loads_no_display_library() -> None:
    code = (
        "import json, sys\n"
        "import mlcache_lab as mcl\n"
        "names = [mcl.viz.Explorer.__name__, mcl.viz.timeline.__name__, mcl.viz.levels.__name__,"
        " mcl.viz.compilations.__name__]\n"
        f"print(json.dumps([names, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout, whatever is installed
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    names, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert names == ["Explorer", "timeline", "levels", "compilations"]
    assert loaded == []
