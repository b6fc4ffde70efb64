"""The import layering: every arrow points down (DESIGN.md, "each box is a subpackage").

Every module of the package is parsed with ``ast`` and each of its imports,
at module level and inside functions (a lazy import is still a dependency),
is checked against :data:`LAYERS`: a module may import its own package and
packages of lower layers only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlcache_lab

PACKAGE = Path(mlcache_lab.__file__).parent

# Bottom to top; one package per layer, so siblings never call each other either.
LAYERS: tuple[str, ...] = (
    "cache",  # the store, keys, fingerprints, codecs
    "stages",  # cached_jit: trace -> lower -> compile through the cache
    "partition",  # the cluster graph: data only
    "schedule",  # plans and the one executor over a ClusterGraph
    "models",  # user-level example models: nothing in the core may depend on them
    "viz",  # draws graphs, reports, timelines (the Explorer takes a Model)
    "mlcache_lab",  # the facade: mlcache_lab/__init__.py, `import mlcache_lab as mcl`
    "bench",  # measurements (fresh processes, models, the facade)
    "experiments",  # studies built from bench's measurements and the cache table
    "cli",  # the command line: runs everything
)
# A leaf compatibility module over JAX's private internals: any package may import it.
ANYWHERE = frozenset({"jax_internals"})
# (module, function, imported package): the contract methods of DESIGN.md,
# `g.schedule(...)` and `g.run(...)`, are thin calls into schedule.
ALLOWED = frozenset(
    {
        ("partition/graph.py", "ClusterGraph.schedule", "schedule"),
        ("partition/graph.py", "ClusterGraph.run", "schedule"),
    }
)

UNPLACED = (
    "{path} is in no layer: add its package to LAYERS in tests/test_layering.py (bottom to "
    "top: {layers}), or to ANYWHERE if it is a leaf that imports no other package of ours."
)


def unit_of(relative: str) -> str:
    """The layer unit of a module path relative to the package (``cache/store.py`` -> cache)."""
    parts = Path(relative).parts
    if len(parts) > 1:
        return parts[0]
    return "mlcache_lab" if parts[0] == "__init__.py" else Path(parts[0]).stem


def _target_unit(dotted: str, name: str | None) -> str | None:
    """The unit ``from dotted import name`` (or ``import dotted``) reaches; None if not ours."""
    parts = dotted.split(".")
    if parts[0] != "mlcache_lab":
        return None
    if len(parts) > 1:
        return parts[1]
    # `from mlcache_lab import X`: a subpackage or module X, or a name of the facade.
    if name is not None and ((PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()):
        return name
    return "mlcache_lab"


class _Imports(ast.NodeVisitor):
    """(line, enclosing qualname, imported unit) of every import of ours in one module."""

    def __init__(self, relative: str) -> None:
        # The package a relative import starts from (a package's own __init__ included).
        self.package = ["mlcache_lab", *Path(relative).parts[:-1]]
        self.scope: list[str] = []
        self.found: list[tuple[int, str, str]] = []

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def _add(self, node: ast.stmt, unit: str | None) -> None:
        if unit is not None:
            self.found.append((node.lineno, ".".join(self.scope), unit))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, _target_unit(alias.name, None))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[: len(self.package) - (node.level - 1)]
            dotted = ".".join([*base, *([node.module] if node.module else [])])
        else:
            dotted = node.module or ""
        for alias in node.names:
            self._add(node, _target_unit(dotted, alias.name))


def imports_of(relative: str, source: str) -> list[tuple[int, str, str]]:
    """Every import of one of our units in ``source`` (the module at ``relative``)."""
    visitor = _Imports(relative)
    visitor.visit(ast.parse(source, filename=relative))
    return visitor.found


def violations(relative: str, source: str) -> Iterator[str]:
    """Each import in ``source`` that points up (or sideways) in :data:`LAYERS`."""
    unit = unit_of(relative)
    if unit in ANYWHERE:
        rank = -1  # a leaf: it may import no package of ours at all
    elif unit in LAYERS:
        rank = LAYERS.index(unit)
    else:
        raise AssertionError(UNPLACED.format(path=relative, layers=" -> ".join(LAYERS)))
    for line, scope, target in imports_of(relative, source):
        if target == unit or target in ANYWHERE or (relative, scope, target) in ALLOWED:
            continue
        if target not in LAYERS:
            raise AssertionError(UNPLACED.format(path=target, layers=" -> ".join(LAYERS)))
        if LAYERS.index(target) >= rank:
            where = f" (in {scope})" if scope else ""
            yield f"{relative}:{line}{where}: {unit} imports {target}"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down_the_layers():
    found = []
    for path in _modules():
        relative = path.relative_to(PACKAGE).as_posix()
        found += violations(relative, path.read_text())
    assert found == [], (
        "imports against the layering (bottom to top: " + " -> ".join(LAYERS) + "); move the "
        "code to the layer that may use both, or pass what it needs down:\n  " + "\n  ".join(found)
    )


def test_the_scan_sees_the_package_imports():
    # The check above passes on any tree it cannot read: make sure it reads this one.
    seen = {
        (unit_of(p.relative_to(PACKAGE).as_posix()), target)
        for p in _modules()
        for _, _, target in imports_of(p.relative_to(PACKAGE).as_posix(), p.read_text())
    }
    assert {("stages", "cache"), ("schedule", "partition"), ("cli", "experiments")} <= seen
    assert ("mlcache_lab", "viz") in seen  # the facade re-exports viz
    assert {unit_of(p.relative_to(PACKAGE).as_posix()) for p in _modules()} - ANYWHERE <= set(
        LAYERS
    )


@pytest.mark.parametrize(
    ("relative", "source", "expected"),
    [
        (
            "cache/store.py",
            "from ..schedule import plan\n",
            ["cache/store.py:1: cache imports schedule"],
        ),
        (
            "stages/report.py",
            "def f():\n    import mlcache_lab as mcl\n",
            ["stages/report.py:2 (in f): stages imports mlcache_lab"],
        ),
        (
            "partition/api.py",
            "from mlcache_lab import models\n",
            ["partition/api.py:1: partition imports models"],
        ),
        (
            "bench/x.py",
            "from ..experiments.calls import Call\n",
            ["bench/x.py:1: bench imports experiments"],
        ),
        ("viz/plots.py", "from .. import cli\n", ["viz/plots.py:1: viz imports cli"]),
        (
            "partition/graph.py",
            "def run(self):\n    from ..schedule import run\n",
            ["partition/graph.py:2 (in run): partition imports schedule"],
        ),
        (
            "partition/graph.py",
            "class ClusterGraph:\n    def run(self):\n        from ..schedule import run\n",
            [],
        ),
        (
            "experiments/child.py",
            "from ..bench.fresh_process import run_json_child\nimport mlcache_lab\n",
            [],
        ),
        ("__init__.py", "from . import viz\nfrom .cache import CacheStore\n", []),
        ("cache/keys.py", "from ..jax_internals import x\nimport jax\n", []),
    ],
)
def test_the_check_flags_upward_imports_and_only_those(relative, source, expected):
    assert list(violations(relative, source)) == expected


def test_a_module_outside_every_layer_is_reported():
    with pytest.raises(AssertionError, match="is in no layer"):
        list(violations("tools/helper.py", "import os\n"))
