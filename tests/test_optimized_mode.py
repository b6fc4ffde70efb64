"""Under ``python -O`` (asserts stripped) every check mlcache_lab relies on still runs.

One fresh process with ``-O`` runs a small cached_jit / partition / batched_jit
workload and checks what the former ``assert`` statements guarded: the AOT
stages hand out their own artifacts, user errors are the documented
exceptions, the cluster queue is a topological order, a batching rule on a
right-hand or index operand labels it, and a batched call records its timeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    import mlcache_lab as mcl

    out = {"debug": __debug__}
    store = mcl.CacheStore(sys.argv[1])

    # cached_jit and its stages (aot.py's artifacts were narrowed by asserts)
    def mlp(w, x):
        return jnp.tanh(x @ w).sum(axis=1)

    w, x = jnp.ones((3, 4)), jnp.arange(15.0).reshape(5, 3) / 10
    f = mcl.cached_jit(mlp, store=store, batch_axes=(None, 0))
    out["cached_close"] = bool(np.allclose(f(w, x), jax.jit(mlp)(w, x)))
    traced = f.trace(w, x)
    out["jaxpr_eqns"] = len(traced.jaxpr.jaxpr.eqns)
    lowered = traced.lower()
    out["exported"] = type(lowered.exported).__name__
    compiled = lowered.compile()
    out["compiled_close"] = bool(np.allclose(compiled(w, x), mlp(w, x)))
    errors = {}
    for name, call in [
        ("device_assignment", lambda: lowered.compile(device_assignment=[0])),
        ("lowering_platforms", lambda: traced.lower(lowering_platforms="cpu")),
        ("pytree", lambda: compiled((w, x))),
    ]:
        try:
            call()
            errors[name] = None
        except Exception as err:
            errors[name] = [type(err).__name__, str(err)]
    out["errors"] = errors

    # partition: the dot_general rule on a batched right operand, the gather rule
    # on batched indices, and the queue (its cycle check was an assert)
    def model(params, ids, x):
        emb = jnp.take(params["table"], ids, axis=0)  # indices batched, table not
        h = (params["w"] @ x.T).T  # the right operand batched
        return (emb + h).sum(axis=1)

    params = {"table": jnp.arange(12.0).reshape(6, 2), "w": jnp.ones((2, 3))}
    ids, xb = jnp.array([0, 5, 2, 1, 3]), jnp.arange(15.0).reshape(5, 3)
    g = mcl.partition(model, params, ids, xb, batch_axes=(None, 0, 0))
    out["queue_is_topological"] = all(
        g.queue.index(a) < g.queue.index(b) for a, b in g.dependencies
    ) and sorted(g.queue) == list(range(len(g.clusters)))
    out["labels"] = {
        e.primitive.name: [lab.kind, list(lab.out_batch_axes)]
        for e, lab in zip(g.jaxpr.jaxpr.eqns, g.labels)
        if e.primitive.name in ("gather", "dot_general")
    }

    # batched_jit: its timeline check was an assert
    bf = mcl.batched_jit(model, batch_axes=(None, 0, 0), policy="chunk", micro_batch=2,
                         store=store)
    out["batched_close"] = bool(np.allclose(bf(params, ids, xb), model(params, ids, xb)))
    out["timeline"] = bf.last_plan is not None and bf.last_plan.timeline is not None
    out["stats_calls"] = bf.stats()["calls"]
    print("RESULT " + json.dumps(out))
    """
)


def test_checks_survive_python_dash_O(tmp_path, fresh_key_file):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-O", "-c", CHILD, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["debug"] is False  # asserts really are stripped in the child
    assert out["cached_close"] and out["compiled_close"]
    assert out["jaxpr_eqns"] > 0 and out["exported"] == "Exported"
    errors = out["errors"]
    assert errors["device_assignment"][0] == "ValueError"
    assert "use cached_jit(fn, device=...)" in errors["device_assignment"][1]
    assert errors["lowering_platforms"][0] == "TypeError"
    assert "write ('cpu',)" in errors["lowering_platforms"][1]
    assert errors["pytree"][0] == "TypeError"
    assert "does not match the input pytree" in errors["pytree"][1]
    assert out["queue_is_topological"]
    # The gather rule with only its indices batched, the dot rule with only its right operand.
    assert out["labels"] == {"gather": ["batched", [0]], "dot_general": ["batched", [1]]}
    assert out["batched_close"] and out["timeline"] and out["stats_calls"] == 1
