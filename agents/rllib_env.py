"""RLlib face: a thin ``MultiAgentEnv`` over any scenario's PettingZoo ``ParallelEnv`` (new API stack).

=====================  ============================================================================
Registered name        ``"datagames"`` (``register_rllib_env()``; ``PPOConfig().environment("datagames",
                       env_config={"config": "default", "overrides": {...}})``)
Agents                 ``possible_agents`` of the scenario, in order (``robot_0 ... robot_{N-1}``)
Spaces                 ``observation_spaces`` / ``action_spaces``: the scenario's per-robot flat ``Box``
                       spaces, the same objects every call
Reward                 the scenario's reward per robot (shared potential in ``datagames``)
Episode end            every robot is terminated after ``rounds`` steps (the scenario's last round ends the
                       task); ``terminateds["__all__"]`` is True then; ``truncateds["__all__"]`` only if
                       the episode ended without every robot terminating
env_config keys        ``config`` (name in ``configs/``, YAML path or dict), ``overrides`` (dict of config
                       keys, dotted allowed), ``render_mode``, ``info_keys`` (which info entries to pass
                       on; default: the scalar ones, so RLlib episodes stay small), ``global_state``
                       (True: every robot's observation is followed by the scenario's ``state()``, for a
                       centralised critic; the actor modules read only the robot's own part)
=====================  ============================================================================

Why not RLlib's ``ParallelPettingZooEnv``: it takes agent ids from ``agents`` after a reset (a set, so the
order is lost), its ``render()`` passes an argument PettingZoo's ``render()`` does not take, and it writes
``"__all__"`` into the dicts the environment returned. This adapter builds fresh dicts every step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

try:
    from ray.rllib.env.multi_agent_env import MultiAgentEnv
except ImportError as exc:  # pragma: no cover - exercised only without the rl extra
    raise ImportError("agents.rllib_env needs Ray RLlib: pip install -e '.[rl]'") from exc

from datagames_env.scenarios import make_parallel_env

ENV_NAME = "datagames"


def _scalar_infos(info: dict) -> dict:
    return {k: v for k, v in info.items() if np.isscalar(v) or (isinstance(v, np.ndarray) and v.ndim == 0)}


class RLlibMultiAgentEnv(MultiAgentEnv):
    """See the module docstring. ``env_config`` is a dict (or RLlib's ``EnvContext``)."""

    def __init__(self, env_config: dict | None = None) -> None:
        env_config = dict(env_config or {})
        unknown = set(env_config) - {"config", "overrides", "render_mode", "info_keys", "global_state"}
        if unknown:
            raise ValueError(f"env_config: unknown keys {sorted(unknown)}; expected config, overrides, render_mode, "
                             "info_keys, global_state")
        self.render_mode = env_config.get("render_mode")
        self.info_keys = env_config.get("info_keys")
        self.par_env = make_parallel_env(env_config.get("config"), render_mode=self.render_mode,
                                         **dict(env_config.get("overrides") or {}))
        super().__init__()
        self.possible_agents = list(self.par_env.possible_agents)
        self.agents = list(self.possible_agents)
        self.global_state = bool(env_config.get("global_state", False))
        self.observation_spaces = {a: self._joint_space(self.par_env.observation_space(a))
                                   for a in self.possible_agents}
        self.action_spaces = {a: self.par_env.action_space(a) for a in self.possible_agents}
        # old-stack attributes, which RLlib's env checker still looks for
        self._agent_ids = set(self.possible_agents)
        self.observation_space = self.observation_spaces[self.possible_agents[0]]
        self.action_space = self.action_spaces[self.possible_agents[0]]

    def _joint_space(self, own: spaces.Box) -> spaces.Box:
        if not self.global_state:
            return own
        state_space = getattr(self.par_env, "state_space", None)
        if state_space is None:
            raise ValueError(f"env_config global_state=True: scenario {type(self.par_env).__name__} has no state_space; "
                             "train it with a per-robot critic")
        return spaces.Box(np.concatenate([own.low, state_space.low]), np.concatenate([own.high, state_space.high]),
                          dtype=np.float32)

    def _observations(self, observations: dict) -> dict:
        if not self.global_state or not observations:
            return dict(observations)
        state = np.asarray(self.par_env.state(), dtype=np.float32)
        return {a: np.concatenate([o, state]) for a, o in observations.items()}

    def _infos(self, infos: dict) -> dict:
        if self.info_keys is None:
            return {a: _scalar_infos(info) for a, info in infos.items()}
        return {a: {k: info[k] for k in self.info_keys if k in info} for a, info in infos.items()}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        observations, infos = self.par_env.reset(seed=seed, options=options)
        self.agents = list(self.par_env.agents)
        return self._observations(observations), self._infos(infos)

    def step(self, action_dict: dict[str, Any]):
        observations, rewards, terminations, truncations, infos = self.par_env.step(dict(action_dict))
        self.agents = list(self.par_env.agents)
        terminateds = {a: bool(v) for a, v in terminations.items()}
        truncateds = {a: bool(v) for a, v in truncations.items()}
        terminateds["__all__"] = bool(terminations) and all(terminations.values())
        truncateds["__all__"] = not self.agents and not terminateds["__all__"]
        return (self._observations(observations), {a: float(r) for a, r in rewards.items()}, terminateds, truncateds,
                self._infos(infos))

    def render(self):
        return self.par_env.render()

    def close(self) -> None:
        self.par_env.close()


def make_rllib_env(env_config: dict | None = None) -> RLlibMultiAgentEnv:
    return RLlibMultiAgentEnv(env_config)


def register_rllib_env(name: str = ENV_NAME) -> str:
    """Register the adapter under ``name`` with Ray Tune's registry (idempotent); returns the name."""
    from ray.tune.registry import register_env

    register_env(name, make_rllib_env)
    return name
