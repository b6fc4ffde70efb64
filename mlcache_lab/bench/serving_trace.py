"""Serving trace: many calls at varying batch sizes, every way of running them, side by side.

The trace: ``--calls`` (64) batch sizes drawn log-uniformly from 1..``--max-batch``
(512) with ``numpy.random.default_rng(--seed)`` (2026), on the built-in
transformer (12 layers, sequence 64, width 256). In one process, one after
the other, each variant serves the whole trace from a cold start:

* ``jax.jit``: plain, recompiles for every new batch size;
* ``jax.jit+pad2``: inputs padded to the next power of two (one compile per power);
* ``jax.export``: exported once with a symbolic batch, called at each size
  (compiles per new size from the exported StableHLO);
* mlcache_lab ``batched_jit`` with ``chunk`` / ``buckets`` policies (several
  ``micro_batch``/largest-bucket sizes), each with its own empty store;
* ``floor``: a warm monolithic executable for every size, compilation
  excluded: the compute a perfect cache could not avoid.

Each variant records total seconds, XLA compilations and rows computed. A
steady-state comparison at batch 64 (medians of ``--steady-repeats`` calls,
warm) gives time per sample of each policy against the monolithic jit.
Results: ``data/serving_trace.csv`` (one row per variant) and
``data/serving_steady.csv``; the summary says which policy wins and why.

Run: ``python -m mlcache_lab.bench.serving_trace`` (``--quick`` for a tiny model).
``mlcache-lab bench serving_trace`` runs the same measurement through
:func:`run` with :func:`settings` and draws it.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .fresh_process import write_csv

__all__ = [
    "DEFAULTS",
    "DEFAULT_POLICIES",
    "main",
    "run",
    "serving_trace",
    "settings",
    "write_results",
]

# The measurement's knobs: the command line's defaults, and what --quick shrinks.
DEFAULTS = {
    "layers": 12,
    "seq": 64,
    "width": 256,
    "calls": 64,
    "max_batch": 512,
    "seed": 2026,
    "steady_repeats": 15,
}
QUICK = {"layers": 1, "seq": 8, "width": 16, "calls": 8, "max_batch": 40, "steady_repeats": 3}
DEFAULT_POLICIES = [
    ("chunk-8", {"policy": "chunk", "micro_batch": 8}),
    ("chunk-16", {"policy": "chunk", "micro_batch": 16}),
    ("chunk-32", {"policy": "chunk", "micro_batch": 32}),
    ("buckets-16", {"policy": "buckets", "micro_batch": 16}),
    ("buckets-64", {"policy": "buckets", "micro_batch": 64}),
]


def settings(quick: bool = False) -> dict[str, int]:
    """The keyword arguments of :func:`run` (but ``policies``): the defaults, or ``--quick``'s."""
    return {**DEFAULTS, **(QUICK if quick else {})}


def serving_trace(calls: int = 64, max_batch: int = 512, seed: int = 2026) -> list[int]:
    """Batch sizes drawn log-uniformly from ``1..max_batch`` (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    draws = np.exp(rng.uniform(0.0, np.log(max_batch + 1), size=calls))
    return [int(min(max(1, np.floor(d)), max_batch)) for d in draws]


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _variants(
    model: Any, params: Any, policies: list[tuple[str, dict[str, Any]]]
) -> dict[str, Callable[[], Callable[[Any], tuple[Any, int]]]]:
    """name -> factory of a ``serve(tokens) -> (output, compilations)`` closure."""
    import jax
    import jax.numpy as jnp
    from jax import export

    import mlcache_lab as mcl

    def plain() -> Callable[[Any], tuple[Any, int]]:
        f, seen = jax.jit(model.apply), set()

        def serve(x: Any) -> tuple[Any, int]:
            new = x.shape[0] not in seen
            seen.add(x.shape[0])
            return f(params, x), int(new)

        return serve

    def padded() -> Callable[[Any], tuple[Any, int]]:
        f, seen = jax.jit(model.apply), set()

        def serve(x: Any) -> tuple[Any, int]:
            n = x.shape[0]
            size = _next_pow2(n)
            new = size not in seen
            seen.add(size)
            xp = jnp.concatenate([x, jnp.repeat(x[-1:], size - n, axis=0)]) if size > n else x
            return f(params, xp)[:n], int(new)

        return serve

    def exported() -> Callable[[Any], tuple[Any, int]]:
        (b,) = export.symbolic_shape("B")
        p_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
        exp = export.export(jax.jit(model.apply))(
            p_spec, jax.ShapeDtypeStruct((b, model.config["seq"]), jnp.int32)
        )
        f, seen = jax.jit(exp.call), set()

        def serve(x: Any) -> tuple[Any, int]:
            new = x.shape[0] not in seen
            seen.add(x.shape[0])
            return f(params, x), int(new)

        return serve

    def ours(kw: dict[str, Any]) -> Callable[[], Callable[[Any], tuple[Any, int]]]:
        def make() -> Callable[[Any], tuple[Any, int]]:
            bf = mcl.batched_jit(
                model.apply, batch_axes=(None, 0), store=mcl.CacheStore(None), **kw
            )

            def serve(x: Any) -> tuple[Any, int]:
                out = bf(params, x)
                return out, bf.last_timeline.compile_count()

            serve.stats = bf.stats  # type: ignore[attr-defined]
            return serve

        return make

    out: dict[str, Callable[[], Callable[[Any], tuple[Any, int]]]] = {
        "jax.jit": plain,
        "jax.jit+pad2": padded,
        "jax.export": exported,
    }
    for name, kw in policies:
        out[name] = ours(kw)
    return out


def run(
    layers: int,
    seq: int,
    width: int,
    calls: int,
    max_batch: int,
    seed: int,
    steady_repeats: int,
    policies: list[tuple[str, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Serve the trace with every variant from a cold start, then the steady state.

    Returns:
      One row per variant of the trace (seconds, compilations, padded rows), and
      one row per variant of the steady state at batch 64.
    """
    import jax

    from mlcache_lab.models import get_model

    model = get_model("transformer", layers=layers, seq=seq, width=width)
    params = model.init(jax.random.key(0))
    sizes = serving_trace(calls, max_batch, seed)
    inputs = {n: model.make_inputs(n, jax.random.key(n))[0] for n in sorted(set(sizes))}
    rows_total = sum(sizes)
    results = []
    variants = _variants(model, params, policies)
    reference: dict[int, Any] = {}
    for name, make in variants.items():
        serve = make()
        compiles = 0
        t0 = time.perf_counter()
        for n in sizes:
            out, c = serve(inputs[n])
            jax.block_until_ready(out)
            compiles += c
            if n not in reference:
                reference[n] = np.asarray(out)
            elif name.startswith(("chunk", "buckets")) and n == sizes[0]:
                np.testing.assert_allclose(np.asarray(out), reference[n], rtol=2e-3, atol=2e-3)
        total = time.perf_counter() - t0
        stats = getattr(serve, "stats", None)
        padded = stats()["padded_rows"] if stats else 0
        if name == "jax.jit+pad2":
            padded = sum(_next_pow2(n) - n for n in sizes)
        results.append(
            {
                "variant": name,
                "seconds": round(total, 3),
                "compilations": compiles,
                "calls": calls,
                "distinct_sizes": len(set(sizes)),
                "samples": rows_total,
                "padded_rows": padded,
            }
        )
        print(f"  {name:<16} {total:8.2f} s  {compiles:3d} compilations", flush=True)
    # The floor: warm executables per size, compilation excluded.
    compiled = {n: jax.jit(model.apply).lower(params, inputs[n]).compile() for n in inputs}
    for n in inputs:
        jax.block_until_ready(compiled[n](params, inputs[n]))
    t0 = time.perf_counter()
    for n in sizes:
        jax.block_until_ready(compiled[n](params, inputs[n]))
    floor = time.perf_counter() - t0
    results.append(
        {
            "variant": "floor",
            "seconds": round(floor, 3),
            "compilations": 0,
            "calls": calls,
            "distinct_sizes": len(set(sizes)),
            "samples": rows_total,
            "padded_rows": 0,
        }
    )
    print(f"  {'floor':<16} {floor:8.2f} s", flush=True)
    steady = _steady(model, params, policies, steady_repeats)
    return results, steady


def _steady(
    model: Any,
    params: Any,
    policies: list[tuple[str, dict[str, Any]]],
    repeats: int,
    batch: int = 64,
) -> list[dict[str, Any]]:
    import jax

    import mlcache_lab as mcl

    (x,) = model.make_inputs(batch, jax.random.key(7))
    fns: dict[str, Callable[[], Any]] = {}
    mono = jax.jit(model.apply)
    fns["jax.jit"] = lambda: mono(params, x)
    for name, kw in policies:
        bf = mcl.batched_jit(model.apply, batch_axes=(None, 0), store=mcl.CacheStore(None), **kw)
        fns[name] = functools.partial(bf, params, x)
    samples = alternating_samples(fns, repeats)
    base = statistics.median(samples["jax.jit"])
    return [
        {
            "variant": k,
            "batch": batch,
            "median_seconds": round(statistics.median(v), 5),
            "per_sample_ms": round(statistics.median(v) / batch * 1e3, 4),
            "ratio_to_jit": round(statistics.median(v) / base, 3),
        }
        for k, v in samples.items()
    ]


def summarize(results: list[dict[str, Any]], steady: list[dict[str, Any]]) -> str:
    by = {r["variant"]: r for r in results}
    plain, floor = by["jax.jit"]["seconds"], by["floor"]["seconds"]
    ours = [r for r in results if r["variant"].startswith(("chunk", "buckets"))]
    best = min(ours, key=lambda r: r["seconds"])
    lines = [f"{'variant':<16} {'seconds':>8} {'x jax.jit':>9} {'x floor':>8} {'compiles':>8}"]
    for r in results:
        lines.append(
            f"{r['variant']:<16} {r['seconds']:8.2f} {r['seconds'] / plain:9.3f} "
            f"{r['seconds'] / floor:8.3f} {r['compilations']:8d}"
        )
    lines.append(
        f"best policy: {best['variant']} at {best['seconds']:.2f} s = "
        f"{best['seconds'] / plain:.3f} x jax.jit (target <= 0.5) and "
        f"{best['seconds'] / floor:.3f} x the floor (target <= 1.15), with "
        f"{best['compilations']} compilations against {by['jax.jit']['compilations']}."
    )
    per_compile = (plain - floor) / max(by["jax.jit"]["compilations"], 1)
    lines.append(
        f"why: an XLA compilation costs about {per_compile:.2f} s here (plain jax.jit minus "
        f"the floor, per compilation); {best['variant']} paid {best['compilations']} of them "
        f"and padded {best['padded_rows']} of {best['samples']} rows. Per variant:"
    )
    for r in sorted(ours, key=lambda r: r["seconds"]):
        lines.append(
            f"  {r['variant']:<12} {r['compilations']:3d} compilations "
            f"(~{r['compilations'] * per_compile:5.1f} s), {r['padded_rows']:5d} padded rows "
            f"({r['padded_rows'] / r['samples']:.0%} extra compute)"
        )
    lines.append("steady state at batch 64 (warm, medians):")
    for s in steady:
        lines.append(
            f"  {s['variant']:<16} {s['per_sample_ms']:8.3f} ms/sample  "
            f"{s['ratio_to_jit']:.3f} x jax.jit (target <= 1.05)"
        )
    return "\n".join(lines)


def write_results(
    out: Path, results: list[dict[str, Any]], steady: list[dict[str, Any]], command: str
) -> list[Path]:
    """:func:`run`'s rows as ``out`` (the trace) and ``*_steady`` beside it; both paths."""
    steady_path = out.with_name(out.stem.replace("trace", "steady") + out.suffix)
    if steady_path == out:  # a name without "trace" in it
        steady_path = out.with_name(f"{out.stem}_steady{out.suffix}")
    write_csv(out, results, command)
    write_csv(steady_path, steady, command)
    return [out, steady_path]


def alternating_samples(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` calls of each warm variant, taken in turn.

    Each variant is called twice first (compile, then the first execution's
    setup); the rounds then alternate, so drift hits every variant alike.
    """
    import jax

    for f in fns.values():
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(f())
            samples[k].append(time.perf_counter() - t)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcache_lab.bench.serving_trace", description=__doc__.split("\n\n")[0]
    )
    for name, value in DEFAULTS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=value)
    parser.add_argument("--quick", action="store_true", help="a tiny model and trace (tests)")
    parser.add_argument("--out", default="data/serving_trace.csv")
    args = parser.parse_args(argv)
    knobs = {name: getattr(args, name) for name in DEFAULTS}
    if args.quick:
        knobs.update(QUICK)
    command = "python -m mlcache_lab.bench.serving_trace " + " ".join(argv or sys.argv[1:])
    results, steady = run(**knobs, policies=DEFAULT_POLICIES)
    out = Path(args.out)
    write_results(out, results, steady, command.strip())
    print(summarize(results, steady))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
