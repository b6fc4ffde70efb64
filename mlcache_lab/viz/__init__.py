"""Notebook views of what the toolkit measured: the schedule Explorer and matplotlib plots.

``viz`` reads graphs, reports and timelines and draws them; it computes
nothing. Importing it is cheap: ipywidgets, matplotlib and graphviz are
imported by the functions that draw.

* :class:`Explorer`: batch-size slider, policy, micro-batch, Run; shows the
  annotated cluster graph, the timeline and the compilations of each run.
* :func:`timeline`: a Gantt chart of one plan run, compilations marked.
* :func:`levels`: seconds per cache level for a set of reports, stacked.
* :func:`compilations`: XLA compilations against batch sizes per policy.
"""

from .explorer import Explorer as Explorer
from .explorer import ExplorerWarning as ExplorerWarning
from .explorer import annotated_dot as annotated_dot
from .explorer import cluster_notes as cluster_notes
from .plots import compilations as compilations
from .plots import levels as levels
from .plots import timeline as timeline

__all__ = [
    "Explorer",
    "ExplorerWarning",
    "annotated_dot",
    "cluster_notes",
    "compilations",
    "levels",
    "timeline",
]
