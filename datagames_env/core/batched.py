"""The batched, array-first core: B environments x N robots stepped at once.

Every face (PettingZoo parallel and AEC, the vector env, RL adapters) is a thin view of this one
``step``; ``parallel_env`` is this core with B = 1.

Data path of one round (GUIDE section 2)::

    robot i's class mix p_i(y) --(pool's empirical p(yhat|y) of its model version)--> p_i(yhat)
    predicted-class histogram h_i ~ Multinomial(obs_per_round, p_i(yhat))     [observation]
    action -> upload counts per predicted class (allocation) or top-scored samples (selection)
    uploads' true labels ~ p_i(y | yhat); sample ids uniform in the pool cell (y, yhat)   [ledger]
    cloud counts += true labels; reward: the scenario's objective (datagames_env.scenarios.cloud_game)

Allocation mode never materialises the round's samples (its cost does not grow with obs_per_round);
selection mode draws real sample ids because the policy scores each sample.

Randomness: env b owns a numpy Generator (episode-level draws: mixes, initial cloud, drift) and an
xoshiro256** state (per-step draws, advanced only by env b's robots in a fixed order). Hence env b of a
vector env equals a parallel env reset with the same seed, draw for draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import draws, kernels
from ..config import ConfigError, EnvConfig, check_memory
from ..data.streams import draw_initial_cloud
from ..perception import ModelVersion
from .world import World, get_world

__all__ = ["BatchedCore", "StepResult", "allocation_counts", "derive_version"]


# ------------------------------------------------------------------------------------------ versions
def derive_version(v: ModelVersion, pool_labels: np.ndarray, n_classes: int) -> dict[str, np.ndarray]:
    """The lookup tables of one model version: pool conditionals ``R[y, yhat]``, the validation confusion
    ``C[y, yhat]`` and the pseudo-inverse of ``C'`` (mix estimation), per-class accuracy, and the pool's
    (y, yhat) cells sorted (``cell_start`` / ``cell_members``: drawing a sample of a cell is an index lookup)."""
    c = n_classes
    cells = pool_labels * c + v.pool_predictions
    joint = np.bincount(cells, minlength=c * c).reshape(c, c)
    return {
        "conditionals": joint / joint.sum(axis=1, keepdims=True),  # R[y, yhat] on the pool (every class present)
        "confusions": v.confusion,                                  # C[y, yhat] on the validation split
        "pinv_confusion_t": np.linalg.pinv(v.confusion.T),
        "class_accuracy": np.diag(v.confusion).copy(),
        "cell_start": np.concatenate([[0], np.cumsum(joint.ravel())]).astype(np.int64),
        "cell_members": np.argsort(cells, kind="stable").astype(np.int64),
        "pool_predictions": np.asarray(v.pool_predictions, dtype=np.int64),
    }


class _VersionTable:
    """Model versions in use, stacked into arrays the kernels index by a per-robot row.

    The per-version lookup tables (pool cells sorted, pseudo-inverse of C') are cached by version id, so
    a reset that reuses the world's model costs no sorting."""

    _DERIVED_CACHE_SIZE = 64

    def __init__(self, world: World) -> None:
        self.world = world
        self.versions: list[ModelVersion] = []
        self._row_of: dict[int, int] = {}
        self._built_ids: tuple[int, ...] | None = None
        self._derived: dict[int, dict[str, np.ndarray]] = {}

    def row(self, version: ModelVersion) -> int:
        if version.version_id not in self._row_of:
            self._row_of[version.version_id] = len(self.versions)
            self.versions.append(version)
        return self._row_of[version.version_id]

    def reset(self) -> None:
        self.versions = []
        self._row_of = {}

    def _derive(self, v: ModelVersion) -> dict[str, np.ndarray]:
        if v.version_id in self._derived:
            return self._derived[v.version_id]
        derived = derive_version(v, self.world.pool_labels, self.world.n_classes)
        if len(self._derived) >= self._DERIVED_CACHE_SIZE:
            self._derived.pop(next(iter(self._derived)))
        self._derived[v.version_id] = derived
        return derived

    def build(self) -> None:
        ids = tuple(v.version_id for v in self.versions)
        if ids == self._built_ids:
            return
        parts = [self._derive(v) for v in self.versions]
        for name in parts[0]:
            setattr(self, name, np.stack([p[name] for p in parts]))
        self._sample_features = None
        self._built_ids = ids

    def sample_features(self) -> np.ndarray:
        """(V, n_pool, E + C) float32: each pool sample's embedding and predicted probabilities."""
        if self._sample_features is None:
            self._sample_features = np.stack(
                [np.concatenate([v.pool_embeddings, v.pool_probs], axis=1) for v in self.versions]).astype(np.float32)
        return self._sample_features


# ----------------------------------------------------------------------------------------------- core
@dataclass
class StepResult:
    rewards: np.ndarray            # (B, N); equal across an env's robots with reward 'shared'
    distance: np.ndarray           # (B,) after the step
    uploaded_ids: np.ndarray       # (B, N, n_cache) dataset indices, -1 = unused slot
    uploaded_labels: np.ndarray    # (B, N, n_cache) true labels from the annotator, -1 = unused
    uploaded_predicted: np.ndarray  # (B, N, n_cache) the robot's predicted class, -1 = unused
    terminated: bool               # the episode's last round was played (the task ends: a termination)
    final_test_accuracy: np.ndarray | None = field(default=None)  # (B,) when config.final_accuracy


def allocation_counts(shares: np.ndarray, available: np.ndarray, n_cache: int) -> np.ndarray:
    """Shares in [0, 1] per predicted class and the samples available per class, ``(B, N, C)`` or ``(N, C)`` ->
    the integer uploads the environment makes of them (its own largest-remainder rounding), same shape. Policies
    that need the environment's counts (selection-mode quotas, message sweeps) call this, not the kernel."""
    shares = np.asarray(shares, dtype=np.float64)
    available = np.asarray(available, dtype=np.int64)
    batched = shares.ndim == 3
    shares, available = (shares, available) if batched else (shares[None], available[None])
    counts = np.zeros(available.shape, dtype=np.int64)
    kernels.allocate_uploads(shares, available, int(n_cache), counts)
    return counts if batched else counts[0]


class BatchedCore:
    """B environments of one config. State is explicit arrays; ``step`` is the one step function."""

    def __init__(self, cfg: EnvConfig, objective, num_envs: int = 1, world: World | None = None) -> None:
        """``objective(cfg, n_classes, dataset_name)`` builds what the robots are paid for (target counts,
        ``distance``, ``rewards``): the scenario's business (the cloud game's is
        :class:`~datagames_env.scenarios.cloud_game.CloudGameObjective`), not the core's."""
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.cfg = cfg
        self.num_envs = num_envs
        self.world = world if world is not None else get_world(cfg)
        self.n_classes = c = self.world.n_classes
        self.n_robots = cfg.n_robots
        self.objective = objective(cfg, c, self.world.dataset.name)  # target, distance, reward
        self.target_counts = self.objective.target_counts
        self._check_against_dataset()
        self.embedding_dim = cfg.perception.embedding_dim
        # observation layout (per robot): name -> slice; documented in env.py and the README
        layout, start = {}, 0
        for name, width in (("cloud_hist", c), ("target", c), ("gap", c), ("predicted_hist", c),
                            ("estimated_mix", c), ("class_accuracy", c), ("purity", c), ("gap_fill", c),
                            ("rounds_left", 1)):
            layout[name] = slice(start, start + width)
            start += width
        self.context_dim = start
        if cfg.action_mode == "selection":
            self.sample_feature_dim = self.embedding_dim + c
            layout["samples"] = slice(start, start + cfg.obs_per_round * self.sample_feature_dim)
            start += cfg.obs_per_round * self.sample_feature_dim
        self.obs_layout = layout
        self.obs_dim = start
        self._check_memory()
        # what _begin saves: every name of _STEP_STATE a step of this config sets (stream positions: selection)
        self._step_state = tuple(name for name in self._STEP_STATE
                                 if name != "stream_positions" or cfg.action_mode == "selection")
        self._versions = _VersionTable(self.world)
        self.round_index = 0
        self._needs_reset = True
        self._world_initial_cloud = None
        if cfg.world_seed is not None:
            self._world_initial_cloud = self._draw_initial_cloud(
                np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.world_seed, 1]))))

    # -------------------------------------------------------------------------------- validation helpers
    def _check_against_dataset(self) -> None:
        c, cfg = self.n_classes, self.cfg
        if cfg.initial_cloud_proportions is not None and len(cfg.initial_cloud_proportions) != c:
            raise ConfigError(f"config key 'initial_cloud_proportions' has {len(cfg.initial_cloud_proportions)} "
                              f"entries but dataset '{self.world.dataset.name}' has {c} classes")
        s = cfg.stream
        if s.mixes is not None and any(len(row) != c for row in s.mixes):
            raise ConfigError(f"config key 'stream.mixes' rows must have {c} entries (one per class)")
        if s.rare_classes is not None:
            bad = [k for k in s.rare_classes if not 0 <= k < c]
            if bad or len(set(s.rare_classes)) >= c:
                raise ConfigError(f"config key 'stream.rare_classes' must be distinct classes in 0..{c - 1} "
                                  f"leaving at least one common class, got {s.rare_classes}")

    def _check_memory(self) -> None:
        """Pre-flight: refuse sizes whose arrays would not fit, before any of them exists (10**7 robots ran 86 s
        to a MemoryError). Per env and robot a step holds about eight (C,) float64 / int64 arrays (mixes,
        histograms, estimates, actions, uploads), the (C, C) feasible matrix of its infos, its float32
        observation, in selection mode its stream positions and their predictions (int64 each), and about 1 KiB
        of Python objects in the faces. The initial cloud holds 3 int64 ids and a feature row per sample (its
        model trains on them), once per env when ``world_seed`` is null."""
        cfg, c, b_n = self.cfg, self.n_classes, self.num_envs
        per_robot = 8 * 8 * c + 8 * c * c + 4 * self.obs_dim + 1024
        keys: tuple[str, ...] = ("n_robots",)
        if cfg.action_mode == "selection":
            per_robot += 2 * 8 * cfg.obs_per_round
            keys = ("n_robots", "obs_per_round")
        envs = f" x {b_n} envs" if b_n > 1 else ""
        check_memory(keys, f"the step arrays of {cfg.n_robots} robots{envs} ({per_robot:,} bytes per robot)",
                     b_n * cfg.n_robots * per_robot)
        clouds = 1 if cfg.world_seed is not None else b_n
        row_bytes = 3 * 8 + self.world.dataset.features[0].nbytes
        check_memory(("initial_cloud_size",), f"an initial cloud of {cfg.initial_cloud_size} samples"
                     + (f" x {clouds} envs" if clouds > 1 else ""), clouds * cfg.initial_cloud_size * row_bytes)

    # --------------------------------------------------------------------------------- episode set-up
    def _draw_initial_cloud(self, rng: np.random.Generator) -> np.ndarray:
        """Dataset indices of the initial cloud: a skewed class mix, distinct samples where possible."""
        cfg = self.cfg
        return draw_initial_cloud(rng, cfg.initial_cloud_size, cfg.initial_cloud_alpha, cfg.initial_cloud_proportions,
                                  self.world.members_of_classes(), self.world.pool)

    def _model_for(self, train_ids: np.ndarray, robot: int) -> ModelVersion:
        pcfg = self.cfg.perception
        if not pcfg.per_robot:
            return self.world.perception.version_for(train_ids, pcfg.seed)
        # one model per robot: its own seed and a bootstrap of the cloud set, so robots err differently
        boot = np.random.default_rng([pcfg.seed, robot, len(train_ids)])
        sample = train_ids[boot.integers(0, len(train_ids), len(train_ids))] if len(train_ids) else train_ids
        return self.world.perception.version_for(sample, pcfg.seed + 1 + robot)

    def _assign_models(self, envs: range | list[int], rounds: int | None = None) -> None:
        n_models = self.n_robots if self.cfg.perception.per_robot else 1
        for b in envs:
            ids = self.cloud_ids(b, rounds)
            rows = [self._versions.row(self._model_for(ids, m)) for m in range(n_models)]
            self.robot_version[b] = rows if n_models > 1 else rows[0]
        self._versions.build()

    def reset(self, seeds: np.ndarray | list[int]) -> None:
        seeds = [int(s) for s in np.ravel(np.asarray(seeds, dtype=object))]  # python ints: any size
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs one seed per environment ({self.num_envs}), got {len(seeds)}")
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be non-negative integers, got {seeds}")
        cfg, b_n, n, c = self.cfg, self.num_envs, self.n_robots, self.n_classes
        self.seeds = seeds
        self.rngs, self.states = draws.seed_episodes(seeds)
        self.round_index = 0
        self.mixes = draws.draw_mixes(cfg.stream, n, c, self.rngs)
        self.initial_ids = draws.initial_clouds(self.rngs, self._world_initial_cloud, self._draw_initial_cloud)
        labels = self.world.dataset.labels
        self.cloud_counts = np.stack([np.bincount(labels[ids], minlength=c) for ids in self.initial_ids]).astype(np.float64)
        # the ledger grows with the rounds played (doubling): allocating every round at reset cost 7.3 GB for
        # vector_env(64), 100 robots, 10^4 rounds before the first step
        self.ledger_ids, self.ledger_labels, self.ledger_predicted = (np.full((b_n, 0, n, cfg.n_cache), -1)
                                                                      for _ in range(3))
        self._versions.reset()
        self.robot_version = np.zeros((b_n, n), dtype=np.int64)
        self._assign_models(range(b_n))
        self.models_round = 0  # the round whose cloud the current models were trained on (snapshots rebuild them)
        self.pooled_histograms = np.zeros((b_n, n, c), dtype=np.int64)
        self.distance = self.objective.distance(self.cloud_counts)
        self.initial_distance = self.distance.copy()
        self._needs_reset = False
        self._observe_round()

    # ------------------------------------------------------------------------------------------ rounds
    def _observe_round(self) -> None:
        """Draw what every robot sees this round, and each robot's estimate of its class mix."""
        cfg, v = self.cfg, self._versions
        self.histograms = np.zeros((self.num_envs, self.n_robots, self.n_classes), dtype=np.int64)
        if cfg.action_mode == "allocation":
            # p_i(yhat) = sum_y p_i(y) R[y, yhat] with each robot's model version
            marginals = np.einsum("bny,bnyk->bnk", self.mixes, v.conditionals[self.robot_version]) \
                if len(v.versions) > 1 else self.mixes @ v.conditionals[0]
            kernels.draw_predicted_histograms(self.states, marginals, cfg.obs_per_round, self.histograms)
        else:
            self.stream_positions = draws.draw_round(self.states, self.mixes, self.world, cfg.obs_per_round)
            predicted = v.pool_predictions[self.robot_version[:, :, None], self.stream_positions]
            self.histograms = draws.predicted_histograms(predicted, self.n_classes)
        # pooled: the rounds since the robot's model last changed share one confusion matrix, so their
        # histograms add up (less noise; biased if the mixes drift)
        self.pooled_histograms = self.pooled_histograms + self.histograms
        if cfg.mix_estimator == "truth":
            self.estimated_mixes = self.mixes.copy()
        else:
            source = self.pooled_histograms if cfg.mix_estimator == "pooled" else self.histograms
            self.estimated_mixes = np.empty((self.num_envs, self.n_robots, self.n_classes))
            kernels.estimate_mixes(source, self.robot_version, v.confusions, v.pinv_confusion_t,
                                   1 if cfg.mix_estimator == "em" else 0, 50, self.estimated_mixes)

    def validate_actions(self, actions: np.ndarray) -> np.ndarray:
        """Shape and finiteness checks; returns float64 actions clipped to [0, 1]. Raises before any state
        changes, naming the environment and robot at fault."""
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or never started")
        width = self.n_classes if self.cfg.action_mode == "allocation" else self.cfg.obs_per_round
        expected = (self.num_envs, self.n_robots, width)
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != expected:
            raise ValueError(f"actions must have shape {expected} (envs, robots, "
                             f"{'classes' if width == self.n_classes else 'observed samples'}), got {actions.shape}")
        first_bad = kernels.first_non_finite(actions)
        if first_bad >= 0:
            b, i, _ = np.unravel_index(first_bad, actions.shape)
            kind = "NaN" if np.isnan(actions[b, i]).any() else "inf"
            where = f"env {b}, " if self.num_envs > 1 else ""
            raise ValueError(f"{where}robot_{i}: action contains {kind}: {actions[b, i]}")
        # a copy: the caller's array is never modified
        return actions.clip(0.0, 1.0) if self.cfg.action_mode == "allocation" else actions

    def upload_counts(self, shares: np.ndarray) -> np.ndarray:
        """Allocation shares (validated) -> integer uploads per predicted class, (B, N, C)."""
        return allocation_counts(shares, self.histograms, self.cfg.n_cache)

    def _grow_ledger(self, rounds: int) -> None:
        """Room for at least ``rounds`` rounds in the ledger (new arrays: arrays handed out stay as they were)."""
        have = self.ledger_ids.shape[1]
        if rounds <= have:
            return
        size = min(self.cfg.rounds, max(rounds, 2 * have, 8))
        for name in ("ledger_ids", "ledger_labels", "ledger_predicted"):
            old = getattr(self, name)
            new = np.full((old.shape[0], size, *old.shape[2:]), -1, dtype=np.int64)
            new[:, :have] = old
            setattr(self, name, new)

    # Everything a step changes. The arrays a step writes in place are copied by _begin; the rest it only
    # rebinds, so keeping the old references is enough to put them back.
    _STEP_STATE = ("round_index", "_needs_reset", "models_round", "cloud_counts", "distance", "mixes", "histograms",
                   "pooled_histograms", "estimated_mixes", "stream_positions", "ledger_ids", "ledger_labels",
                   "ledger_predicted")

    def _begin(self) -> dict:
        saved = {name: getattr(self, name) for name in self._step_state}
        saved["states"] = self.states.copy()            # the kernels advance the xoshiro states in place
        saved["robot_version"] = self.robot_version.copy()  # written in place by _assign_models
        # only the drift of the mixes draws from the episode Generators during a step: without it they stay put
        # (reading B generator states costs more than the rest of a small step)
        saved["rng_states"] = [rng.bit_generator.state for rng in self.rngs] if self.cfg.stream.drift > 0 else None
        saved["versions"] = dict(vars(self._versions))  # reset/build rebind its members; the cache may stay
        return saved

    def _rollback(self, saved: dict) -> None:
        r = saved["round_index"]
        for name in ("ledger_ids", "ledger_labels", "ledger_predicted"):
            if getattr(self, name) is saved[name] and r < saved[name].shape[1]:
                saved[name][:, r] = -1  # the one row a step writes in place (it was empty: rounds go forward)
        for name in self._step_state:
            setattr(self, name, saved[name])
        self.states[...] = saved["states"]
        self.robot_version[...] = saved["robot_version"]
        for rng, state in zip(self.rngs, saved["rng_states"] or ()):
            rng.bit_generator.state = state
        derived = self._versions._derived  # a cache of pure functions of a version: keep what was computed
        vars(self._versions).clear()
        vars(self._versions).update(saved["versions"], _derived=derived)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        """One round for every env. Atomic: if anything raises (a rejected action, a failing retraining, a
        scenario objective), the core is left exactly as it was, RNG states included. ``active`` (bool (B, N),
        None = all): a robot that is not active uploads nothing (its stream still draws, so the others' do not
        shift)."""
        actions = self.validate_actions(actions)
        active = None if active is None else np.broadcast_to(np.asarray(active, dtype=bool),
                                                             (self.num_envs, self.n_robots))
        saved = self._begin()
        try:
            return self._step(actions, active)
        except BaseException:
            self._rollback(saved)
            raise

    def _step(self, actions: np.ndarray, active: np.ndarray | None = None) -> StepResult:
        cfg, v = self.cfg, self._versions
        b_n, n, k = self.num_envs, self.n_robots, cfg.n_cache
        if cfg.action_mode == "allocation":
            ids = np.empty((b_n, n, k), dtype=np.int64)
            labels = np.empty_like(ids)
            predicted = np.empty_like(ids)
            counts = np.zeros(self.histograms.shape, dtype=np.int64)  # upload_counts without re-checking dtypes
            kernels.allocate_uploads(actions, self.histograms, int(k), counts)
            if active is not None:
                counts *= active[:, :, None]
            kernels.draw_uploads(self.states, counts, self.mixes, self.robot_version,
                                 v.conditionals, v.cell_start, v.cell_members, ids, labels, predicted)
            ids = np.where(ids >= 0, self.world.pool[np.maximum(ids, 0)], -1)
        else:
            chosen = np.empty((b_n, n, k), dtype=np.int64)
            kernels.top_scores(actions, k, chosen)
            positions = np.take_along_axis(self.stream_positions, chosen, axis=2)
            ids = self.world.pool[positions]
            labels = self.world.pool_labels[positions]
            predicted = v.pool_predictions[self.robot_version[:, :, None], positions]
            if active is not None:
                ids, labels, predicted = (np.where(active[:, :, None], x, -1) for x in (ids, labels, predicted))
        r = self.round_index
        self._grow_ledger(r + 1)
        self.ledger_ids[:, r], self.ledger_labels[:, r], self.ledger_predicted[:, r] = ids, labels, predicted
        self.cloud_counts = self.cloud_counts.copy()  # arrays handed out earlier stay as they were
        kernels.add_uploads(self.cloud_counts, labels)
        before = self.distance
        self.distance = self.objective.distance(self.cloud_counts)
        rewards = self.objective.rewards(self.cloud_counts, before, self.distance, labels)
        self.round_index += 1
        terminated = self.round_index >= cfg.rounds
        final_accuracy = None
        if terminated:
            self._needs_reset = True
            if cfg.final_accuracy:
                final_accuracy = np.array([self.world.perception.test_accuracy(self.cloud_ids(b), cfg.perception.seed)
                                           for b in range(b_n)])
        else:
            pcfg = cfg.perception
            if pcfg.retrain_every and self.round_index % pcfg.retrain_every == 0:
                self._versions.reset()
                self._assign_models(range(b_n))
                self.models_round = self.round_index
                self.pooled_histograms = np.zeros_like(self.pooled_histograms)  # a new confusion matrix
            if cfg.stream.drift > 0:
                self._drift_mixes()
            self._observe_round()
        return StepResult(rewards, self.distance.copy(), ids, labels, predicted, terminated, final_accuracy)

    def _drift_mixes(self) -> None:
        self.mixes = draws.drift(self.mixes, self.cfg.stream, self.rngs)

    # ----------------------------------------------------------------------------------- read-outs
    def observations(self) -> np.ndarray:
        """(B, N, obs_dim) float32, a fresh array every call (layout: ``obs_layout``)."""
        cfg, lay, v = self.cfg, self.obs_layout, self._versions
        b_n, n = self.num_envs, self.n_robots
        out = np.empty((b_n, n, self.obs_dim), dtype=np.float32)
        kernels.fill_context_observations(self.cloud_counts, self.target_counts, self.histograms, cfg.obs_per_round,
                                          self.estimated_mixes, v.class_accuracy, v.confusions,
                                          self.robot_version, (cfg.rounds - self.round_index) / cfg.rounds, out)
        if cfg.action_mode == "selection":
            feats = v.sample_features()[self.robot_version[:, :, None], self.stream_positions]
            out[:, :, lay["samples"]] = feats.reshape(b_n, n, -1)
        return out

    def estimated_feasible_matrices(self) -> np.ndarray:
        """(B, N, C, C): each robot's estimate of p(y | yhat = j) in column j, from its confusion matrix
        and estimated mix (GUIDE section 3). A column with no mass (the robot does not expect to predict
        class j) is all zeros: that predicted class is not available."""
        return self._feasible(self._versions.confusions, self.estimated_mixes)

    def true_feasible_matrices(self) -> np.ndarray:
        """(B, N, C, C): the truth, p_i(y | yhat = j) from the true mix and the pool's empirical p(yhat|y).
        Privileged: for oracle policies and analysis only."""
        return self._feasible(self._versions.conditionals, self.mixes)

    def _feasible(self, conditionals: np.ndarray, mixes: np.ndarray) -> np.ndarray:
        out = np.empty(mixes.shape + (self.n_classes,))
        kernels.feasible_matrices(conditionals, self.robot_version, mixes, out)
        return out

    def cloud_ids(self, b: int, rounds: int | None = None) -> np.ndarray:
        """Dataset indices of env b's cloud set (initial cloud + uploads so far, or of the first ``rounds``
        rounds; a multiset)."""
        uploaded = self.ledger_ids[b, :rounds].ravel()
        return np.concatenate([self.initial_ids[b], uploaded[uploaded >= 0]])

    def ledger(self, b: int = 0) -> dict[str, np.ndarray]:
        """Every upload of env b: sample id, robot, round, true label, the robot's predicted label."""
        rounds, robots, _ = np.indices(self.ledger_ids.shape[1:])
        keep = self.ledger_ids[b] >= 0
        return {"sample_id": self.ledger_ids[b][keep], "robot": robots[keep], "round": rounds[keep],
                "true_label": self.ledger_labels[b][keep], "predicted_label": self.ledger_predicted[b][keep]}

    # ------------------------------------------------------------------------------------------- snapshots
    # Everything a step or reset sets, as plain arrays; the model table is rebuilt from the cloud of round
    # models_round (model versions are a deterministic function of their training ids and seed, cached per world).
    _SNAPSHOT_STATE = ("seeds", "states", "round_index", "_needs_reset", "models_round", "mixes", "initial_ids",
                       "cloud_counts", "distance", "initial_distance", "histograms", "pooled_histograms",
                       "estimated_mixes", "stream_positions", "robot_version")

    def snapshot_state(self) -> dict:
        if not hasattr(self, "states"):
            raise RuntimeError("snapshot() before reset(): nothing to snapshot")
        state = {name: _copied(getattr(self, name)) for name in self._SNAPSHOT_STATE if hasattr(self, name)}
        r = self.round_index  # only the rows played: the ledger's spare capacity is not state
        state.update(rng_states=[rng.bit_generator.state for rng in self.rngs],
                     ledger=[getattr(self, name)[:, :r].copy()
                             for name in ("ledger_ids", "ledger_labels", "ledger_predicted")])
        return state

    def restore_state(self, state: dict) -> None:
        for name in self._SNAPSHOT_STATE:
            if name in state:
                setattr(self, name, _copied(state[name]))
        if len(self.seeds) != self.num_envs:
            raise ValueError(f"snapshot of {len(self.seeds)} environments cannot be restored into {self.num_envs}")
        self.rngs = []
        for rng_state in state["rng_states"]:
            self.rngs.append(np.random.Generator(np.random.PCG64()))
            self.rngs[-1].bit_generator.state = rng_state
        self.ledger_ids, self.ledger_labels, self.ledger_predicted = (x.copy() for x in state["ledger"])
        robot_version = self.robot_version
        self._versions.reset()
        self.robot_version = np.zeros_like(robot_version)
        self._assign_models(range(self.num_envs), self.models_round)
        if not np.array_equal(self.robot_version, robot_version):
            raise ValueError("snapshot: the rebuilt model table does not match the recorded one")

    def model_versions(self) -> list[ModelVersion]:
        return list(self._versions.versions)



def _copied(value):
    if isinstance(value, np.ndarray):
        return value.copy()
    return list(value) if isinstance(value, list) else value
