"""The stages trace -> lower -> compile, cached: cached_jit, its stage objects and reports."""

from .aot import Compiled as Compiled
from .aot import Lowered as Lowered
from .aot import Traced as Traced
from .cached_function import CachedFunction as CachedFunction
from .cached_function import cached_jit as cached_jit
from .report import LevelReport as LevelReport
from .report import StageReport as StageReport
