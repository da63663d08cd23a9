"""Stable-Baselines3 face: a native ``VecEnv`` over (environments x robots) rows, parameter sharing for free.

=====================  ============================================================================
Rows                   ``num_envs = B * N``: row ``b * N + i`` is robot ``i`` of environment ``b`` of a
                       :class:`~datagames_env.faces.vector.VectorEnv` of any scenario (one batched scenario, no
                       subprocesses)
Observation space      the per-robot ``Box`` of ``parallel_env`` (``single_observation_space``)
Action space           the per-robot ``Box(0, 1, ...)`` (cloud game: allocation shares or selection scores;
                       p2p, dual: a score per observed sample)
Reward                 the robot's reward (the scenario's; shared across the robots of an env in the cloud game)
Episode end            all environments terminate together after ``rounds`` steps (the task's horizon):
                       every row is done, ``infos[row]["terminal_observation"]`` holds its last
                       observation and ``infos[row]["TimeLimit.truncated"]`` is False (SB3 does not
                       bootstrap past a termination); the batch is then reset (SB3 auto-reset)
Seeding                ``seed(s)`` before ``reset()``: environment b is reset with ``s + b`` (as
                       ``vector_env.reset(seed=s)``) and later auto-resets draw from a generator seeded by s,
                       so a whole run is reproducible
=====================  ============================================================================

Why not SuperSuit: its README marks it semi-deprecated and its SB3 path loses seeding and
``TimeLimit.truncated``; here the rows are just a reshape of the batched scenario's (B, N, ...) arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError as exc:  # pragma: no cover - exercised only without the rl extra
    raise ImportError("datagames_env.faces.sb3 needs Stable-Baselines3: pip install -e '.[rl]'") from exc

from .vector import VectorEnv


class DataGamesSB3VecEnv(VecEnv):
    """See the module docstring. ``num_envs`` is B, the number of environments; ``self.num_envs`` is B * N."""

    render_mode = None

    def __init__(self, num_envs: int = 1, config: Any = None, **overrides: Any) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.vector = VectorEnv(num_envs=num_envs, config=config, **overrides)
        self.n_envs = num_envs
        self.n_robots = self.vector.n_robots
        super().__init__(num_envs * self.n_robots, self.vector.single_observation_space,
                         self.vector.single_action_space)
        self._env_seed: int | None = None
        self._actions: np.ndarray | None = None

    # -- seeding and reset ---------------------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> list[int | None]:
        self._env_seed = None if seed is None else int(seed)
        return [None if seed is None else int(seed) + b for b in range(self.n_envs) for _ in range(self.n_robots)]

    def reset(self) -> np.ndarray:
        observations, _ = self.vector.reset(seed=self._env_seed)
        self._env_seed = None
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._rows(observations)

    def _rows(self, array: np.ndarray) -> np.ndarray:
        return array.reshape(self.num_envs, *array.shape[2:])

    # -- stepping --------------------------------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        actions = np.asarray(actions)
        width = self.action_space.shape[0]
        if actions.shape != (self.num_envs, width):
            raise ValueError(f"actions have shape {actions.shape}, expected ({self.num_envs}, {width}): "
                             f"{self.n_envs} envs x {self.n_robots} robots rows")
        self._actions = actions.reshape(self.n_envs, self.n_robots, width)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() without step_async()")
        observations, rewards, terminations, truncations, _ = self.vector.step(self._actions)
        self._actions = None
        dones = self._rows(terminations | truncations)
        infos: list[dict] = [{} for _ in range(self.num_envs)]
        obs_rows = self._rows(observations)
        if dones.any():
            # every environment has the same length, so they all end together: one batched reset
            if not dones.all():
                raise RuntimeError("environments of one vector ended at different rounds")
            truncated_rows = self._rows(truncations & ~terminations)
            for row in range(self.num_envs):
                infos[row]["terminal_observation"] = obs_rows[row].copy()
                infos[row]["TimeLimit.truncated"] = bool(truncated_rows[row])
            obs_rows = self._rows(self.vector.reset(seed=None)[0])
        return obs_rows, self._rows(rewards).astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    # -- VecEnv plumbing: the rows are not separate objects ---------------------------------------------------
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        result = getattr(self.vector, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self):
        return [None for _ in range(self.num_envs)]
