"""mlcache_lab: multi-level cached compilation and batch-level graph partitioning for JAX.

The public surface is re-exported here explicitly; everything else is private.
"""

from . import models as models

__version__ = "0.1.0"
