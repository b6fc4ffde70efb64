"""Training trace: an optax training step at varying batch sizes, jax.jit against batched_jit.

The step: ``value_and_grad`` of a loss (next-token cross-entropy for the
built-in transformer, mean square output for the other built-in models),
then adam (``optax.adam``) and ``optax.apply_updates``. The trace: ``--calls``
(32) batch sizes drawn log-uniformly from ``--min-batch``..``--max-batch``
(8..256) with ``numpy.random.default_rng(--seed)``. In one process, from a
cold start each (an empty in-memory store for ours), both variants serve the
whole trace:

* ``jax.jit``: the monolithic step, compiled for every new batch size;
* ``chunk-<m>``: ``mcl.batched_jit(step, policy="chunk", micro_batch=m)``:
  weight gradients are reductions over the batch, run per chunk of ``m`` and
  combined; the optimizer update runs once after the combine.

Each records total seconds and XLA compilations, and the results are checked
against each other (allclose). Then the steady state at ``--steady-batch``
(256): the median of ``--steady-repeats`` alternating warm calls of each.
Peak memory: each variant runs in a fresh process of its own: one step to
warm up (tracing and compiling), then, on Linux, the kernel's high-water mark
is reset (``5`` written to ``/proc/self/clear_refs``) and ``--memory-calls``
warm steps run; the process reports its steady-state peak (``VmHWM`` from
``/proc/self/status`` after the reset), the whole-process peak (``ru_maxrss``,
which compiling reaches on a CPU, so it does not tell the variants apart) and,
where the backend gives them, the device's ``peak_bytes_in_use``.

Results: ``data/training_trace.csv`` and ``data/training_steady.csv``.

Run: ``python -m mlcache_lab.bench.training_trace`` (``--quick`` for a tiny run).
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .fresh_process import run_json_child, write_csv

__all__ = ["main", "training_trace"]


def training_trace(
    calls: int = 32, min_batch: int = 8, max_batch: int = 256, seed: int = 2026
) -> list[int]:
    """Batch sizes drawn log-uniformly from ``min_batch..max_batch`` (deterministic)."""
    rng = np.random.default_rng(seed)
    draws = np.exp(rng.uniform(np.log(min_batch), np.log(max_batch + 1), size=calls))
    return [int(min(max(min_batch, np.floor(d)), max_batch)) for d in draws]


def make_step(name: str, config: dict[str, int]) -> tuple[Callable[..., Any], Any, Any, Any]:
    """``(train_step, params, opt_state, make_inputs)`` for a built-in model."""
    import jax
    import jax.numpy as jnp
    import optax

    from mlcache_lab.models import get_model

    model = get_model(name, **config)
    tx = optax.adam(1e-3)

    def loss_fn(params: Any, *inputs: Any) -> Any:
        out = model.apply(params, *inputs)
        if name == "transformer":
            (tokens,) = inputs
            return optax.softmax_cross_entropy_with_integer_labels(
                out[:, :-1], tokens[:, 1:]
            ).mean()
        return jnp.mean(jnp.square(out))

    def train_step(params: Any, opt_state: Any, *inputs: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, *inputs)
        updates, opt_state = tx.update(grads, opt_state, params)
        return loss, optax.apply_updates(params, updates), opt_state

    params = model.init(jax.random.key(0))
    return train_step, params, tx.init(params), model.make_inputs


def _variants(
    step: Callable[..., Any], n_inputs: int, micro_batches: list[int]
) -> dict[str, Callable[[], Callable[..., tuple[Any, int]]]]:
    import jax

    import mlcache_lab as mcl

    axes = (None, None) + (0,) * n_inputs

    def plain() -> Callable[..., tuple[Any, int]]:
        f, seen = jax.jit(step), set()

        def run(*args: Any) -> tuple[Any, int]:
            n = args[2].shape[0]
            new = n not in seen
            seen.add(n)
            return f(*args), int(new)

        return run

    def ours(m: int) -> Callable[[], Callable[..., tuple[Any, int]]]:
        def make() -> Callable[..., tuple[Any, int]]:
            bf = mcl.batched_jit(
                step, batch_axes=axes, policy="chunk", micro_batch=m, store=mcl.CacheStore(None)
            )

            def run(*args: Any) -> tuple[Any, int]:
                out = bf(*args)
                return out, bf.last_timeline.compile_count()

            return run

        return make

    out: dict[str, Callable[[], Callable[..., tuple[Any, int]]]] = {"jax.jit": plain}
    for m in micro_batches:
        out[f"chunk-{m}"] = ours(m)
    return out


def run_trace(
    name: str, config: dict[str, int], sizes: list[int], micro_batches: list[int]
) -> list[dict[str, Any]]:
    """Both variants over ``sizes`` from a cold start; one row per variant."""
    import jax

    step, params, opt_state, make_inputs = make_step(name, config)
    inputs = {n: make_inputs(n, jax.random.key(n)) for n in sorted(set(sizes))}
    reference: dict[int, Any] = {}
    rows = []
    for variant, make in _variants(step, len(inputs[sizes[0]]), micro_batches).items():
        run = make()
        compiles = 0
        t0 = time.perf_counter()
        for n in sizes:
            out, c = run(params, opt_state, *inputs[n])
            jax.block_until_ready(out)
            compiles += c
            if n not in reference:
                reference[n] = jax.tree.leaves(out)
            elif n == sizes[0]:  # ours against jax.jit: the same step
                for a, b in zip(jax.tree.leaves(out), reference[n], strict=True):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "model": name,
                "variant": variant,
                "seconds": round(seconds, 3),
                "compilations": compiles,
                "calls": len(sizes),
                "distinct_sizes": len(set(sizes)),
                "samples": sum(sizes),
            }
        )
        print(f"  {variant:<10} {seconds:8.2f} s  {compiles:3d} compilations", flush=True)
    return rows


def steady_state(
    name: str, config: dict[str, int], batch: int, micro_batches: list[int], repeats: int
) -> list[dict[str, Any]]:
    """Medians of alternating warm calls at ``batch``, ours against ``jax.jit``."""
    import jax

    import mlcache_lab as mcl

    step, params, opt_state, make_inputs = make_step(name, config)
    inputs = make_inputs(batch, jax.random.key(7))
    axes = (None, None) + (0,) * len(inputs)
    fns: dict[str, Callable[[], Any]] = {}
    mono = jax.jit(step)
    fns["jax.jit"] = lambda: mono(params, opt_state, *inputs)
    for m in micro_batches:
        bf = mcl.batched_jit(
            step, batch_axes=axes, policy="chunk", micro_batch=m, store=mcl.CacheStore(None)
        )
        fns[f"chunk-{m}"] = functools.partial(bf, params, opt_state, *inputs)
    from .serving_trace import alternating_samples

    samples = alternating_samples(fns, repeats)
    base = statistics.median(samples["jax.jit"])
    return [
        {
            "model": name,
            "variant": k,
            "batch": batch,
            "median_seconds": round(statistics.median(v), 5),
            "ratio_to_jit": round(statistics.median(v) / base, 3),
        }
        for k, v in samples.items()
    ]


def _memory_child(
    name: str, config: dict[str, int], variant: str, batch: int, calls: int
) -> dict[str, Any]:
    """In this (fresh) process: ``calls`` warm steps of ``variant``; the high-water marks."""
    import jax

    import mlcache_lab as mcl

    step, params, opt_state, make_inputs = make_step(name, config)
    inputs = make_inputs(batch, jax.random.key(7))
    if variant == "jax.jit":
        f: Callable[..., Any] = jax.jit(step)
    else:
        m = int(variant.split("-")[1])
        f = mcl.batched_jit(
            step,
            batch_axes=(None, None) + (0,) * len(inputs),
            policy="chunk",
            micro_batch=m,
            store=mcl.CacheStore(None),
        )
    jax.block_until_ready(f(params, opt_state, *inputs))  # warm-up: trace and compile
    reset = _reset_peak_rss()
    for _ in range(calls):
        jax.block_until_ready(f(params, opt_state, *inputs))
    stats = jax.devices()[0].memory_stats() or {}
    steady = _peak_rss_kb() if reset else None
    return {
        "variant": variant,
        "steady_peak_rss_mb": "" if steady is None else round(steady / 1024, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "device_peak_mb": round(stats["peak_bytes_in_use"] / 2**20, 1)
        if "peak_bytes_in_use" in stats
        else "",
    }


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set (Linux ``clear_refs``); whether it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _peak_rss_kb() is not None


def _peak_rss_kb() -> int | None:
    """``VmHWM`` (peak resident set since start or the last reset), in kB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory(
    name: str, config: dict[str, int], batch: int, micro_batches: list[int], calls: int
) -> list[dict[str, Any]]:
    """Each variant's high-water marks, each measured in a fresh process."""
    out = []
    for variant in ["jax.jit", *(f"chunk-{m}" for m in micro_batches)]:
        args = [
            "--memory-child",
            variant,
            "--model",
            name,
            "--config",
            json.dumps(config),
            "--steady-batch",
            str(batch),
            "--memory-calls",
            str(calls),
        ]
        what = f"the {variant} memory process"
        out.append(run_json_child("mlcache_lab.bench.training_trace", args, what=what))
    return out


def summarize(
    trace: list[dict[str, Any]], steady: list[dict[str, Any]], memory: list[dict[str, Any]]
) -> str:
    """A plain-text table of the three measurements."""
    by = {r["variant"]: r for r in trace}
    lines = [f"{'variant':<10} {'seconds':>8} {'x jax.jit':>9} {'compiles':>8}"]
    for r in trace:
        ratio = r["seconds"] / by["jax.jit"]["seconds"]
        lines.append(f"{r['variant']:<10} {r['seconds']:8.2f} {ratio:9.3f} {r['compilations']:8d}")
    lines.append(f"steady state at batch {steady[0]['batch']} (warm, medians):")
    mem = {m["variant"]: m for m in memory}
    for s in steady:
        m = mem.get(s["variant"], {})
        lines.append(
            f"  {s['variant']:<10} {s['median_seconds'] * 1e3:9.2f} ms/step  "
            f"{s['ratio_to_jit']:.3f} x jax.jit (target <= 1.15)  "
            f"steady peak RSS {m.get('steady_peak_rss_mb') or '?'} MB "
            f"(process peak {m.get('max_rss_mb', '?')} MB)"
            + (f", device peak {m['device_peak_mb']} MB" if m.get("device_peak_mb") else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlcache_lab.bench.training_trace",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--model", default="transformer")
    parser.add_argument(
        "--config",
        default='{"layers": 2, "seq": 32, "width": 64, "vocab": 256, "num_heads": 4}',
        help="the model's factory arguments, as JSON",
    )
    parser.add_argument("--calls", type=int, default=32)
    parser.add_argument("--min-batch", type=int, default=8)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--micro-batch", type=int, action="append", default=None)
    parser.add_argument("--steady-batch", type=int, default=256)
    parser.add_argument("--steady-repeats", type=int, default=15)
    parser.add_argument("--memory-calls", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny run (tests)")
    parser.add_argument("--out", default="data/training_trace.csv")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        parser.error(f"--config must be JSON, e.g. '{{\"layers\": 2}}'. Got {args.config!r}: {err}")
    micro = args.micro_batch or [32]
    if args.memory_child:
        print(
            json.dumps(
                _memory_child(
                    args.model, config, args.memory_child, args.steady_batch, args.memory_calls
                )
            )
        )
        return 0
    if args.quick:
        args.calls, args.max_batch, args.steady_batch, args.steady_repeats = 4, 24, 16, 3
        micro = [8]
    command = "python -m mlcache_lab.bench.training_trace " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    sizes = training_trace(args.calls, args.min_batch, args.max_batch, args.seed)
    print(f"trace of {len(sizes)} calls, {len(set(sizes))} sizes: {sizes}", flush=True)
    trace = run_trace(args.model, config, sizes, micro)
    steady = steady_state(args.model, config, args.steady_batch, micro, args.steady_repeats)
    memory = peak_memory(args.model, config, args.steady_batch, micro, args.memory_calls)
    for s in steady:
        s.update(next(m for m in memory if m["variant"] == s["variant"]))
    out = Path(args.out)

    write_csv(out, trace, command.strip())
    write_csv(
        out.with_name(out.stem.replace("trace", "steady") + out.suffix), steady, command.strip()
    )
    print(summarize(trace, steady, memory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
