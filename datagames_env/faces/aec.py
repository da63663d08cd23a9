"""The AEC face: robots act one after another; the round resolves when the last robot has acted.

=====================  ============================================================================
Agents                 as the parallel env (``robot_0 ... robot_{N-1}``), in that order every round
Observation / action   as the parallel env
Reward / episode end   as the parallel env; rewards appear when the round resolves
Arguments              ``parallel``: any scenario's parallel env
=====================  ============================================================================

PettingZoo's ``parallel_to_aec`` stores every action unchecked and validates them all at the last robot's turn:
a NaN from robot_0 was then reported at robot_9's turn, and since robot_0's stored action stayed, every later
step raised until reset. Here each action is checked at its own agent's step (shape of the agent's action
space, finite) and is stored only when valid, so a rejected step changes nothing and the env stays usable. What
is stored is a copy made at the check: a buffer reused (or a list changed) after its step cannot reach the round.
If the round itself fails, the stored actions are kept and the last robot may step again.
"""

from __future__ import annotations

import numpy as np
from pettingzoo.utils.conversions import parallel_to_aec_wrapper

__all__ = ["FleetAECEnv"]


class FleetAECEnv(parallel_to_aec_wrapper):
    """``parallel_to_aec`` with each action validated at its own agent's turn (module docstring)."""

    def step(self, action) -> None:
        agent = self.agent_selection
        if not (self.terminations[agent] or self.truncations[agent]):
            action = self._checked(agent, action)
        super().step(action)

    def _checked(self, agent: str, action) -> np.ndarray:
        shape = self.action_space(agent).shape
        try:
            row = np.array(action, dtype=np.float64)  # a copy: the caller may reuse its buffer
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{agent}: action must be a numeric array of shape {shape}, got {action!r:.80}") from exc
        if row.shape != shape:
            raise ValueError(f"{agent}: action must have shape {shape}, got {row.shape}")
        if not np.isfinite(row).all():
            raise ValueError(f"{agent}: action contains NaN or inf: {row}")
        return row
