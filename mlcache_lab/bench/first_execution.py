"""What the first execution of an XLA:CPU executable costs, and what of it survives a process.

Every measurement runs in a fresh Python process (this module re-runs itself
with ``--worker``), so nothing a previous case warmed up leaks into the next.
Repeats are interleaved round-robin over the cases, so a burst of load on a
shared machine hits every case alike; the CSV holds medians over the repeats.

Inputs are written to ``.npz`` once and read back with ``jax.device_put`` in
every process. Cases (``scenario`` column), each timing three executions of one executable on
the same inputs, plus its compile or load time and the minor page faults each
execution caused:

* ``inprocess``: compiled in this process (``jit(...).lower(...).compile()``).
* ``fresh_load``: ``serialize_executable.deserialize_and_load`` in a fresh
  process, after one tiny unrelated computation (so the runtime is not cold).
* ``cold_load``: as ``fresh_load`` without that computation: the loaded
  executable is the first computation the process runs.
* ``second_load``: the same bytes loaded a second time in the process, after
  the first copy ran three times.
* ``after_other``: a different executable (the built-in MLP) loaded and run
  three times first: shares any process-wide one-time cost.
* ``after_tiny_batch``: the same model at batch 1 loaded and run first (the
  "warm up on a tiny batch" idea; a different executable).
* ``warmup_zeros``: the executable itself run once on zeros of the right shapes
  right after loading (``warmup_s``), then timed on the real inputs.
* ``warmup_async``: the same warm-up on zeros dispatched without waiting,
  while the process builds the real inputs (``other_work_s``); ``exec1_s`` is
  the real first call after that.

Run ``python -m mlcache_lab.bench.first_execution --help`` for the options;
``--quick`` is the small smoke run the tests use. Output: ``data/first_execution.csv``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pickle
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .fresh_process import run_json_child

__all__ = ["COLUMNS", "SCENARIOS", "Case", "Config", "main", "run_benchmark"]

SCENARIOS: tuple[str, ...] = (
    "inprocess",
    "fresh_load",
    "cold_load",
    "second_load",
    "after_other",
    "after_tiny_batch",
    "warmup_zeros",
    "warmup_async",
)
"""Every case a main configuration is measured under (see the module docstring)."""

SWEEP_SCENARIOS: tuple[str, ...] = ("inprocess", "fresh_load")
"""The cases measured for the layer/batch sweep and for each ``XLA_FLAGS`` setting."""

DEFAULT_FLAGS: tuple[str, ...] = (
    "--xla_cpu_multi_thread_eigen=false",
    "--xla_cpu_parallel_codegen_split_count=1",
    "--xla_cpu_use_xnnpack=false",
    "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
)
"""``XLA_FLAGS`` values compared with the default (one at a time)."""

COLUMNS: tuple[str, ...] = (
    "scenario",
    "model",
    "layers",
    "batch",
    "xla_flags",
    "repeats",
    "param_mb",
    "input_mb",
    "setup_s",
    "warmup_s",
    "other_work_s",
    "exec1_s",
    "exec2_s",
    "exec3_s",
    "first_extra_s",
    "first_over_later",
    "minflt1",
    "minflt2",
    "minflt3",
)
"""CSV columns. ``setup_s``: compile (``inprocess``) or load time; ``first_extra_s``:
``exec1_s - min(exec2_s, exec3_s)``; ``first_over_later``: ``exec1_s / min(exec2_s,
exec3_s)``; ``minfltN``: minor page faults of the process during execution N."""

_OTHER = "other"
_TINY = "tiny"


@dataclasses.dataclass(frozen=True)
class Config:
    """One built-in model at one batch size.

    Attributes:
      model: ``"transformer"`` or ``"mlp"``.
      layers: transformer layers (``0`` for the MLP, which keeps its defaults).
      batch: batch size of the inputs.
    """

    model: str
    layers: int
    batch: int

    @property
    def label(self) -> str:
        """A file-name-safe name, e.g. ``transformer-L48-B8``."""
        return f"{self.model}-L{self.layers}-B{self.batch}"

    def build(self) -> Any:
        """The :class:`mlcache_lab.models.Model` this configuration names."""
        from mlcache_lab.models import get_model

        if self.model == "transformer":
            return get_model("transformer", layers=self.layers)
        return get_model(self.model)

    def related(self) -> dict[str, Config]:
        """The executables loaded before it in ``after_other`` and ``after_tiny_batch``."""
        return {_OTHER: Config("mlp", 0, self.batch), _TINY: dataclasses.replace(self, batch=1)}


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the CSV: a configuration measured in one scenario under some flags."""

    scenario: str
    config: Config
    xla_flags: str


# --------------------------------------------------------------------------- worker side


def _minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_executions(call: Callable[[], Any], count: int = 3) -> tuple[list[float], list[int]]:
    """Wall seconds and minor page faults of ``count`` blocking executions of ``call``."""
    import jax

    seconds, faults = [], []
    for _ in range(count):
        f0, t0 = _minflt(), time.perf_counter()
        jax.block_until_ready(call())
        seconds.append(time.perf_counter() - t0)
        faults.append(_minflt() - f0)
    return seconds, faults


def _blob_path(folder: Path, config: Config) -> Path:
    return folder / f"{config.label}.pkl"


def _prepare(folder: Path, configs: Sequence[Config]) -> dict[str, Any]:
    """Compile and serialize each configuration; write its inputs as ``.npz`` too."""
    import jax
    import numpy as np
    from jax.experimental import serialize_executable

    for config in configs:
        args = config.build().example_args(config.batch)
        compiled = jax.jit(config.build().apply).lower(*args).compile()
        _blob_path(folder, config).write_bytes(
            pickle.dumps(serialize_executable.serialize(compiled))
        )
        leaves = [np.asarray(x) for x in jax.tree.leaves(args)]
        np.savez(_blob_path(folder, config).with_suffix(".npz"), *leaves)
    return {}


def _load(folder: Path, config: Config) -> tuple[Any, float]:
    """The loaded executable of ``config`` and the seconds ``deserialize_and_load`` took."""
    from jax.experimental import serialize_executable

    payload, in_tree, out_tree = pickle.loads(_blob_path(folder, config).read_bytes())
    t0 = time.perf_counter()
    compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    return compiled, time.perf_counter() - t0


def _inputs(folder: Path, config: Config) -> tuple[Any, ...]:
    """``(params, *inputs)`` of ``config`` read from the ``.npz`` written by the prepare step.

    Read rather than made with ``example_args``: that would compile and run the
    initializers in every measuring process, slow and a warm-up of its own.
    """
    import jax
    import numpy as np

    model = config.build()
    tree = jax.tree.structure(jax.eval_shape(lambda: model.example_args(config.batch)))
    with np.load(_blob_path(folder, config).with_suffix(".npz")) as data:
        leaves = [jax.device_put(data[f"arr_{i}"]) for i in range(len(data.files))]
    jax.block_until_ready(leaves)
    return tuple(jax.tree.unflatten(tree, leaves))


def _measure(folder: Path, scenario: str, config: Config) -> dict[str, Any]:
    """Run one scenario (in this fresh process) and return its row's raw numbers."""
    import jax
    import jax.numpy as jnp

    out: dict[str, Any] = {"warmup_s": math.nan, "other_work_s": math.nan}
    if scenario == "cold_load":
        args = _inputs(folder, config)
        compiled, out["setup_s"] = _load(folder, config)
    elif scenario == "warmup_async":
        compiled, out["setup_s"] = _load(folder, config)
        t0 = time.perf_counter()
        zeros = jax.tree.map(lambda info: jnp.zeros(info.shape, info.dtype), compiled.args_info[0])
        pending = compiled(*zeros)  # dispatched; runs while the inputs are read
        args = _inputs(folder, config)
        out["other_work_s"] = time.perf_counter() - t0
        jax.block_until_ready(pending)
    elif scenario == "inprocess":
        args = _inputs(folder, config)
        lowered = jax.jit(config.build().apply).lower(*args)
        t0 = time.perf_counter()
        compiled = lowered.compile()
        out["setup_s"] = time.perf_counter() - t0
    else:
        args = _inputs(folder, config)
        # Something small runs first, so that the runtime is not cold (see cold_load).
        jax.block_until_ready(jax.jit(lambda x: x * 2)(jnp.arange(8)))
        if scenario in ("after_other", "after_tiny_batch"):
            related = config.related()[_OTHER if scenario == "after_other" else _TINY]
            earlier, _ = _load(folder, related)
            related_args = _inputs(folder, related)
            _time_executions(lambda: earlier(*related_args))
        compiled, out["setup_s"] = _load(folder, config)
        if scenario == "second_load":
            _time_executions(lambda: compiled(*args))
            compiled, out["setup_s"] = _load(folder, config)
        elif scenario == "warmup_zeros":
            zeros = jax.tree.map(jnp.zeros_like, args)
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(*zeros))
            out["warmup_s"] = time.perf_counter() - t0
    seconds, faults = _time_executions(lambda: compiled(*args))
    out["exec_s"], out["minflt"] = seconds, faults
    out["param_mb"] = sum(x.nbytes for x in jax.tree.leaves(args[0])) / 2**20
    out["input_mb"] = sum(x.nbytes for x in jax.tree.leaves(args[1:])) / 2**20
    return out


def _worker(job: dict[str, Any]) -> None:
    """Entry point of a fresh process: prepare or measure, print one result line."""
    folder = Path(job["folder"])
    if job["task"] == "prepare":
        result = _prepare(folder, [Config(**c) for c in job["configs"]])
    else:
        result = _measure(folder, job["scenario"], Config(**job["config"]))
    print(json.dumps(result), flush=True)  # the last line: what run_json_child reads


# --------------------------------------------------------------------------- parent side


def _spawn(job: dict[str, Any], xla_flags: str, timeout: float) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter with ``XLA_FLAGS=xla_flags``; its result dict."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    return run_json_child(
        "mlcache_lab.bench.first_execution",
        ["--worker", json.dumps(job)],
        what=f"worker {job.get('task')} {job.get('scenario', '')} (XLA_FLAGS={xla_flags!r})",
        env=env,
        timeout=timeout,
    )


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _row(case: Case, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One CSV row: medians over the repeats of ``case``."""
    execs = [_median([r["exec_s"][i] for r in results]) for i in range(3)]
    later = min(execs[1], execs[2])
    row: dict[str, Any] = {
        "scenario": case.scenario,
        "model": case.config.model,
        "layers": case.config.layers,
        "batch": case.config.batch,
        "xla_flags": case.xla_flags or "default",
        "repeats": len(results),
        "param_mb": results[0]["param_mb"],
        "input_mb": results[0]["input_mb"],
    }
    for key in ("setup_s", "warmup_s", "other_work_s"):
        row[key] = _median([r[key] for r in results])
    for i, value in enumerate(execs, 1):
        row[f"exec{i}_s"] = value
    row["first_extra_s"] = execs[0] - later
    row["first_over_later"] = execs[0] / later
    for i in range(3):
        row[f"minflt{i + 1}"] = _median([r["minflt"][i] for r in results])
    return row


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def run_benchmark(
    cases: Sequence[Case],
    repeats: int,
    out: Path,
    command: str,
    timeout: float = 600.0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Prepare the executables, measure ``cases`` ``repeats`` times, write the CSV ``out``.

    Args:
      cases: what to measure; each repeat of each case runs in a fresh process.
      repeats: fresh-process runs per case (medians are written).
      out: the CSV path; its parent is created.
      command: the command line recorded in the CSV's first line.
      timeout: seconds allowed to one worker process.
      log: progress messages.

    Returns:
      The rows written, as dicts keyed by :data:`COLUMNS`.
    """
    if repeats < 1:
        raise ValueError(f"'repeats' must be at least 1. Got repeats={repeats}.")
    results: dict[Case, list[dict[str, Any]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory(prefix="first_execution_") as tmp:
        folders: dict[str, Path] = {}
        for flags in dict.fromkeys(case.xla_flags for case in cases):
            folder = Path(tmp) / f"flags{len(folders)}"
            folder.mkdir()
            folders[flags] = folder
            configs: dict[Config, None] = {}
            for case in cases:
                if case.xla_flags == flags:
                    configs[case.config] = None
                    if case.scenario in ("after_other", "after_tiny_batch"):
                        configs.update(dict.fromkeys(case.config.related().values()))
            log(f"compiling {len(configs)} executables (XLA_FLAGS={flags or 'default'})")
            prepare: dict[str, Any] = {
                "task": "prepare",
                "folder": str(folder),
                "configs": [dataclasses.asdict(c) for c in configs],
            }
            _spawn(prepare, flags, timeout)
        for repeat in range(repeats):
            log(f"repeat {repeat + 1}/{repeats}: {len(cases)} fresh processes")
            for case in cases:
                job: dict[str, Any] = {
                    "task": "measure",
                    "folder": str(folders[case.xla_flags]),
                    "scenario": case.scenario,
                    "config": dataclasses.asdict(case.config),
                }
                results[case].append(_spawn(job, case.xla_flags, timeout))
    rows = [_row(case, results[case]) for case in cases]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        fh.write(f"# made by: {command}\n")
        fh.write(f"# cpus: {os.cpu_count()}, load average at the end: {os.getloadavg()}\n")
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([_format(row[c]) for c in COLUMNS])
    return rows


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _cases(args: argparse.Namespace) -> list[Case]:
    """The cases the command line asks for."""
    main_config = Config("transformer", args.layers, args.batch)
    cases = [Case(s, main_config, "") for s in SCENARIOS]
    sweep = [Config("transformer", n, args.batch) for n in args.sweep_layers]
    sweep += [Config("transformer", args.layers, b) for b in args.sweep_batches]
    sweep += [Config("mlp", 0, args.batch)]
    for config in dict.fromkeys(sweep):
        if config != main_config:
            cases += [Case(s, config, "") for s in SWEEP_SCENARIOS]
    for flags in args.flags:
        cases += [Case(s, main_config, flags) for s in SWEEP_SCENARIOS]
    return cases


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlcache_lab.bench.first_execution",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--layers", type=int, default=48, help="transformer layers (48)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (8)")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per case (5)")
    parser.add_argument(
        "--sweep-layers", type=_ints, default=[12, 96], help="other layer counts (12,96)"
    )
    parser.add_argument(
        "--sweep-batches", type=_ints, default=[1, 64], help="other batch sizes (1,64)"
    )
    parser.add_argument(
        "--flags",
        action="append",
        default=None,
        help="an XLA_FLAGS value to compare with the default; repeatable "
        f"(default: each of {' '.join(DEFAULT_FLAGS)})",
    )
    parser.add_argument("--no-flags", action="store_true", help="compare no XLA_FLAGS values")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 layers, batch 2, 1 repeat, no sweep, no flags",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/first_execution.csv"), help="the CSV to write"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.worker is not None:
        _worker(json.loads(args.worker))
        return 0
    if args.quick:
        args.layers, args.batch, args.repeats = 2, 2, 1
        args.sweep_layers, args.sweep_batches, args.no_flags = [], [], True
    if args.no_flags:
        args.flags = []
    elif args.flags is None:
        args.flags = list(DEFAULT_FLAGS)
    command = shlex.join(["python", "-m", "mlcache_lab.bench.first_execution", *argv])
    rows = run_benchmark(_cases(args), args.repeats, args.out, command, args.timeout)
    print(f"wrote {args.out}")
    for row in rows:
        print(
            f"{row['scenario']:>16} {row['model']:>11} L{row['layers']:<3} B{row['batch']:<3} "
            f"{row['xla_flags']:<42} setup {row['setup_s']:.4f}s  exec "
            f"{row['exec1_s']:.4f} / {row['exec2_s']:.4f} / {row['exec3_s']:.4f}s  "
            f"x{row['first_over_later']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
