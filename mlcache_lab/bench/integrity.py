"""What the cache's integrity checks cost on a warm start: verified against unverified.

A store is warmed once with the built-in transformer; then fresh processes,
alternating (the order flips every round), each call ``cached_jit`` once:

* ``verified``: the normal path: every entry read is checked (frame, then
  HMAC-SHA256 over its bytes) before it is parsed;
* ``unverified``: the same with ``MLCACHE_LAB_UNSAFE_SKIP_VERIFY=1``, which
  skips the HMAC. That switch exists for this benchmark only: with it, a store
  anyone can write runs their code.

Each process reports ``ready`` (the call's resolution: look-ups, reads,
verification, loading the executable; ``StageReport.total_seconds``) and
``first_result`` (the first call until its result is ready), plus the bytes
of the entries it read and, measured in-process over those very files, the
HMAC time alone (``hmac_seconds``, median of 20). Results go to
``data/integrity.csv``; the summary prints medians and the overhead of
verification relative to the unverified run (the target: a few percent),
also as the median of per-round differences. Verification happens before
``ready``; what follows (the execution) is the same in both variants, so a
difference in ``first_result`` beyond the one in ``ready`` is noise.

Run: ``python -m mlcache_lab.bench.integrity [--layers 12] [--batch 8] [--repeats 15]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .fresh_process import bench_main, round_order, spawn_child, write_csv

MODULE = "mlcache_lab.bench.integrity"

__all__ = ["main", "run_benchmark", "summarize"]

VARIANTS = ("verified", "unverified")
_UNSAFE = "MLCACHE_LAB_UNSAFE_SKIP_VERIFY"
WARM = "bypassed/bypassed/disk"  # trace/lower/compile statuses of a warm start


def _child(variant: str, workdir: str, layers: int, batch: int) -> dict[str, Any]:
    import warnings

    import jax

    import mlcache_lab as mcl
    from mlcache_lab.cache.signing import default_key_file, load_or_create_key, unseal
    from mlcache_lab.models import get_model

    model = get_model("transformer", layers=layers)
    args = jax.block_until_ready(model.example_args(batch))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unsafe switch warns, as it must
        store = mcl.CacheStore(os.path.join(workdir, "store"))
    f = mcl.cached_jit(model.apply, store=store)
    t0 = time.perf_counter()
    out = jax.block_until_ready(f(*args))
    first_result = time.perf_counter() - t0
    assert f.last_report is not None
    result: dict[str, Any] = {
        "variant": variant,
        "ready": f.last_report.total_seconds,
        "first_result": first_result,
        "statuses": "/".join(f.last_report.statuses().values()),
        "checksum": float(jax.numpy.sum(jax.numpy.abs(jax.tree_util.tree_leaves(out)[0]))),
    }
    # The files a warm start reads: the compile chain pointer and the executable.
    assert store.path is not None
    read = [
        store.path / "compile" / "chain" / f.last_report.levels["compile"].key / "output.pkl",
        *store.path.glob("compile/content/*/output.pkl"),
    ]
    data = [p.read_bytes() for p in read]
    key = load_or_create_key(default_key_file())
    times = []
    for _ in range(20):
        t = time.perf_counter()
        for blob in data:
            unseal(key, blob)
        times.append(time.perf_counter() - t)
    result["entry_bytes"] = sum(len(d) for d in data)
    result["hmac_seconds"] = statistics.median(times)
    return result


def _spawn(variant: str, workdir: str, layers: int, batch: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop(_UNSAFE, None)
    if variant == "unverified":
        env[_UNSAFE] = "1"
    env["MLCACHE_LAB_KEY_FILE"] = os.path.join(workdir, "hmac.key")
    return spawn_child(MODULE, variant, workdir, layers, batch, env)


def run_benchmark(
    layers: int = 12, batch: int = 8, repeats: int = 15, out: Path | None = None
) -> list[dict[str, Any]]:
    """Warm a store, then ``repeats`` rounds of both variants (order alternating)."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlcache-integrity-") as workdir:
        _spawn("verified", workdir, layers, batch)  # warms the store
        for repeat in range(repeats):
            for variant in round_order(VARIANTS, repeat):
                row = _spawn(variant, workdir, layers, batch)
                row.update(repeat=repeat, layers=layers, batch=batch)
                rows.append(row)
    if out is not None:
        _write(rows, out, layers, batch, repeats)
    return rows


FIELDS = ["variant", "repeat", "layers", "batch", "ready", "first_result"]
FIELDS += ["entry_bytes", "hmac_seconds", "statuses", "checksum"]


def _write(rows: list[dict[str, Any]], out: Path, layers: int, batch: int, repeats: int) -> None:
    command = (
        f"python -m mlcache_lab.bench.integrity --layers {layers} "
        f"--batch {batch} --repeats {repeats}"
    )
    write_csv(out, rows, command, FIELDS)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Medians per variant and the overhead of verification (warm starts only)."""
    warm = [r for r in rows if r["statuses"] == WARM]
    med = {
        v: {
            k: statistics.median(float(r[k]) for r in warm if r["variant"] == v)
            for k in ("ready", "first_result", "hmac_seconds", "entry_bytes")
        }
        for v in VARIANTS
    }
    lines = [f"{'variant':<11} {'ready ms':>9} {'first result ms':>16}"]
    for v in VARIANTS:
        lines.append(f"{v:<11} {med[v]['ready'] * 1e3:9.2f} {med[v]['first_result'] * 1e3:16.2f}")
    on, off = med["verified"], med["unverified"]
    for metric in ("ready", "first_result"):
        extra = on[metric] - off[metric]
        # Paired by round: the two runs of a round ran back to back, under the same load.
        pairs = [
            float(a[metric]) - float(b[metric])
            for a in warm
            for b in warm
            if a["variant"] == "verified"
            and b["variant"] == "unverified"
            and int(a["repeat"]) == int(b["repeat"])
        ]
        paired = statistics.median(pairs) if pairs else float("nan")
        lines.append(
            f"{metric}: verified - unverified = {extra * 1e3:+.2f} ms "
            f"({extra / off[metric] * 100:+.1f}% of unverified; median of paired differences "
            f"{paired * 1e3:+.2f} ms = {paired / off[metric] * 100:+.1f}%)"
        )
    hmac_ms = on["hmac_seconds"] * 1e3
    lines.append(
        f"HMAC alone over the {on['entry_bytes'] / 1e3:.0f} kB a warm start reads: "
        f"{hmac_ms:.3f} ms ({on['hmac_seconds'] / off['ready'] * 100:.1f}% of ready, "
        f"{on['hmac_seconds'] / off['first_result'] * 100:.2f}% of first result)"
    )
    if len(warm) < len(rows):
        lines.append(
            f"left out: {len(rows) - len(warm)} run(s) that were not warm starts "
            f"(statuses {sorted({r['statuses'] for r in rows if r not in warm})})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return bench_main(
        argv,
        module=MODULE,
        doc=__doc__ or "",
        variants=VARIANTS,
        defaults={"layers": 12, "batch": 8, "repeats": 15, "out": "data/integrity.csv"},
        child=_child,
        run=run_benchmark,
        summarize=summarize,
    )


if __name__ == "__main__":
    sys.exit(main())
