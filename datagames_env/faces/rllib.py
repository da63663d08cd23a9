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
                       centralised critic; the actor modules read only the robot's own part),
                       ``message_sweeps`` (K in 1..3: learned communication, :mod:`datagames_env.faces.comm`: each round
                       is K announcement sub-steps with reward 0, then the executed decision; the
                       observation gains the message blocks; datagames allocation mode only)
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
    raise ImportError("datagames_env.faces.rllib needs Ray RLlib: pip install -e '.[rl]'") from exc

from .pettingzoo import parallel_env as make_parallel_env

from . import comm

ENV_NAME = "datagames"


def _scalar_infos(info: dict) -> dict:
    return {k: v for k, v in info.items() if np.isscalar(v) or (isinstance(v, np.ndarray) and v.ndim == 0)}


class RLlibMultiAgentEnv(MultiAgentEnv):
    """See the module docstring. ``env_config`` is a dict (or RLlib's ``EnvContext``)."""

    def __init__(self, env_config: dict | None = None) -> None:
        env_config = dict(env_config or {})
        known = ("config", "overrides", "render_mode", "info_keys", "global_state", "message_sweeps")
        unknown = set(env_config) - set(known)
        if unknown:
            raise ValueError(f"env_config: unknown keys {sorted(unknown)}; expected {', '.join(known)}")
        self.render_mode = env_config.get("render_mode")
        self.info_keys = env_config.get("info_keys")
        self.par_env = make_parallel_env(env_config.get("config"), render_mode=self.render_mode,
                                         **dict(env_config.get("overrides") or {}))
        super().__init__()
        self.possible_agents = list(self.par_env.possible_agents)
        self.agents = list(self.possible_agents)
        self.global_state = bool(env_config.get("global_state", False))
        self.message_sweeps = comm.check_sweeps(env_config.get("message_sweeps", 0) or 0)
        self._protocol: comm.MessageSweeps | None = None
        if self.message_sweeps and (getattr(self.par_env, "obs_layout", {}).get("gap") is None
                                    or self.par_env.config.action_mode != "allocation"):
            raise ValueError("env_config message_sweeps: learned communication is built for the datagames scenario "
                             "in action_mode allocation")
        self.observation_spaces = {a: self._joint_space(self.par_env.observation_space(a))
                                   for a in self.possible_agents}
        self.action_spaces = {a: self.par_env.action_space(a) for a in self.possible_agents}
        # old-stack attributes, which RLlib's env checker still looks for
        self._agent_ids = set(self.possible_agents)
        self.observation_space = self.observation_spaces[self.possible_agents[0]]
        self.action_space = self.action_spaces[self.possible_agents[0]]

    def _joint_space(self, own: spaces.Box) -> spaces.Box:
        if self.message_sweeps:
            c = self.par_env.n_classes
            low = np.concatenate([own.low[:8 * c], np.zeros(c), -np.ones(c), own.low[8 * c:], [0.0]])
            high = np.concatenate([own.high[:8 * c], np.ones(c), np.ones(c), own.high[8 * c:], [1.0]])
            own = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        if not self.global_state:
            return own
        state_space = getattr(self.par_env, "state_space", None)
        if state_space is None:
            raise ValueError(f"env_config global_state=True: scenario {type(self.par_env).__name__} has no state_space; "
                             "train it with a per-robot critic")
        return spaces.Box(np.concatenate([own.low, state_space.low]), np.concatenate([own.high, state_space.high]),
                          dtype=np.float32)

    def _observations(self, observations: dict, infos: dict | None = None) -> dict:
        """The face's observations: with message sweeps the protocol's rows (a new round when ``infos`` come with
        the env's fresh observations; between sweeps only the agent keys are used), then the global state."""
        if self.message_sweeps and observations:
            if infos is not None:  # a new round: the protocol starts again from the robots' fresh observations
                self._protocol = comm.MessageSweeps(self.message_sweeps, observations, infos, list(observations),
                                                    self.par_env.obs_layout["gap"], self.par_env.n_classes)
            rows = self._protocol.observations()
            observations = {a: rows[k] for k, a in enumerate(self._protocol.agents)}
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
        return self._observations(observations, infos), self._infos(infos)

    def step(self, action_dict: dict[str, Any]):
        if self._protocol is not None and not self._protocol.executing:  # an announcement, not an upload
            self._protocol.announce(np.stack([action_dict[a] for a in self._protocol.agents]))
            agents = self._protocol.agents
            done = {a: False for a in agents} | {"__all__": False}
            return self._observations(dict.fromkeys(agents)), {a: 0.0 for a in agents}, done, dict(done), \
                {a: {} for a in agents}
        observations, rewards, terminations, truncations, infos = self.par_env.step(dict(action_dict))
        self.agents = list(self.par_env.agents)
        terminateds = {a: bool(v) for a, v in terminations.items()}
        truncateds = {a: bool(v) for a, v in truncations.items()}
        terminateds["__all__"] = bool(terminations) and all(terminations.values())
        truncateds["__all__"] = not self.agents and not terminateds["__all__"]
        return (self._observations(observations, infos), {a: float(r) for a, r in rewards.items()}, terminateds,
                truncateds, self._infos(infos))

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
