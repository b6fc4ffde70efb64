"""Signed entries and the key file: nothing unverified is ever unpickled."""

from __future__ import annotations

import os
import pickle
import stat
import subprocess
import sys
import warnings

import numpy as np
import pytest
from entry_tools import ARGS, EXPECTED, assert_regenerated, entries, fresh_call, warm
from hypothesis import given, settings
from hypothesis import strategies as st

import mlcache_lab as mcl
from mlcache_lab.cache.signing import (
    FRAME_BYTES,
    MAGIC,
    EntryRejected,
    load_or_create_key,
    seal,
    unseal,
)

KEY = bytes(range(32))


@given(body=st.binary(max_size=200))
def test_seal_then_unseal_gives_the_body(body):
    assert bytes(unseal(KEY, seal(KEY, body))) == body


@settings(max_examples=200)
@given(body=st.binary(min_size=1, max_size=64), data=st.data())
def test_any_change_to_a_sealed_entry_is_rejected(body, data):
    sealed = seal(KEY, body)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "other_key"]))
    if kind == "flip":
        i = data.draw(st.integers(0, len(sealed) - 1))
        bit = data.draw(st.integers(0, 7))
        damaged = sealed[:i] + bytes([sealed[i] ^ (1 << bit)]) + sealed[i + 1 :]
        key = KEY
    elif kind == "truncate":
        damaged, key = sealed[: data.draw(st.integers(0, len(sealed) - 1))], KEY
    elif kind == "extend":
        damaged, key = sealed + data.draw(st.binary(min_size=1, max_size=8)), KEY
    else:
        damaged, key = sealed, bytes(31) + b"\x01"
    with pytest.raises(EntryRejected):
        unseal(key, damaged)


def test_rejection_reasons_name_the_problem():
    sealed = seal(KEY, b"body")
    with pytest.raises(EntryRejected, match="shorter than the 48-byte frame"):
        unseal(KEY, sealed[:10])
    with pytest.raises(EntryRejected, match="not a signed entry"):
        unseal(KEY, pickle.dumps({"a": 1}) + bytes(FRAME_BYTES))
    with pytest.raises(EntryRejected, match="truncated: 2 body bytes, the frame says 4"):
        unseal(KEY, sealed[:-2])
    with pytest.raises(EntryRejected, match="extended"):
        unseal(KEY, sealed + b"x")
    with pytest.raises(EntryRejected, match="signature does not verify"):
        unseal(b"k" * 32, sealed)
    assert bytes(unseal(b"k" * 32, sealed, verify=False)) == b"body"  # the unsafe switch


# ------------------------------------------------------------------ tampering
class _Payload:
    """A pickle that, when loaded, writes a marker file: code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("frame", ["joblib_pickle", "forged_signature", "raw_pickle"])
def test_a_planted_pickle_is_never_loaded(tmp_path, frame):
    path = tmp_path / "store"
    warm(path)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"format": 2, "payload": _Payload(str(marker))})
    planted = {
        "joblib_pickle": evil,  # the old, unsigned format
        "forged_signature": MAGIC
        + (len(evil) + 4).to_bytes(8, "little")
        + bytes(32)
        + b"\x00\x00\x00\x00"
        + evil,
        "raw_pickle": evil + bytes(64),
    }[frame]
    for level in ("trace", "lower", "compile"):
        for kind in ("content", "chain", "explain"):
            for entry in entries(path, level, kind):
                entry.write_bytes(planted)
    with pytest.warns(mcl.CacheWarning, match="refused an entry") as caught:
        out, report = fresh_call(path)
    assert len(caught) == 1  # one warning, however many entries were refused
    assert not marker.exists()
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "miss" and "refused" in report.reason("compile")
    for level in ("trace", "lower", "compile"):
        assert_regenerated(path, report, level)


def test_entries_signed_with_another_key_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "store"
    warm(path)
    monkeypatch.setenv("MLCACHE_LAB_KEY_FILE", str(tmp_path / "other.key"))
    store = mcl.CacheStore(path)
    damaged = store.verify()
    assert damaged and all("signature does not verify" in d.reason for d in damaged)
    with pytest.warns(mcl.CacheWarning, match=r"signed with the key in .*other\.key"):
        out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "miss"


def test_verification_can_be_switched_off_only_loudly(tmp_path, monkeypatch):
    path = tmp_path / "store"
    warm(path)
    monkeypatch.setenv("MLCACHE_LAB_UNSAFE_SKIP_VERIFY", "1")
    with pytest.warns(mcl.CacheWarning, match="WITHOUT checking their signatures"):
        out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)
    assert report.status("compile") == "disk"


# ------------------------------------------------------------------- key file
def test_key_file_and_store_are_private(tmp_path, key_file):
    os.umask(0o022)
    store = mcl.CacheStore(tmp_path / "store")
    assert store.key_file == key_file.resolve()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700
    mcl.cached_jit(lambda w, x: x @ w, store=store)(*ARGS)
    for p in (tmp_path / "store").rglob("*"):
        if p.is_dir():
            assert stat.S_IMODE(p.stat().st_mode) == 0o700, p
        elif p.name == "output.pkl":
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    key = load_or_create_key(key_file)
    assert len(key) == 32 and key == load_or_create_key(key_file)


def test_processes_racing_to_create_the_key_agree(tmp_path):
    path = tmp_path / "race" / "hmac.key"
    code = (
        "import sys; from pathlib import Path; "
        "from mlcache_lab.cache.signing import load_or_create_key; "
        "print(load_or_create_key(Path(sys.argv[1])).hex())"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(keys) == 1 and bytes.fromhex(path.read_text().strip()).hex() in {
        k.decode() for k in keys
    }
    assert not [p for p in path.parent.iterdir() if p.name != "hmac.key"]  # no leftovers


def test_a_malformed_key_file_is_kept_and_the_store_runs_uncached(tmp_path, key_file):
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not hex")
    key_file.chmod(0o600)
    with pytest.warns(mcl.CacheWarning, match="does not hold a key"):
        store = mcl.CacheStore(tmp_path / "store")
    assert not store.on_disk
    assert key_file.read_text() == "not hex"
    f = mcl.cached_jit(lambda w, x: x @ w, store=store)
    np.testing.assert_allclose(f(*ARGS), np.asarray(ARGS[1]) @ np.asarray(ARGS[0]))


def test_a_readable_key_file_is_warned_about(tmp_path, key_file):
    load_or_create_key(key_file)
    key_file.chmod(0o644)
    with pytest.warns(mcl.CacheWarning, match="not private.*mode is 0644.*chmod 600"):
        mcl.CacheStore(tmp_path / "store")


def test_the_key_file_must_be_outside_the_store(tmp_path):
    with pytest.raises(ValueError, match="key file must be outside the store"):
        mcl.CacheStore(tmp_path / "store", key_file=tmp_path / "store" / "hmac.key")


def test_a_shared_store_needs_an_explicit_key(tmp_path, monkeypatch):
    monkeypatch.delenv("MLCACHE_LAB_KEY_FILE")
    with pytest.raises(ValueError, match="a shared store needs a key file"):
        mcl.CacheStore(tmp_path / "store", shared=True)
    with pytest.raises(TypeError, match="'shared' must be True or False"):
        mcl.CacheStore(tmp_path / "store", shared="yes")


def test_a_shared_store_is_group_accessible(tmp_path):
    team_key = tmp_path / "team" / "team.key"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store = mcl.CacheStore(tmp_path / "store", shared=True, key_file=team_key)
    assert stat.S_IMODE(team_key.stat().st_mode) == 0o640
    mcl.cached_jit(lambda w, x: x @ w + 2, store=store)(*ARGS)
    (entry,) = entries(tmp_path / "store", "compile")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o640
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o2770
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o2770
    # Another member of the group, with the same key, reads the entries.
    other = mcl.cached_jit(
        lambda w, x: x @ w + 2,
        store=mcl.CacheStore(tmp_path / "store", shared=True, key_file=team_key),
    )
    other(*ARGS)
    assert other.last_report.status("compile") == "disk"
