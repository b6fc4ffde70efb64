"""One fresh process calling ``cached_jit`` on framework models against an on-disk store.

``python fresh_child.py <store> <model> [<model> ...]``; the last stdout line is
JSON: per model, the three levels' statuses and reasons, and a digest of the
output's bytes (the same executable on the same inputs gives the same bytes).
Every warning but the frameworks' deprecations is an error: a child that warns fails its test.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")


def main(store_path: str, names: list[str]) -> dict[str, Any]:
    import jax
    import numpy as np

    import mlcache_lab as mcl
    from mlcache_lab.models.frameworks import framework_model

    store = mcl.CacheStore(store_path)
    results: dict[str, Any] = {}
    for name in names:
        model = framework_model(name)
        args = model.example_args(4)
        f = mcl.cached_jit(model.apply, store=store)
        out = jax.block_until_ready(f(*args))
        report = f.last_report
        assert report is not None
        h = hashlib.blake2b(digest_size=16)
        for leaf in jax.tree_util.tree_leaves(out):
            h.update(np.ascontiguousarray(leaf).tobytes())
        results[name] = {
            "statuses": report.statuses(),
            "reasons": {lvl: report.reason(lvl) for lvl in ("trace", "lower", "compile")},
            "output": h.hexdigest(),
        }
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:])))
