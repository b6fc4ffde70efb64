"""Cache-level settings of an ablation: which levels the store caches, and JAX's own cache.

``CACHE_LEVELS`` maps each setting to the ``levels`` of a
:class:`~mlcache_lab.CacheStore`. ``compile_only`` is the baseline of JAX's
persistent compilation cache (every process traces and lowers, then finds the
executable by the content of its StableHLO); :data:`JAX_PERSISTENT` runs the
same call with ``jax.jit`` and JAX's cache itself, so the two can be compared
in one study.
"""

from __future__ import annotations

from types import MappingProxyType

from ..cache.store import LEVELS

__all__ = ["ALL_SETTINGS", "CACHE_LEVELS", "JAX_PERSISTENT", "check_setting"]

CACHE_LEVELS = MappingProxyType(
    {
        "none": (),
        "compile_only": ("compile",),
        "lower_compile": ("lower", "compile"),
        "all": LEVELS,
    }
)
JAX_PERSISTENT = "jax_persistent"
ALL_SETTINGS = (*CACHE_LEVELS, JAX_PERSISTENT)


def check_setting(name: object) -> str:
    """``name`` if it is a cache-level setting, else a ValueError naming the valid ones."""
    if name not in ALL_SETTINGS:
        raise ValueError(
            f"Valid options for 'cache_levels' are {list(ALL_SETTINGS)}. Got {name!r} instead "
            "('jax_persistent' is jax.jit with JAX's own persistent compilation cache)."
        )
    return str(name)
