"""``vector_env(num_envs, config)``: B environments of one config of any scenario stepped at once, arrays in and out.

The face over the scenario's :class:`~datagames_env.scenarios.base.BatchedScenario` from
:func:`~datagames_env.scenarios.make_batched`: its native batched implementation (the cloud game's
:class:`~datagames_env.scenarios.datagames.DataGamesBatched`, and p2p / dual where they have one), else B scenarios
stepped in a loop (:class:`~datagames_env.scenarios.batching.LoopedBatch`: correct, slower).

=====================  ============================================================================
Batch                  B = ``num_envs`` environments x N = ``n_robots`` robots; env b equals a
                       ``parallel_env`` of the same config reset with seed ``seeds[b]``, draw for draw
Observations           ``(B, N, obs_dim)`` float32, the per-robot layout of ``parallel_env`` (``obs_layout``)
Actions                ``(B, N, A)``: the scenario's per-robot ``Box(0, 1, (A,))`` (cloud game: shares per
                       predicted class or scores per sample; p2p, dual: scores per observed sample). Another
                       shape is a ``ValueError`` naming ``(num_envs, n_robots, A)``; NaN / inf names env and robot
Rewards                ``(B, N)`` float32, the scenario's reward per robot
terminations           ``(B, N)`` True after ``rounds`` steps (the task ends); ``truncations`` always False
Reset                  ``reset(seed)`` with an int (env b gets ``seed + b``; later ``reset()`` calls draw from a
                       generator seeded by it), one seed per env, or None; all envs terminate together, so
                       there is no auto-reset: call ``reset`` again
Infos                  a dict of arrays, the same keys at reset and every step: the scenario's
                       ``robot_info_keys`` lead with ``(B, N)``, its ``env_info_keys`` with ``(B,)``
Robots leaving         ``step(actions, active)``: ``active`` bool ``(B, N)`` (another shape is a ``ValueError``
                       naming the expected one); an inactive robot's row of ``actions`` is ignored and it has no
                       effect on the others, as in the parallel face. ``faults.dropout`` is refused (it lives in
                       the parallel face)
Global state           ``state()`` ``(B, state_dim)`` float32 (each env's ``parallel_env.state()``);
                       ``privileged_view()``: oracle-only truth, arrays leading with B
Snapshots              ``snapshot()`` / ``restore(snapshot)``: every env's state, small and picklable, bit-exact
                       on a vector env of the same config, data and ``num_envs``; checked field by field before
                       anything changes (``SnapshotError`` naming the field), rolled back if the restore fails. A
                       pickled snapshot is a pickle: never load one from an untrusted source
Read-outs              anything else the batched scenario offers is reached through the face (cloud game:
                       ``venv.core``, ``venv.estimated_feasible_matrices()``)
=====================  ============================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ..config import ConfigError
from ..scenarios import load_scenario_config, make_batched, scenario_of
from ..scenarios.base import (SNAPSHOT_VERSION, BatchedScenario, Snapshot, SnapshotError, check_snapshot_rng,
                              config_digest, content_digest, snapshot_entry)

__all__ = ["DataGamesVectorEnv", "VectorEnv", "vector_env"]


class VectorEnv:
    """B environments of one scenario config (module docstring). ``VectorEnv(num_envs, config, **overrides)``, or
    ``VectorEnv(batched=...)`` over a :class:`BatchedScenario` built elsewhere."""

    def __init__(self, num_envs: int = 1, config: Any = None, batched: BatchedScenario | None = None,
                 **overrides: Any) -> None:
        if batched is None:
            if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
                raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
            cfg = load_scenario_config(config, **overrides)
            faults = getattr(cfg, "faults", None)
            if faults is not None and faults.dropout:  # dropout lives in the parallel face: refused, not ignored
                raise ConfigError("config key 'faults.dropout': robot dropout is not supported by the vector env "
                                  "(use parallel_env); the protocol faults of Interactive need env.liars / "
                                  "fault_rngs of a parallel env too")
            batched = make_batched(cfg, int(num_envs))
        elif config is not None or overrides:
            raise TypeError("pass either a batched scenario or a config with overrides, not both")
        self.batched = batched
        self.config = batched.config
        self.scenario = scenario_of(self.config)
        self.metadata = {"name": batched.metadata["name"], "autoreset_mode": None}
        self.num_envs = batched.num_envs
        self.n_robots = batched.n_robots
        self.possible_agents = [f"robot_{i}" for i in range(self.n_robots)]
        low, high = batched.observation_low, batched.observation_high
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Box(0.0, 1.0, (batched.action_width,), dtype=np.float32)
        shape = (self.num_envs, self.n_robots)
        self.observation_space = spaces.Box(np.broadcast_to(low, shape + low.shape),
                                            np.broadcast_to(high, shape + high.shape), dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape + self.single_action_space.shape, dtype=np.float32)
        self._action_shape = shape + (batched.action_width,)
        self._seed_rng = np.random.default_rng()

    def __getattr__(self, name: str) -> Any:
        # read-outs of the batched scenario (venv.core, venv.estimated_feasible_matrices(), ...)
        if name == "batched" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.batched, name)

    @property
    def obs_layout(self) -> dict[str, slice]:
        return dict(self.batched.obs_layout)

    @property
    def state_dim(self) -> int | None:
        return self.batched.state_dim

    # -------------------------------------------------------------------------------------------------- loop
    def reset(self, seed: int | list[int] | np.ndarray | None = None, options: dict | None = None):
        if seed is None:
            seeds = self._seed_rng.integers(2**62, size=self.num_envs)
        elif np.ndim(seed) == 0:
            if int(seed) < 0:
                raise ValueError(f"seed must be a non-negative integer, got {seed}")
            seeds = np.arange(self.num_envs, dtype=np.int64) + int(seed)
            self._seed_rng = np.random.default_rng(int(seed))
        else:
            seeds = np.asarray([int(s) for s in seed], dtype=np.int64)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) needs an int or {self.num_envs} seeds (one per env), got "
                                 f"{len(seeds)}")
            if (seeds < 0).any():
                raise ValueError(f"seeds must be non-negative integers, got {seeds.tolist()}")
        return self.batched.reset(np.asarray(seeds, dtype=np.int64))

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        """``(B, N, A)`` actions; ``active`` (bool ``(B, N)``, None = all): robots that left act on nothing."""
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"actions must be a numeric array of shape (num_envs, n_robots, "
                             f"{self.batched.action_width}) = {self._action_shape}") from exc
        if actions.shape != self._action_shape:
            raise ValueError(f"actions must have shape (num_envs, n_robots, {self.batched.action_width}) = "
                             f"{self._action_shape} ({self.batched.action_meaning} per robot), got {actions.shape}")
        if self.batched.checks_finite and not np.isfinite(actions).all():
            b, i = np.argwhere(~np.isfinite(actions))[0][:2]
            raise ValueError(f"env {b}, robot_{i}: action contains NaN or inf: {actions[b, i]}")
        if active is not None:
            if np.shape(active) != self._action_shape[:2]:
                raise ValueError(f"active must be a bool mask of shape (num_envs, n_robots) = "
                                 f"{self._action_shape[:2]}, got shape {np.shape(active)}")
            active = np.asarray(active, dtype=bool)
        result = self.batched.step(actions, active)
        terminations = np.repeat(np.asarray(result.terminated, dtype=bool)[:, None], self.n_robots, axis=1)
        return (result.observations, result.rewards.astype(np.float32), terminations,
                np.zeros_like(terminations), result.infos)

    # ----------------------------------------------------------------------------------------------- state
    def state(self) -> np.ndarray:
        """``(B, state_dim)`` float32: every env's global state (privileged where the scenario says so)."""
        return self.batched.state()

    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth of every env (policies that read it are oracles)."""
        return self.batched.privileged_view()

    # ------------------------------------------------------------------------------------------- snapshots
    def snapshot(self) -> Snapshot:
        """Every env's state, small and picklable (no dataset, no models: they are rebuilt from the config)."""
        face = {"num_envs": self.num_envs, "seed_rng": self._seed_rng.bit_generator.state}
        return Snapshot(SNAPSHOT_VERSION, self.metadata["name"] + ":vector", self._digest(), face,
                        self.batched.snapshot_state())

    def restore(self, snapshot: Snapshot) -> None:
        """Continue bit-exactly from ``snapshot`` (same config, data and ``num_envs``).

        Every field is checked before anything changes (``SnapshotError`` naming it; the env stays as it was). A
        pickled snapshot is a pickle: unpickling a file from an untrusted source runs its code. Load only
        snapshots you made."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"restore() needs a Snapshot from snapshot(), got {type(snapshot).__name__}")
        snapshot.check(self.metadata["name"] + ":vector", self._digest())
        num_envs = snapshot_entry(snapshot.face, "num_envs", "face.num_envs")
        if num_envs != self.num_envs:
            raise SnapshotError(f"snapshot of {num_envs} environments cannot be restored into a vector env of "
                                f"{self.num_envs}")
        check_snapshot_rng(snapshot_entry(snapshot.face, "seed_rng", "face.seed_rng"), "face.seed_rng")
        self.batched.check_snapshot_state(snapshot.state)
        try:
            before = self.batched.snapshot_state()
        except Exception:  # never reset: nothing to put back
            before = None
        try:
            self.batched.restore_state(snapshot.state)
        except Exception as exc:  # a fault the checks could not see: undo
            if before is not None:
                self.batched.restore_state(before)
            raise SnapshotError(f"snapshot could not be restored ({type(exc).__name__}: {exc}); the env is as it "
                                "was") from exc
        self._seed_rng = np.random.default_rng()
        self._seed_rng.bit_generator.state = snapshot.face["seed_rng"]

    def _digest(self) -> str:
        owner, arrays = self.batched.content_arrays()
        return config_digest(self.config, content_digest(owner, arrays) if owner is not None else None)

    def close(self) -> None:
        self.batched.close()


# the name of the cloud game's vector env before every scenario had one (tests, agents and users import it)
DataGamesVectorEnv = VectorEnv


def vector_env(num_envs: int = 1, config: Any = None, **overrides: Any) -> VectorEnv:
    """``datagames_env.vector_env(num_envs=256)`` / ``vector_env(64, config="p2p_default")``: B environments of
    any scenario with the semantics of its ``parallel_env`` (module docstring)."""
    return VectorEnv(num_envs, config, **overrides)
