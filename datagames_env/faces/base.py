"""What every scenario's PettingZoo parallel env shares: robot names, spaces, seeding and action checks.

=====================  ============================================================================
Agents                 ``robot_0 ... robot_{N-1}``; ``agents`` is every robot during an episode, empty after it
Spaces                 one ``Box`` object per agent, returned by every call (PettingZoo compares them)
Seeding                ``reset(seed)`` restarts a seed sequence, so later ``reset()`` calls without a seed are
                       reproducible too; a negative seed is an error
Actions                a dict with one array per active robot; a missing / unknown robot, a wrong shape or NaN /
                       inf raise ``ValueError`` naming the robot, before any state changes
=====================  ============================================================================
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

__all__ = ["FleetParallelEnv"]


class FleetParallelEnv(ParallelEnv):
    """Base of the scenarios' parallel envs (see the module docstring); subclasses call :meth:`_init_fleet`."""

    def _init_fleet(self, n_robots: int, low: np.ndarray, high: np.ndarray, action_width: int) -> None:
        self.possible_agents = [f"robot_{i}" for i in range(n_robots)]
        self.agents: list[str] = []
        self._index = {a: i for i, a in enumerate(self.possible_agents)}
        self._action_width = int(action_width)
        self._observation_spaces = {a: spaces.Box(low, high, dtype=np.float32) for a in self.possible_agents}
        self._action_spaces = {a: spaces.Box(0.0, 1.0, (self._action_width,), dtype=np.float32)
                               for a in self.possible_agents}
        self._next_seed_rng = np.random.default_rng()

    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self._action_spaces[agent]

    def _next_episode_seed(self, seed: int | None) -> int:
        """The seed of the episode ``reset(seed)`` starts: ``seed``, or the next of the sequence the last seeded
        reset started (a fresh random sequence before any)."""
        if seed is not None:
            self._next_seed_rng = np.random.default_rng(seed)
        else:
            seed = int(self._next_seed_rng.integers(2**62))
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return int(seed)

    def _action_matrix(self, actions: dict, what: str, check_finite: bool = True) -> np.ndarray:
        """``(n_robots, action_width)`` float64, row i robot i's action; every check names the robot at fault."""
        if not self.agents:
            raise RuntimeError("step() called before reset() or after the episode ended: call reset()")
        unknown = [a for a in actions if a not in self._index or a not in self.agents]
        if unknown:
            raise ValueError(f"actions for unknown or inactive agents {unknown}; active agents are {self.agents}")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"missing actions for {missing}: every robot acts every round")
        width = self._action_width
        matrix = np.empty((len(self.possible_agents), width))
        for agent in self.agents:  # a dict of arrays in, one matrix out
            row = np.asarray(actions[agent], dtype=np.float64)
            if row.shape != (width,):
                raise ValueError(f"{agent}: action must have shape ({width},) ({what}), got {row.shape}")
            if check_finite and not np.isfinite(row).all():
                raise ValueError(f"{agent}: action contains NaN or inf: {row}")
            matrix[self._index[agent]] = row
        return matrix
