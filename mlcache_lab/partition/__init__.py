"""Graph partitioning for batch-level parallelism.

``partition(fn, *example_args, batch_axes=...)`` traces ``fn``, inlines its
calls, propagates the batch axis of every value (one rule per primitive) and
groups the equations into batched clusters (each sample independent: the
cluster can run on any slice of the batch) and non-batched clusters (batch
invariant work, or work that mixes samples), with dependencies and an
execution queue.

The function is traced with a symbolic batch dimension ``B`` when it allows it
(``ClusterGraph.symbolic``): the graph and every cluster's jaxpr then hold for
every batch size. Otherwise it is traced at the example batch size,
``ClusterGraph.symbolic_reason`` says why, and ``ClusterGraph.at_batch_size(n)``
re-partitions it at another size.

A graph is data. It runs through the one executor, :mod:`mlcache_lab.schedule`:
``g.schedule(...)`` makes a plan, and ``g.run(*args)`` is the plan's reference
mode with every cluster on its own, in queue order.
"""

from .analysis import JaxprAnalysis as JaxprAnalysis
from .analysis import Label as Label
from .analysis import analyze as analyze
from .api import partition as partition
from .cluster import Cluster as Cluster
from .display import DisplayWarning as DisplayWarning
from .graph import ClusterGraph as ClusterGraph
from .inline import inline_calls as inline_calls

__all__ = [
    "Cluster",
    "ClusterGraph",
    "DisplayWarning",
    "JaxprAnalysis",
    "Label",
    "analyze",
    "inline_calls",
    "partition",
]
