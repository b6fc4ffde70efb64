"""mlcache_lab: multi-level cached compilation and batch-level graph partitioning for JAX.

The public surface is re-exported here explicitly; everything else is private.
"""

from . import models as models
from . import viz as viz
from .cache import CacheStore as CacheStore
from .cache import CacheWarning as CacheWarning
from .partition import Cluster as Cluster
from .partition import ClusterGraph as ClusterGraph
from .partition import partition as partition
from .schedule import BatchedFunction as BatchedFunction
from .schedule import Plan as Plan
from .schedule import Timeline as Timeline
from .schedule import batched_jit as batched_jit
from .schedule import schedule as schedule
from .stages import CachedFunction as CachedFunction
from .stages import StageReport as StageReport
from .stages import cached_jit as cached_jit

__version__ = "0.1.0"
