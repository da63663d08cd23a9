"""The shared core: numba kernels, the world (dataset, split, pool tables, perception cache), model versions and
the batched B x N upload step the cloud game runs on. Scenario-free: what robots are paid for lives in
:mod:`datagames_env.scenarios`."""

from .batched import BatchedCore, StepResult, allocation_counts, derive_version
from .world import World, get_world

__all__ = ["BatchedCore", "StepResult", "World", "allocation_counts", "derive_version", "get_world"]
