"""What the multi-process cache tests run in fresh Python processes.

``python child_process.py <task> <json args>``; the last stdout line is JSON.
Every warning is an error here: a child that warns fails its test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

FUNCTIONS_MODULE = """\
import jax.numpy as jnp


def shared(w, x):
    return jnp.tanh(x @ w) * 3


def f0(w, x):
    return jnp.sin(x @ w) + 0


def f1(w, x):
    return jnp.cos(x @ w) + 1


def f2(w, x):
    return jnp.exp(x @ w * 0.1) + 2


def f3(w, x):
    return (x @ w) ** 2 + 3
"""


def write_functions(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cache_test_functions.py").write_text(FUNCTIONS_MODULE)
    return folder


def spawn(task: str, args: dict[str, Any], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a child; its environment is this one's plus ``env``."""
    full = dict(os.environ)
    full.update(env or {})
    full["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), args.get("functions", ""), full.get("PYTHONPATH", "")]
    )
    return subprocess.Popen(
        [sys.executable, "-W", "error", __file__, task, json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )


def run(task: str, args: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = spawn(task, args, env)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{task} child failed ({proc.returncode}):\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ------------------------------------------------------------------- tasks
def writer(args: dict[str, Any]) -> None:
    """Write a small entry, say so, then rewrite the same key with huge ones forever."""
    import mlcache_lab as mcl

    store = mcl.CacheStore(args["store"])
    store.write("compile", args["key"], b"small and whole", {"n": 0})
    print("ready", flush=True)
    big = bytes(args["size"])
    while True:
        store.write("compile", args["key"], big, {"n": 1})


def worker(args: dict[str, Any]) -> dict[str, Any]:
    """Wait for the go file, then call each named function; report results and digests."""
    import hashlib

    import cache_test_functions as functions
    import jax
    import numpy as np

    import mlcache_lab as mcl

    w = jax.numpy.eye(4) * 0.5
    x = jax.numpy.arange(8.0).reshape(2, 4) + args["index"] % 2
    Path(args["ready"]).write_text("")
    while not os.path.exists(args["go"]):
        time.sleep(0.01)
    report: dict[str, Any] = {}
    for name in args["names"]:
        fn = getattr(functions, name)
        f = mcl.cached_jit(fn, store=mcl.CacheStore(args["store"]))
        out = np.asarray(f(w, x))
        expected = np.asarray(jax.jit(fn)(w, x))
        arts = f.trace(w, x).lower()._arts  # memory hits: what this process used
        report[name] = {
            "max_abs_diff": float(np.max(np.abs(out - expected))),
            "statuses": f.last_report.statuses(),
            "trace": hashlib.sha256(arts["trace"].encoded).hexdigest(),
            "lower": hashlib.sha256(arts["lower"].serialized).hexdigest(),
        }
    return report


def skew(args: dict[str, Any]) -> dict[str, Any]:
    """Call one function under this process's settings (optionally a faked jaxlib version)."""
    if args.get("jaxlib_version"):
        import jaxlib

        jaxlib.__version__ = args["jaxlib_version"]  # as if another jaxlib were installed
    import cache_test_functions as functions
    import jax
    import numpy as np

    import mlcache_lab as mcl

    fn = getattr(functions, args["name"])
    w = jax.numpy.eye(4) * 0.5
    x = jax.numpy.arange(8.0).reshape(2, 4)
    f = mcl.cached_jit(fn, store=mcl.CacheStore(args["store"]))
    out = f(w, x)
    expected = jax.jit(fn)(w, x)
    assert f.last_report is not None
    return {
        "statuses": f.last_report.statuses(),
        "reasons": {lvl: f.last_report.reason(lvl) for lvl in ("trace", "lower", "compile")},
        "keys": {lvl: f.last_report.levels[lvl].key for lvl in ("trace", "lower", "compile")},
        "dtype": str(out.dtype),
        "expected_dtype": str(expected.dtype),
        "max_abs_diff": float(np.max(np.abs(np.asarray(out) - np.asarray(expected)))),
        "devices": jax.device_count(),
    }


if __name__ == "__main__":
    task, payload = sys.argv[1], json.loads(sys.argv[2])
    result = {"writer": writer, "worker": worker, "skew": skew}[task](payload)
    print(json.dumps(result), flush=True)
