"""Ablation studies: scenarios x models x cache levels x factors, each run in fresh processes.

```python
from mlcache_lab import experiments as ex
grid = ex.Grid(models=["transformer"], scenarios=["cold", "warm_process", "code_edit"],
               cache_levels=["none", "compile_only", "lower_compile", "all"], repeats=5)
results = ex.run(grid, n_jobs=2)        # joblib.Parallel; backend="dask" for a cluster
results.table; results.save("data/results/my_study.csv"); ex.load(...)
ex.plot.levels(results); ex.plot.speedup(results, baseline="compile_only")
```
"""

from . import plot as plot
from .calls import Call as Call
from .calls import CallSpec as CallSpec
from .calls import run_call as run_call
from .changes import CHANGES as CHANGES
from .changes import Change as Change
from .changes import WarmStores as WarmStores
from .changes import run_change as run_change
from .grid import Cell as Cell
from .grid import Grid as Grid
from .grid import ModelSpec as ModelSpec
from .grid import register_model as register_model
from .levels import ALL_SETTINGS as ALL_SETTINGS
from .levels import CACHE_LEVELS as CACHE_LEVELS
from .levels import JAX_PERSISTENT as JAX_PERSISTENT
from .machine import machine_info as machine_info
from .results import Results as Results
from .results import Table as Table
from .results import load as load
from .runner import run as run
from .scenarios import SCENARIOS as SCENARIOS
from .scenarios import ChangeScenario as ChangeScenario
from .scenarios import Scenario as Scenario
from .scenarios import ServingTrace as ServingTrace
from .scenarios import available_scenarios as available_scenarios
from .scenarios import get_scenario as get_scenario
from .scenarios import register_scenario as register_scenario
