"""The devices policy: chunks spread over several (CPU) devices, in a fresh process.

Both on the scanned transformer and on the looped one, whose layers are blocks sharing one
program: their activations pass from block to block on the device that made them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    import mlcache_lab as mcl
    from mlcache_lab.schedule import schedule
    from mlcache_lab.models import get_model

    assert len(jax.devices()) == 4, jax.devices()
    reports = {}
    for scan in (True, False):  # layers under lax.scan, and in a loop (blocks sharing a program)
        m = get_model(
            "transformer", vocab=32, seq=8, width=16, layers=2 if scan else 3, num_heads=2,
            scan=scan,
        )
        params = m.init(jax.random.key(0))
        inputs = m.make_inputs(4, jax.random.key(1))
        g = mcl.partition(m.apply, params, *inputs, batch_axes=(None, 0))
        store = mcl.CacheStore(None)
        report = []
        for batch in (37, 20, 3):
            (x,) = m.make_inputs(batch, jax.random.key(batch))
            plan = schedule(g, batch, "devices", micro_batch=8, store=store)
            out = plan.run(params, x)
            expected = jax.jit(m.apply)(params, x)
            split = [e for e in plan.timeline.executions if e.mode == "split"]
            pieces = [s for s in plan.segments if s.mode == "split"]
            report.append({
                "batch": batch,
                "close": bool(np.allclose(out, expected, rtol=2e-4, atol=2e-4)),
                "varies": float(np.std(np.asarray(expected)[:, 0, 0])),
                "devices": sorted({e.device for e in split}),
                "compiled": plan.timeline.compile_count(),
                "out_device": str(list(out.devices())[0]),
                "pieces": len(pieces),
                "programs": len({id(s.program) for s in pieces}),
            })
        reports["scan" if scan else "loop"] = report
    print(json.dumps(reports))
    """
)


@pytest.mark.slow
def test_devices_policy_spreads_chunks_and_matches():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = json.loads(proc.stdout.strip().splitlines()[-1])
    for model, (first, second, third) in reports.items():
        assert all(r["close"] and r["varies"] > 1e-4 for r in (first, second, third)), model
        assert first["devices"] == [0, 1, 2, 3]  # 5 chunks of 8 over 4 devices
        assert second["devices"] == [0, 1, 2]  # 3 chunks
        assert first["compiled"] >= 4  # one executable per device for the split segment
        assert second["compiled"] == 0 and third["compiled"] == 0  # same sizes, same devices
        assert first["out_device"] == "TFRT_CPU_0" or first["out_device"].endswith("0")
    loop = reports["loop"][0]
    assert loop["pieces"] >= 3 and loop["programs"] <= loop["pieces"] - 2  # 3 blocks, 1 program
