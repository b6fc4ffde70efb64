"""The devices policy: chunks spread over several (CPU) devices, in a fresh process."""

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
    m = get_model("transformer", vocab=32, seq=8, width=16, layers=2, num_heads=2)
    params = m.init(jax.random.key(0))
    g = mcl.partition(m.apply, params, *m.make_inputs(4, jax.random.key(1)), batch_axes=(None, 0))
    store = mcl.CacheStore(None)
    report = []
    for batch in (37, 20, 3):
        (x,) = m.make_inputs(batch, jax.random.key(batch))
        plan = schedule(g, batch, "devices", micro_batch=8, store=store)
        out = plan.run(params, x)
        split = [e for e in plan.timeline.executions if e.mode == "split"]
        report.append({
            "batch": batch,
            "close": bool(np.allclose(out, m.apply(params, x), rtol=2e-4, atol=2e-4)),
            "devices": sorted({e.device for e in split}),
            "compiled": plan.timeline.compile_count(),
            "out_device": str(list(out.devices())[0]),
        })
    print(json.dumps(report))
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
    first, second, third = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(r["close"] for r in (first, second, third))
    assert first["devices"] == [0, 1, 2, 3]  # 5 chunks of 8 over 4 devices
    assert second["devices"] == [0, 1, 2]  # 3 chunks
    assert first["compiled"] >= 4  # one executable per device for the split segment
    assert second["compiled"] == 0 and third["compiled"] == 0  # same chunk size, same devices
    assert first["out_device"] == "TFRT_CPU_0" or first["out_device"].endswith("0")
