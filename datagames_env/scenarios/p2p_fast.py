"""Peer-to-peer GU sharing on the fast perception tier, natively batched: B envs x N robots in arrays.

The same rules as :class:`~.p2p.P2PScenario` (cache the top ``n_share`` -> privacy filter -> send along the topology
-> each receiver's novelty vote -> utilities back to the sender -> receivers label what they keep, deduplicated ->
heads refitted on schedule), the same observation layout, info keys, rewards and faults, with the perception of
:mod:`datagames_env.perception.fast`: one frozen extractor per world, pretrained once on a public split, and one
Gaussian head per (env, robot) refitted for all envs and robots in one batched call.

=====================  ==========================================================================================
Member                 What it is
=====================  ==========================================================================================
``P2PFastBatched``     the :class:`~.base.BatchedScenario` (``perception.tier: fast``); ``parallel_env`` of a fast
                       config is the face over ``BatchOfOne(P2PFastBatched(cfg, 1))``
``FastWorld``          a :class:`~.p2p.P2PWorld` minus the public split, plus the feature table every id refers to
``get_fast_world``     the world of a config, built once per process (cached by the keys it depends on)
``warm_fast_perception``  build (or load) the disk cache of a config's extractor; returns the files
=====================  ==========================================================================================

The public model. The GU paper's robots start from "a generic ML model pre-trained on anonymized public
datasets". The extractor is pretrained on ``perception.public_fraction`` of the pool of each of
``perception.public_domains`` (default: the domains not in ``rare_domains``, i.e. the base domain(s)), rows that
are then removed from the pools: no robot ever observes or labels them, and no test row is among them. Rare
domains therefore stay out of distribution for the public model (what makes them novel to a receiver); the price
is that a frozen extractor separates a domain it never saw poorly (docs/fast_perception.md measures it). Name the
rare domains in ``public_domains`` to pretrain on the domain set instead.

Feature table (rows every id refers to): the world's pool rows (private patches stamped; the public rows are
there but in no pool), then one privacy-filtered (blurred) copy per private pool row whose blur hides its patch
(computed once, as :class:`~.dual.DualWorld` does; a private row without a copy is dropped by ``blur``), then the
test rows of every domain. Observation embeddings (``E = perception.embedding_dim``, the extractor's width) are
the frozen features L2-normalised; probabilities, novelty scores (``perception.novelty``, default Mahalanobis;
``ood.detector`` is the paper tier's) and ``domain_accuracy`` come from the heads. Thresholds are calibrated per
head on its calibration rows (``ood.calibration_quantile``; ``ood.threshold`` when that is null) after each fit.
``feedback_memory_features`` / ``feedback_memory_utilities`` are padded to ``min(feedback_memory, rounds *
n_share)`` rows (the most a memory can hold in one episode; the paper tier pads to ``feedback_memory``): the first
``feedback_memory_size`` rows are real, zeros below, as on the paper tier.

Env b equals the B = 1 scenario reset with ``seeds[b]``: the same draws as :class:`~.p2p.P2PScenario` makes
(topology and streams from ``[seed, 1]``, initial sets from ``[world_seed or seed, robot, 7]``, fault generators
from :func:`~.base.fault_rng`), on the fast world's pools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError
from ..data.privacy import PrivacyFilter
from ..data.streams import domain_quotas, draw_domain_stream
from ..perception import entropy as perception_entropy
from ..perception import limited_torch_threads
from ..perception.fast import BatchedHeads, FastFeatures, cached_features
from .base import (BatchedScenario, BatchTransition, SampleSpec, Scenario, SnapshotError, check_snapshot_array,
                   check_snapshot_int, check_snapshot_rng, fault_rng, snapshot_entry)
from .batching import BatchOfOne
from .p2p import (METADATA, TOTALS, P2PConfig, P2PScenario, P2PWorld, aggregate_votes, build_world, load_p2p_config,
                  observation_layout)

__all__ = ["FastWorld", "P2PFastBatched", "batched_scenario", "get_fast_world", "make_scenario", "warm_fast_perception"]

ROUND_KEYS = ("cached_slots", "sent_mask", "feedback_utilities", "n_sent", "n_received", "n_kept",
              "n_private_cached", "n_blurred", "n_dropped", "n_passed_private", "round_rare_share", "trained")


# ---------------------------------------------------------------------------------------------------------- world


@dataclass
class FastWorld:
    """The p2p world of a fast config (see the module docstring)."""

    base: P2PWorld
    pool_by_domain: list[np.ndarray]  # world ids each domain's streams and labeled sets draw from (public removed)
    public_ids: np.ndarray  # world ids of the public pretraining split
    blurred_row: np.ndarray  # int64 (n_world,): table row of a private row's blurred copy, -1 = none
    test_rows: np.ndarray  # table rows of every domain's test set, in domain order
    test_domains: np.ndarray  # domain of each test row
    table_labels: np.ndarray  # int64 (n_rows,)
    extracted: FastFeatures
    unit: np.ndarray  # float32 (n_rows, E): the features L2-normalised (observation embeddings)

    @property
    def features(self) -> np.ndarray:  # the images, as P2PWorld (privacy tests, content digest)
        return self.base.features

    def __getattr__(self, name: str) -> Any:  # labels, domains, private, regions, domain_names, ...
        if name.startswith("__") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)


def _public_domains(cfg: P2PConfig) -> list[str]:
    chosen = cfg.perception.public_domains
    if chosen is None:
        chosen = [d.name for d in cfg.domains if d.name not in cfg.rare_domains] or [cfg.domains[0].name]
    return list(chosen)


def _world_key(cfg: P2PConfig) -> str:
    data = cfg.model_dump(include={"data_dir", "domains", "rare_domains", "test_fraction", "split_seed", "perception"})
    data["privacy"] = cfg.privacy.model_dump(exclude={"mode"})  # copies are interned whatever the mode
    return json.dumps(data, sort_keys=True, default=str)


def get_fast_world(cfg: P2PConfig) -> FastWorld:
    """The fast world of ``cfg``, built once per process for the keys it depends on (domains, splits, privacy
    stamps and blur, perception; not the robots); the extractor comes from the disk cache when it is there."""
    key = _world_key(cfg)
    if key not in _WORLDS:
        while len(_WORLDS) >= 4:  # a few worlds per process (tests build many configs)
            _WORLDS.pop(next(iter(_WORLDS)))
        _WORLDS[key] = _build_fast_world(cfg)
    return _WORLDS[key]


_WORLDS: dict[str, FastWorld] = {}


def _build_fast_world(cfg: P2PConfig) -> FastWorld:
    base = build_world(cfg)
    names = base.domain_names
    n_world = len(base.features)
    rng = np.random.default_rng([cfg.split_seed, 0x9B11C])
    pools, public = [], []
    for d, pool in enumerate(base.pool_by_domain):
        if names[d] in _public_domains(cfg):
            n_public = max(1, round(cfg.perception.public_fraction * len(pool)))
            chosen = np.zeros(len(pool), dtype=bool)
            chosen[rng.permutation(len(pool))[:n_public]] = True
            public.append(pool[chosen])
            pool = pool[~chosen]
        pools.append(pool)
    public_ids = np.sort(np.concatenate(public))
    blurred_row = np.full(n_world, -1, dtype=np.int64)
    private_ids = np.flatnonzero(base.private)
    extra = np.zeros((0, *base.features.shape[1:]), dtype=np.float32)
    if len(private_ids):  # the configured blur (its min_change too): a copy exists exactly when a share leaves blurred
        privacy = cfg.privacy
        blur = PrivacyFilter("blur", privacy.blur_sigma, privacy.min_change).apply(
            base.features[private_ids], np.ones(len(private_ids), dtype=bool), base.regions[private_ids])
        private_ids = private_ids[blur.blurred]
        extra = blur.features[blur.blurred].astype(np.float32)
        blurred_row[private_ids] = n_world + np.arange(len(private_ids))
    test_features = np.concatenate(base.test_features)
    test_labels = np.concatenate(base.test_labels).astype(np.int64)
    table = np.concatenate([base.features, extra, test_features]).astype(np.float32)
    labels = np.concatenate([base.labels, base.labels[private_ids], test_labels]).astype(np.int64)
    start = n_world + len(extra)
    test_rows = np.arange(start, start + len(test_features), dtype=np.int64)
    test_domains = np.concatenate([np.full(len(x), d, dtype=np.int64) for d, x in enumerate(base.test_features)])
    extracted = cached_features(table, labels, base.n_classes, cfg.perception, public_ids)
    norms = np.linalg.norm(extracted.features, axis=1, keepdims=True)
    unit = np.clip(extracted.features / np.maximum(norms, 1e-12), -1.0, 1.0).astype(np.float32)
    return FastWorld(base, pools, public_ids, blurred_row, test_rows, test_domains, labels, extracted, unit)


def warm_fast_perception(config: str | Path | dict | P2PConfig | None = None, **overrides: Any) -> list[Path]:
    """Build (or find) the fast tier's disk cache of a p2p config; returns the cache files. A paper-tier config
    needs none: ``[]``."""
    cfg = load_p2p_config(config, **overrides)
    if cfg.perception.tier != "fast":
        return []
    return [get_fast_world(cfg).extracted.path]


# ------------------------------------------------------------------------------------------------------ scenario


def _padded(rows: list[list[np.ndarray]], fill: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, m) ids and valid mask from B lists of N 1-d arrays of different lengths."""
    width = max(1, max(len(x) for per_env in rows for x in per_env))
    ids = np.full((len(rows), len(rows[0]), width), fill, dtype=np.int64)
    valid = np.zeros(ids.shape, dtype=bool)
    for b, per_env in enumerate(rows):
        for i, x in enumerate(per_env):
            ids[b, i, :len(x)] = x
            valid[b, i, :len(x)] = True
    return ids, valid


class P2PFastBatched(BatchedScenario):
    """The fast tier of p2p over B envs (see the module docstring and :mod:`~.p2p` for the rules)."""

    metadata = METADATA

    def __init__(self, config: str | dict | P2PConfig | None = None, num_envs: int = 1, **overrides: Any) -> None:
        self.config = cfg = load_p2p_config(config, **overrides)
        if cfg.perception.tier != "fast":
            raise ConfigError("perception.tier: P2PFastBatched needs 'fast'; the paper tier is P2PScenario")
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.n_robots = cfg.n_robots
        self.world = get_fast_world(cfg)
        self.domain_names = list(self.world.domain_names)
        self.n_domains, self.n_classes = len(self.domain_names), self.world.n_classes
        self._rare = np.isin(np.arange(self.n_domains), [self.domain_names.index(d) for d in cfg.rare_domains])
        self.n_share, self.n_samples = cfg.n_share, cfg.obs_per_round
        self.embedding_dim = self.world.extracted.extractor.dim
        self.sample_feature_dim = self.embedding_dim + self.n_classes
        self.obs_layout, self.observation_low = observation_layout(self.n_domains, self.n_classes, self.n_samples,
                                                                   self.embedding_dim)
        self.context_dim = self.obs_layout["context"].stop
        self.obs_dim = self.obs_layout["samples"].stop
        self.observation_high = np.ones(self.obs_dim, dtype=np.float32)
        self.sample_spec = SampleSpec(self.context_dim, self.n_samples, self.sample_feature_dim, self.embedding_dim,
                                      self.n_share)
        self.action_width = self.n_samples
        self.state_dim = self.n_robots * self.n_domains * self.n_classes
        p = cfg.perception
        with limited_torch_threads(cfg.max_threads):
            self.heads = BatchedHeads.from_extractor(self.world.extracted, self.world.table_labels, self.num_envs,
                                                     self.n_robots, head=p.head, mean_prior=p.mean_prior,
                                                     cov_prior=p.cov_prior)
        memory = ("feedback_memory_features", "feedback_memory_utilities", "feedback_memory_size") \
            if cfg.feedback_memory else ()
        self.robot_info_keys = ("labeled_size", "domain_accuracy", "neighbor_mask", "ood_threshold", *TOTALS,
                                "rare_share_cached", *ROUND_KEYS, *memory)
        self.env_info_keys = ("round", "n_share")
        self._initial_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._reset_template = None  # with a fixed world_seed: env 0's heads, thresholds, accuracy after reset
        self._quotas = [domain_quotas([robot.stream.get(name, 0.0) for name in self.domain_names], cfg.obs_per_round)
                        for robot in cfg.robots]
        # a memory never holds more than an episode's shares: store (and score) only that many columns
        self._memory_width = min(cfg.feedback_memory, cfg.rounds * cfg.n_share)
        self.round_index = 0
        self.n_trainings = 0
        self._seeds = None
        self.faults = cfg.faults if cfg.faults.enabled else None
        self.liars = np.zeros((self.num_envs, self.n_robots), dtype=bool)
        self.message_rngs = None

    # ------------------------------------------------------------------------------------------------- draws
    def _initial_sets(self, seed: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Robot i's initial labeled ids and calibration ids, drawn as :meth:`P2PScenario._initial_robots` does."""
        key = (seed, i)
        if key in self._initial_cache:
            return self._initial_cache[key]
        cfg = self.config
        rng = np.random.default_rng([seed, i, 7])
        labeled, calibration = [], []
        robot_cfg = cfg.robots[i]
        home = [self.domain_names.index(d) for d, n in robot_cfg.initial_labeled.items() if n > 0]
        for d in home:
            want = robot_cfg.initial_labeled[self.domain_names[d]]
            pool = self.world.pool_by_domain[d]
            n_cal = round(cfg.ood.calibration_size / len(home))
            if want + n_cal > len(pool):
                raise ConfigError(f"robots.{i}.initial_labeled (robot_{i}): {want} labeled + {n_cal} calibration "
                                  f"samples of domain '{self.domain_names[d]}' exceed its pool of {len(pool)} (the "
                                  f"fast tier's pool, without the public split)")
            chosen = rng.choice(pool, size=want + n_cal, replace=False)
            labeled.append(np.sort(chosen[:want]))
            calibration.append(np.sort(chosen[want:]))
        drawn = (np.concatenate(labeled), np.concatenate(calibration))
        if cfg.world_seed is not None:
            self._initial_cache[key] = drawn
        return drawn

    _NOTHING = np.zeros(0, dtype=np.int64)

    def _stream_pools(self, seed: int, i: int, ids: np.ndarray, calibration: np.ndarray) -> list[np.ndarray]:
        """Each domain's pool without robot i's initial labeled and calibration ids (what ``draw_domain_stream``
        removes itself), kept per initial draw: with a fixed ``world_seed`` every env shares it."""
        key = ("pools", seed, i)
        if key in self._initial_cache:
            return self._initial_cache[key]
        exclude = np.concatenate([ids, calibration])
        pools = [pool[~np.isin(pool, exclude)] for pool in self.world.pool_by_domain]
        if self.config.world_seed is not None:
            self._initial_cache[key] = pools
        return pools

    def _draw_env(self, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], np.ndarray]:
        """Adjacency, initial labeled and calibration ids, streams of one env (the B = 1 scenario's draws)."""
        cfg = self.config
        n = self.n_robots
        rng = np.random.default_rng([seed, 1])
        adjacency = np.zeros((n, n), dtype=bool)  # [sender, receiver]
        if cfg.topology.kind == "all":
            adjacency[:] = ~np.eye(n, dtype=bool)
        elif cfg.topology.kind == "ring":
            for i in range(n):
                adjacency[i, [j for j in {(i - 1) % n, (i + 1) % n} if j != i]] = True
        else:
            upper = np.triu(rng.random((n, n)) < cfg.topology.p, k=1)
            adjacency = upper | upper.T
        initial_seed = cfg.world_seed if cfg.world_seed is not None else seed
        labeled, calibration, streams = [], [], []
        for i in range(n):
            ids, cal = self._initial_sets(initial_seed, i)
            labeled.append(ids)
            calibration.append(cal)
            pools = self._stream_pools(initial_seed, i, ids, cal)
            streams.append(draw_domain_stream(None, pools, cfg.rounds, cfg.obs_per_round, rng, self._NOTHING,
                                              f"robots.{i}.stream (robot_{i})", self.domain_names, self._quotas[i]))
        return adjacency, labeled, calibration, np.stack(streams)

    # -------------------------------------------------------------------------------------------------- loop
    def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = np.asarray(seeds)
        if seeds.shape != (self.num_envs,) or seeds.dtype.kind not in "iu" or (seeds < 0).any():
            raise ValueError(f"seeds must be non-negative integers of shape ({self.num_envs},) (one per env), got "
                             f"dtype {seeds.dtype} shape {seeds.shape}")
        cfg, world = self.config, self.world
        b_, n = self.num_envs, self.n_robots
        drawn = [self._draw_env(int(s)) for s in seeds.tolist()]
        self._seeds = seeds.astype(np.int64).copy()
        self._adjacency = np.stack([d[0] for d in drawn])
        self._streams = np.stack([d[3] for d in drawn])  # (B, N, rounds, obs)
        labeled_ids, labeled_valid = _padded([d[1] for d in drawn])
        self._calibration, self._calibration_valid = _padded([d[2] for d in drawn])
        self._labeled = np.zeros((b_, n, len(world.features)), dtype=bool)
        envs, robots, _ = np.nonzero(labeled_valid)
        self._labeled[envs, robots, labeled_ids[labeled_valid]] = True
        self._cell_counts = np.zeros((b_, n, self.n_domains, self.n_classes), dtype=np.int64)
        np.add.at(self._cell_counts, (envs, robots, world.domains[labeled_ids[labeled_valid]],
                                      world.labels[labeled_ids[labeled_valid]]), 1)
        with limited_torch_threads(cfg.max_threads):
            if self._reset_template is not None:  # fixed world_seed: every reset starts from the same heads
                heads, thresholds, accuracy = self._reset_template
                self.heads.import_env(heads)
                self._thresholds = np.repeat(thresholds[None], b_, axis=0)
                self._accuracy = np.repeat(accuracy[None], b_, axis=0)
            else:
                self.heads.reset(refit=False)  # the initial sets, then one fit
                self.heads.add(labeled_ids, labeled_valid)
                self.heads.fit()
                self._thresholds = self._calibrate()
                self._accuracy = self._domain_accuracy()
                if cfg.world_seed is not None:  # the same initial and calibration sets in every env and reset
                    self._reset_template = (self.heads.export_env(0), self._thresholds[0].copy(),
                                            self._accuracy[0].copy())
        self._stale = np.zeros((b_, n), dtype=bool)
        self._totals = np.zeros((b_, n, len(TOTALS)), dtype=np.int64)
        self._last_feedback = np.zeros((b_, n))
        width = self._memory_width
        self._memory_ids = np.zeros((b_, n, width), dtype=np.int64)  # left-aligned: the oldest first
        self._memory_utilities = np.zeros((b_, n, width), dtype=np.float32)
        self._memory_size = np.zeros((b_, n), dtype=np.int64)
        self.round_index = 0
        self.n_trainings = 0
        self._start_faults()
        self._round_stats = self._round_stats_at_reset()
        self._predict_round()
        return self._observations(), self._infos()

    def _start_faults(self) -> None:
        faults = self.config.faults if self.config.faults.enabled else None
        self.faults = faults
        self.liars = np.zeros((self.num_envs, self.n_robots), dtype=bool)
        self.message_rngs = None
        if faults is None:
            return
        self.message_rngs = [fault_rng(int(s), faults, "messages") for s in self._seeds]
        for b, s in enumerate(self._seeds.tolist()):
            chosen = fault_rng(s, faults, "liars").permutation(self.n_robots)[:round(faults.liars * self.n_robots)]
            self.liars[b, chosen] = True

    def _calibrate(self) -> np.ndarray:
        ood = self.config.ood
        if ood.calibration_quantile is None:
            return np.full((self.num_envs, self.n_robots), float(ood.threshold))
        return self.heads.calibrate(self._calibration, self._calibration_valid, ood.calibration_quantile,
                                    self.config.perception.novelty, fallback=float(ood.threshold))

    def _domain_accuracy(self, heads: np.ndarray | None = None) -> np.ndarray:
        """float64 (B, N, D): each head's test accuracy per domain (only ``heads`` where given; others 0)."""
        rows = self.world.test_rows
        correct = self.heads.correct(rows, heads).astype(np.float64)
        onehot = np.eye(self.n_domains)[self.world.test_domains]  # (T, D)
        return correct @ onehot / np.maximum(onehot.sum(axis=0), 1)

    def _predict_round(self) -> None:
        """The heads on this round's observations and on every robot's feedback memory, in one call."""
        r = min(self.round_index, self.config.rounds - 1)
        self._round_ids = self._streams[:, :, r]  # (B, N, obs)
        obs = self.n_samples
        memory = self.config.feedback_memory
        ids, valid = self._round_ids, None
        # only the filled columns of the memories (all of a memory's entries sit left-aligned); the rest stays 0
        used = int(self._memory_size.max()) if memory else 0
        if used:
            memory_valid = np.arange(used)[None, None, :] < self._memory_size[..., None]
            ids = np.concatenate([self._round_ids, self._memory_ids[:, :, :used]], axis=2)
            valid = np.concatenate([np.ones(self._round_ids.shape, dtype=bool), memory_valid], axis=2)
        with limited_torch_threads(self.config.max_threads):
            probs = self.heads.predict(ids, valid, mahalanobis=False).probs
        self._round_probs = probs[:, :, :obs]
        self._round_embeddings = self.world.unit[self._round_ids]
        if memory:
            self._memory_probs = np.zeros(self._memory_ids.shape + (self.n_classes,), dtype=np.float32)
            self._memory_probs[:, :, :used] = probs[:, :, obs:]

    def _observations(self) -> np.ndarray:
        cfg, lay = self.config, self.obs_layout
        b_, n = self.num_envs, self.n_robots
        out = np.zeros((b_, n, self.obs_dim), dtype=np.float32)
        totals = np.maximum(self._cell_counts.sum(axis=(2, 3)), 1)[..., None]
        out[..., lay["domain_hist"]] = self._cell_counts.sum(axis=3) / totals
        out[..., lay["class_hist"]] = self._cell_counts.sum(axis=2) / totals
        probs = self._round_probs  # (B, N, obs, C)
        top = probs.max(axis=3)
        log_c = np.log(self.n_classes) if self.n_classes > 1 else 1.0
        entropy = perception_entropy(probs) / log_c
        out[..., lay["confidence"]] = np.stack([top.mean(axis=2), top.std(axis=2), entropy.mean(axis=2)], axis=2)
        out[..., lay["last_feedback"]] = self._last_feedback[..., None]
        out[..., lay["rounds_left"]] = (cfg.rounds - self.round_index) / cfg.rounds
        context = lay["context"]
        np.clip(out[..., context], self.observation_low[context], 1.0, out=out[..., context])
        # the samples need no clip: unit embeddings are clipped to [-1, 1] once (FastWorld.unit), softmax is in [0, 1]
        samples = out[..., lay["samples"]].reshape(b_, n, self.n_samples, self.sample_feature_dim)  # a view
        samples[..., :self.embedding_dim] = self._round_embeddings
        samples[..., self.embedding_dim:] = probs
        return out

    def _potential_distance(self) -> np.ndarray:
        deficit = np.clip(self.config.potential_cell_target - self._cell_counts, 0, None).astype(np.float64)
        return np.sqrt((deficit ** 2).sum(axis=(2, 3))).sum(axis=1)  # (B,)

    def _checked(self, actions: np.ndarray, active: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self._seeds is None:
            raise RuntimeError("step() before reset(): call reset(seeds)")
        if self.round_index >= self.config.rounds:
            raise RuntimeError("step() after the episode ended: call reset(seeds)")
        shape = (self.num_envs, self.n_robots, self.action_width)
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"actions must be a numeric array of shape (num_envs, n_robots, obs_per_round) = "
                             f"{shape}") from exc
        if actions.shape != shape:
            raise ValueError(f"actions must have shape (num_envs, n_robots, obs_per_round) = {shape}, got "
                             f"{actions.shape}")
        bad = ~np.isfinite(actions).all(axis=2)
        if bad.any():
            b, i = np.argwhere(bad)[0]
            raise ValueError(f"env {b}: robot_{i}: action contains NaN or inf")
        if active is None:
            active = np.ones(shape[:2], dtype=bool)
        active = np.asarray(active)
        if active.shape != shape[:2] or active.dtype != bool:
            raise ValueError(f"active must be a bool mask of shape (num_envs, n_robots) = {shape[:2]}, got dtype "
                             f"{active.dtype} shape {active.shape}")
        return actions, active

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchTransition:
        actions, active = self._checked(actions, active)  # nothing below raises on user input
        cfg, world = self.config, self.world
        b_, n, k = self.num_envs, self.n_robots, self.n_share
        slots = np.argsort(-actions, axis=2, kind="stable")[..., :k]  # top k; ties go to the lower position
        potential_before = self._potential_distance()
        adjacency = self._adjacency & active[:, :, None] & active[:, None, :]  # robots that left: no messages

        # 1. cache -> privacy filter -> send (interned blurred copies: no image work here)
        cached_ids = np.take_along_axis(self._round_ids, slots, axis=2)  # (B, N, k) world ids
        private = world.private[cached_ids] & active[..., None]
        mode = cfg.privacy.mode
        copy = world.blurred_row[cached_ids]
        if mode == "blur":
            blurred = private & (copy >= 0)
            kept = (~private | blurred) & active[..., None]
        elif mode == "drop":
            blurred = np.zeros_like(private)
            kept = ~private & active[..., None]
        else:
            blurred = np.zeros_like(private)
            kept = np.broadcast_to(active[..., None], private.shape).copy()
        sent_rows = np.where(blurred, copy, cached_ids)  # table row of what leaves
        n_receivers = adjacency.sum(axis=2)  # (B, N) per sender
        sent_mask = kept & (n_receivers > 0)[..., None]
        passed = private & kept & ~blurred if mode == "pass" else np.zeros_like(private)
        privacy_counts = {"n_dropped": (private & ~kept).sum(axis=2), "n_blurred": blurred.sum(axis=2),
                          "n_passed_private": passed.sum(axis=2)}
        self._last_sent = (cached_ids, sent_rows, kept, private, blurred, sent_mask)

        # 2. every receiver scores every shared sample in one call of all heads: (B, receiver, sender * k)
        delivered = adjacency[:, :, None, :] & kept[..., None]  # (B, sender, slot, receiver)
        faults = self.faults
        if faults is not None and faults.message_loss:
            lost = np.stack([rng.random((n, k, n)) for rng in self.message_rngs]) < faults.message_loss
            delivered &= ~lost
        flat_rows = np.broadcast_to(sent_rows.reshape(b_, 1, n * k), (b_, n, n * k))
        flat_valid = np.broadcast_to(kept.reshape(b_, 1, n * k), (b_, n, n * k))
        with limited_torch_threads(cfg.max_threads):
            scores = self.heads.novelty(flat_rows, flat_valid, cfg.perception.novelty)
        novel = scores > self._thresholds[..., None]  # (B, receiver, sender * k)
        arrived = delivered.reshape(b_, n * k, n).transpose(0, 2, 1)  # (B, receiver, sender * k)
        n_received = arrived.sum(axis=2)

        # 3. receivers label what they keep (ground truth), deduplicated by sample: fresh and first of the round
        keep = arrived & (novel if cfg.receiver_keeps == "novel" else True)
        world_ids = np.broadcast_to(cached_ids.reshape(b_, 1, n * k), (b_, n, n * k))
        env_index, robot_index = np.arange(b_)[:, None, None], np.arange(n)[None, :, None]
        fresh = ~self._labeled[env_index, robot_index, world_ids]
        same = world_ids[..., :, None] == world_ids[..., None, :]  # [p, q]: same sample
        earlier = np.tril(np.ones((n * k, n * k), dtype=bool), k=-1)  # q < p
        seen_before = (same & keep[..., None, :] & earlier).any(axis=3)
        take = keep & fresh & ~seen_before
        n_kept = take.sum(axis=2)
        if take.any():
            e, r, pos = np.nonzero(take)
            ids = world_ids[e, r, pos]
            self._labeled[e, r, ids] = True
            np.add.at(self._cell_counts, (e, r, world.domains[ids], world.labels[ids]), 1)
            with limited_torch_threads(cfg.max_threads):
                self.heads.add(flat_rows, take)  # the filtered copy is what the receiver holds
            self._stale |= n_kept > 0

        # 4. utilities back to the senders
        if faults is None:
            votes = (novel.transpose(0, 2, 1) & delivered.reshape(b_, n * k, n)).sum(axis=2).reshape(b_, n, k)
            utilities = np.where(kept, votes / np.maximum(n_receivers, 1)[..., None], 0.0)
        else:  # (B, sender * k, receiver): every vote that came back, NaN where nothing arrived; liars flip
            table = novel.transpose(0, 2, 1).astype(np.float64)
            table = np.where(self.liars[:, None, :], 1.0 - table, table)
            table = np.where(delivered.reshape(b_, n * k, n), table, np.nan)
            utilities = np.where(kept, aggregate_votes(table.reshape(b_ * n * k, n), faults.robust).reshape(b_, n, k),
                                 0.0)
        utilities = utilities.astype(np.float32)
        rare_cached = self._rare[world.domains[cached_ids]].sum(axis=2) * active
        rare_seen = self._rare[world.domains[self._round_ids]].sum(axis=2) * active
        self._totals += np.stack([privacy_counts["n_blurred"], privacy_counts["n_dropped"],
                                  privacy_counts["n_passed_private"], k * active, rare_cached, rare_seen], axis=2)
        self._last_feedback = utilities.mean(axis=2).astype(np.float64)
        if cfg.feedback_memory:  # the sender keeps its own (unfiltered) shared samples and what they earned
            self._remember(cached_ids, utilities, sent_mask)

        # 5. refit the heads that are due, in one call
        self.round_index += 1
        every = cfg.perception.retrain_every
        due = self._stale & active if every and self.round_index % every == 0 else np.zeros((b_, n), dtype=bool)
        if due.any():
            with limited_torch_threads(cfg.max_threads):
                self.heads.fit(due)
                self._thresholds = np.where(due, self._calibrate(), self._thresholds)
                self._accuracy = np.where(due[..., None], self._domain_accuracy(due), self._accuracy)
            self._stale &= ~due
            self.n_trainings += int(due.sum())
        self._round_stats = {
            "cached_slots": np.where(active[..., None], slots, -1).astype(np.int64), "sent_mask": sent_mask,
            "feedback_utilities": utilities, "n_sent": sent_mask.sum(axis=2), "n_received": n_received,
            "n_kept": n_kept, "n_private_cached": private.sum(axis=2), **privacy_counts,
            "round_rare_share": rare_cached / k, "trained": due}
        if cfg.reward == "feedback":
            rewards = self._last_feedback.copy()
        else:
            rewards = np.repeat(((potential_before - self._potential_distance()) / (n * k))[:, None], n, axis=1)
        terminated = np.full(b_, self.round_index >= cfg.rounds)
        self._predict_round()
        return BatchTransition(self._observations(), rewards, terminated, self._infos())

    def _remember(self, cached_ids: np.ndarray, utilities: np.ndarray, sent: np.ndarray) -> None:
        """Append each sender's sent samples (in slot order) to its left-aligned memory, keep the last M."""
        memory, width = self.config.feedback_memory, self._memory_width
        ids = np.concatenate([self._memory_ids, cached_ids], axis=2)
        values = np.concatenate([self._memory_utilities, utilities], axis=2)
        valid = np.concatenate([np.arange(width)[None, None, :] < self._memory_size[..., None], sent], axis=2)
        order = np.argsort(~valid, axis=2, kind="stable")  # valid first, in order
        count = valid.sum(axis=2)
        drop = np.maximum(count - memory, 0)  # the oldest beyond feedback_memory
        index = np.minimum(np.arange(width)[None, None, :] + drop[..., None], ids.shape[2] - 1)
        order = np.take_along_axis(order, index, axis=2)
        self._memory_ids = np.take_along_axis(ids, order, axis=2)
        self._memory_utilities = np.take_along_axis(values, order, axis=2)
        self._memory_size = np.minimum(count, memory)

    def _round_stats_at_reset(self) -> dict[str, np.ndarray]:
        shape, k = (self.num_envs, self.n_robots), self.n_share
        zeros = np.zeros(shape, dtype=np.int64)
        return {"cached_slots": np.full(shape + (k,), -1, dtype=np.int64), "sent_mask": np.zeros(shape + (k,), bool),
                "feedback_utilities": np.zeros(shape + (k,), dtype=np.float32), "n_sent": zeros, "n_received": zeros,
                "n_kept": zeros, "n_private_cached": zeros, "n_blurred": zeros, "n_dropped": zeros,
                "n_passed_private": zeros, "round_rare_share": np.zeros(shape), "trained": np.zeros(shape, bool)}

    def _infos(self) -> dict[str, Any]:
        b_, n = self.num_envs, self.n_robots
        totals = self._totals
        infos = {"round": np.full(b_, self.round_index, dtype=np.int64), "n_share": np.full(b_, self.n_share),
                 "labeled_size": self._cell_counts.sum(axis=(2, 3)), "domain_accuracy": self._accuracy.copy(),
                 "neighbor_mask": self._adjacency.copy(), "ood_threshold": self._thresholds.astype(np.float64),
                 **{name: totals[..., c].copy() for c, name in enumerate(TOTALS)},
                 "rare_share_cached": np.where(totals[..., 3] > 0, totals[..., 4] / np.maximum(totals[..., 3], 1),
                                               0.0)}
        infos.update({key: np.array(value, copy=True) for key, value in self._round_stats.items()})
        if self.config.feedback_memory:  # padded to _memory_width rows: the first feedback_memory_size are real
            # (a memory never holds more than an episode's shares: 80 rows of p2p_default, not 1000; a fresh
            # (B, N, 1000, E + C) array costs its 80 MB of zero pages every step)
            size, e, memory = self._memory_size, self.embedding_dim, self._memory_width
            used = int(size.max())  # memories are left-aligned: no column beyond the fullest holds anything
            real = (np.arange(used)[None, None, :] < size[..., None])[..., None]
            features = np.zeros((b_, n, memory, self.sample_feature_dim), dtype=np.float32)
            features[:, :, :used, :e] = np.where(real, self.world.unit[self._memory_ids[:, :, :used]], 0.0)
            features[:, :, :used, e:] = np.where(real, self._memory_probs[:, :, :used], 0.0)
            utilities = np.zeros((b_, n, memory), dtype=np.float32)
            utilities[:, :, :used] = np.where(real[..., 0], self._memory_utilities[:, :, :used], 0.0)
            infos.update(feedback_memory_features=features, feedback_memory_utilities=utilities,
                         feedback_memory_size=size.copy())
        return infos

    # ------------------------------------------------------------------------------------- privileged / misc
    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth per env: domains and labels of this round's observations (B, N, obs), labeled
        (domain, class) counts (B, N, D, C), neighbor lists (B lists), rare domains (B lists), the cell target."""
        rare = np.flatnonzero(self._rare).tolist()
        return {"observed_domains": self.world.domains[self._round_ids].copy(),
                "observed_labels": self.world.labels[self._round_ids].copy(),
                "labeled_cell_counts": self._cell_counts.copy(),
                "neighbors": [[np.flatnonzero(row).tolist() for row in adjacency] for adjacency in self._adjacency],
                "rare_domains": [list(rare) for _ in range(self.num_envs)],
                "potential_cell_target": np.full(self.num_envs, self.config.potential_cell_target)}

    @property
    def neighbors(self) -> list[list[int]]:
        """Env 0's neighbor lists (the B = 1 read-out of :class:`~.p2p.P2PScenario`)."""
        return [np.flatnonzero(row).tolist() for row in self._adjacency[0]]

    @property
    def last_transmissions(self) -> list[dict]:
        """What left each robot of env 0 in the last step (as :attr:`P2PScenario.last_transmissions`; the sent
        features are the filtered images)."""
        if getattr(self, "_last_sent", None) is None or self.round_index == 0:
            return []
        cached_ids, sent_rows, kept, private, blurred, sent_mask = (x[0] for x in self._last_sent)
        images = np.concatenate([self.world.features, self._blurred_images()])
        return [{"sender": i, "receivers": np.flatnonzero(self._adjacency[0, i]).tolist(),
                 "cached_ids": cached_ids[i].copy(), "sent_ids": cached_ids[i][kept[i]].copy(),
                 "sent_features": images[sent_rows[i][kept[i]]], "private": private[i][kept[i]].copy(),
                 "blurred": blurred[i][kept[i]].copy(), "sent_mask": sent_mask[i].copy()}
                for i in range(self.n_robots)]

    def _blurred_images(self) -> np.ndarray:
        rows = np.flatnonzero(self.world.blurred_row >= 0)
        if not len(rows):
            return np.zeros((0, *self.world.features.shape[1:]), dtype=np.float32)
        privacy = self.config.privacy
        result = PrivacyFilter("blur", privacy.blur_sigma, privacy.min_change).apply(
            self.world.features[rows], np.ones(len(rows), dtype=bool), self.world.regions[rows])
        return result.features[np.argsort(self.world.blurred_row[rows])]

    def state(self) -> np.ndarray:
        """(B, N * D * C): every robot's labeled (domain, class) counts / potential_cell_target, clipped to [0, 1]."""
        return np.clip(self._cell_counts / self.config.potential_cell_target, 0, 1).reshape(self.num_envs, -1).astype(
            np.float32)

    def render(self, mode: str, b: int = 0) -> str | None:
        """``ansi``: env b as a text table (per robot: labeled set, per-domain accuracy, rare share cached)."""
        width = max(8, *(len(d) for d in self.domain_names))
        lines = [f"datagames_p2p_v0 (fast tier, env {b})  round {self.round_index}/{self.config.rounds}",
                 f"{'robot':<8}  {'labeled':>7}  " + "  ".join(f"{d:>{width}}" for d in self.domain_names)
                 + "  rare cached"]
        for i in range(self.n_robots):
            totals = dict(zip(TOTALS, self._totals[b, i].tolist()))
            rare = totals["total_rare_cached"] / totals["total_cached"] if totals["total_cached"] else 0.0
            lines.append(f"{'robot_' + str(i):<8}  {int(self._cell_counts[b, i].sum()):>7}  "
                         + "  ".join(f"{a:>{width}.3f}" for a in self._accuracy[b, i]) + f"  {rare:>11.3f}")
        return "\n".join(lines)

    # -------------------------------------------------------------------------------------------- snapshots
    _ARRAYS = ("seeds", "adjacency", "streams", "calibration", "calibration_valid", "labeled", "cell_counts",
               "thresholds", "accuracy", "stale", "totals", "last_feedback", "memory_ids", "memory_utilities",
               "memory_size", "liars")

    def snapshot_state(self) -> dict:
        """Per-env arrays, the heads' statistics and fits, the message-loss generators; predictions are recomputed."""
        if self._seeds is None:
            raise RuntimeError("snapshot() before reset(): nothing to snapshot")
        state = {name: np.array(getattr(self, f"_{name}" if name != "liars" else name), copy=True)
                 for name in self._ARRAYS}
        state.update(round_index=self.round_index, n_trainings=self.n_trainings, heads=self.heads.state(),
                     round_stats={k: np.array(v, copy=True) for k, v in self._round_stats.items()},
                     message_rngs=None if self.message_rngs is None else
                     [rng.bit_generator.state for rng in self.message_rngs])
        return state

    def check_snapshot_state(self, state: dict) -> None:
        def entry(key):
            return snapshot_entry(state, key, f"state.{key}")

        cfg = self.config
        b_, n, d, c = self.num_envs, self.n_robots, self.n_domains, self.n_classes
        n_world, memory = len(self.world.features), cfg.feedback_memory
        check_snapshot_int(entry("round_index"), "state.round_index", 0, cfg.rounds)
        check_snapshot_int(entry("n_trainings"), "state.n_trainings", 0, 2**62)
        shapes = {"seeds": ((b_,), "i"), "adjacency": ((b_, n, n), "b"),
                  "streams": ((b_, n, cfg.rounds, cfg.obs_per_round), "i"), "calibration": ((b_, n, None), "i"),
                  "calibration_valid": ((b_, n, None), "b"), "labeled": ((b_, n, n_world), "b"),
                  "cell_counts": ((b_, n, d, c), "i"), "thresholds": ((b_, n), "f"), "accuracy": ((b_, n, d), "f"),
                  "stale": ((b_, n), "b"), "totals": ((b_, n, len(TOTALS)), "i"), "last_feedback": ((b_, n), "f"),
                  "memory_ids": ((b_, n, self._memory_width), "i"),
                  "memory_utilities": ((b_, n, self._memory_width), "f"),
                  "memory_size": ((b_, n), "i"), "liars": ((b_, n), "b")}
        for name, (shape, kind) in shapes.items():
            check_snapshot_array(entry(name), f"state.{name}", shape, kind)
        for name in ("streams", "calibration", "memory_ids"):
            values = state[name]
            if values.size and (values.min() < 0 or values.max() >= n_world):
                raise SnapshotError(f"snapshot field 'state.{name}' holds ids outside [0, {n_world})")
        heads = entry("heads")
        if not isinstance(heads, dict):
            raise SnapshotError("snapshot field 'state.heads' must hold the heads' statistics")
        expected = {"counts": (b_, n, c), "sums": (b_, n, c, self.heads.dim), "scatter": (b_, n) + (self.heads.dim,) * 2}
        for name, shape in expected.items():
            for key in (name, f"fitted_{name}"):
                check_snapshot_array(snapshot_entry(heads, key, f"state.heads.{key}"), f"state.heads.{key}", shape)
        stats = entry("round_stats")
        if not isinstance(stats, dict) or set(stats) != set(ROUND_KEYS):
            raise SnapshotError(f"snapshot field 'state.round_stats' must hold {list(ROUND_KEYS)}")
        rngs = entry("message_rngs")
        if rngs is not None:
            if not isinstance(rngs, list) or len(rngs) != b_:
                raise SnapshotError(f"snapshot field 'state.message_rngs' must list {b_} generator states")
            for b, rng_state in enumerate(rngs):
                check_snapshot_rng(rng_state, f"state.message_rngs.{b}")

    def restore_state(self, state: dict) -> None:
        for name in self._ARRAYS:
            setattr(self, f"_{name}" if name != "liars" else name, np.array(state[name], copy=True))
        self.round_index, self.n_trainings = int(state["round_index"]), int(state["n_trainings"])
        self._round_stats = {k: np.array(v, copy=True) for k, v in state["round_stats"].items()}
        self.faults = self.config.faults if self.config.faults.enabled else None
        self.message_rngs = None
        if state["message_rngs"] is not None:
            self.message_rngs = []
            for rng_state in state["message_rngs"]:
                rng = np.random.default_rng()
                rng.bit_generator.state = rng_state
                self.message_rngs.append(rng)
        with limited_torch_threads(self.config.max_threads):
            self.heads.load_state(state["heads"])
        self._last_sent = None
        self._predict_round()

    def content_arrays(self):
        w = self.world
        return w.base, [w.features, w.labels, w.domains, *w.test_features, *w.test_labels, w.public_ids,
                        w.extracted.features]


def batched_scenario(cfg: P2PConfig, num_envs: int) -> P2PFastBatched | None:
    """The native batched p2p of a validated config (the table's ``batched``): :class:`P2PFastBatched` on the fast
    tier; None for ``perception.tier: paper`` (its batch is a ``LoopedBatch``)."""
    if cfg.perception.tier != "fast":
        return None
    return P2PFastBatched(cfg, num_envs)


def make_scenario(config: Any = None, **overrides: Any) -> Scenario:
    """The B = 1 scenario of a p2p config (the table's ``scenario_factory``): :class:`~.p2p.P2PScenario` on the
    paper tier, the native batched fast tier seen at B = 1 (:class:`~.batching.BatchOfOne`) on the fast tier."""
    cfg = load_p2p_config(config, **overrides)
    if cfg.perception.tier == "paper":
        return P2PScenario(cfg)
    return BatchOfOne(P2PFastBatched(cfg, 1))
