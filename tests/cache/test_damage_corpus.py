"""120 damaged entries: each is a miss with its reason, then regenerated; never a wrong result.

Cases are generated from seeds: a damage kind, a level, and where and how
much to damage. Byte-level damage (truncation, random bytes, bit flips,
scribbles, appended bytes, another key, the old unsigned format) must be
*refused* before anything is parsed, with one warning; damage that a writer
holding the key could make (an entry of another jax build or entry format, an
entry moved to another key, a jaxpr of another codec version, an executable
for another device, an artifact cut short) must be caught by the header or
the codec.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from entry_tools import (
    EXPECTED,
    assert_regenerated,
    entries,
    fresh_call,
    other_model,
    read_entry,
    warm,
    write_entry,
)

import mlcache_lab as mcl

LEVELS = ("trace", "lower", "compile")
REFUSED = r"refused: "

# kind -> (expected reason, refused before parsing?)
KINDS: dict[str, tuple[str, bool]] = {
    "truncate": (r"refused: (truncated|\d+ bytes, shorter|not a signed entry)", True),
    "random_bytes": (r"refused: not a signed entry", True),
    "bit_flip": (r"refused: (not a signed entry|truncated|extended|signature)", True),
    "scribble": (r"refused: (not a signed entry|truncated|extended|signature)", True),
    "append": (r"refused: extended", True),
    "other_key": (r"refused: signature does not verify", True),
    "unsigned_old_format": (r"refused: not a signed entry", True),
    "foreign_version": (r"written by 'jax=0\.4\.\d+;jaxlib=0\.4\.\d+', this is", False),
    "old_entry_format": (r"entry format 1, this build reads 2", False),
    "swapped": (r"entry belongs to another key", False),
    "foreign_artifact": (
        r"codec version \d+|could not be loaded|executable built for 'tpu",
        False,
    ),
    "artifact_cut_short": (r"could not be loaded", False),
}
CASES = [(kind, seed) for kind in KINDS for seed in range(10)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A warm store for ``model`` and one for ``other_model``, signed with one key."""
    root = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLCACHE_LAB_KEY_FILE", str(root / "hmac.key"))
        warm(root / "mine")
        warm(root / "theirs", other_model)
    return root


def damage(kind: str, rng: random.Random, level: str, file: Path, theirs: Path) -> None:
    data = file.read_bytes()
    header, payload, meta = read_entry(file)
    if kind == "truncate":
        file.write_bytes(data[: rng.randrange(len(data))])
    elif kind == "random_bytes":
        file.write_bytes(rng.randbytes(len(data)))
    elif kind == "bit_flip":
        i = rng.randrange(len(data))
        file.write_bytes(data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :])
    elif kind == "scribble":
        i = rng.randrange(len(data))
        span = bytes(b ^ rng.randrange(1, 256) for b in data[i : i + rng.randrange(1, 64)])
        file.write_bytes(data[:i] + span + data[i + len(span) :])
    elif kind == "append":
        file.write_bytes(data + rng.randbytes(rng.randrange(1, 64)))
    elif kind == "other_key":
        write_entry(file, header, payload, meta, key=rng.randbytes(32))
    elif kind == "unsigned_old_format":  # what the store wrote before entries were signed
        old = {"format": 1, "level": level, "kind": "content", "key": header["key"]}
        joblib.dump({**old, "versions": header["versions"], "payload": payload}, file)
    elif kind == "foreign_version":
        minor = rng.randrange(10, 40)
        write_entry(
            file, {**header, "versions": f"jax=0.4.{minor};jaxlib=0.4.{minor}"}, payload, meta
        )
    elif kind == "old_entry_format":
        write_entry(file, {**header, "format": 1}, payload, meta)
    elif kind == "swapped":
        (other,) = entries(theirs, level)
        file.write_bytes(other.read_bytes())
    elif kind == "foreign_artifact":
        if level == "trace":  # a jaxpr written by a codec version we do not read
            version = rng.choice([0, *range(2, 256)])
            write_entry(file, header, payload[:4] + bytes([version]) + payload[5:], meta)
        elif level == "lower":  # not a jax.export serialization
            write_entry(file, header, rng.randbytes(len(payload)), meta)
        else:  # an executable for another device
            info = pickle.loads(meta)
            info["runtime"] = f"tpu 0.{rng.randrange(9)}; TPU v{rng.randrange(2, 6)} x8"
            write_entry(file, header, payload, pickle.dumps(info))
    elif kind == "artifact_cut_short":
        write_entry(file, header, payload[: rng.randrange(len(payload))], meta)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "seed"), CASES, ids=[f"{k}-{s}" for k, s in CASES])
def test_damaged_entry_is_a_reported_miss_then_regenerated(
    pristine, tmp_path, key_file, kind, seed
):
    rng = random.Random(f"{kind}-{seed}")
    level = LEVELS[seed % 3]
    path = tmp_path / "store"
    shutil.copytree(pristine / "mine", path)
    key_file.parent.mkdir(parents=True)
    shutil.copy2(pristine / "hmac.key", key_file)
    (file,) = entries(path, level)
    damage(kind, rng, level, file, pristine / "theirs")
    for deeper in LEVELS[LEVELS.index(level) + 1 :]:  # the damaged level must be read
        for entry in entries(path, deeper):
            entry.unlink()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, report = fresh_call(path)
    np.testing.assert_array_equal(out, EXPECTED)  # never a wrong result
    assert report.status(level) == "miss", report
    reason, refused = KINDS[kind]
    assert re.search(reason, report.reason(level)), report.reason(level)
    assert "regenerating" in report.reason(level)
    messages = [str(w.message) for w in caught]
    if refused:
        assert len(messages) == 1 and "refused an entry" in messages[0], messages
    else:
        assert messages == []
    assert_regenerated(path, report, level)
    assert not [d for d in mcl.CacheStore(path).verify() if d.level == level]
