"""Shared fixtures: a PRNG key, a fresh on-disk store per test, small test functions, and one
run of ``mlcache-lab demo`` that the demo's and the behaviour table's tests all read."""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path
from typing import Any

import jax
import pytest

import mlcache_lab as mcl


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture
def store(tmp_path) -> mcl.CacheStore:
    return mcl.CacheStore(tmp_path / "store")


@pytest.fixture(params=["graphviz", "layered"])
def renderer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each picture test once per renderer: Graphviz where `dot` is on PATH, and the layered
    renderer (igraph + matplotlib) everywhere, forced through $MLCACHE_LAB_RENDERER so that
    fresh processes (notebook kernels, the CLI) draw with it too."""
    import shutil

    from mlcache_lab.partition.display import RENDERER_ENV

    if request.param == "graphviz" and shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` is not on PATH; the layered case covers this machine")
    monkeypatch.setenv(RENDERER_ENV, request.param)
    return str(request.param)


@pytest.fixture
def fresh_key_file(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A fresh signing key file location (created on first use), exported to child processes."""
    path = tmp_path / "keys" / "hmac.key"
    monkeypatch.setenv("MLCACHE_LAB_KEY_FILE", str(path))
    monkeypatch.delenv("MLCACHE_LAB_UNSAFE_SKIP_VERIFY", raising=False)
    return path


# Session fixtures that run something long once, and the xdist group of the tests reading each.
SHARED_RUNS = ("demo_run", "quick_serving_rows")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its hook, on each worker)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that read a run of SHARED_RUNS in one xdist group: with `--dist loadgroup`
    (pyproject.toml) they run on one worker, so the run happens once per session."""
    for item in items:
        for name in SHARED_RUNS:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(name))


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One run of ``mlcache-lab demo``: what it returned, printed and wrote, every
    pipeline change it measured, as ``run_change`` returned it (base call, changed call),
    and its partitioned rows, as ``run_batched_changes`` returned them (base call, changed
    call by name)."""

    out: Path
    rc: int
    stdout: str
    stderr: str
    changes: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    batched: tuple[dict[str, Any], dict[str, dict[str, Any]]]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``mlcache-lab demo`` on a tiny transformer, once per session (one xdist group).

    ``run_change`` is wrapped to keep each change's results and to ask every fresh process
    to compare its output with ``jax.jit``'s too (``max_abs_diff``), which the demo itself
    does not ask for: the table's tests assert on it.
    """
    from mlcache_lab import cli, experiments
    from mlcache_lab.experiments import batched_changes

    root = tmp_path_factory.mktemp("demo")
    real = experiments.run_change
    real_batched = batched_changes.run_batched_changes
    changes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    batched: list[Any] = []

    def recording(change: Any, spec: Any, **options: Any) -> tuple[dict[str, Any], ...]:
        base, changed = real(change, spec, **{**options, "verify": True})
        changes[change.name] = (base, changed)
        return base, changed

    def recording_batched(spec: Any, *rest: Any) -> Any:
        batched.append(real_batched(spec, *rest))
        return batched[-1]

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["demo", "--out", str(root / "out"), "--store", str(root / "store")]
    argv += ["--layers", "1", "--seq", "8", "--width", "16", "--batch-size", "2"]
    argv += ["--sizes", "3,5,7", "--micro-batch", "4"]
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        patch.setattr(experiments, "run_change", recording)
        patch.setattr(batched_changes, "run_batched_changes", recording_batched)
        rc = cli.main(argv)
    assert len(batched) == 1, "the demo ran its partitioned rows once"
    return DemoRun(root / "out", rc, stdout.getvalue(), stderr.getvalue(), changes, batched[0])


@pytest.fixture(scope="session")
def quick_serving_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``serving_trace.run`` on its ``--quick`` settings, once per session: the trace's rows
    and the steady state's."""
    from mlcache_lab.bench import serving_trace

    knobs = serving_trace.settings(quick=True)
    return serving_trace.run(**knobs, policies=serving_trace.DEFAULT_POLICIES)


@pytest.fixture
def quick_serving(quick_serving_rows: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """``serving_trace.run`` answering with ``quick_serving_rows``; the keyword arguments it
    was called with, one dict per call (a test asserts the measurement asked for was the
    quick one, which ``quick_serving_rows`` measured)."""
    from mlcache_lab.bench import serving_trace

    calls: list[dict[str, Any]] = []

    def replay(**knobs: Any) -> Any:
        calls.append(knobs)
        return quick_serving_rows

    monkeypatch.setattr(serving_trace, "run", replay)
    return calls
