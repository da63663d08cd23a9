"""``vector_env(num_envs)``: B environments of one config stepped at once, arrays in and out.

=====================  ============================================================================
Batch                  B = ``num_envs`` environments x N = ``n_robots`` robots; env b equals a
                       ``parallel_env`` reset with seed ``seeds[b]``, draw for draw
Observations           ``(B, N, obs_dim)`` float32, the per-robot layout of ``parallel_env``
Actions                ``(B, N, C)`` allocation shares or ``(B, N, obs_per_round)`` selection scores
Rewards                ``(B, N)`` float32, identical across the robots of an env
terminations           ``(B, N)`` True after ``rounds`` steps (the task ends); ``truncations`` always False
Reset                  ``reset(seed)`` with an int (env b gets ``seed + b``) or one seed per env; all
                       envs terminate together, so there is no auto-reset: call ``reset`` again
Robots leaving         ``step(actions, active)``: ``active`` bool ``(B, N)`` (another shape is a ``ValueError``
                       naming the expected one); an inactive robot uploads nothing (its row of ``actions`` is
                       ignored), as in the parallel face
Snapshots              ``snapshot()`` / ``restore(snapshot)``: every env's state, small and picklable, bit-exact
                       on a vector env of the same config, data and ``num_envs``; checked field by field before
                       anything changes (``SnapshotError`` naming the field). A pickled snapshot is a pickle: never
                       load one from an untrusted source
=====================  ============================================================================

``infos`` holds arrays, the same keys at reset and every step: ``available`` (B, N, C), ``cloud_counts`` (B, C),
``distance`` (B,), ``round``, ``uploaded_labels`` (B, N, n_cache, -1 = unused slot; all -1 at reset), with
``final_accuracy: true`` ``final_test_accuracy`` (B,) (-1 until the last step). Estimated feasible matrices are
computed on demand (``estimated_feasible_matrices()``): they cost B*N*C*C per call.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from ..config import ConfigError, EnvConfig, load_config
from ..core import BatchedCore
from ..scenarios.base import (SNAPSHOT_VERSION, Snapshot, SnapshotError, check_snapshot_rng, config_digest,
                              content_digest, snapshot_entry)
from ..scenarios.cloud_game import CloudGameObjective
from ..scenarios.datagames import action_width, check_core_state, observation_bounds


class DataGamesVectorEnv:
    metadata = {"name": "datagames_v0", "autoreset_mode": None}

    def __init__(self, num_envs: int = 1, config: str | dict | EnvConfig | None = None, **overrides) -> None:
        self.config = load_config(config, **overrides)
        if self.config.faults.dropout:  # dropout lives in the parallel face; refused rather than ignored here
            raise ConfigError("config key 'faults.dropout': robot dropout is not supported by the vector env (use "
                              "parallel_env); the protocol faults of Interactive need env.liars / fault_rngs of a "
                              "parallel env too")
        self.core = BatchedCore(self.config, CloudGameObjective, num_envs=num_envs)
        self.num_envs = num_envs
        self.n_robots = self.config.n_robots
        self.possible_agents = [f"robot_{i}" for i in range(self.n_robots)]
        low, high = observation_bounds(self.core)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.Box(0.0, 1.0, (action_width(self.core),), dtype=np.float32)
        shape = (num_envs, self.n_robots)
        self.observation_space = spaces.Box(np.broadcast_to(low, shape + low.shape), np.broadcast_to(high, shape + high.shape),
                                            dtype=np.float32)
        self.action_space = spaces.Box(0.0, 1.0, shape + self.single_action_space.shape, dtype=np.float32)
        self._seed_rng = np.random.default_rng()

    @property
    def obs_layout(self) -> dict[str, slice]:
        return dict(self.core.obs_layout)

    def reset(self, seed: int | list[int] | np.ndarray | None = None, options: dict | None = None):
        if seed is None:
            seeds = self._seed_rng.integers(2**62, size=self.num_envs)
        elif np.ndim(seed) == 0:
            seeds = [int(seed) + b for b in range(self.num_envs)]
            self._seed_rng = np.random.default_rng(seed)
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset(seed=...) needs an int or {self.num_envs} seeds, got {len(seeds)}")
        self.core.reset(seeds)
        return self.core.observations(), self._infos()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None):
        """``active`` (bool ``(B, N)``, None = all): robots that left upload nothing (docs/reliability.md)."""
        if active is not None and np.shape(active) != (self.num_envs, self.n_robots):
            raise ValueError(f"active must be a bool mask of shape (num_envs, n_robots) = "
                             f"{(self.num_envs, self.n_robots)}, got shape {np.shape(active)}")
        result = self.core.step(actions, active)
        shape = (self.num_envs, self.n_robots)
        rewards = result.rewards.astype(np.float32)
        terminations = np.full(shape, result.terminated)
        truncations = np.zeros(shape, dtype=bool)
        return self.core.observations(), rewards, terminations, truncations, self._infos(result)

    def _infos(self, result=None) -> dict:
        # the same keys at reset and at every step (fixed schema)
        core = self.core
        infos = {"available": core.histograms.copy(), "cloud_counts": core.cloud_counts.copy(),
                 "distance": core.distance.copy(), "round": core.round_index,
                 "uploaded_labels": (result.uploaded_labels if result is not None else
                                     np.full((self.num_envs, self.n_robots, self.config.n_cache), -1, np.int64))}
        if self.config.final_accuracy:  # -1 until the last step computed it
            final = result.final_test_accuracy if result is not None else None
            infos["final_test_accuracy"] = final if final is not None else np.full(self.num_envs, -1.0)
        return infos

    def snapshot(self) -> Snapshot:
        """Every env's state, small and picklable (no dataset, no models: they are rebuilt from the config)."""
        face = {"num_envs": self.num_envs, "seed_rng": self._seed_rng.bit_generator.state}
        return Snapshot(SNAPSHOT_VERSION, self.metadata["name"] + ":vector", self._digest(), face,
                        self.core.snapshot_state())

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
        check_core_state(self.core, snapshot.state, "state")
        try:
            before = self.core.snapshot_state()
        except RuntimeError:  # never reset: nothing to put back
            before = None
        try:
            self.core.restore_state(snapshot.state)
        except Exception as exc:  # a fault the checks could not see: undo
            if before is not None:
                self.core.restore_state(before)
            raise SnapshotError(f"snapshot could not be restored ({type(exc).__name__}: {exc}); the env is as it "
                                "was") from exc
        self._seed_rng = np.random.default_rng()
        self._seed_rng.bit_generator.state = snapshot.face["seed_rng"]

    def _digest(self) -> str:
        dataset = self.core.world.dataset
        return config_digest(self.config, content_digest(dataset, [dataset.features, dataset.labels]))

    def estimated_feasible_matrices(self) -> np.ndarray:
        return self.core.estimated_feasible_matrices()

    def privileged_view(self) -> dict[str, np.ndarray]:
        core = self.core
        return {"true_mixes": core.mixes.copy(), "true_feasible_matrices": core.true_feasible_matrices(),
                "available": core.histograms.copy(), "cloud_counts": core.cloud_counts.copy(),
                "target_counts": core.target_counts.copy(), "n_cache": core.cfg.n_cache}

    def close(self) -> None:
        pass


def vector_env(num_envs: int = 1, config: str | dict | EnvConfig | None = None, **overrides) -> DataGamesVectorEnv:
    """``datagames_env.vector_env(num_envs=256)``: B environments with the semantics of ``parallel_env``."""
    return DataGamesVectorEnv(num_envs, config, **overrides)
