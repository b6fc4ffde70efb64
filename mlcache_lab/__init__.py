"""mlcache_lab: multi-level cached compilation and batch-level graph partitioning for JAX.

The public surface is re-exported here explicitly; everything else is private.
"""

from . import models as models
from .cache import CacheStore as CacheStore
from .cache import CacheWarning as CacheWarning
from .partition import Cluster as Cluster
from .partition import ClusterGraph as ClusterGraph
from .partition import partition as partition
from .stages import CachedFunction as CachedFunction
from .stages import StageReport as StageReport
from .stages import cached_jit as cached_jit

__version__ = "0.1.0"
