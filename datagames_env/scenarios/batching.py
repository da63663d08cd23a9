"""Glue between the two scenario protocols: a batched scenario seen at B = 1, and B scenarios seen as one batch.

=====================  ====================================================================================
Class                  What it is
=====================  ====================================================================================
``BatchOfOne``         a :class:`~.base.Scenario` over a :class:`~.base.BatchedScenario` with ``num_envs = 1``:
                       what ``parallel_env`` steps when a scenario has a native batched implementation, so the
                       parallel face is the B = 1 view of the same code, not a second implementation
``LoopedBatch``        a :class:`~.base.BatchedScenario` over B :class:`~.base.Scenario` objects stepped one
                       after the other: the batched faces' fallback for a scenario (or a perception tier) without
                       a native batched implementation. Correct, not fast
=====================  ====================================================================================

Info conversion: a batched info entry of ``robot_info_keys`` leads with ``(B, N)`` (robot i of env b at
``[b, i]``), one of ``env_info_keys`` with ``(B,)``; a per-robot info dict of env b holds ``value[b, i]`` and
``value[b]`` respectively. ``privileged_view()`` values of a batched scenario lead with B (arrays, or lists of B).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .base import BatchedScenario, BatchTransition, Scenario, SnapshotError, Transition, snapshot_entry

__all__ = ["BatchOfOne", "LoopedBatch", "robot_infos", "stacked_infos"]


def robot_infos(infos: dict[str, Any], b: int, n_robots: int, robot_keys: tuple[str, ...],
                env_keys: tuple[str, ...]) -> list[dict]:
    """The per-robot info dicts of env ``b`` from batched ``infos`` (copies: each robot owns its arrays)."""
    out = []
    for i in range(n_robots):
        info = {}
        for key in robot_keys:
            value = infos[key][b, i]
            info[key] = value.copy() if isinstance(value, np.ndarray) else value.item() if isinstance(value, np.generic) else value
        for key in env_keys:
            value = infos[key][b]
            info[key] = value.copy() if isinstance(value, np.ndarray) else value.item() if isinstance(value, np.generic) else value
        out.append(info)
    return out


def stacked_infos(per_env: list[list[dict]]) -> dict[str, np.ndarray]:
    """Batched infos ``(B, N, ...)`` from B lists of N per-robot info dicts of one fixed schema."""
    keys = list(per_env[0][0])
    out = {}
    for key in keys:
        try:
            out[key] = np.stack([np.stack([np.asarray(info[key]) for info in infos]) for infos in per_env])
        except ValueError as exc:
            raise ValueError(f"info '{key}' has different shapes across robots or envs, so it cannot be batched "
                             f"({exc})") from None
    return out


class BatchOfOne(Scenario):
    """A :class:`Scenario` over a :class:`BatchedScenario` of one env (see the module docstring)."""

    def __init__(self, batched: BatchedScenario) -> None:
        if batched.num_envs != 1:
            raise ValueError(f"BatchOfOne needs a batched scenario of num_envs=1, got {batched.num_envs}")
        self.batched = batched
        self.metadata = batched.metadata
        self.action_meaning = batched.action_meaning
        self.checks_finite = batched.checks_finite
        self.sample_spec = batched.sample_spec
        self.config = batched.config
        self.n_robots = batched.n_robots
        self.obs_layout = batched.obs_layout
        self.observation_low, self.observation_high = batched.observation_low, batched.observation_high
        self.action_width = batched.action_width

    def __getattr__(self, name: str) -> Any:  # read-outs of the batched scenario (env.world, env.cloud(), ...)
        if name.startswith("__") or name == "batched":
            raise AttributeError(name)
        return getattr(self.batched, name)

    def _infos(self, infos: dict[str, Any]) -> list[dict]:
        b = self.batched
        return robot_infos(infos, 0, self.n_robots, b.robot_info_keys, b.env_info_keys)

    def reset(self, seed: int) -> tuple[np.ndarray, list[dict]]:
        observations, infos = self.batched.reset(np.array([seed], dtype=np.int64))
        return observations[0], self._infos(infos)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        active = None if active is None else np.asarray(active, dtype=bool)[None]
        result = self.batched.step(np.asarray(actions)[None], active)
        return Transition(result.observations[0], result.rewards[0], bool(result.terminated[0]),
                          self._infos(result.infos))

    def state(self) -> np.ndarray:
        return self.batched.state()[0]

    def privileged_view(self) -> dict[str, Any]:
        return {key: value[0] for key, value in self.batched.privileged_view().items()}

    def snapshot_state(self) -> dict:
        return self.batched.snapshot_state()

    def check_snapshot_state(self, state: dict) -> None:
        self.batched.check_snapshot_state(state)

    def restore_state(self, state: dict) -> None:
        self.batched.restore_state(state)

    def content_arrays(self):
        return self.batched.content_arrays()

    def render(self, mode: str):
        return self.batched.render(mode, 0)

    def close(self) -> None:
        self.batched.close()


class LoopedBatch(BatchedScenario):
    """B scenarios of one config stepped one after the other (see the module docstring). ``make`` builds one
    :class:`Scenario`; faults (``message_loss``, ``liars``) follow each env's episode seed as in ``parallel_env``."""

    def __init__(self, make: Callable[[], Scenario], num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.envs = [make() for _ in range(num_envs)]
        first = self.envs[0]
        self.metadata = first.metadata
        self.action_meaning = first.action_meaning
        self.checks_finite = first.checks_finite
        self.sample_spec = first.sample_spec
        self.config = first.config
        self.num_envs = num_envs
        self.n_robots = first.n_robots
        self.obs_layout = first.obs_layout
        self.observation_low, self.observation_high = first.observation_low, first.observation_high
        self.action_width = first.action_width
        self.state_dim = None  # known after the first reset
        self.robot_info_keys: tuple[str, ...] = ()

    def _batched(self, observations, infos) -> tuple[np.ndarray, dict]:
        stacked = stacked_infos(infos)
        self.robot_info_keys = tuple(stacked)
        return np.stack(observations).astype(np.float32, copy=False), stacked

    def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds (one per env), got {len(seeds)}")
        observations, infos = [], []
        for env, seed in zip(self.envs, seeds.tolist()):
            obs, info = env.reset(seed)
            env.start_faults(seed)
            observations.append(obs)
            infos.append(info)
        self.state_dim = int(self.envs[0].state().size)
        return self._batched(observations, infos)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchTransition:
        shape = (self.num_envs, self.n_robots, self.action_width)
        actions = np.asarray(actions)
        if actions.shape != shape:
            raise ValueError(f"actions must have shape (num_envs, n_robots, {self.action_width}) = {shape}, got "
                             f"{actions.shape}")
        if active is not None and np.shape(active) != shape[:2]:
            raise ValueError(f"active must be a bool mask of shape (num_envs, n_robots) = {shape[:2]}, got "
                             f"{np.shape(active)}")
        saved = [(env._begin_step(), {k: r.bit_generator.state for k, r in (env.fault_rngs or {}).items()})
                 for env in self.envs]
        results: list[Transition] = []
        try:
            for b, env in enumerate(self.envs):
                try:
                    results.append(env.step(actions[b], None if active is None else active[b]))
                except ValueError as exc:
                    raise ValueError(f"env {b}: {exc}") from None
        except BaseException:
            for env, (state, rngs) in zip(self.envs[:len(results)], saved):  # the failing env rolled itself back
                env._rollback_step(state)
                for name, rng_state in rngs.items():
                    env.fault_rngs[name].bit_generator.state = rng_state
            raise
        observations, infos = self._batched([r.observations for r in results], [r.infos for r in results])
        return BatchTransition(observations, np.stack([r.rewards for r in results]).astype(np.float64),
                               np.array([r.terminated for r in results]), infos)

    def state(self) -> np.ndarray:
        return np.stack([env.state() for env in self.envs]).astype(np.float32, copy=False)

    def privileged_view(self) -> dict[str, Any]:
        views = [env.privileged_view() for env in self.envs]
        out = {}
        for key in views[0]:
            values = [view[key] for view in views]
            try:
                out[key] = np.stack([np.asarray(v) for v in values])
            except ValueError:  # ragged (neighbour lists): one entry per env
                out[key] = values
        return out

    def snapshot_state(self) -> dict:
        return {"envs": [{"scenario": env.snapshot_state(), "faults": env.fault_state()} for env in self.envs],
                "state_dim": self.state_dim, "robot_info_keys": list(self.robot_info_keys)}

    def check_snapshot_state(self, state: dict) -> None:
        envs = snapshot_entry(state, "envs", "state.envs")
        if not isinstance(envs, list) or len(envs) != self.num_envs:
            raise SnapshotError(f"snapshot field 'state.envs' must hold {self.num_envs} envs")
        for b, (env, entry) in enumerate(zip(self.envs, envs)):
            env.check_snapshot_state(snapshot_entry(entry, "scenario", f"state.envs.{b}.scenario"))
            env.check_fault_state(snapshot_entry(entry, "faults", f"state.envs.{b}.faults"), f"state.envs.{b}.faults")

    def restore_state(self, state: dict) -> None:
        for env, entry in zip(self.envs, state["envs"]):
            env.restore_state(entry["scenario"])
            env.restore_fault_state(entry["faults"])
        self.state_dim = state["state_dim"]
        self.robot_info_keys = tuple(state["robot_info_keys"])

    def content_arrays(self):
        return self.envs[0].content_arrays()

    def render(self, mode: str, b: int = 0):
        return self.envs[b].render(mode)

    def close(self) -> None:
        for env in self.envs:
            env.close()
