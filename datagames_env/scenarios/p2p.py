"""Peer-to-peer GU sharing (scenario ``p2p``): robots share observations with peers, peers vote by OoD detection.

The decentralized system of ``papers/gu-decentralized-data-sharing.txt``. Each robot has its own local model,
trained on its own labeled data (it starts from its home domains). Every round each robot observes
``obs_per_round`` samples from its stream of domains, scores them (the action), caches the top
``share_fraction``, passes them through the privacy filter and sends them to its peers (topology ``all``,
``ring`` or ``random``). Every receiver runs an out-of-distribution detector (:mod:`datagames_env.perception.ood`) on each
received sample against its own model; the fraction of receivers that found a sample novel is the sample's
utility, returned to the sender (the training target of a GU model, :mod:`baselines.p2p_policies`). Receivers keep
what was novel to them, label it (trusted local annotator: the ground truth) and retrain their local models every
``perception.retrain_every`` rounds.

=====================  ==========================================================================================
Agents                 ``robot_0 ... robot_{N-1}`` (one per entry of ``robots``), all acting every round
Observation space      ``Box(low, high, (context_dim + obs_per_round * (E + C),), float32)``, layout below;
                       ``env.obs_layout`` gives the slices (always ``"context"`` and ``"samples"``)
Action space           ``Box(0, 1, (obs_per_round,), float32)``: a score per observed sample; the top
                       ``n_share = max(1, round(share_fraction * obs_per_round))`` are cached and shared (ties go to
                       the lower position). NaN / inf / a wrong shape raise ``ValueError``
Reward                 ``reward: feedback``: per robot, the mean utility its ``n_share`` cached samples earned (a
                       sample the privacy filter dropped earns 0), in [0, 1]. ``reward: potential``: shared by all
                       robots, ``(D_before - D_after) / (n_robots * n_share)`` with
                       ``D = sum_i || max(0, T - H_i) ||_2``, ``H_i`` robot i's labeled (domain, class) counts and
                       ``T = potential_cell_target`` (the cloud game's potential, per robot)
Episode end            after ``rounds`` steps every robot is terminated (the task's horizon; never truncated);
                       ``agents`` becomes empty
Faults                 ``faults`` (off by default; docs/reliability.md): dropout / rejoin (the face),
                       ``message_loss`` per (sender, sample, receiver) transmission, liars vote the opposite of
                       their detector, ``robust`` votes by mean / median / trimmed mean (:func:`aggregate_votes`)
Arguments              ``config`` (a name in ``configs/``, a YAML path, a dict or a :class:`P2PConfig`),
                       ``max_cycles`` (PettingZoo's name for ``rounds``), ``render_mode`` (``ansi``, ``human``),
                       and any config key as a keyword (dotted
                       keys for nested ones: ``**{"ood.detector": "ensemble"}``)
=====================  ==========================================================================================

Observation layout (D domains, C classes, E = ``perception.embedding_dim``)::

    domain_hist      D   the robot's labeled set per domain / its size
    class_hist       C   the robot's labeled set per class / its size
    confidence       3   its model on this round's observations: mean and std of max-probability, mean
                         normalised entropy
    last_feedback    1   mean utility its shares earned last round (0 before the first)
    rounds_left      1   (rounds - round) / rounds
    samples          obs_per_round x (E + C): per observed sample its model's L2-normalised embedding, then its
                     predicted class probabilities

``context`` is everything before ``samples`` (``context_dim = D + C + 5``); ``n_samples = obs_per_round``,
``sample_feature_dim = E + C``.

``infos[robot]`` has the same keys at reset and at every step (numbers and arrays only, never NaN): ``round``,
``labeled_size``, ``domain_accuracy`` (float64 ``(D,)``, test accuracy of its current model per domain, in the order
of ``env.domain_names``), ``n_share``, ``neighbor_mask`` (bool ``(N,)``), ``ood_threshold``, cumulative privacy
counters ``total_blurred``, ``total_dropped``, ``total_passed_private`` and rare-domain counters ``total_cached``,
``total_rare_cached``, ``total_rare_seen``, ``rare_share_cached`` (rare-domain share of everything it cached so far;
0 while it cached nothing); about the last round (at reset: nothing happened yet, -1 slots and zeros):
``cached_slots`` (int64 ``(n_share,)``, positions in the previous observation's sample block), ``sent_mask`` (bool:
left the robot; False = dropped by the privacy filter), ``feedback_utilities`` (float32 ``(n_share,)``, 0 where not
sent), ``n_sent``, ``n_received``, ``n_kept``, ``n_private_cached``, ``n_blurred``, ``n_dropped``,
``n_passed_private``, ``round_rare_share`` (rare share among this round's cache) and ``trained`` (whether its model
was retrained after this round). With ``feedback_memory > 0`` also ``feedback_memory_features`` (float32
``(feedback_memory, E + C)``: the last ``m = feedback_memory_size`` samples it sent in the first ``m`` rows,
re-embedded by its *current* model, as the paper's sender that keeps its shared images; zeros below) and
``feedback_memory_utilities`` (float32 ``(feedback_memory,)``, what each earned): the training set of a GU model.
A robot's retrainings in one episode start from the same initialisation seed, so its embedding space drifts as little as the data allows;
with ``perception.warm_start`` they fine-tune its current model for ``perception.retrain_steps`` steps instead.

Perception tiers (``perception.tier``): ``paper`` is :class:`P2PScenario` below (a network per robot, the code path
of 0dbebaf); ``fast`` is the natively batched :class:`~.p2p_fast.P2PFastBatched` (a frozen public extractor and
batched per-robot heads; :func:`~.p2p_fast.batched_scenario`), whose ``parallel_env`` is the face over it at B = 1. The rules,
layout and info keys above hold for both.

Everything a step needs from a model is computed once per (model version, round) in one batched pass per robot;
only the shared samples go through the receivers' detectors, one batched pass per receiver. Oracle policies read
the truth through :meth:`P2PParallelEnv.privileged_view`; :attr:`P2PParallelEnv.last_transmissions` records what
left each robot in the last step (for the privacy tests).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..config import (
    MAX_COUNT,
    ConfigError,
    FaultsConfig,
    PerceptionConfig,
    _Strict,
    check_memory,
    check_weights,
    load_typed_config,
)
from ..data.datasets import Dataset, DatasetError, load_dataset
from ..data.domains import corrupt
from ..data.streams import draw_domain_stream
from . import SCENARIOS
from .base import SampleSpec, Scenario, Transition, active_mask, atomic_step
from .base import SnapshotError, check_snapshot_array, check_snapshot_int, snapshot_entry
from ..perception.ood import NoveltyDetector
from ..perception import Classifier, build_model, limited_torch_threads, train_classifiers
from ..perception import entropy as perception_entropy
from ..data.privacy import PrivacyConfig, PrivacyFilter, stamp_private_patches

__all__ = ["P2PConfig", "P2PScenario", "load_p2p_config"]

# cumulative per-robot counters in the infos, in the column order of P2PScenario._totals
TOTALS = ("total_blurred", "total_dropped", "total_passed_private", "total_cached", "total_rare_cached",
          "total_rare_seen")

METADATA = {"name": "datagames_p2p_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True,
            "render_fps": 2}

# --------------------------------------------------------------------------------------------------------- config


class DomainConfig(_Strict):
    """One visual domain: a dataset, optionally corrupted by code (:mod:`datagames_env.data.domains`)."""

    name: str = Field(description="how robots, rare_domains and results refer to this domain")
    dataset: str = Field("digits", description="load_dataset name: digits | mnist | kmnist | fashion_mnist | .npz")
    corruption: Literal["none", "fog", "snow", "noise"] = "none"
    severity: float = Field(0.5, gt=0.0, le=1.0)
    max_samples: int | None = Field(None, ge=10, description="cap on this domain's images (speed)")
    fallback: DomainConfig | None = Field(None, description="used when the dataset's files are missing")


class RobotConfig(_Strict):
    """A robot: what it observes and what it starts with."""

    stream: dict[str, float] = Field(description="domain -> share of its observations (normalised)")
    initial_labeled: dict[str, int] = Field(description="domain -> labeled samples it starts with (home domains)")

    @field_validator("stream")
    @classmethod
    def _positive_shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"must map domains to non-negative shares with a positive sum, got {value}")
        check_weights(list(value.values()), "shares")
        return value

    @field_validator("initial_labeled")
    @classmethod
    def _some_labels(cls, value: dict[str, int]) -> dict[str, int]:
        if any(v < 0 for v in value.values()) or sum(value.values()) < 1:
            raise ValueError(f"must give at least one labeled sample (non-negative counts), got {value}")
        return value


class TopologyConfig(_Strict):
    kind: Literal["all", "ring", "random"] = "all"
    p: float = Field(0.5, ge=0.0, le=1.0, description="random: edge probability (undirected, drawn per episode)")


class OODConfig(_Strict):
    """The receivers' novelty detector (:mod:`datagames_env.perception.ood`)."""

    detector: Literal["max_softmax", "mc_dropout", "ensemble"] = "max_softmax"
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="novel if score > threshold (when not calibrated)")
    calibration_quantile: float | None = Field(
        0.95, gt=0.0, lt=1.0, description="threshold = this quantile of the scores on held-out home-domain samples")
    calibration_size: int = Field(100, ge=0, description="held-out home-domain samples per robot for calibration")
    mc_samples: int = Field(10, ge=2)
    dropout: float = Field(0.25, gt=0.0, lt=1.0, description="mc_dropout: rate in training and at test time")
    uncertainty: Literal["total", "epistemic"] = "total"
    ensemble_size: int = Field(3, ge=2)

    def detector_object(self) -> NoveltyDetector:
        return NoveltyDetector(self.detector, self.threshold, self.calibration_quantile, self.mc_samples,
                               self.dropout, self.uncertainty, self.ensemble_size)


class P2PPerceptionConfig(PerceptionConfig):
    """The robots' local models: :class:`~datagames_env.config.PerceptionConfig` plus how a retraining runs."""

    warm_start: bool = Field(False, description="a retraining continues from the robot's current weights (a "
                                                "fine-tuning) instead of a fresh initialisation")
    retrain_steps: int | None = Field(None, ge=1, description="Adam steps of a retraining; null = train_steps")
    tier: Literal["fast", "paper"] = Field(
        "fast", description="fast (the default, as in dual): a frozen extractor pretrained once on a public split + "
                            "batched per-robot heads (scenarios/p2p_fast.py); paper: a network per robot, retrained "
                            "per round")
    public_domains: list[str] | None = Field(
        None, description="fast tier: domains whose public split pretrains the extractor; null = the non-rare ones")
    public_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="fast tier: share of each public domain's "
                                                                      "pool held out as the public pretraining split")
    head: Literal["student", "lda", "ridge"] = Field("student", description="fast tier: the heads' kind")
    novelty: Literal["mahalanobis", "max_softmax", "entropy", "margin"] = Field(
        "mahalanobis", description="fast tier: the receivers' novelty score (replaces ood.detector)")
    mean_prior: float = Field(1.0, gt=0.0, description="fast tier: pseudo-rows of the public class means")
    cov_prior: float = Field(10.0, gt=0.0, description="fast tier: pseudo-rows of the public covariance")


class P2PConfig(_Strict):
    """Every knob of the p2p scenario; see docs/p2p.md for the table."""

    scenario: Literal["p2p"] = "p2p"
    data_dir: str | None = Field(None, description="folder with dataset files; relative: to cwd, else the project")
    domains: list[DomainConfig] = Field(min_length=1)
    rare_domains: list[str] = Field(default_factory=list, description="domains whose cached share is reported")
    robots: list[RobotConfig] = Field(min_length=2)
    rounds: int = Field(8, ge=1)
    obs_per_round: int = Field(100, ge=1, le=MAX_COUNT)
    share_fraction: float = Field(0.1, gt=0.0, le=1.0, description="cache and share this top share of each round")
    topology: TopologyConfig = TopologyConfig()
    ood: OODConfig = OODConfig()
    perception: P2PPerceptionConfig = P2PPerceptionConfig(retrain_every=1)
    receiver_keeps: Literal["novel", "all"] = Field("novel", description="which received samples a robot labels")
    feedback_memory: int = Field(
        1000, ge=0, description="a sender keeps its last this many shared samples with their utilities (GU data)")
    reward: Literal["feedback", "potential"] = "feedback"
    potential_cell_target: int = Field(20, ge=1, description="T: labeled samples wanted per (domain, class) cell")
    privacy: PrivacyConfig = PrivacyConfig()
    faults: FaultsConfig = Field(FaultsConfig(), description="injected faults (dropout, message loss, liars); "
                                                             "off by default")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="per domain, held out for per-domain accuracy")
    split_seed: int = Field(0, description="domain splits, corruptions, private stamps")
    world_seed: int | None = Field(
        0, description="seeds initial labeled sets and first models (trained once); null = from each reset seed")
    max_threads: int | None = Field(1, ge=1, description="torch threads while training / scoring (None: unchanged)")

    @field_validator("topology", mode="before")
    @classmethod
    def _topology_by_name(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @field_validator("perception", mode="before")
    @classmethod
    def _retrain_every_round_by_default(cls, value: Any) -> Any:
        # Local models learn from what they receive: unlike the cloud game, retraining is the default here.
        if isinstance(value, dict) and "retrain_every" not in value:
            return {**value, "retrain_every": 1}
        return value

    @field_validator("ood", mode="before")
    @classmethod
    def _ood_by_name(cls, value: Any) -> Any:
        return {"detector": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _names_exist(self) -> P2PConfig:
        names = [d.name for d in self.domains]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"domains: duplicate names {duplicates}")
        for name in self.rare_domains:
            if name not in names:
                raise ValueError(f"rare_domains: '{name}' is not a domain (domains: {names})")
        for name in self.perception.public_domains or []:
            if name not in names:
                raise ValueError(f"perception.public_domains: '{name}' is not a domain (domains: {names})")
        if self.perception.public_domains is not None and not self.perception.public_domains:
            raise ValueError("perception.public_domains: name at least one domain (or null: the non-rare ones)")
        for i, robot in enumerate(self.robots):
            for key, mapping in (("stream", robot.stream), ("initial_labeled", robot.initial_labeled)):
                unknown = [d for d in mapping if d not in names]
                if unknown:
                    raise ValueError(f"robots.{i}.{key} (robot_{i}): unknown domains {unknown}; domains: {names}")
        # reset draws every robot's whole stream, (rounds, obs_per_round) int64 ids each; a round's observations
        # add obs_per_round x (embedding + classes) float32 per robot
        n, obs = self.n_robots, self.obs_per_round
        check_memory(("rounds", "obs_per_round", "robots"), f"the streams of {n} robots ({self.rounds} rounds x "
                     f"{obs} samples, drawn at reset) and a round's observations",
                     n * obs * (8 * self.rounds + 4 * (self.perception.embedding_dim + 2)))
        return self

    @property
    def n_robots(self) -> int:
        return len(self.robots)

    @property
    def n_share(self) -> int:
        """Samples each robot caches and shares per round."""
        return max(1, round(self.share_fraction * self.obs_per_round))


def load_p2p_config(config: str | Path | dict | P2PConfig | None = None, **overrides: Any) -> P2PConfig:
    """A validated :class:`P2PConfig` from a name in ``configs/`` (default ``p2p_default``), a YAML path, a dict
    or a config, plus keyword overrides (top-level keys, nested dicts, or dotted keys ``"ood.detector"``)."""
    if config is None:
        config = SCENARIOS["p2p"].default_config
    return load_typed_config(P2PConfig, config, overrides, "p2p configuration")


# ---------------------------------------------------------------------------------------------------------- world


@functools.lru_cache(maxsize=8)
def _load_images(name: str, data_dir: str | None) -> Dataset:
    """A domain's dataset as images (square vectors, e.g. digits, become 1-channel images), loaded once."""
    return load_dataset(name, data_dir=data_dir).as_images()


@dataclass
class P2PWorld:
    """Everything fixed for a config: the domains' pools (with private stamps) and test sets."""

    domain_names: list[str]
    domain_sources: list[str]  # what each domain really is, e.g. "mnist+fog (fallback: ...)"
    features: np.ndarray  # float32 (n_pool, ch, H, W): every domain's stream pool, private patches stamped
    labels: np.ndarray  # int64 (n_pool,)
    domains: np.ndarray  # int64 (n_pool,) domain index
    private: np.ndarray  # bool (n_pool,)
    regions: np.ndarray  # int64 (n_pool, 4) private boxes
    pool_by_domain: list[np.ndarray]  # world ids of each domain's pool
    test_features: list[np.ndarray]
    test_labels: list[np.ndarray]
    n_classes: int


def build_world(cfg: P2PConfig) -> P2PWorld:
    data_dir = cfg.data_dir
    resolved: list[DomainConfig] = []
    sources: list[str] = []
    datasets: list[Dataset] = []
    for i, domain in enumerate(cfg.domains):
        chosen, note = domain, ""
        while True:
            try:
                dataset = _load_images(chosen.dataset, data_dir)
                break
            except DatasetError as exc:
                if chosen.fallback is None:
                    raise DatasetError(f"domains.{i} ({domain.name}): {exc}") from None
                note = f" (fallback: {chosen.dataset} not available)"
                warnings.warn(f"p2p domain '{domain.name}': {chosen.dataset} not available, using its fallback "
                              f"{chosen.fallback.dataset}+{chosen.fallback.corruption}", stacklevel=2)
                chosen = chosen.fallback
        resolved.append(chosen)
        datasets.append(dataset)
        sources.append(chosen.dataset + ("" if chosen.corruption == "none" else f"+{chosen.corruption}") + note)
    shapes = {d.feature_shape for d in datasets}
    if len(shapes) > 1:
        raise ConfigError(f"domains: all domains must have the same image shape, got "
                          f"{ {cfg.domains[i].name: datasets[i].feature_shape for i in range(len(datasets))} }")

    # Domains built on the same dataset get disjoint parts of it (fog-MNIST never shows a clean MNIST image).
    rng = np.random.default_rng(cfg.split_seed)
    parts: dict[int, np.ndarray] = {}
    by_source: dict[str, list[int]] = {}
    for i, domain in enumerate(resolved):
        by_source.setdefault(domain.dataset, []).append(i)
    for members in by_source.values():
        order = rng.permutation(datasets[members[0]].n_samples)
        for i, chunk in zip(members, np.array_split(order, len(members))):
            cap = resolved[i].max_samples
            parts[i] = np.sort(chunk[:cap] if cap is not None else chunk)

    pool_features, pool_labels, pool_domains, test_features, test_labels, pool_by_domain = [], [], [], [], [], []
    offset = 0
    for i, domain in enumerate(resolved):
        ds = datasets[i]
        idx = parts[i]
        n_test = max(1, round(cfg.test_fraction * len(idx)))
        shuffled = rng.permutation(idx)
        test_idx, pool_idx = np.sort(shuffled[:n_test]), np.sort(shuffled[n_test:])
        corruption_seed = int(np.random.SeedSequence([cfg.split_seed, i]).generate_state(1)[0])
        images = corrupt(ds.features[np.concatenate([test_idx, pool_idx])], domain.corruption, domain.severity,
                         corruption_seed)
        test_features.append(images[:n_test])
        test_labels.append(ds.labels[test_idx])
        pool_features.append(images[n_test:])
        pool_labels.append(ds.labels[pool_idx])
        pool_domains.append(np.full(len(pool_idx), i, dtype=np.int64))
        pool_by_domain.append(np.arange(offset, offset + len(pool_idx), dtype=np.int64))
        offset += len(pool_idx)
    features = np.concatenate(pool_features)
    n = len(features)
    private, regions = np.zeros(n, dtype=bool), np.zeros((n, 4), dtype=np.int64)
    if cfg.privacy.private_fraction > 0:
        features, private, regions = stamp_private_patches(features, cfg.privacy.private_fraction,
                                                           np.random.default_rng([cfg.split_seed, 1]),
                                                           cfg.privacy.patch_size)
    return P2PWorld([d.name for d in cfg.domains], sources, features, np.concatenate(pool_labels),
                    np.concatenate(pool_domains), private, regions, pool_by_domain, test_features, test_labels,
                    n_classes=max(d.n_classes for d in datasets))


# ---------------------------------------------------------------------------------------------------------- model


@dataclass
class LocalModel:
    """One version of a robot's local model: the classifier(s), its OoD threshold, its per-domain accuracy."""

    classifiers: list[Classifier]  # [0] is the robot's model; more only for the ensemble detector
    threshold: float
    domain_accuracy: np.ndarray  # float64 (D,)


def _seed_of(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFF_FFFF_FFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class _Robot:
    """Mutable per-episode state of one robot."""

    labeled_features: list[np.ndarray]
    labeled_labels: list[np.ndarray]
    labeled_domains: list[np.ndarray]
    labeled_ids: set[int]
    calibration_ids: np.ndarray
    stream: np.ndarray  # int64 (rounds, obs_per_round) world ids
    model: LocalModel
    stale: bool = False  # labeled set grew since the last training
    memory_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # its shared samples
    memory_utilities: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    n_trainings: int = 0


# ------------------------------------------------------------------------------------------------------------ env


def observation_layout(n_domains: int, n_classes: int, n_samples: int,
                       embedding_dim: int) -> tuple[dict[str, slice], np.ndarray]:
    """The observation layout of the module docstring (name -> slice) and its float32 lower bounds (the upper
    bound is 1 everywhere): shared by both perception tiers."""
    layout, start = {}, 0
    for name, width in (("domain_hist", n_domains), ("class_hist", n_classes), ("confidence", 3),
                        ("last_feedback", 1), ("rounds_left", 1)):
        layout[name] = slice(start, start + width)
        start += width
    sample_dim = embedding_dim + n_classes
    layout["context"] = slice(0, start)
    layout["samples"] = slice(start, start + n_samples * sample_dim)
    low = np.zeros(layout["samples"].stop, dtype=np.float32)
    per_sample_low = np.zeros((n_samples, sample_dim), dtype=np.float32)
    per_sample_low[:, :embedding_dim] = -1.0  # L2-normalised embeddings; probabilities in [0, 1]
    low[layout["samples"]] = per_sample_low.ravel()
    return layout, low


class P2PScenario(Scenario):
    """Peer-to-peer GU sharing (see the module docstring)."""

    metadata = METADATA

    def __init__(self, config: str | dict | P2PConfig | None = None, **overrides: Any) -> None:
        self.config = cfg = load_p2p_config(config, **overrides)
        self.n_robots = cfg.n_robots
        self.world = build_world(cfg)
        self.detector = cfg.ood.detector_object()
        self.filter = PrivacyFilter.from_config(cfg.privacy)
        self.domain_names = list(self.world.domain_names)
        self.n_domains = len(self.domain_names)
        self.n_classes = self.world.n_classes
        self._rare = np.isin(np.arange(self.n_domains), [self.domain_names.index(d) for d in cfg.rare_domains])
        self.n_share = cfg.n_share
        self.n_samples = cfg.obs_per_round
        self.embedding_dim = cfg.perception.embedding_dim
        self.sample_feature_dim = self.embedding_dim + self.n_classes
        self._layout, self.observation_low = observation_layout(self.n_domains, self.n_classes, self.n_samples,
                                                                self.embedding_dim)
        self.context_dim = self._layout["context"].stop
        self.obs_dim = self._layout["samples"].stop
        self.observation_high = np.ones(self.obs_dim, dtype=np.float32)
        self.sample_spec = SampleSpec(self.context_dim, self.n_samples, self.sample_feature_dim,
                                          self.embedding_dim, self.n_share)
        self.action_width = self.n_samples
        self._initial_cache: dict[tuple[int, int], tuple[list, list, list, set, np.ndarray, LocalModel]] = {}
        self._robots: list[_Robot] = []
        self.neighbors: list[list[int]] = []
        self.round_index = 0
        self.last_transmissions: list[dict] = []
        self.n_trainings = 0

    # --------------------------------------------------------------------------------------------- spaces
    @property
    def obs_layout(self) -> dict[str, slice]:
        return self._layout

    # ---------------------------------------------------------------------------------------------- models
    def _train(self, sets: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]],
                previous: list[LocalModel] | None = None) -> list[LocalModel]:
        """Local models for several robots at once from (features, labels, seed, calibration ids) each: every
        classifier of every robot (one, or the ensemble's members) trains in ONE batched model
        (:func:`~datagames_env.perception.train_classifiers`), then each robot calibrates its OoD threshold.
        ``previous`` (a retraining with ``perception.warm_start``): each robot's current model, whose members the
        new ones continue from for ``perception.retrain_steps`` steps."""
        if not sets:
            return []
        cfg = self.config
        n_members = 1 if self.detector.detector == "mc_dropout" else self.detector.n_models
        seeds = [seed if self.detector.detector == "mc_dropout" else _seed_of(seed, k)
                 for _, _, seed, _ in sets for k in range(n_members)]
        features = [f for f, _, _, _ in sets for _ in range(n_members)]
        labels = [y for _, y, _, _ in sets for _ in range(n_members)]
        dropout = cfg.ood.dropout if self.detector.detector == "mc_dropout" else 0.0
        init = steps = None
        if previous is not None:
            init = [model.classifiers[k] for model in previous for k in range(n_members)]
            steps = cfg.perception.retrain_steps
        with limited_torch_threads(cfg.max_threads):
            classifiers = train_classifiers(features, labels, self.n_classes, cfg.perception, seeds, dropout=dropout,
                                            init=init, steps=steps)
            self.n_trainings += len(classifiers)
            models = []
            for r, (_, _, seed, calibration) in enumerate(sets):
                members = classifiers[r * n_members:(r + 1) * n_members]
                threshold = self.detector.calibrate(members, self.world.features[calibration], seed=seed)
                accuracy = np.array([members[0].accuracy(x, y) for x, y in
                                     zip(self.world.test_features, self.world.test_labels)])
                models.append(LocalModel(members, threshold, accuracy))
        return models

    def _initial_robots(self, seed: int) -> list[tuple[list, list, list, set, np.ndarray, LocalModel]]:
        """Initial labeled set, calibration ids and first model of every robot (drawn from ``seed``); the first
        models train together."""
        cfg, world = self.config, self.world
        missing = [i for i in range(cfg.n_robots) if (seed, i) not in self._initial_cache]
        drawn = {}
        for i in missing:
            rng = np.random.default_rng([seed, i, 7])
            labeled, calibration = [], []
            robot_cfg = cfg.robots[i]
            home = [self.domain_names.index(d) for d, n in robot_cfg.initial_labeled.items() if n > 0]
            for d in home:
                want = robot_cfg.initial_labeled[self.domain_names[d]]
                pool = world.pool_by_domain[d]
                n_cal = round(cfg.ood.calibration_size / len(home))
                if want + n_cal > len(pool):
                    raise ConfigError(f"robots.{i}.initial_labeled (robot_{i}): {want} labeled + {n_cal} calibration "
                                      f"samples of domain '{self.domain_names[d]}' exceed its pool of {len(pool)}")
                chosen = rng.choice(pool, size=want + n_cal, replace=False)
                labeled.append(np.sort(chosen[:want]))
                calibration.append(np.sort(chosen[want:]))
            drawn[i] = (np.concatenate(labeled), np.concatenate(calibration))
        models = self._train([(world.features[ids], world.labels[ids], _seed_of(seed, i, 11), calibration_ids)
                              for i, (ids, calibration_ids) in drawn.items()])
        entries = dict(self._initial_cache)
        for (i, (ids, calibration_ids)), model in zip(drawn.items(), models):
            entries[(seed, i)] = ([world.features[ids]], [world.labels[ids]], [world.domains[ids]], set(ids.tolist()),
                                  calibration_ids, model)
        if cfg.world_seed is not None:
            self._initial_cache = entries
        return [entries[(seed, i)] for i in range(cfg.n_robots)]

    def _stream(self, i: int, rng: np.random.Generator, exclude: set[int]) -> np.ndarray:
        """World ids robot i observes, (rounds, obs_per_round) (:func:`~datagames_env.data.streams.draw_domain_stream`)."""
        cfg = self.config
        shares = [cfg.robots[i].stream.get(name, 0.0) for name in self.domain_names]
        return draw_domain_stream(shares, self.world.pool_by_domain, cfg.rounds, cfg.obs_per_round, rng,
                                  np.fromiter(exclude, dtype=np.int64, count=len(exclude)),
                                  f"robots.{i}.stream (robot_{i})", self.domain_names)

    # ------------------------------------------------------------------------------------------------ loop
    def reset(self, seed: int) -> tuple[np.ndarray, list[dict]]:
        self._episode_seed = seed
        cfg = self.config
        rng = np.random.default_rng([self._episode_seed, 1])
        n = cfg.n_robots
        if cfg.topology.kind == "all":
            self.neighbors = [[j for j in range(n) if j != i] for i in range(n)]
        elif cfg.topology.kind == "ring":
            self.neighbors = [sorted({(i - 1) % n, (i + 1) % n} - {i}) for i in range(n)]
        else:
            upper = np.triu(rng.random((n, n)) < cfg.topology.p, k=1)
            adjacency = upper | upper.T
            self.neighbors = [np.flatnonzero(adjacency[i]).tolist() for i in range(n)]
        self._adjacency = np.zeros((n, n), dtype=bool)  # [sender, receiver]
        for i, peers in enumerate(self.neighbors):
            self._adjacency[i, peers] = True
        initial_seed = cfg.world_seed if cfg.world_seed is not None else self._episode_seed
        self._robots = []
        for i, (feats, labels, domains, ids, calibration, model) in enumerate(self._initial_robots(initial_seed)):
            robot = _Robot(list(feats), list(labels), list(domains), set(ids), calibration,
                           stream=np.zeros((0, 0), dtype=np.int64), model=model)
            robot.stream = self._stream(i, rng, ids | set(calibration.tolist()))
            self._robots.append(robot)
        self._cell_counts = np.stack([self._cells(r) for r in self._robots])
        self._totals = np.zeros((n, len(TOTALS)), dtype=np.int64)
        self.round_index = 0
        self._last_feedback = np.zeros(n)
        self.last_transmissions = []
        self._predict_round()
        return self.observations(), self._infos(None)

    def _cells(self, robot: _Robot) -> np.ndarray:
        labels = np.concatenate(robot.labeled_labels)
        domains = np.concatenate(robot.labeled_domains)
        return np.bincount(domains * self.n_classes + labels,
                           minlength=self.n_domains * self.n_classes).reshape(self.n_domains, self.n_classes)

    def _predict_round(self) -> None:
        """One batched pass of each robot's current model over this round's observations and over the samples it
        shared before (its feedback memory: re-embedded, since a retrained model has a new embedding space)."""
        self._round_ids = np.stack([r.stream[min(self.round_index, self.config.rounds - 1)] for r in self._robots])
        self._round_probs, self._round_embeddings, self._memory_features = [], [], []
        n_obs = self.config.obs_per_round
        with limited_torch_threads(self.config.max_threads):
            for robot, ids in zip(self._robots, self._round_ids):
                probs, embeddings = robot.model.classifiers[0].predict(
                    self.world.features[np.concatenate([ids, robot.memory_ids])])
                self._round_probs.append(probs[:n_obs])
                self._round_embeddings.append(embeddings[:n_obs])
                self._memory_features.append(np.concatenate([embeddings[n_obs:], probs[n_obs:]], axis=1))
        self._round_probs, self._round_embeddings = np.stack(self._round_probs), np.stack(self._round_embeddings)

    def observations(self) -> np.ndarray:
        """(N, obs_dim) float32: every robot's observation (layout in the module docstring)."""
        cfg, lay = self.config, self._layout
        n = cfg.n_robots
        out = np.zeros((n, self.obs_dim), dtype=np.float32)
        totals = np.maximum(self._cell_counts.sum(axis=(1, 2)), 1)[:, None]
        out[:, lay["domain_hist"]] = self._cell_counts.sum(axis=2) / totals
        out[:, lay["class_hist"]] = self._cell_counts.sum(axis=1) / totals
        probs = self._round_probs  # (N, obs, C)
        top = probs.max(axis=2)
        log_c = np.log(self.n_classes) if self.n_classes > 1 else 1.0
        entropy = perception_entropy(probs) / log_c
        out[:, lay["confidence"]] = np.stack([top.mean(axis=1), top.std(axis=1), entropy.mean(axis=1)], axis=1)
        out[:, lay["last_feedback"]] = self._last_feedback[:, None]
        out[:, lay["rounds_left"]] = (cfg.rounds - self.round_index) / cfg.rounds
        out[:, lay["samples"]] = np.concatenate([self._round_embeddings, probs], axis=2).reshape(n, -1)
        return np.clip(out, self.observation_low, 1.0)

    def _potential_distance(self) -> float:
        deficit = np.clip(self.config.potential_cell_target - self._cell_counts, 0, None).astype(np.float64)
        return float(np.sqrt((deficit ** 2).sum(axis=(1, 2))).sum())

    # ---------------------------------------------------------------------------------- atomic / snapshot
    def _begin_step(self) -> dict:
        saved = dict(vars(self))
        saved["_cell_counts"], saved["_totals"] = self._cell_counts.copy(), self._totals.copy()  # += in place
        saved["_robot_vars"] = [_robot_vars(robot) for robot in self._robots]  # labeled sets grow in place
        return saved

    def _rollback_step(self, saved: dict) -> None:
        robot_vars = saved.pop("_robot_vars")
        super()._rollback_step(saved)
        for robot, values in zip(self._robots, robot_vars):
            vars(robot).update(values)

    def snapshot_state(self) -> dict:
        """What a step changes, plus every robot's model *weights*: a p2p model is a chain of (warm-started)
        retrainings on received, privacy-filtered samples, so its weights are stored rather than replayed.
        Round predictions are recomputed from the models."""
        if not self._robots:
            raise RuntimeError("snapshot() before reset(): nothing to snapshot")
        robots = []
        for robot in self._robots:
            values = _robot_vars(robot)
            values["labeled_ids"] = np.array(sorted(values["labeled_ids"]), dtype=np.int64)
            model = values.pop("model")
            values["model"] = {"classifiers": [_classifier_state(c) for c in model.classifiers],
                               "threshold": model.threshold, "domain_accuracy": model.domain_accuracy.copy()}
            robots.append(values)
        return {"episode_seed": self._episode_seed, "neighbors": [list(x) for x in self.neighbors],
                "adjacency": self._adjacency.copy(), "cell_counts": self._cell_counts.copy(),
                "totals": self._totals.copy(), "round_index": self.round_index,
                "last_feedback": self._last_feedback.copy(), "last_transmissions": list(self.last_transmissions),
                "n_trainings": self.n_trainings, "robots": robots}

    def check_snapshot_state(self, state: dict) -> None:
        def entry(key, holder=state, where="state"):
            return snapshot_entry(holder, key, f"{where}.{key}")

        cfg = self.config
        n, d, c, n_world = cfg.n_robots, self.n_domains, self.n_classes, len(self.world.features)
        check_snapshot_int(entry("episode_seed"), "state.episode_seed", 0, 2**63 - 1)
        r = check_snapshot_int(entry("round_index"), "state.round_index", 0, cfg.rounds)
        neighbors = entry("neighbors")
        if (not isinstance(neighbors, list) or len(neighbors) != n
                or not all(isinstance(p, list) and all(isinstance(j, int) and 0 <= j < n and j != i for j in p)
                           for i, p in enumerate(neighbors))):
            raise SnapshotError(f"snapshot field 'state.neighbors' must list {n} lists of other robots' indices")
        check_snapshot_array(entry("adjacency"), "state.adjacency", (n, n), "b")
        check_snapshot_array(entry("cell_counts"), "state.cell_counts", (n, d, c), "i", 0)
        check_snapshot_array(entry("totals"), "state.totals", (n, len(TOTALS)), "i", 0)
        check_snapshot_array(entry("last_feedback"), "state.last_feedback", (n,), "f", 0.0, 1.0)
        if not isinstance(entry("last_transmissions"), list):
            raise SnapshotError("snapshot field 'state.last_transmissions' must be a list")
        check_snapshot_int(entry("n_trainings"), "state.n_trainings", 0, 2**62)
        robots = entry("robots")
        if not isinstance(robots, list) or len(robots) != n:
            raise SnapshotError(f"snapshot field 'state.robots' must hold {n} robots")
        fields = {f for f in _Robot.__dataclass_fields__}
        for i, robot in enumerate(robots):
            where = f"state.robots.{i}"
            if not isinstance(robot, dict) or set(robot) != fields:
                raise SnapshotError(f"snapshot field '{where}' must hold the robot fields {sorted(fields)}")
            check_snapshot_array(robot["stream"], f"{where}.stream", (cfg.rounds, cfg.obs_per_round), "i", 0,
                                 n_world - 1)
            check_snapshot_array(robot["labeled_ids"], f"{where}.labeled_ids", (None,), "i", 0, n_world - 1)
            check_snapshot_array(robot["calibration_ids"], f"{where}.calibration_ids", (None,), "i", 0, n_world - 1)
            memory = check_snapshot_array(robot["memory_ids"], f"{where}.memory_ids", (None,), "i", 0, n_world - 1)
            check_snapshot_array(robot["memory_utilities"], f"{where}.memory_utilities", (len(memory),), "f")
            parts = [robot[k] for k in ("labeled_features", "labeled_labels", "labeled_domains")]
            if not all(isinstance(p, list) and len(p) == len(parts[0]) for p in parts):
                raise SnapshotError(f"snapshot field '{where}.labeled_*' must be lists of one length")
            for k, (features, labels, domains) in enumerate(zip(*parts)):
                m = len(check_snapshot_array(labels, f"{where}.labeled_labels.{k}", (None,), "i", 0, c - 1))
                check_snapshot_array(features, f"{where}.labeled_features.{k}", (m, *self.world.features.shape[1:]))
                check_snapshot_array(domains, f"{where}.labeled_domains.{k}", (m,), "i", 0, d - 1)
            model = robot["model"]
            entry("classifiers", model, f"{where}.model")
            check_snapshot_array(entry("domain_accuracy", model, f"{where}.model"), f"{where}.model.domain_accuracy",
                                 (d,), "f", 0.0, 1.0)

    def content_arrays(self):
        w = self.world
        return w, [w.features, w.labels, w.domains, *w.test_features, *w.test_labels]

    def restore_state(self, state: dict) -> None:
        shape = self.world.features.shape[1:]
        robots = []
        for values in state["robots"]:
            values = dict(values)
            model = values.pop("model")
            classifiers = [_classifier_from_state(c, shape, self.n_classes, self.config.perception)
                           for c in model["classifiers"]]
            values.update(labeled_features=list(values["labeled_features"]),
                          labeled_labels=list(values["labeled_labels"]),
                          labeled_domains=list(values["labeled_domains"]),
                          labeled_ids=set(values["labeled_ids"].tolist()),
                          model=LocalModel(classifiers, model["threshold"], model["domain_accuracy"].copy()))
            robots.append(_Robot(**values))
        self._robots = robots
        self._episode_seed = state["episode_seed"]
        self.neighbors = [list(x) for x in state["neighbors"]]
        self._adjacency = state["adjacency"].copy()
        self._cell_counts, self._totals = state["cell_counts"].copy(), state["totals"].copy()
        self.round_index = state["round_index"]
        self._last_feedback = state["last_feedback"].copy()
        self.last_transmissions = list(state["last_transmissions"])
        self.n_trainings = state["n_trainings"]
        self._predict_round()

    @atomic_step
    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transition:
        cfg, world = self.config, self.world
        n, k = cfg.n_robots, self.n_share
        active = active_mask(active, n)
        scores = actions
        slots = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # top k; ties go to the lower position
        potential_before = self._potential_distance()
        # a robot that left caches, sends and receives nothing this round
        adjacency = self._adjacency & active[:, None] & active[None, :]

        # 1. cache -> privacy filter -> send: one filter pass over every robot's cache, (robot, slot) arrays after
        cached_ids = np.take_along_axis(self._round_ids, slots, axis=1)
        flat_ids = cached_ids.ravel()
        private = world.private[flat_ids].reshape(n, k) & active[:, None]
        result = self.filter.apply(world.features[flat_ids], private.ravel(), world.regions[flat_ids])
        kept = result.kept.reshape(n, k) & active[:, None]
        blurred = result.blurred.reshape(n, k)
        outgoing = np.empty_like(world.features[flat_ids])  # the filter's output of each kept (robot, slot)
        outgoing[result.kept] = result.sent
        n_receivers = adjacency.sum(axis=1)
        sent_mask = kept & (n_receivers > 0)[:, None]
        n_private = private.sum(axis=1)
        # what the filter really did per sample (a blur that could not hide the region is a drop), not the mode
        passed = private & kept & ~blurred if self.filter.mode == "pass" else np.zeros_like(private)
        privacy_counts = {"n_dropped": (private & ~kept).sum(axis=1), "n_blurred": blurred.sum(axis=1),
                          "n_passed_private": passed.sum(axis=1)}
        transmissions = []
        for i in range(n):  # the record of what left each robot (privacy tests), no array work
            rows = slice(i * k, (i + 1) * k)
            transmissions.append({"sender": i, "receivers": list(self.neighbors[i]), "cached_ids": cached_ids[i].copy(),
                                  "sent_ids": cached_ids[i][kept[i]].copy(), "sent_features": outgoing[rows][kept[i]],
                                  "private": private[i][kept[i]].copy(), "blurred": blurred[i][kept[i]].copy(),
                                  "sent_mask": sent_mask[i].copy()})
        # 2. every receiver scores everything it received in one batched pass of its own model(s)
        votes = np.zeros(n * k)
        n_kept = np.zeros(n, dtype=np.int64)
        n_received = np.zeros(n, dtype=np.int64)
        keep_plan = []
        faults = self.faults
        if faults is not None:  # (sender, slot, receiver): what arrives; every vote that came back, NaN if none
            delivered = adjacency[:, None, :] & kept[:, :, None]
            if faults.message_loss:
                delivered &= self.fault_rngs["messages"].random(delivered.shape) >= faults.message_loss
            vote_table = np.full((n * k, n), np.nan)
        for j in range(n):
            arrived = (adjacency[:, j, None] & kept) if faults is None else delivered[:, :, j]
            rows = np.flatnonzero(arrived.ravel())  # senders in order, kept slots
            if not len(rows):
                continue
            features, ids = outgoing[rows], flat_ids[rows]
            mc_seed = _seed_of(self._episode_seed, self.round_index, j, 3)
            with limited_torch_threads(cfg.max_threads):
                novel = self.detector.novel(self._robots[j].model.classifiers, features,
                                            self._robots[j].model.threshold, seed=mc_seed)
            n_received[j] = len(ids)
            votes[rows] += novel
            if faults is not None:  # a liar votes the opposite of what its detector found (it keeps the truth)
                vote_table[rows, j] = (1.0 - novel) if self.liars[j] else novel
            keep = novel if cfg.receiver_keeps == "novel" else np.ones(len(ids), dtype=bool)
            keep_plan.append((j, features[keep], ids[keep]))
        # 3. receivers label what they keep (ground truth from their trusted annotator), dedupe by sample
        for j, features, ids in keep_plan:
            robot = self._robots[j]
            fresh = np.array([x not in robot.labeled_ids for x in ids.tolist()], dtype=bool)
            _, first = np.unique(ids, return_index=True)
            once = np.zeros(len(ids), dtype=bool)
            once[first] = True
            take = fresh & once
            if take.any():
                robot.labeled_features.append(features[take])
                robot.labeled_labels.append(world.labels[ids[take]])
                robot.labeled_domains.append(world.domains[ids[take]])
                np.add.at(self._cell_counts[j], (world.domains[ids[take]], world.labels[ids[take]]), 1)
                robot.labeled_ids.update(ids[take].tolist())
                robot.stale = True
                n_kept[j] = int(take.sum())
        # 4. utilities back to the senders: the fraction of its receivers that found each sent sample novel
        if faults is None:
            utilities = np.where(kept, votes.reshape(n, k) / np.maximum(n_receivers, 1)[:, None], 0.0)
        else:
            utilities = np.where(kept, aggregate_votes(vote_table, faults.robust).reshape(n, k), 0.0)
        utilities = utilities.astype(np.float32)
        rare_cached = self._rare[world.domains[cached_ids]].sum(axis=1) * active
        rare_seen = self._rare[world.domains[self._round_ids]].sum(axis=1) * active
        self._totals += np.stack([privacy_counts["n_blurred"], privacy_counts["n_dropped"],
                                  privacy_counts["n_passed_private"], k * active, rare_cached, rare_seen], axis=1)
        round_stats = []
        for i in range(n):  # per-robot info records, no array work
            round_stats.append({"cached_slots": slots[i].copy(), "sent_mask": sent_mask[i].copy(),
                                "feedback_utilities": utilities[i].copy(), "n_sent": int(sent_mask[i].sum()),
                                "n_received": int(n_received[i]), "n_kept": int(n_kept[i]),
                                "n_private_cached": int(n_private[i]),
                                **{name: int(counts[i]) for name, counts in privacy_counts.items()},
                                "round_rare_share": int(rare_cached[i]) / k})
            if not active[i]:
                round_stats[i]["cached_slots"][:] = -1
        self._last_feedback = utilities.mean(axis=1).astype(np.float64)
        self.last_transmissions = transmissions
        if cfg.feedback_memory:  # the sender keeps its own (unfiltered) shared samples and what they earned
            for i, robot in enumerate(self._robots):
                sent_here = sent_mask[i]
                robot.memory_ids = np.concatenate([robot.memory_ids, cached_ids[i][sent_here]])[-cfg.feedback_memory:]
                robot.memory_utilities = np.concatenate([robot.memory_utilities,
                                                         utilities[i][sent_here]])[-cfg.feedback_memory:]
        # 5. retrain on the schedule
        self.round_index += 1
        every = cfg.perception.retrain_every
        due = [i for i, robot in enumerate(self._robots)
               if every and self.round_index % every == 0 and robot.stale and active[i]]
        previous = [self._robots[i].model for i in due] if cfg.perception.warm_start else None
        models = self._train([(np.concatenate(self._robots[i].labeled_features),
                               np.concatenate(self._robots[i].labeled_labels), _seed_of(self._episode_seed, i, 13),
                               self._robots[i].calibration_ids) for i in due], previous)
        for i, model in zip(due, models):
            robot = self._robots[i]
            robot.n_trainings += 1
            robot.model = model
            robot.stale = False
        for i in range(n):
            round_stats[i]["trained"] = i in due

        if cfg.reward == "feedback":
            rewards = self._last_feedback.copy()
        else:
            rewards = np.full(n, (potential_before - self._potential_distance()) / (n * k))
        done = self.round_index >= cfg.rounds
        self._predict_round()  # after the last round only for the infos' feedback memory
        return Transition(self.observations(), rewards, done, self._infos(round_stats))

    def _round_stats_at_reset(self) -> list[dict]:
        """The per-round info keys before any round was played (fixed schema: the same keys at reset)."""
        k = self.n_share
        return [{"cached_slots": np.full(k, -1, dtype=np.int64), "sent_mask": np.zeros(k, dtype=bool),
                 "feedback_utilities": np.zeros(k, dtype=np.float32), "n_sent": 0, "n_received": 0, "n_kept": 0,
                 "n_private_cached": 0, "n_blurred": 0, "n_dropped": 0, "n_passed_private": 0,
                 "round_rare_share": 0.0, "trained": False} for _ in range(self.config.n_robots)]

    def _infos(self, round_stats: list[dict] | None) -> list[dict]:
        # fixed schema (TorchRL, seed_test): the same keys at reset and every step, numbers and arrays only
        round_stats = round_stats if round_stats is not None else self._round_stats_at_reset()
        n, memory = self.config.n_robots, self.config.feedback_memory
        infos = []
        for i, robot in enumerate(self._robots):
            totals = dict(zip(TOTALS, self._totals[i].tolist()))
            neighbor_mask = np.zeros(n, dtype=bool)
            neighbor_mask[self.neighbors[i]] = True
            info = {"round": self.round_index, "labeled_size": int(self._cell_counts[i].sum()),
                    "domain_accuracy": robot.model.domain_accuracy.copy(), "n_share": self.n_share,
                    "neighbor_mask": neighbor_mask, "ood_threshold": float(robot.model.threshold), **totals,
                    "rare_share_cached": (totals["total_rare_cached"] / totals["total_cached"]
                                          if totals["total_cached"] else 0.0)}
            info.update(round_stats[i])
            if memory:  # padded to feedback_memory rows; the first feedback_memory_size are real
                size = len(robot.memory_utilities)
                features = np.zeros((memory, self.sample_feature_dim), dtype=np.float32)
                utilities = np.zeros(memory, dtype=np.float32)
                features[:size] = self._memory_features[i]
                utilities[:size] = robot.memory_utilities
                info.update(feedback_memory_features=features, feedback_memory_utilities=utilities,
                            feedback_memory_size=size)
            infos.append(info)
        return infos

    # ------------------------------------------------------------------------------------ privileged / misc
    def privileged_view(self) -> dict[str, Any]:
        """Oracle-only truth: domains and labels of this round's observations (N, obs_per_round), every robot's
        labeled (domain, class) counts (N, D, C), the neighbor lists, rare domains and the cell target."""
        return {"observed_domains": self.world.domains[self._round_ids].copy(),
                "observed_labels": self.world.labels[self._round_ids].copy(),
                "labeled_cell_counts": self._cell_counts.copy(),
                "neighbors": [list(x) for x in self.neighbors],
                "rare_domains": np.flatnonzero(self._rare).tolist(),
                "potential_cell_target": self.config.potential_cell_target}

    def state(self) -> np.ndarray:
        """Global state: every robot's labeled (domain, class) counts / potential_cell_target, clipped to [0, 1]."""
        return np.clip(self._cell_counts / self.config.potential_cell_target, 0, 1).ravel().astype(np.float32)

    def render(self, mode: str) -> str | None:
        """``ansi``: a text table (per robot: labeled set, per-domain accuracy, rare share cached); ``human``
        prints it."""
        width = max(8, *(len(d) for d in self.domain_names))
        lines = [f"datagames_p2p_v0  round {self.round_index}/{self.config.rounds}",
                 f"{'robot':<8}  {'labeled':>7}  " + "  ".join(f"{d:>{width}}" for d in self.domain_names)
                 + "  rare cached"]
        for i, robot in enumerate(self._robots):
            totals = dict(zip(TOTALS, self._totals[i].tolist()))
            rare = totals["total_rare_cached"] / totals["total_cached"] if totals["total_cached"] else 0.0
            lines.append(f"{'robot_' + str(i):<8}  {int(self._cell_counts[i].sum()):>7}  "
                         + "  ".join(f"{a:>{width}.3f}" for a in robot.model.domain_accuracy) + f"  {rare:>11.3f}")
        text = "\n".join(lines)
        return text  # the face prints it in human mode


def aggregate_votes(vote_table: np.ndarray, robust: str = "mean") -> np.ndarray:
    """One utility per row of ``vote_table`` (rows: shared samples; columns: receivers; NaN: no vote, the sample
    never arrived there). ``mean``: the fraction that voted novel; ``median``: the median vote; ``trimmed``: the
    mean after dropping the ``max(1, floor(0.2 m))`` highest and lowest of ``m >= 3`` votes (all of them when
    ``m < 3``). A sample without any vote has utility 0."""
    table = np.sort(vote_table, axis=1)  # NaN last
    m = np.isfinite(table).sum(axis=1)
    if robust == "median":
        out = np.zeros(len(table))
        has = m > 0
        out[has] = np.nanmedian(table[has], axis=1)
        return out
    trim = np.where(m >= 3, np.maximum(1, (0.2 * m).astype(np.int64)), 0) if robust == "trimmed" else np.zeros_like(m)
    position = np.arange(table.shape[1])[None, :]
    use = (position >= trim[:, None]) & (position < (m - trim)[:, None])
    return np.where(use, np.nan_to_num(table), 0.0).sum(axis=1) / np.maximum(use.sum(axis=1), 1)


def _robot_vars(robot: _Robot) -> dict:
    """A robot's fields with the containers a step grows in place copied (the arrays in them are never written)."""
    values = dict(vars(robot))
    for name in ("labeled_features", "labeled_labels", "labeled_domains"):
        values[name] = list(values[name])
    values["labeled_ids"] = set(values["labeled_ids"])
    return values


def _classifier_state(classifier: Classifier) -> dict:
    return {"weights": {k: v.detach().numpy().copy() for k, v in classifier.model.state_dict().items()},
            "input_mean": classifier.input_mean.numpy().copy(), "input_scale": classifier.input_scale.numpy().copy(),
            "train_size": classifier.train_size, "trained": classifier.trained}


def _classifier_from_state(state: dict, input_shape: tuple, n_classes: int, cfg: PerceptionConfig) -> Classifier:
    import torch

    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the global RNG alone
        model = build_model(input_shape, n_classes, cfg)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state["weights"].items()})
    return Classifier(model, n_classes, torch.from_numpy(state["input_mean"].copy()),
                      torch.from_numpy(state["input_scale"].copy()), state["train_size"], state["trained"])
