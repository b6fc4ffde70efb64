"""Scheduling a cluster graph for any batch size: plans, policies, timelines, batched_jit."""

from .batched import BatchedFunction as BatchedFunction
from .batched import batched_jit as batched_jit
from .plan import Plan as Plan
from .plan import schedule as schedule
from .policies import POLICIES as POLICIES
from .policies import Chunk as Chunk
from .policies import split_batch as split_batch
from .timeline import Compilation as Compilation
from .timeline import Execution as Execution
from .timeline import Timeline as Timeline
