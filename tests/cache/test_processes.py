"""Several processes on one store: a writer killed mid-write, eight processes at once."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from child_process import run, spawn, write_functions
from entry_tools import stray_files

import mlcache_lab as mcl

KEY = "ab" * 16


def test_a_writer_killed_mid_write_leaves_no_half_entry(tmp_path):
    root = tmp_path / "store"
    size = 300_000_000  # big enough that the write takes a while
    proc = spawn("writer", {"store": str(root), "key": KEY, "size": size})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        item = root / "compile" / "content" / KEY
        deadline = time.monotonic() + 120
        partial = None
        while partial is None and time.monotonic() < deadline:
            for tmp in item.glob("output.pkl.*.tmp"):
                try:
                    written = tmp.stat().st_size
                except FileNotFoundError:  # renamed into place meanwhile
                    continue
                if 0 < written < size:
                    partial = written
                    proc.send_signal(signal.SIGKILL)
                    break
        assert partial is not None, "never saw the big write in progress"
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    leftovers = list(item.glob("output.pkl.*.tmp"))
    assert leftovers and all(p.stat().st_size < size for p in leftovers)  # killed midway
    store = mcl.CacheStore(root)
    found = store.lookup_content("compile", KEY)
    assert found.status == "disk", found.reason  # the last whole entry, never the half one
    assert found.payload in (b"small and whole", bytes(size))
    assert store.verify() == []
    store.write("compile", KEY, b"after the crash", {})
    assert mcl.CacheStore(root).read_payload("compile", KEY) == b"after the crash"


@pytest.mark.slow
def test_eight_processes_at_once_on_one_store(tmp_path):
    root = tmp_path / "store"
    functions = str(write_functions(tmp_path / "functions"))
    go = tmp_path / "go"
    procs = []
    for i in range(8):
        names = ["shared", f"f{i % 4}"] if i % 2 else [f"f{i % 4}", "shared"]
        args = {
            "store": str(root),
            "functions": functions,
            "names": names,
            "index": i,
            "ready": str(tmp_path / f"ready-{i}"),
            "go": str(go),
        }
        procs.append(spawn("worker", args))
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready-{i}").exists() for i in range(8)):
        assert time.monotonic() < deadline, "workers never got ready"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.write_text("")  # all eight start their calls together
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        assert "Warning" not in err and "Traceback" not in err, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))

    digests: dict[tuple[str, str], set[str]] = {}
    for report in reports:
        for name, r in report.items():
            assert r["max_abs_diff"] == 0.0, (name, r)  # every result correct
            for level in ("trace", "lower"):
                digests.setdefault((name, level), set()).add(r[level])
    # Every process that made or loaded an artifact has the same bytes: written identically.
    assert all(len(d) == 1 for d in digests.values()), digests
    assert mcl.CacheStore(root).verify() == []  # no torn entries
    assert stray_files(root) == []
    # And what they left is whole and usable from a fresh process.
    for name in ("shared", "f0", "f1", "f2", "f3"):
        again = run("skew", {"store": str(root), "functions": functions, "name": name})
        assert again["statuses"]["compile"] == "disk" and again["max_abs_diff"] == 0.0
    assert os.listdir(root)
