"""DUAL scenario: two-stage fleet data curation, distributed upload then active labeling in the cloud.

Each round every robot sees ``obs_per_round`` samples of its own stream and scores them; its top ``n_cache``
go through the privacy filter and up to the cloud (stage 1, the robots' action). The cloud then chooses which
of its unlabeled uploads to label under a global ``label_budget`` per round with the configured ``labeler``
(stage 2, inside the step; submodular by default, as in DUAL). Only labeled samples enter the training set; the
rest stays in the cloud marked unlabeled (a later round may still label it, ``label_pool: all``). The cloud
model retrains on the labeled set on its schedule and the robots download it.

=====================  ===========================================================================
Agents                 ``robot_0 ... robot_{N-1}`` (``n_robots``), all acting every round
Observation space      ``Box(low, high, (context_dim + obs_per_round * sample_feature_dim,), float32)``:
                       a context block, then per observed sample its L2-normalised embedding (E =
                       ``perception.embedding_dim``), the predicted class probabilities (C) and its
                       coverage by the cloud set (1). ``env.obs_layout`` (slices, incl. ``context`` and
                       ``samples``), ``env.sample_layout``, ``n_samples``, ``sample_feature_dim``,
                       ``context_dim`` describe it
Action space           ``Box(0, 1, (obs_per_round,), float32)``: a score per observed sample; the top
                       ``n_cache`` are uploaded (ties: lower index). Any finite value is ranked; NaN / inf /
                       a wrong shape raise ``ValueError`` naming the robot, and a failed step changes nothing
Reward                 identical for all robots. ``reward: accuracy`` (default): the change of the cloud
                       model's validation accuracy this round (0 in rounds without retraining).
                       ``reward: coverage``: the increase of the mean coverage of this round's fleet
                       observations by the *labeled* cloud set (facility location / |ground|)
Episode end            after ``rounds`` steps every robot is terminated (the task's horizon; never
                       truncated); ``agents`` becomes empty
Arguments              ``config`` (a name in ``configs/``, a YAML path, a dict or a ``DualConfig``),
                       ``render_mode`` (``ansi``, ``human`` or None), ``max_cycles``, and any config key as a keyword
                       (``n_robots=4``, ``**{"privacy.mode": "drop"}``)
=====================  ===========================================================================

Context block (``obs_layout`` names, C classes)::

    labeled_hist     C  labeled cloud class counts / labeled cloud size
    predicted_hist   C  this round's predicted-class histogram / obs_per_round
    class_accuracy   C  the cloud model's per-class validation accuracy, diag(C)
    estimated_mix    C  the robot's BBSE estimate of its true class mix
    budgets          2  n_cache / obs_per_round, min(1, label_budget / (n_robots * n_cache))
    unlabeled_share  1  unlabeled uploads / cloud size
    rounds_left      1  (rounds - round) / rounds
    mean_coverage    1  mean coverage of this robot's samples by the cloud set

Coverage uses the facility-location kernel (``kernel``, ``kernel_scale``; :mod:`datagames_env.selection.submodular`), floored at
0, over the whole cloud set (labeled and unlabeled: a second copy of an uploaded scene is wasted bandwidth).

``infos[robot]`` has the same keys at reset and at every step (numbers and arrays only): ``round``; its
``feasible_matrix`` (estimated, column j = p(y | yhat = j)), ``available`` (samples per predicted class),
``estimated_mix``; the public ``cloud_counts`` (labeled class counts), ``target_counts`` (uniform over the labeled
set at episode end), ``n_cache``, ``label_budget``, ``labels_used``, ``cloud_labeled``, ``cloud_unlabeled``,
``validation_accuracy``, ``test_accuracy``; about the last step (zeros and -1 at reset): ``uploaded`` (count),
``uploaded_sample_ids`` (int64 ``(n_cache,)``, -1 = slot not uploaded), ``labeled_from_robot``, ``labeled`` (this
round, whole fleet), ``privacy_<k>`` for this robot and ``privacy_total_<k>`` for the fleet with k in
``private``, ``dropped``, ``blurred``, ``passed_private``, ``upload_objective`` / ``upload_objective_gain`` (fleet
facility location of the uploads over the round's observations, mean per ground sample), ``label_objective``
(0 when there was nothing to label) and ``coverage_gain``.
``env.privileged_view()`` (oracles only) exposes true mixes, true feasible matrices and the true labels of
what every robot sees; ``env.cloud()`` the cloud ledger; ``env.history`` the per-round records.

Privacy: a ``privacy.private_fraction`` of the stream pool carries a synthetic private patch
(:func:`~datagames_env.data.privacy.stamp_private_patches`). Every upload goes through
:meth:`~datagames_env.data.privacy.PrivacyFilter.apply`; what reaches the cloud is the filter's output (blurred
copies are interned as extra feature rows so the model cache still works; the interned copy is checked equal
to the filter's output on every upload). The initial cloud is drawn from public samples.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from gymnasium import spaces
from pydantic import Field, field_validator, model_validator

from ..selection.submodular import (
    DEFAULT_MAX_BLOCK_BYTES,
    FacilityLocation,
    fleet_objective,
    lazy_greedy,
    max_similarity,
)

from ..core import kernels
from ..config import (
    MAX_COUNT,
    ConfigError,
    DatasetConfig,
    FaultsConfig,
    PerceptionConfig,
    StreamConfig,
    _Strict,
    check_memory,
    check_stream_against_fleet,
    load_typed_config,
)
from ..core import World, derive_version
from ..data.datasets import Dataset
from . import SCENARIOS
from .base import SampleSpec, Scenario, Transition, active_mask, atomic_step
from .base import SnapshotError, check_snapshot_array, check_snapshot_int, check_snapshot_rng, snapshot_entry
from ..core import draws
from ..data.streams import draw_initial_cloud, drift_mixes
from ..perception import ModelVersion, limited_torch_threads, uncertainty
from ..data.privacy import PrivacyConfig, PrivacyFilter, stamp_private_patches

__all__ = ["DualConfig", "DualParallelEnv", "DualScenario", "DualWorld", "env",
           "load_dual_config", "parallel_env", "set_observation_layout"]

METADATA = {"name": "datagames_dual_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True,
            "render_fps": 2}
LABELERS = ("submodular", "random", "entropy", "margin")
PRIVACY_COUNTS = ("private", "dropped", "blurred", "passed_private")  # infos: privacy_<k>, privacy_total_<k>


# ------------------------------------------------------------------------------------------------ config


class DualPerceptionConfig(PerceptionConfig):
    """The cloud model; in DUAL it retrains on the labeled set after every round by default.

    ``tier: fast`` (default): a frozen extractor pretrained once on a public split (``public_fraction`` of the
    stream pool, per class, held out of the pool) and cached on disk, the cloud model a Gaussian head on its
    features (:mod:`datagames_env.perception.fast`, :mod:`.dual_fast`). ``tier: paper``: the cloud network
    retrained from scratch on the labeled set (what the papers do; 0dbebaf's episodes)."""

    retrain_every: int = Field(1, ge=0, description="retrain on the labeled cloud set every k rounds; 0 = never")
    tier: Literal["fast", "paper"] = Field("fast", description="fast: frozen pretrained features + a head "
                                           "refitted in one batched call; paper: the network retrained per round")
    public_fraction: float = Field(0.05, gt=0.0, lt=1.0, description="fast tier: share of the stream pool (per "
                                   "class) held out as the public pretraining split of the frozen extractor (0.3 "
                                   "makes the generic model alone ~0.9 accurate on digits: no labeling rule matters)")
    head: Literal["student", "lda", "ridge"] = Field("student", description="fast tier: the cloud model's head")


class DualPrivacyConfig(PrivacyConfig):
    """The shared privacy block; DUAL's default stamps 2% of the pool private so the filter acts (issue 19)."""

    private_fraction: float = Field(0.02, ge=0.0, le=1.0, description="share of samples stamped private (synthetic)")


class DualConfig(_Strict):
    """Every knob of the DUAL scenario (``configs/dual_default.yaml`` lists them with their defaults)."""

    scenario: Literal["dual"] = "dual"
    dataset: DatasetConfig = DatasetConfig()
    n_robots: int = Field(12, ge=1)
    rounds: int = Field(5, ge=1)
    obs_per_round: int = Field(60, ge=1, le=MAX_COUNT, description="samples each robot sees per round")
    n_cache: int = Field(6, ge=1, description="uploads per robot per round (stage 1)")
    label_budget: int = Field(4, ge=0, description="labels per round for the whole fleet (stage 2)")
    labeler: Literal["submodular", "random", "entropy", "margin"] = Field(
        "submodular", description="how the cloud picks what to label among its unlabeled uploads")
    label_pool: Literal["all", "round"] = Field(
        "all", description="label candidates: every unlabeled upload so far (all) or this round's uploads only")
    initial_cloud_size: int = Field(10, ge=0, description="labeled samples the cloud starts with (public only)")
    initial_cloud_alpha: float = Field(1.0, gt=0.0, description="Dirichlet skew of the initial cloud's class mix")
    stream: StreamConfig = StreamConfig()
    perception: DualPerceptionConfig = DualPerceptionConfig()
    kernel: Literal["inverse_distance", "cosine"] = Field(
        "inverse_distance", description="facility-location kernel: 1/(1 + kernel_scale * distance) or cosine")
    kernel_scale: float = Field(0.01, gt=0.0, le=1e6, description="inverse_distance: the 0.01 of Fleet-AL's kernel; "
                                "beyond 1e6 distinct samples are all dissimilar (and float32 distances overflow)")
    max_block_bytes: int = Field(DEFAULT_MAX_BLOCK_BYTES, ge=1024, description="memory bound of similarity blocks")
    reward: Literal["accuracy", "coverage"] = "accuracy"
    privacy: DualPrivacyConfig = DualPrivacyConfig()
    faults: FaultsConfig = Field(FaultsConfig(), description="injected faults (dropout, message loss, liars); "
                                                             "off by default")
    world_seed: int | None = Field(
        0, description="seeds the initial cloud (and so the first model), shared by all episodes; null = per reset")

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> DualConfig:
        if self.n_cache > self.obs_per_round:
            raise ValueError(f"n_cache ({self.n_cache}) cannot exceed obs_per_round ({self.obs_per_round})")
        check_stream_against_fleet(self.stream, self.n_robots)
        # lower bounds (at least 2 classes, 1 feature): observations and the state space's two bounds hold
        # obs_per_round x (embedding + classes + 1) float32 per robot; the initial cloud's ids and features
        per_robot = 3 * 4 * self.obs_per_round * (self.perception.embedding_dim + 3)
        check_memory(("n_robots", "obs_per_round"), f"the observations of {self.n_robots} robots x "
                     f"{self.obs_per_round} samples", self.n_robots * per_robot)
        check_memory(("initial_cloud_size",), f"an initial cloud of {self.initial_cloud_size} samples",
                     self.initial_cloud_size * (3 * 8 + 4))
        return self


def load_dual_config(config: str | Path | dict | DualConfig | None = None, **overrides: Any) -> DualConfig:
    """A validated :class:`DualConfig` from a config name (default ``dual_default``, which lists the defaults) /
    YAML path / dict plus keyword overrides (top-level, nested dicts, or dotted keys like
    ``**{"privacy.mode": "drop"}``). Errors name the key."""
    if config is None:
        config = SCENARIOS["dual"].default_config
    return load_typed_config(DualConfig, config, overrides, "dual configuration")


# ------------------------------------------------------------------------------------------------- world


class DualWorld(World):
    """The shared :class:`~datagames_env.core.World` (dataset, split, pool tables, perception cache) plus what DUAL
    adds: the private patches and the interned blurred copies, which the perception cache also scores."""

    def __init__(self, cfg: DualConfig) -> None:
        super().__init__(cfg)
        self.public_members = [m[~self.private[self.pool[m]]] for m in self.members_of_classes()]

    def _split(self, cfg: DualConfig):
        """The fast tier holds ``perception.public_fraction`` of every class's pool rows out of the pool: the
        public split its extractor pretrains on (``public_rows``); the paper tier keeps the whole pool."""
        splits = super()._split(cfg)
        self.public_rows = np.zeros(0, dtype=np.int64)
        if cfg.perception.tier != "fast":
            return splits
        rng = np.random.default_rng(np.random.SeedSequence([cfg.dataset.split_seed, 0x9B11C]))
        labels = self.dataset.labels[splits.pool]
        public = []
        for y in range(self.dataset.n_classes):
            members = splits.pool[labels == y]
            k = int(round(cfg.perception.public_fraction * len(members)))
            k = min(k, len(members) - 1)  # every class keeps a pool sample (the streams draw from each)
            public.append(rng.choice(members, size=max(k, 0), replace=False))
        self.public_rows = np.sort(np.concatenate(public)).astype(np.int64)
        return dataclasses.replace(splits, pool=np.setdiff1d(splits.pool, self.public_rows))

    def _model_rows(self, cfg: DualConfig) -> tuple[np.ndarray, np.ndarray]:
        """Stamp private patches on a share of the pool, intern the blurred copies as extra rows."""
        dcfg, pcfg = cfg.dataset, cfg.privacy
        self.image_shape = self.dataset.image_shape
        n = self.dataset.n_samples
        self.private = np.zeros(n, dtype=bool)
        self.regions = np.zeros((n, 4), dtype=np.int64)
        features = self.dataset.features
        if pcfg.private_fraction > 0:
            if self.image_shape is None:
                raise ConfigError(f"config key 'privacy.private_fraction': dataset '{self.dataset.name}' has "
                                  f"feature shape {self.dataset.feature_shape}, not images: no region to stamp")
            rng = np.random.default_rng(np.random.SeedSequence([dcfg.split_seed, 0x9817]))
            images = features[self.pool].reshape((len(self.pool), *self.image_shape))
            try:
                stamped, private, regions = stamp_private_patches(images, pcfg.private_fraction, rng, pcfg.patch_size)
            except ValueError as exc:
                raise ConfigError(f"config key 'privacy.patch_size': {exc}") from None
            features = features.copy()
            features[self.pool] = stamped.reshape((len(self.pool), *self.dataset.feature_shape))
            self.private[self.pool], self.regions[self.pool] = private, regions
        self.robot_features = features  # what the robots see (private patches included)
        # Interned blurred copies: row n + k is the blurred version of the k-th private pool sample that the
        # filter blurs (one whose blur changes too little is dropped at every upload: no copy).
        private_ids = np.flatnonzero(self.private)
        self.blurred_row = np.full(n, -1, dtype=np.int64)
        extra = np.zeros((0, *self.dataset.feature_shape), dtype=np.float32)
        if len(private_ids):
            # the configured filter (its min_change too): a copy exists exactly when an upload leaves blurred
            blur = PrivacyFilter("blur", pcfg.blur_sigma, pcfg.min_change).apply(
                self.as_images(features[private_ids]), np.ones(len(private_ids), bool), self.regions[private_ids])
            private_ids = private_ids[blur.blurred]
            extra = blur.features[blur.blurred].reshape((len(private_ids), *self.dataset.feature_shape))
            extra = extra.astype(np.float32)
            self.blurred_row[private_ids] = n + np.arange(len(private_ids))
        self.features = np.concatenate([features, extra]) if len(extra) else features
        self.labels = np.concatenate([self.dataset.labels, self.dataset.labels[private_ids]])
        self.source_of_row = np.concatenate([np.arange(n), private_ids])  # dataset sample behind each row
        self.pool_position = np.full(len(self.features), -1, dtype=np.int64)
        self.pool_position[self.pool] = np.arange(len(self.pool))
        return self.features, self.labels

    def as_images(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows in the privacy filter's layout ((n, C, H, W) images, or the vectors themselves)."""
        return rows if self.image_shape is None else rows.reshape((len(rows), *self.image_shape))


@functools.lru_cache(maxsize=4)
def _cached_world(key: str) -> DualWorld:
    return DualWorld(DualConfig.model_validate(json.loads(key)))


def get_dual_world(cfg: DualConfig) -> DualWorld:
    """Worlds are cached per (dataset, perception, private patches) so the episodes of one config share models.
    The filter mode is not part of the world (blurred copies are interned whatever the mode), so configs that
    differ only in ``privacy.mode`` share one world and its trained models."""
    key = {"dataset": cfg.dataset.model_dump(), "perception": cfg.perception.model_dump(),
           "privacy": cfg.privacy.model_dump(exclude={"mode"})}
    return _cached_world(json.dumps(key, sort_keys=True))


# ---------------------------------------------------------------------------------------------------- env


def set_observation_layout(scenario: Any, cfg: DualConfig, c: int) -> None:
    """The observation contract both tiers share (module docstring): ``obs_layout``, ``sample_layout``, bounds,
    ``sample_spec``, ``action_width``, ``state_space``, ``target_counts``, set on ``scenario``."""
    scenario.embedding_dim = e = cfg.perception.embedding_dim
    layout, start = {}, 0
    for name, width in (("labeled_hist", c), ("predicted_hist", c), ("class_accuracy", c), ("estimated_mix", c),
                        ("budgets", 2), ("unlabeled_share", 1), ("rounds_left", 1), ("mean_coverage", 1)):
        layout[name] = slice(start, start + width)
        start += width
    scenario.context_dim = start
    layout["context"] = slice(0, start)
    scenario.n_samples = cfg.obs_per_round
    scenario.sample_layout = {"embedding": slice(0, e), "probs": slice(e, e + c), "coverage": slice(e + c, e + c + 1)}
    scenario.sample_feature_dim = e + c + 1
    layout["samples"] = slice(start, start + scenario.n_samples * scenario.sample_feature_dim)
    scenario.obs_layout = layout
    scenario.obs_dim = layout["samples"].stop
    low = np.zeros(scenario.obs_dim, dtype=np.float32)
    per_sample_low = np.zeros(scenario.sample_feature_dim, dtype=np.float32)
    per_sample_low[scenario.sample_layout["embedding"]] = -1.0
    low[layout["samples"]] = np.tile(per_sample_low, scenario.n_samples)
    scenario._low, scenario._high = low, np.ones(scenario.obs_dim, dtype=np.float32)
    scenario.observation_low, scenario.observation_high = scenario._low, scenario._high
    scenario.sample_spec = SampleSpec(scenario.context_dim, scenario.n_samples, scenario.sample_feature_dim, e,
                                      cfg.n_cache)
    scenario.action_width = scenario.n_samples
    scenario.state_space = spaces.Box(np.tile(scenario._low, cfg.n_robots), np.tile(scenario._high, cfg.n_robots),
                                      dtype=np.float32)
    scenario.target_counts = np.full(c, (cfg.initial_cloud_size + cfg.rounds * cfg.label_budget) / c)
    scenario.target_counts.flags.writeable = False


class DualScenario(Scenario):
    """DUAL: two-stage upload + labeling (see the module docstring)."""

    metadata = METADATA

    def __init__(self, config: str | Path | dict | DualConfig | None = None, **overrides: Any) -> None:
        self.config = cfg = load_dual_config(config, **overrides)
        self.n_robots = cfg.n_robots
        self.world = get_dual_world(cfg)
        self.n_classes = c = self.world.n_classes
        self.class_names = self.world.dataset.class_names
        set_observation_layout(self, cfg, c)
        self.filter = PrivacyFilter.from_config(cfg.privacy)
        self._world_initial_rows = None
        if cfg.world_seed is not None:
            self._world_initial_rows = self._draw_initial_cloud(
                np.random.default_rng(np.random.SeedSequence([cfg.world_seed, 1])))
        self.history: list[dict] = []

    # ---------------------------------------------------------------------------------------- spaces
    # ------------------------------------------------------------------------------------- episode set-up
    def _draw_initial_cloud(self, rng: np.random.Generator) -> np.ndarray:
        """Dataset rows of the initial (labeled) cloud: a Dirichlet-skewed class mix of *public* pool samples."""
        cfg, w = self.config, self.world
        return draw_initial_cloud(rng, cfg.initial_cloud_size, cfg.initial_cloud_alpha, None, w.public_members,
                                  w.pool, no_member_error="config key 'privacy.private_fraction'")

    def reset(self, seed: int) -> tuple[np.ndarray, list[dict]]:
        cfg = self.config
        self.seed = seed
        rngs, self.states = draws.seed_episodes([seed])  # the core's seeding and draws, at B = 1
        self.rng = rngs[0]
        self.mixes = draws.draw_mixes(cfg.stream, cfg.n_robots, self.n_classes, rngs)[0]
        initial = draws.initial_clouds(rngs, self._world_initial_rows, self._draw_initial_cloud)[0]
        n0 = len(initial)
        # the cloud ledger: one entry per sample that reached the cloud
        self._cloud = {"row": initial.astype(np.int64), "labeled": np.ones(n0, bool), "robot": np.full(n0, -1),
                       "round": np.full(n0, -1), "labeled_round": np.full(n0, -1), "private": np.zeros(n0, bool),
                       "blurred": np.zeros(n0, bool)}
        self.round_index = 0
        self.labels_used = 0
        self._version_rows = np.zeros(0, np.int64)
        self._set_model()
        self.history = [{"round": 0, "validation_accuracy": self.version.validation_accuracy,
                         "test_accuracy": self.test_accuracy, "labels_used": 0,
                         "cloud_labeled": int(n0), "cloud_unlabeled": 0}]
        self._observe_round()
        return self._observation_matrix(), self._infos(None)

    # --------------------------------------------------------------------------------------- model / views
    def _labeled_rows(self) -> np.ndarray:
        return self._cloud["row"][self._cloud["labeled"]]

    def _set_model(self, rows: np.ndarray | None = None) -> None:
        """(Re)train the cloud model on the labeled set (or on ``rows``: a restore); the robots download it."""
        w, pcfg = self.world, self.config.perception
        self._version_rows = self._labeled_rows().copy() if rows is None else np.asarray(rows, dtype=np.int64)
        self.version: ModelVersion = w.perception.version_for(self._version_rows, pcfg.seed)
        self.classifier = w.perception.classifier_for(self._version_rows, pcfg.seed)
        self.test_accuracy = float(w.perception.test_accuracy(self._version_rows, pcfg.seed))
        self._row_view_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        tables = derive_version(self.version, w.pool_labels, self.n_classes)
        self._pool_conditionals = tables["conditionals"][None]
        self._confusion = np.asarray(tables["confusions"])[None]
        self._pinv_confusion_t = tables["pinv_confusion_t"][None]

    def _cloud_view(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and embeddings of feature rows under the current model: pool rows from the version's
        cache, interned (blurred) rows by one batched inference, memoised per model version."""
        rows = np.asarray(rows, dtype=np.int64)
        probs = np.empty((len(rows), self.n_classes), np.float32)
        emb = np.empty((len(rows), self.embedding_dim), np.float32)
        pos = self.world.pool_position[rows]
        in_pool = pos >= 0
        probs[in_pool], emb[in_pool] = self.version.pool_probs[pos[in_pool]], self.version.pool_embeddings[pos[in_pool]]
        missing = sorted({int(r) for r in rows[~in_pool]} - set(self._row_view_cache))
        if missing:
            with limited_torch_threads(1):
                p, e = self.classifier.predict(self.world.features, indices=np.asarray(missing))
            self._row_view_cache.update({r: (p[k], e[k]) for k, r in enumerate(missing)})
        for k in np.flatnonzero(~in_pool):
            probs[k], emb[k] = self._row_view_cache[int(rows[k])]
        return probs, emb

    def _distinct(self, rows: np.ndarray) -> np.ndarray:
        """The distinct feature rows among ``rows``, ascending (a mask over the world's rows: no sort)."""
        present = np.zeros(len(self.world.features), dtype=bool)
        present[rows] = True
        return np.flatnonzero(present)

    def _similarity_kwargs(self) -> dict:
        cfg = self.config
        return {"kernel": cfg.kernel, "scale": cfg.kernel_scale, "max_block_bytes": cfg.max_block_bytes}

    def _observe_round(self) -> None:
        """Draw every robot's round and compute what it sees (robot view, current model)."""
        cfg, w = self.config, self.world
        n, obs = cfg.n_robots, cfg.obs_per_round
        self.stream_positions = draws.draw_round(self.states, self.mixes[None], w, obs)[0]
        self.stream_probs = self.version.pool_probs[self.stream_positions]            # (N, obs, C)
        self.stream_embeddings = self.version.pool_embeddings[self.stream_positions]  # (N, obs, E)
        predicted = self.version.pool_predictions[self.stream_positions]
        self.histograms = draws.predicted_histograms(predicted[None], self.n_classes)[0]
        self.estimated_mixes = np.empty((1, n, self.n_classes))
        kernels.estimate_mixes(self.histograms[None], np.zeros((1, n), np.int64), self._confusion,
                               self._pinv_confusion_t, 0, 50, self.estimated_mixes)
        self.estimated_mixes = self.estimated_mixes[0]
        ground = self.stream_embeddings.reshape(n * obs, -1)
        # distinct rows: the ledger repeats rows uploaded in several rounds, the max over them is the same
        _, cloud_emb = self._cloud_view(self._distinct(self._cloud["row"]))
        _, labeled_emb = self._cloud_view(self._distinct(self._labeled_rows()))
        with limited_torch_threads(1):
            self.coverage = max_similarity(ground, cloud_emb, **self._similarity_kwargs()).reshape(n, obs)
            self.labeled_coverage = max_similarity(ground, labeled_emb, **self._similarity_kwargs()).reshape(n, obs)

    # ------------------------------------------------------------------------------------------- step
    # ---------------------------------------------------------------------------------- atomic / snapshot
    def _begin_step(self) -> dict:
        saved = dict(vars(self))
        saved["states"] = self.states.copy()  # the stream kernel advances it in place
        saved["_history_length"] = len(self.history)  # a step appends one record
        if hasattr(self, "_row_view_cache"):  # a memo that the step grows in place (private rows are blurred)
            saved["_row_view_cache"] = dict(self._row_view_cache)
        saved["_rng_state"] = self.rng.bit_generator.state
        return saved

    def _rollback_step(self, saved: dict) -> None:
        rng_state, history_length = saved.pop("_rng_state"), saved.pop("_history_length")
        super()._rollback_step(saved)
        self.rng.bit_generator.state = rng_state
        del self.history[history_length:]

    # what a step changes; the model is rebuilt from _version_rows (cached per config, else retrained: the cloud
    # model's training is deterministic in its rows and seed), probabilities / embeddings looked up in it
    _SNAPSHOT_FIELDS = ("seed", "states", "mixes", "round_index", "labels_used", "_version_rows", "stream_positions",
                        "histograms", "estimated_mixes", "coverage", "labeled_coverage")

    def snapshot_state(self) -> dict:
        if not hasattr(self, "_cloud"):
            raise RuntimeError("snapshot() before reset(): nothing to snapshot")
        state = {name: _copied(getattr(self, name)) for name in self._SNAPSHOT_FIELDS}
        state.update(rng=self.rng.bit_generator.state, cloud={k: v.copy() for k, v in self._cloud.items()},
                     history=[dict(r) for r in self.history])
        return state

    def check_snapshot_state(self, state: dict) -> None:
        def entry(key):
            return snapshot_entry(state, key, f"state.{key}")

        cfg, w = self.config, self.world
        n, c, obs, n_rows = cfg.n_robots, self.n_classes, cfg.obs_per_round, len(w.features)
        check_snapshot_int(entry("seed"), "state.seed", 0, 2**63 - 1)
        check_snapshot_array(entry("states"), "state.states", (1, 4), "i")
        r = check_snapshot_int(entry("round_index"), "state.round_index", 0, cfg.rounds)
        check_snapshot_int(entry("labels_used"), "state.labels_used", 0, 2**62)
        check_snapshot_array(entry("_version_rows"), "state._version_rows", (None,), "i", 0, n_rows - 1)
        check_snapshot_array(entry("stream_positions"), "state.stream_positions", (n, obs), "i", 0, len(w.pool) - 1)
        for key in ("mixes", "estimated_mixes"):
            check_snapshot_array(entry(key), f"state.{key}", (n, c), "f", 0.0, 1.0)
        check_snapshot_array(entry("histograms"), "state.histograms", (n, c), "i", 0, obs)
        for key in ("coverage", "labeled_coverage"):
            check_snapshot_array(entry(key), f"state.{key}", (n, obs), "f")
        check_snapshot_rng(entry("rng"), "state.rng")
        cloud = entry("cloud")
        if not isinstance(cloud, dict) or set(cloud) != set(self._cloud_kinds()):
            raise SnapshotError(f"snapshot field 'state.cloud' must hold {sorted(self._cloud_kinds())}")
        size = None
        for key, kind in self._cloud_kinds().items():
            low, high = {"row": (0, n_rows - 1), "robot": (-1, n - 1), "round": (-1, r),
                         "labeled_round": (-1, r)}.get(key, (None, None))
            array = check_snapshot_array(cloud[key], f"state.cloud.{key}", (size,), kind, low, high)
            size = len(array)
        history = entry("history")
        if not isinstance(history, list) or len(history) != r + 1 or not all(isinstance(x, dict) for x in history):
            raise SnapshotError(f"snapshot field 'state.history' must list {r + 1} round records")

    @staticmethod
    def _cloud_kinds() -> dict[str, str]:
        return {"row": "i", "labeled": "b", "robot": "i", "round": "i", "labeled_round": "i", "private": "b",
                "blurred": "b"}

    def content_arrays(self):
        dataset = self.world.dataset
        return dataset, [dataset.features, dataset.labels]

    def restore_state(self, state: dict) -> None:
        for name in self._SNAPSHOT_FIELDS:
            setattr(self, name, _copied(state[name]))
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state["rng"]
        self._cloud = {k: v.copy() for k, v in state["cloud"].items()}
        self.history = [dict(r) for r in state["history"]]
        self._set_model(self._version_rows)
        self.stream_probs = self.version.pool_probs[self.stream_positions]
        self.stream_embeddings = self.version.pool_embeddings[self.stream_positions]

    # ------------------------------------------------------------------------------------------- step
    @atomic_step
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        cfg, w = self.config, self.world
        scores = actions
        # ---- stage 1: each robot's top n_cache, through the privacy filter, up to the cloud
        chosen = np.argsort(-scores, axis=1, kind="stable")[:, :cfg.n_cache]
        # one filter pass over every robot's picks; flat (robot, slot) order, robot-major
        sample_ids = w.pool[np.take_along_axis(self.stream_positions, chosen, axis=1)]
        flat_ids = sample_ids.ravel()
        sending = np.repeat(active_mask(active, cfg.n_robots), cfg.n_cache)  # a robot that left uploads nothing
        private = w.private[flat_ids] & sending
        result = self.filter.apply(w.as_images(w.robot_features[flat_ids]), private, w.regions[flat_ids])
        kept_flat = result.kept & sending
        kept = kept_flat.reshape(cfg.n_robots, cfg.n_cache)
        rows = flat_ids[kept_flat].copy()
        blurred = result.blurred[kept_flat]
        robot_of_row = np.repeat(np.arange(cfg.n_robots), kept.sum(axis=1))
        if blurred.any():
            rows[blurred] = w.blurred_row[rows[blurred]]
            # what reaches the cloud is the filter's output: check the interned copy is exactly that
            out = result.sent[np.flatnonzero(result.blurred[result.kept])].reshape((int(blurred.sum()), -1))
            same = (out == w.features[rows[blurred]].reshape((len(out), -1))).all(axis=1)
            if not same.all():
                raise RuntimeError(f"robot_{robot_of_row[blurred][~same][0]}: privacy filter output differs from "
                                   "the interned blurred copy")
        splits = np.cumsum(kept.sum(axis=1))[:-1]
        new_rows = np.split(rows, splits)
        kept_positions = [chosen[i][kept[i]] for i in range(cfg.n_robots)]  # the objective's per-robot input
        uploaded_ids = np.split(flat_ids[kept_flat], splits)
        private_per_robot = private.reshape(cfg.n_robots, cfg.n_cache).sum(axis=1)
        # what the filter really did per sample (a blur that could not hide the region is a drop), not the mode
        by_robot = (cfg.n_robots, cfg.n_cache)
        passed = private & kept_flat & ~result.blurred if self.filter.mode == "pass" else np.zeros_like(private)
        mode_counts = {"dropped": (private & ~result.kept).reshape(by_robot).sum(axis=1),
                       "blurred": result.blurred.reshape(by_robot).sum(axis=1),
                       "passed_private": passed.reshape(by_robot).sum(axis=1)}
        per_robot_privacy = [{"private": int(private_per_robot[i]), **{k: int(v[i]) for k, v in mode_counts.items()}}
                             for i in range(cfg.n_robots)]
        kwargs = self._similarity_kwargs()
        with limited_torch_threads(1):
            upload = fleet_objective(list(self.stream_embeddings), kept_positions, list(self.coverage), **kwargs)
        n_new = len(rows)
        cloud = self._cloud
        self._cloud = cloud = {
            "row": np.concatenate([cloud["row"], rows]),
            "labeled": np.concatenate([cloud["labeled"], np.zeros(n_new, bool)]),
            "robot": np.concatenate([cloud["robot"], robot_of_row]),
            "round": np.concatenate([cloud["round"], np.full(n_new, self.round_index)]),
            "labeled_round": np.concatenate([cloud["labeled_round"], np.full(n_new, -1)]),
            "private": np.concatenate([cloud["private"], private[kept_flat]]),
            "blurred": np.concatenate([cloud["blurred"], blurred]),
        }
        # ---- stage 2: the cloud labels under the global budget
        candidates = np.flatnonzero(~cloud["labeled"])
        if cfg.label_pool == "round":
            candidates = candidates[cloud["round"][candidates] == self.round_index]
        to_label, label_objective = self._label(candidates)
        cloud["labeled"][to_label] = True
        cloud["labeled_round"][to_label] = self.round_index
        self.labels_used += len(to_label)
        # coverage of this round's fleet observations by the labeled set, before and after labeling
        ground = self.stream_embeddings.reshape(-1, self.embedding_dim)
        _, newly_emb = self._cloud_view(cloud["row"][to_label])
        with limited_torch_threads(1):
            after = np.maximum(self.labeled_coverage.ravel(), max_similarity(ground, newly_emb, **kwargs))
        coverage_gain = float(after.mean() - self.labeled_coverage.mean())
        # ---- retrain on schedule, reward
        accuracy_before = self.version.validation_accuracy
        self.round_index += 1
        pcfg = cfg.perception
        if pcfg.retrain_every and self.round_index % pcfg.retrain_every == 0:
            self._set_model()
        accuracy_gain = float(self.version.validation_accuracy - accuracy_before)
        reward = accuracy_gain if cfg.reward == "accuracy" else coverage_gain
        privacy_total = {k: int(sum(p[k] for p in per_robot_privacy)) for k in per_robot_privacy[0]}
        labeled_robot = cloud["robot"][to_label]
        step_record = {
            "round": self.round_index, "validation_accuracy": float(self.version.validation_accuracy),
            "test_accuracy": self.test_accuracy, "labels_used": int(self.labels_used), "labeled": len(to_label),
            "uploaded": int(n_new), "cloud_labeled": int(cloud["labeled"].sum()),
            "cloud_unlabeled": int((~cloud["labeled"]).sum()),
            "upload_objective": upload["mean_coverage"],
            "upload_objective_gain": upload["gain"] / max(ground.shape[0], 1),
            "label_objective": label_objective, "coverage_gain": coverage_gain, "reward": reward,
            "privacy_total": privacy_total,
        }
        self.history.append(step_record)
        last_round = self.round_index >= cfg.rounds
        per_robot = []
        for i in range(cfg.n_robots):
            ids = np.full(cfg.n_cache, -1, dtype=np.int64)  # fixed shape; -1 = slot not uploaded
            ids[:len(uploaded_ids[i])] = uploaded_ids[i]
            per_robot.append({"uploaded": len(new_rows[i]), "uploaded_sample_ids": ids,
                              "labeled_from_robot": int((labeled_robot == i).sum()),
                              **{f"privacy_{k}": v for k, v in per_robot_privacy[i].items()},
                              **{f"privacy_total_{k}": v for k, v in privacy_total.items()}})
        if not last_round:
            if cfg.stream.drift > 0:
                self.mixes = drift_mixes(self.mixes, cfg.stream, self.rng)  # = draws.drift at B = 1
            self._observe_round()
        return Transition(self._observation_matrix(), np.full(cfg.n_robots, reward), last_round,
                          self._infos(step_record, per_robot))

    def _label(self, candidates: np.ndarray) -> tuple[np.ndarray, float]:
        """Stage 2: ledger positions of the candidates to label, and the facility-location value (mean coverage
        of the candidates by the labeled set after labeling).

        With ``label_pool: all`` the candidates repeat rows (a sample uploaded in many rounds), and their number
        grows with the round while the distinct rows are bounded by the pool: the similarity work runs on the
        distinct rows, each a ground point weighted by its copies, ordered by first upload. That is the
        objective of one ground point per ledger entry, with the same picks: a copy of a picked or labeled row
        gains exactly 0, so per-entry greedy labels copies only once no row gains, in ledger order."""
        cfg = self.config
        budget = min(cfg.label_budget, len(candidates))
        if len(candidates) == 0:
            return candidates, 0.0  # nothing to cover (a number, not NaN: it goes into the infos)
        # distinct rows in order of first upload (ties between rows go to the earliest ledger entry); no sort of
        # the ledger: scatters over the world's rows
        entry_rows = self._cloud["row"][candidates]
        first_of_row = np.full(len(self.world.features), len(candidates))
        np.minimum.at(first_of_row, entry_rows, np.arange(len(candidates)))
        first = np.sort(first_of_row[first_of_row < len(candidates)])
        rows = entry_rows[first]
        slot = np.empty(len(self.world.features), np.int64)
        slot[rows] = np.arange(len(rows))
        inverse = slot[entry_rows]  # candidate -> its distinct row
        copies = np.bincount(inverse, minlength=len(rows)).astype(np.float64)
        probs, emb = self._cloud_view(rows)
        _, labeled_emb = self._cloud_view(self._distinct(self._labeled_rows()))
        kwargs = self._similarity_kwargs()
        with limited_torch_threads(1):
            covered = max_similarity(emb, labeled_emb, **kwargs)
            if cfg.labeler == "submodular":
                fl = FacilityLocation(emb, None, covered, cfg.kernel, cfg.kernel_scale, cfg.max_block_bytes,
                                      weights=copies)
                result = lazy_greedy(fl, min(budget, len(rows)))
                picks = first[result.indices[result.gains > 0]]  # gains only shrink: the positive ones lead
                if len(picks) < budget:  # nothing gains any more: the remaining entries in ledger order
                    rest = np.setdiff1d(np.arange(len(candidates)), picks)
                    picks = np.concatenate([picks, rest[:budget - len(picks)]])
                return candidates[picks], float(result.value / len(candidates))
            if cfg.labeler == "random":
                picks = np.sort(self.rng.choice(len(candidates), size=budget, replace=False))
            else:
                picks = np.argsort(-uncertainty(probs[inverse], cfg.labeler), kind="stable")[:budget]
            picked = np.unique(inverse[picks])
            after = np.maximum(covered, max_similarity(emb, emb[picked], **kwargs)) if budget else covered
        return candidates[picks], float((after * copies).sum() / len(candidates))

    # -------------------------------------------------------------------------------------- read-outs
    def _observation_matrix(self) -> np.ndarray:
        cfg, lay, c = self.config, self.obs_layout, self.n_classes
        n = cfg.n_robots
        out = np.empty((n, self.obs_dim), dtype=np.float32)
        labels = self.world.labels[self._labeled_rows()]
        labeled_counts = np.bincount(labels, minlength=c)
        out[:, lay["labeled_hist"]] = labeled_counts / max(labeled_counts.sum(), 1)
        out[:, lay["predicted_hist"]] = self.histograms / cfg.obs_per_round
        out[:, lay["class_accuracy"]] = np.diag(self.version.confusion)
        out[:, lay["estimated_mix"]] = self.estimated_mixes
        out[:, lay["budgets"]] = [cfg.n_cache / cfg.obs_per_round, min(1.0, cfg.label_budget / (n * cfg.n_cache))]
        out[:, lay["unlabeled_share"]] = (~self._cloud["labeled"]).sum() / max(len(self._cloud["labeled"]), 1)
        out[:, lay["rounds_left"]] = (cfg.rounds - self.round_index) / cfg.rounds
        out[:, lay["mean_coverage"]] = self.coverage.mean(axis=1, keepdims=True)
        samples = np.concatenate([self.stream_embeddings, self.stream_probs, self.coverage[:, :, None]], axis=2)
        out[:, lay["samples"]] = samples.reshape(n, -1)
        return np.clip(out, self._low, self._high)  # unit-norm embeddings can exceed 1 by a float32 ulp

    def _infos(self, record: dict | None, per_robot: list[dict] | None = None) -> list[dict]:
        feasible = np.empty((1, self.config.n_robots, self.n_classes, self.n_classes))
        kernels.feasible_matrices(self._confusion, np.zeros((1, self.config.n_robots), np.int64),
                                  self.estimated_mixes[None], feasible)
        labels = self.world.labels[self._labeled_rows()]
        shared = {"round": self.round_index, "cloud_counts": np.bincount(labels, minlength=self.n_classes).astype(float),
                  "target_counts": self.target_counts, "n_cache": self.config.n_cache,
                  "label_budget": self.config.label_budget, "labels_used": int(self.labels_used),
                  "cloud_labeled": int(self._cloud["labeled"].sum()),
                  "cloud_unlabeled": int((~self._cloud["labeled"]).sum()),
                  "validation_accuracy": float(self.version.validation_accuracy),
                  "test_accuracy": self.test_accuracy}
        # fixed schema (TorchRL, seed_test): the keys of a step are there at reset too, with nothing done yet
        step_keys = ("labeled", "upload_objective", "upload_objective_gain", "label_objective", "coverage_gain")
        shared.update({k: (record[k] if record is not None else 0.0) for k in step_keys})
        shared["labeled"] = int(shared["labeled"])
        if per_robot is None:
            nothing = {"uploaded": 0, "uploaded_sample_ids": np.full(self.config.n_cache, -1, dtype=np.int64),
                       "labeled_from_robot": 0, **{f"privacy_{k}": 0 for k in PRIVACY_COUNTS},
                       **{f"privacy_total_{k}": 0 for k in PRIVACY_COUNTS}}
            per_robot = [nothing] * self.config.n_robots
        return [{"available": self.histograms[i].copy(), "feasible_matrix": feasible[0, i],
                 "estimated_mix": self.estimated_mixes[i].copy(), **shared,
                 **{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in per_robot[i].items()}}
                for i in range(self.config.n_robots)]

    def state(self) -> np.ndarray:
        """Global state: every robot's observation, concatenated (it holds all robots' samples)."""
        return self._observation_matrix().ravel()

    def privileged_view(self) -> dict[str, np.ndarray]:
        """Oracle-only truth: true class mixes (N, C), true feasible matrices (N, C, C) (from the pool's
        empirical p(yhat | y) under the current model), predicted-class counts (N, C), labeled cloud counts,
        target counts, n_cache, and the true labels of every robot's observed samples (N, obs)."""
        n = self.config.n_robots
        true_feasible = np.empty((1, n, self.n_classes, self.n_classes))
        kernels.feasible_matrices(self._pool_conditionals, np.zeros((1, n), np.int64), self.mixes[None], true_feasible)
        labels = self.world.labels[self._labeled_rows()]
        return {"true_mixes": self.mixes.copy(), "true_feasible_matrices": true_feasible[0],
                "available": self.histograms.copy(), "cloud_counts": np.bincount(labels, minlength=self.n_classes)
                .astype(float), "target_counts": self.target_counts.copy(), "n_cache": self.config.n_cache,
                "stream_labels": self.world.pool_labels[self.stream_positions]}

    def cloud(self) -> dict[str, np.ndarray]:
        """The cloud ledger (copies): feature ``row`` (>= dataset size: an interned blurred copy), dataset
        ``sample_id``, ``labeled``, uploading ``robot`` (-1: initial cloud), ``round``, ``labeled_round``,
        ``private`` (the sample carries a private patch), ``blurred``, ``true_label``, and ``features`` (what the
        cloud stores, i.e. the privacy filter's output)."""
        out = {k: v.copy() for k, v in self._cloud.items()}
        out["sample_id"] = self.world.source_of_row[out["row"]]
        out["true_label"] = self.world.labels[out["row"]]
        out["features"] = self.world.features[out["row"]]
        return out

    def render(self, mode: str):
        rec = self.history[-1] if self.history else {}
        text = (f"round {self.round_index}/{self.config.rounds}  labeled {rec.get('cloud_labeled', 0)}  "
                f"unlabeled {rec.get('cloud_unlabeled', 0)}  labels used {self.labels_used}  "
                f"val acc {rec.get('validation_accuracy', float('nan')):.3f}  "
                f"test acc {rec.get('test_accuracy', float('nan')):.3f}")
        return text  # the face prints it in human mode


def _copied(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value
