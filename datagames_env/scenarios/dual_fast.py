"""DUAL on the fast perception tier, batched: B envs x N robots stepped at once (issue 17).

The same scenario as :class:`~datagames_env.scenarios.dual.DualScenario` (stage 1: each robot uploads its top
``n_cache`` scored samples through the privacy filter; stage 2: the cloud labels under ``label_budget`` with the
configured ``labeler`` and ``label_pool``, retrains on the labeled set; reward ``accuracy`` or ``coverage``; the
observation layout, sample spec, info keys, privileged view, snapshots and render of the paper tier), with the
cloud model on the fast tier (:mod:`datagames_env.perception.fast`):

=====================  ===================================================================================
Piece                  Fast tier
=====================  ===================================================================================
features               one frozen extractor pretrained on the world's public split (``perception.public_fraction``
                       of every class's pool rows, held out of the pool, validation and test), run once over
                       every feature row (blurred copies included) and cached on disk (``cached_features``)
cloud model            a :class:`~datagames_env.perception.fast.BatchedHeads` head per env (``perception.head``):
                       labeled rows are added as they are labeled, every env's head refits in one batched call
                       on the retraining schedule, then predicts every feature row once: a step's probabilities,
                       predictions, confusion matrices and accuracies are lookups
embeddings             the frozen features, L2-normalised: the observation's embedding and the facility-location
                       kernel's input (they never change with the model)
coverage               per env, the coverage of every row that can reach the cloud (pool rows, blurred copies) by
                       the cloud set and by the labeled set, raised as rows join (exact: a max of per-entry
                       similarities); a sample's coverage is a lookup
stage 2                ``submodular``: greedy facility location over the distinct candidate rows (weighted by their
                       ledger copies), batched over envs on a dense similarity block when it fits
                       ``max_block_bytes``, else lazy greedy (:mod:`datagames_env.selection.submodular`);
                       ``entropy`` / ``margin`` from the head's probabilities; ``random`` from the env's generator
=====================  ===================================================================================

Seeding and streams come from :mod:`datagames_env.core.draws` (the cloud game's core uses the same functions):
env b equals a batch of one reset with ``seeds[b]``, draw for draw; floats agree within float32 rounding of the
batched head (the tests use rtol 1e-4). ``parallel_env("dual_default")`` is the face over ``BatchOfOne`` of this.

``infos``: ``robot_info_keys`` lead with (B, N), ``env_info_keys`` with (B,); the per-robot dicts of the parallel
face hold exactly the keys and types of the paper tier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, PerceptionConfig
from ..core import draws, kernels
from ..data.privacy import PrivacyFilter
from ..perception import limited_torch_threads, uncertainty
from ..perception.fast import BatchedHeads, FastFeatures, cached_features
from ..selection.kernels import dense_greedy_picks, first_argmax_columns, squared_unit_distances, unit_similarities
from ..selection.submodular import FacilityLocation, block_rows_for, lazy_greedy
from .base import BatchedScenario, BatchTransition, Scenario, SnapshotError, check_snapshot_array, check_snapshot_int
from .base import check_snapshot_rng, snapshot_entry
from .batching import BatchOfOne
from .dual import (METADATA, PRIVACY_COUNTS, DualConfig, DualScenario, DualWorld, get_dual_world, load_dual_config,
                   set_observation_layout)

__all__ = ["FastDual", "batched_scenario", "distinct_in_upload_order", "dual_scenario", "fast_features", "warm_fast_perception"]

ROBOT_INFO_KEYS = ("available", "feasible_matrix", "estimated_mix", "uploaded", "uploaded_sample_ids",
                   "labeled_from_robot", *(f"privacy_{k}" for k in PRIVACY_COUNTS))
ENV_INFO_KEYS = ("round", "cloud_counts", "target_counts", "n_cache", "label_budget", "labels_used", "cloud_labeled",
                 "cloud_unlabeled", "validation_accuracy", "test_accuracy", "labeled", "upload_objective",
                 "upload_objective_gain", "label_objective", "coverage_gain",
                 *(f"privacy_total_{k}" for k in PRIVACY_COUNTS))
_CACHE_BLOCK_BYTES = 4 << 20  # the similarity blocks of one group of envs in the greedy labeler (see _dense_greedy)
_SQRT_ALIGN = 64  # entries: a group starts where a whole-batch pass would start a vector (torch's sqrt_ paths)
_LEDGER = {"row": "i", "labeled": "b", "robot": "i", "round": "i", "labeled_round": "i", "private": "b",
           "blurred": "b"}


def _extractor_config(cfg: DualConfig) -> PerceptionConfig:
    """The plain perception block the extractor is keyed and trained on (the tier's own knobs left out)."""
    return PerceptionConfig(**{k: getattr(cfg.perception, k) for k in PerceptionConfig.model_fields})


def fast_features(cfg: DualConfig, world: DualWorld | None = None) -> FastFeatures:
    """The frozen extractor of ``cfg``'s world and the features of every world row (disk-cached)."""
    if cfg.perception.tier != "fast":
        raise ConfigError(f"config key 'perception.tier': the fast features need tier 'fast', got "
                          f"'{cfg.perception.tier}'")
    world = world if world is not None else get_dual_world(cfg)
    with limited_torch_threads(1):
        return cached_features(world.features, world.labels, world.n_classes, _extractor_config(cfg),
                               world.public_rows)


def warm_fast_perception(config: Any = None, **overrides: Any) -> list[Path]:
    """Build (or check) the fast tier's cache files of a dual config; returns their paths. ``datagames warmup``
    calls this so the first episode does not pretrain. A config on the paper tier has none: []."""
    cfg = load_dual_config(config, **overrides)
    if cfg.perception.tier != "fast":
        return []
    return [fast_features(cfg).path]


def dual_scenario(config: Any = None, **overrides: Any) -> Scenario:
    """The B = 1 scenario of a dual config (the table's ``scenario_factory``): on ``perception.tier: fast`` the
    native batched dual seen at B = 1 (:class:`~.batching.BatchOfOne` over :class:`FastDual`), on ``paper``
    :class:`~.dual.DualScenario`."""
    cfg = load_dual_config(config, **overrides)
    if cfg.perception.tier == "fast":
        return BatchOfOne(FastDual(cfg, 1))
    return DualScenario(cfg)


def batched_scenario(cfg: DualConfig, num_envs: int) -> FastDual | None:
    """The scenario table's ``batched`` entry: the native batched dual on the fast tier, None on the paper tier
    (its batched face is the looped fallback)."""
    if cfg.perception.tier != "fast":
        return None
    return FastDual(cfg, num_envs)


def distinct_in_upload_order(entry_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of ledger entries in order of first upload: ``(rows, first entry of each, entry ->
    its distinct row, copies of each as float64)`` (the labelers' ground set, each row weighted by its copies)."""
    distinct, first, inverse = np.unique(entry_rows, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rows, first, inverse = distinct[order], first[order], rank[inverse.reshape(-1)]
    return rows, first, inverse, np.bincount(inverse, minlength=len(rows)).astype(np.float64)


class FastDual(BatchedScenario):
    """DUAL on the fast tier for B envs (module docstring). ``FastDual(config=None, num_envs=1, **overrides)``."""

    metadata = METADATA
    robot_info_keys = ROBOT_INFO_KEYS
    env_info_keys = ENV_INFO_KEYS

    def __init__(self, config: Any = None, num_envs: int = 1, **overrides: Any) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.config = cfg = load_dual_config(config, **overrides)
        if cfg.perception.tier != "fast":
            raise ConfigError(f"config key 'perception.tier': FastDual runs the fast tier, got '{cfg.perception.tier}'"
                              " (the paper tier is DualScenario)")
        self.num_envs = int(num_envs)
        self.n_robots = cfg.n_robots
        self.world = w = get_dual_world(cfg)
        self.n_classes = c = w.n_classes
        self.class_names = w.dataset.class_names
        set_observation_layout(self, cfg, c)
        self.state_dim = cfg.n_robots * self.obs_dim
        self.filter = PrivacyFilter.from_config(cfg.privacy)
        self._position_buffer = np.full(len(w.features), -1, dtype=np.int64)  # row -> ground position, scratch
        self._filtered = np.full(len(w.robot_features), -1, dtype=np.int8)  # per sample id: the filter's verdict
        self.extracted = fast_features(cfg, w)
        if self.extracted.features.shape[1] != self.embedding_dim:
            raise RuntimeError(f"fast features have width {self.extracted.features.shape[1]}, expected "
                               f"perception.embedding_dim = {self.embedding_dim}")
        feats = self.extracted.features.astype(np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        self.unit = (feats / np.maximum(norms, 1e-12)).astype(np.float32)  # observation embeddings, kernel input
        self._unit_t = torch.from_numpy(self.unit)
        n_rows = len(w.features)
        # rows that can reach the cloud: pool rows and the interned blurred copies; coverage is kept for them
        self.cloud_rows = np.concatenate([w.pool, np.arange(w.dataset.n_samples, n_rows)]).astype(np.int64)
        self.cloud_slot = np.full(n_rows, -1, dtype=np.int64)
        self.cloud_slot[self.cloud_rows] = np.arange(len(self.cloud_rows))
        self.pool_slot = self.cloud_slot[w.pool]  # pool position -> cloud slot
        self.pool_unit = self.unit[w.pool]
        self._validation = w.splits.validation
        self._test = w.splits.test
        self._valid_labels = w.labels[self._validation]
        self._test_labels = w.labels[self._test]
        self._held_out = np.concatenate([self._validation, self._test]).astype(np.int64)
        self.heads = BatchedHeads.from_extractor(self.extracted, w.labels, self.num_envs, 1, head=cfg.perception.head)
        self._world_initial_rows = None
        if cfg.world_seed is not None:
            self._world_initial_rows = self._draw_initial_cloud(
                np.random.default_rng(np.random.SeedSequence([cfg.world_seed, 1])))
        self._needs_reset = True

    # ------------------------------------------------------------------------------------- episode set-up
    def _draw_initial_cloud(self, rng: np.random.Generator) -> np.ndarray:
        cfg, w = self.config, self.world
        from ..data.streams import draw_initial_cloud

        return draw_initial_cloud(rng, cfg.initial_cloud_size, cfg.initial_cloud_alpha, None, w.public_members,
                                  w.pool, no_member_error="config key 'privacy.private_fraction'")

    def reset(self, seeds: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        seeds = np.asarray(seeds).reshape(-1)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds (one per env), got {len(seeds)}")
        if seeds.dtype.kind not in "iu" or (seeds < 0).any():
            raise ValueError(f"seeds must be non-negative integers, got {seeds.tolist()}")
        cfg, b_n, n, c, k = self.config, self.num_envs, self.n_robots, self.n_classes, self.config.n_cache
        self.seeds = seeds.astype(np.int64)
        self.rngs, self.states = draws.seed_episodes(self.seeds.tolist())
        self.mixes = draws.draw_mixes(cfg.stream, n, c, self.rngs)
        initial = np.stack(draws.initial_clouds(self.rngs, self._world_initial_rows, self._draw_initial_cloud))
        n0 = initial.shape[1]
        self._n0 = n0
        capacity = n0 + min(cfg.rounds, 8) * n * k
        self.ledger = {key: np.full((b_n, capacity), -1 if kind == "i" else False,
                                    dtype=np.int64 if kind == "i" else bool) for key, kind in _LEDGER.items()}
        self.ledger["row"][:, :n0] = initial
        self.ledger["labeled"][:, :n0] = True
        self.round_index = 0
        self.labels_used = np.zeros(b_n, dtype=np.int64)
        self.cov_cloud = np.zeros((b_n, len(self.cloud_rows)))
        self.cov_labeled = np.zeros((b_n, len(self.cloud_rows)))
        if self._world_initial_rows is not None:  # every env starts from the world's cloud: its coverage once
            if getattr(self, "_initial_coverage", None) is None:
                rows = self._world_initial_rows[None]
                self._initial_coverage = self._raise_coverage(np.zeros((1, len(self.cloud_rows))), rows,
                                                              np.ones(rows.shape, dtype=bool))
            self.cov_cloud = np.repeat(self._initial_coverage, b_n, axis=0)
        else:
            self.cov_cloud = self._raise_coverage(self.cov_cloud, initial, np.ones(initial.shape, dtype=bool))
        self.cov_labeled = self.cov_cloud.copy()  # the initial cloud is all labeled
        self.heads.reset()  # refits: every head is the public prior
        self.heads.add(initial[:, None, :])
        self._fit()
        self._draw_round()
        self._score(held_out=True, stream=True)
        self.histories = [[{"round": 0, "validation_accuracy": float(self.validation_accuracy[b]),
                            "test_accuracy": float(self.test_accuracy[b]), "labels_used": 0,
                            "cloud_labeled": int(n0), "cloud_unlabeled": 0}] for b in range(b_n)]
        self._last = None
        self._needs_reset = False
        return self._observations(), self._infos(None)

    # --------------------------------------------------------------------------------------- model / views
    def _probs(self, rows: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(B, m, C) float32 probabilities of env b's head (last fit) on its feature rows ``rows`` (B, m)."""
        with limited_torch_threads(1):
            return self.heads.probabilities(rows[:, None, :], None if valid is None else valid[:, None, :])[:, 0]

    def _fit(self) -> None:
        """Refit every env's head: one batched call."""
        with limited_torch_threads(1):
            self.heads.fit()

    def _draw_round(self) -> None:
        self.stream_positions = draws.draw_round(self.states, self.mixes, self.world, self.config.obs_per_round)

    def _score(self, held_out: bool, stream: bool) -> None:
        """What the heads' last fit says, in one head call: the held-out rows (accuracies, confusion) and the
        round's stream rows (probabilities, predicted histograms, estimated mixes)."""
        b_n = self.num_envs
        parts = [np.broadcast_to(self._held_out, (b_n, len(self._held_out)))] if held_out else []
        if stream:
            parts.append(self.world.pool[self.stream_positions].reshape(b_n, -1))
        if not parts:
            return
        probs = self._probs(np.concatenate(parts, axis=1))
        if held_out:
            self._set_tables(probs[:, :len(self._held_out)].argmax(axis=2))
        if stream:
            self._observe_round(probs[:, len(self._held_out) if held_out else 0:])

    def _set_tables(self, held_out: np.ndarray) -> None:
        c, b_n = self.n_classes, self.num_envs
        n_val = len(self._validation)
        val_pred, test_pred = held_out[:, :n_val], held_out[:, n_val:]
        self.validation_accuracy = (val_pred == self._valid_labels).mean(axis=1) if n_val else np.zeros(b_n)
        self.test_accuracy = (test_pred == self._test_labels).mean(axis=1) if len(self._test) else np.zeros(b_n)
        offsets = (c * c) * np.arange(b_n)[:, None]
        joint_val = np.bincount((offsets + self._valid_labels * c + val_pred).ravel(),
                                minlength=b_n * c * c).reshape(b_n, c, c).astype(np.float64)
        rows = joint_val.sum(axis=2, keepdims=True)
        # C[y, yhat] = p(yhat | y); a class without validation samples: a uniform row (perception.models)
        self.confusion = np.where(rows > 0, joint_val / np.maximum(rows, 1), 1.0 / c)
        self.pinv_confusion_t = np.linalg.pinv(np.transpose(self.confusion, (0, 2, 1)))
        self._pool_conditionals = None  # privileged only: computed when asked for

    def pool_conditionals(self) -> np.ndarray:
        """(B, C, C) the pool's empirical p(yhat | y) under each env's current head (privileged)."""
        if self._pool_conditionals is None:
            w, c, b_n = self.world, self.n_classes, self.num_envs
            pred = self._probs(np.broadcast_to(w.pool, (b_n, len(w.pool)))).argmax(axis=2)
            offsets = (c * c) * np.arange(b_n)[:, None]
            joint = np.bincount((offsets + w.pool_labels * c + pred).ravel(),
                                minlength=b_n * c * c).reshape(b_n, c, c).astype(np.float64)
            self._pool_conditionals = joint / joint.sum(axis=2, keepdims=True)
        return self._pool_conditionals

    def _raise_coverage(self, coverage: np.ndarray, ref_rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``coverage`` (B, cloud rows) raised by the rows ``ref_rows`` (B, K) that joined (where ``valid``)."""
        if not valid.any():
            return coverage
        return np.maximum(coverage, self._best_similarity(self.cloud_rows, ref_rows, valid))

    def _best_similarity(self, ground_rows: np.ndarray, ref_rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(B, G) float64: per env, each ground row's best kernel similarity to its valid reference rows (0 when it
        has none, as :func:`~datagames_env.selection.submodular.max_similarity`'s floor); exact distances
        (``torch.cdist`` entry by entry), memory bounded by ``max_block_bytes``."""
        cfg = self.config
        b_n, k = ref_rows.shape
        out = np.zeros((b_n, len(ground_rows)))
        if k == 0 or len(ground_rows) == 0:
            return out
        ref_np = np.where(valid, ref_rows, 0)
        ref_index = torch.from_numpy(ref_np)
        # each reference's position among the ground rows (distinct), -1 where it is not one
        position = self._position_buffer
        position[ground_rows] = np.arange(len(ground_rows))
        ref_position = position[ref_np]
        position[ground_rows] = -1
        ref = self._unit_t[ref_index]  # (B, K, d)
        mask = None if valid.all() else torch.from_numpy(~valid)[:, :, None]
        step = max(1, block_rows_for(b_n * k, cfg.max_block_bytes))
        with limited_torch_threads(1):
            for start in range(0, len(ground_rows), step):
                ground = self._unit_t[torch.from_numpy(ground_rows[start:start + step])]  # (g, d)
                # unit rows: the nearest reference has the largest dot product and |a - b|^2 = 2 - 2 a.b (one
                # batched matmul); a row's distance to itself is exactly 0
                dots = torch.matmul(ref, ground.T)  # (B, K, g): the max over K runs along whole rows
                if mask is not None:
                    dots.masked_fill_(mask, -float("inf"))
                top = dots.amax(dim=1)  # (B, g); max with indices is 10x slower: the argmax only where it matters
                in_chunk = (ref_position >= start) & (ref_position < start + step)
                itself = _argmax_is_itself(dots, ref_np, np.where(in_chunk, ref_position - start, -1),
                                           ground_rows[start:start + step])
                nearest = top.mul_(-2.0).add_(2.0).clamp_(min=0.0).masked_fill_(itself, 0.0).sqrt_()
                best = (nearest.square_().mul_(-0.5).add_(1.0) if cfg.kernel == "cosine"
                        else nearest.mul_(cfg.kernel_scale).add_(1.0).reciprocal_())
                out[:, start:start + step] = np.maximum(best.double().numpy(), 0.0)
        return out

    def _observe_round(self, probs: np.ndarray) -> None:
        """What every robot sees of its round (``probs`` (B, N * obs, C): the head's on the stream rows)."""
        cfg, c = self.config, self.n_classes
        b_n, n = self.num_envs, self.n_robots
        self.stream_probs = probs.reshape(b_n, n, cfg.obs_per_round, c)
        predicted = self.stream_probs.argmax(axis=3)
        self.histograms = draws.predicted_histograms(predicted, c)
        self.estimated_mixes = np.empty((b_n, n, c))
        kernels.estimate_mixes(self.histograms, self._env_version(), self.confusion, self.pinv_confusion_t, 0, 50,
                               self.estimated_mixes)

    def _env_version(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_envs), self.n_robots).reshape(self.num_envs, self.n_robots)

    def _stream_slots(self) -> np.ndarray:
        return self.pool_slot[self.stream_positions]  # (B, N, obs) cloud slots of what the robots see

    # --------------------------------------------------------------------------------------- ledger helpers
    def _used(self) -> int:
        return self._n0 + self.round_index * self.n_robots * self.config.n_cache

    def _grow_ledger(self, size: int) -> None:
        have = self.ledger["row"].shape[1]
        if size <= have:
            return
        cfg = self.config
        new_size = min(self._n0 + cfg.rounds * self.n_robots * cfg.n_cache, max(size, 2 * have))
        for key, kind in _LEDGER.items():
            old = self.ledger[key]
            grown = np.full((self.num_envs, new_size), -1 if kind == "i" else False, dtype=old.dtype)
            grown[:, :have] = old
            self.ledger[key] = grown

    def _labeled_counts(self) -> np.ndarray:
        """(B, C) labeled cloud class counts."""
        used = self._used()
        rows, labeled = self.ledger["row"][:, :used], self.ledger["labeled"][:, :used]
        c = self.n_classes
        labels = self.world.labels[np.maximum(rows, 0)] + c * np.arange(self.num_envs)[:, None]
        return np.bincount(labels[labeled], minlength=self.num_envs * c).reshape(self.num_envs, c).astype(float)

    # ------------------------------------------------------------------------------------------- step
    def _checked(self, actions: np.ndarray, active: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self._needs_reset:
            raise RuntimeError("call reset() before step(): the episode has ended or never started")
        shape = (self.num_envs, self.n_robots, self.action_width)
        try:
            actions = np.asarray(actions, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"actions must be numbers of shape (num_envs, n_robots, obs_per_round) = "
                             f"{shape}") from None
        if actions.shape != shape:
            raise ValueError(f"actions must have shape (num_envs, n_robots, obs_per_round) = {shape}, got "
                             f"{actions.shape}")
        first_bad = kernels.first_non_finite(actions)
        if first_bad >= 0:
            b, i, _ = np.unravel_index(first_bad, shape)
            kind = "NaN" if np.isnan(actions[b, i]).any() else "inf"
            where = f"env {b}, " if self.num_envs > 1 else ""
            raise ValueError(f"{where}robot_{i}: action contains {kind}")
        if active is None:
            active = np.ones(shape[:2], dtype=bool)
        else:
            active = np.asarray(active)
            if active.shape != shape[:2] or active.dtype != bool:
                raise ValueError(f"active must be a bool mask of shape (num_envs, n_robots) = {shape[:2]}, got "
                                 f"dtype {active.dtype} shape {active.shape}")
        return actions, active

    def _begin(self) -> dict:
        saved = {key: value for key, value in vars(self).items()
                 if key not in ("ledger", "heads", "rngs", "histories")}
        saved["ledger"] = {key: value.copy() for key, value in self.ledger.items()}
        saved["states"] = self.states.copy()
        saved["_heads"] = self.heads.state()
        saved["_rngs"] = [rng.bit_generator.state for rng in self.rngs]
        saved["_history_length"] = len(self.histories[0])
        return saved

    def _rollback(self, saved: dict) -> None:
        heads, rng_states, length = saved.pop("_heads"), saved.pop("_rngs"), saved.pop("_history_length")
        for key, value in saved.items():
            setattr(self, key, value)
        self.heads.load_state(heads)
        for rng, state in zip(self.rngs, rng_states):
            rng.bit_generator.state = state
        for history in self.histories:
            del history[length:]

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> BatchTransition:
        """One round of every env; atomic (a failure leaves every env as it was)."""
        actions, active = self._checked(actions, active)
        saved = self._begin()
        try:
            return self._step(actions, active)
        except BaseException:
            self._rollback(saved)
            raise

    def _filter(self, ids: np.ndarray, private: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The privacy filter over the private picks only (a public sample leaves unchanged): ``(kept, blurred)``
        flat like ``ids``. What reaches the cloud is the filter's output: checked equal to the interned copy."""
        w = self.world
        kept = np.ones(len(ids), dtype=bool)
        blurred = np.zeros(len(ids), dtype=bool)
        where = np.flatnonzero(private)
        if len(where) == 0:
            return kept, blurred
        # the filter is a function of the sample alone: each private sample is filtered once, then looked up
        memo = self._filtered
        new = np.unique(ids[where][memo[ids[where]] < 0])
        if len(new):
            result = self.filter.apply(w.as_images(w.robot_features[new]), np.ones(len(new), bool), w.regions[new])
            if result.blurred.any():
                rows = w.blurred_row[new[result.blurred]]
                out = result.sent[np.flatnonzero(result.blurred[result.kept])].reshape((len(rows), -1))
                if (rows < 0).any() or not (out == w.features[rows].reshape((len(rows), -1))).all():
                    raise RuntimeError("privacy filter output differs from the interned blurred copy")
            memo[new] = result.kept.astype(np.int8) + result.blurred.astype(np.int8)  # 0 dropped, 1 kept, 2 blurred
        code = memo[ids[where]]
        kept[where], blurred[where] = code > 0, code == 2
        return kept, blurred

    def _step(self, actions: np.ndarray, active: np.ndarray) -> BatchTransition:
        cfg, w = self.config, self.world
        b_n, n, k, c = self.num_envs, self.n_robots, cfg.n_cache, self.n_classes
        r = self.round_index
        # ---- stage 1: each robot's top n_cache (ties: lower index), through the privacy filter
        chosen = np.argsort(-actions, axis=2, kind="stable")[:, :, :k]
        positions = np.take_along_axis(self.stream_positions, chosen, axis=2)  # (B, N, k)
        ids = w.pool[positions]
        sending = np.broadcast_to(active[:, :, None], ids.shape)
        private = w.private[ids] & sending
        kept_f, blurred_f = self._filter(ids.ravel(), private.ravel())
        kept = kept_f.reshape(ids.shape) & sending
        blurred = blurred_f.reshape(ids.shape) & kept
        rows = np.where(blurred, w.blurred_row[ids], ids)
        by_robot = {"private": private.sum(axis=2), "dropped": (private & ~kept_f.reshape(ids.shape)).sum(axis=2),
                    "blurred": blurred_f.reshape(ids.shape).sum(axis=2),
                    "passed_private": ((private & kept & ~blurred).sum(axis=2) if self.filter.mode == "pass"
                                       else np.zeros((b_n, n), dtype=np.int64))}
        # upload objective: fleet facility location of the uploads (the robots' own view) over the round's samples
        stream_slots = self._stream_slots()
        cov0 = self.cov_cloud[np.arange(b_n)[:, None, None], stream_slots]  # (B, N, obs)
        picked_rows = ids.reshape(b_n, n * k)
        picked_valid = kept.reshape(b_n, n * k)
        # one similarity pass over every cloud-able row serves the objective (stream rows) and, when nothing was
        # blurred (the cloud stores what the robots saw), the cloud's coverage update
        best = self._best_similarity(self.cloud_rows, picked_rows, picked_valid)  # (B, cloud rows)
        covered = np.maximum(cov0, best[np.arange(b_n)[:, None, None], stream_slots])
        n_ground = n * cfg.obs_per_round
        upload_value = covered.reshape(b_n, -1).sum(axis=1)
        upload_gain = upload_value - cov0.reshape(b_n, -1).sum(axis=1)
        # ---- the ledger: slots of this round in (robot, slot) order, holes where nothing left
        start = self._used()
        self._grow_ledger(start + n * k)
        sl = slice(start, start + n * k)
        led = self.ledger
        led["row"][:, sl] = np.where(kept, rows, -1).reshape(b_n, -1)
        led["robot"][:, sl] = np.where(kept, np.arange(n)[None, :, None], -1).reshape(b_n, -1)
        led["round"][:, sl] = np.where(kept, r, -1).reshape(b_n, -1)
        led["private"][:, sl] = (private & kept).reshape(b_n, -1)
        led["blurred"][:, sl] = blurred.reshape(b_n, -1)
        new_rows = rows.reshape(b_n, -1)
        if blurred.any():
            self.cov_cloud = self._raise_coverage(self.cov_cloud, new_rows, picked_valid)
        else:
            self.cov_cloud = np.maximum(self.cov_cloud, best)
        # ---- stage 2: the cloud labels under the global budget
        end = start + n * k
        candidates = [np.flatnonzero((led["row"][b, :end] >= 0) & ~led["labeled"][b, :end]) for b in range(b_n)]
        if cfg.label_pool == "round":
            candidates = [cand[cand >= start] for cand in candidates]
        to_label, label_objective = self._label(candidates)
        labeled_before = self.cov_labeled[np.arange(b_n)[:, None, None], stream_slots]
        n_label = np.array([len(x) for x in to_label])
        width = int(n_label.max()) if b_n else 0
        label_slots = np.zeros((b_n, width), dtype=np.int64)
        label_valid = np.arange(width)[None, :] < n_label[:, None]
        for b, picks in enumerate(to_label):
            label_slots[b, :len(picks)] = picks
            led["labeled"][b, picks] = True
            led["labeled_round"][b, picks] = r
        label_rows = np.where(label_valid, np.take_along_axis(led["row"], label_slots, axis=1), 0)
        self.labels_used = self.labels_used + n_label
        self.cov_labeled = self._raise_coverage(self.cov_labeled, label_rows, label_valid)
        labeled_after = self.cov_labeled[np.arange(b_n)[:, None, None], stream_slots]
        coverage_gain = (labeled_after - labeled_before).reshape(b_n, -1).mean(axis=1)
        self.heads.add(label_rows[:, None, :], label_valid[:, None, :])
        # ---- retrain on schedule, reward
        accuracy_before = self.validation_accuracy
        self.round_index += 1
        pcfg = cfg.perception
        terminated = self.round_index >= cfg.rounds
        refit = bool(pcfg.retrain_every and self.round_index % pcfg.retrain_every == 0)
        if refit:
            self._fit()
        if not terminated:  # the next round (the model's refit draws nothing: the order does not matter)
            if cfg.stream.drift > 0:
                self.mixes = draws.drift(self.mixes, cfg.stream, self.rngs)
            self._draw_round()
        self._score(held_out=refit, stream=not terminated)
        accuracy_gain = self.validation_accuracy - accuracy_before
        reward = accuracy_gain if cfg.reward == "accuracy" else coverage_gain
        labeled_robot = np.where(label_valid, np.take_along_axis(led["robot"], label_slots, axis=1), -1)
        labeled_from_robot = (labeled_robot[:, :, None] == np.arange(n)[None, None, :]).sum(axis=1)
        # uploaded_sample_ids: the uploads' dataset ids first, -1 in the slots not uploaded
        order = np.argsort(~kept, axis=2, kind="stable")
        compact = np.take_along_axis(np.where(kept, ids, -1), order, axis=2)
        used = self._used()
        labeled_mask = led["labeled"][:, :used]
        valid_mask = led["row"][:, :used] >= 0
        record = {"labeled": n_label, "uploaded": kept.reshape(b_n, -1).sum(axis=1),
                  "cloud_labeled": labeled_mask.sum(axis=1),
                  "cloud_unlabeled": (valid_mask & ~labeled_mask).sum(axis=1),
                  "upload_objective": upload_value / max(n_ground, 1),
                  "upload_objective_gain": upload_gain / max(n_ground, 1),
                  "label_objective": label_objective, "coverage_gain": coverage_gain, "reward": reward}
        privacy_total = {key: value.sum(axis=1) for key, value in by_robot.items()}
        for b in range(b_n):
            self.histories[b].append({
                "round": self.round_index, "validation_accuracy": float(self.validation_accuracy[b]),
                "test_accuracy": float(self.test_accuracy[b]), "labels_used": int(self.labels_used[b]),
                **{key: (int(value[b]) if value.dtype.kind in "iu" else float(value[b]))
                   for key, value in record.items()},
                "privacy_total": {key: int(value[b]) for key, value in privacy_total.items()}})
        self._last = {"record": record, "uploaded": kept.sum(axis=2), "uploaded_sample_ids": compact,
                      "labeled_from_robot": labeled_from_robot, "privacy": by_robot, "privacy_total": privacy_total}
        if terminated:
            self._needs_reset = True
        rewards = np.repeat(np.asarray(reward, dtype=np.float64)[:, None], n, axis=1)
        return BatchTransition(self._observations(), rewards, np.full(b_n, terminated), self._infos(self._last))

    # ------------------------------------------------------------------------------------------- stage 2
    def _label(self, candidates: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        """Ledger slots to label per env and the facility-location value (mean coverage of the candidates by the
        labeled set after labeling; 0 with nothing to label). The similarity work runs on the distinct candidate
        rows in order of first upload, each weighted by its ledger copies (see ``DualScenario._label``)."""
        cfg = self.config
        b_n = self.num_envs
        picks_out: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * b_n
        values = np.zeros(b_n)
        prepared = []
        for b, cand in enumerate(candidates):
            if len(cand) == 0:
                continue
            rows, first, inverse, copies = distinct_in_upload_order(self.ledger["row"][b, cand])
            covered = self.cov_labeled[b, self.cloud_slot[rows]]
            budget = min(cfg.label_budget, len(cand))
            prepared.append((b, cand, rows, first, inverse, copies, covered, budget))
        if cfg.labeler == "submodular":
            dense = [p for p in prepared if 12 * len(p[2]) ** 2 <= cfg.max_block_bytes]
            for b, cand, rows, first, inverse, copies, covered, budget in prepared:
                if 12 * len(rows) ** 2 <= cfg.max_block_bytes:
                    continue
                fl = FacilityLocation(self.unit[rows], None, covered, cfg.kernel, cfg.kernel_scale,
                                      cfg.max_block_bytes, weights=copies)
                with limited_torch_threads(1):
                    result = lazy_greedy(fl, min(budget, len(rows)))
                chosen = result.indices[result.gains > 0]
                picks_out[b], values[b] = self._fill(cand, first[chosen], budget), result.value / len(cand)
            if dense:
                for (b, cand, rows, first, _inv, copies, covered, budget), (chosen, value) in zip(
                        dense, self._dense_greedy(dense)):
                    picks_out[b], values[b] = self._fill(cand, first[chosen], budget), value / len(cand)
            return picks_out, values
        if cfg.labeler in ("entropy", "margin") and prepared:  # every env's candidate rows in one head call
            width = max(len(p[2]) for p in prepared)
            padded = np.zeros((b_n, width), dtype=np.int64)
            valid = np.zeros((b_n, width), dtype=bool)
            for b, _cand, rows, *_ in prepared:
                padded[b, :len(rows)], valid[b, :len(rows)] = rows, True
            candidate_probs = self._probs(padded, valid)
        for b, cand, rows, first, inverse, copies, covered, budget in prepared:
            if cfg.labeler == "random":
                picks = np.sort(self.rngs[b].choice(len(cand), size=budget, replace=False))
            else:
                probs = candidate_probs[b, :len(rows)][inverse]
                picks = np.argsort(-uncertainty(probs, cfg.labeler), kind="stable")[:budget]
            picked = np.unique(inverse[picks])
            after = covered
            if budget:
                valid = np.ones((1, len(picked)), dtype=bool)
                after = np.maximum(covered, self._best_similarity(rows, rows[picked][None], valid)[0])
            picks_out[b], values[b] = cand[picks], float((after * copies).sum() / len(cand))
        return picks_out, values

    @staticmethod
    def _fill(cand: np.ndarray, picks: np.ndarray, budget: int) -> np.ndarray:
        """Picks that gained, then (nothing gains any more) the remaining entries in ledger order."""
        if len(picks) < budget:
            rest = np.setdiff1d(np.arange(len(cand)), picks)
            picks = np.concatenate([picks, rest[:budget - len(picks)]])
        return cand[picks]

    def _dense_greedy(self, prepared: list) -> list[tuple[np.ndarray, float]]:
        """Greedy facility location for several envs at once on dense (M, M) similarity blocks (padded): per
        step each env adds its candidate of largest positive gain (ties: first uploaded). Returns per env the
        chosen distinct-row positions (gain > 0, in pick order) and the objective's value after all picks."""
        cfg = self.config
        m = max(len(p[2]) for p in prepared)
        e = len(prepared)
        rows = np.zeros((e, m), dtype=np.int64)
        valid = np.zeros((e, m), dtype=bool)
        weights = np.zeros((e, m))
        covered = np.zeros((e, m))
        steps = np.zeros(e, dtype=np.int64)
        for j, (_b, _cand, r, _first, _inv, copies, cov, budget) in enumerate(prepared):
            rows[j, :len(r)], valid[j, :len(r)], weights[j, :len(r)], covered[j, :len(r)] = r, True, copies, cov
            steps[j] = min(budget, len(r))
        sizes = valid.sum(axis=1)
        cov = covered.astype(np.float32)
        w = weights.astype(np.float32)
        picks = np.full((e, max(int(steps.max()), 1)), -1, dtype=np.int64)
        # a few envs at a time, so that each (M, M) block is still in cache for the passes after the product (all
        # envs' blocks at once were up to 130 MB at B = 256); every env keeps the padded width m of the whole batch
        # and a group holds a multiple of 64 entries, so each entry sees the arithmetic of one whole-batch pass
        group = max(1, _CACHE_BLOCK_BYTES // (4 * m * m))
        align = _SQRT_ALIGN // np.gcd(m * m, _SQRT_ALIGN)
        group = max(align, group // align * align)
        for lo in range(0, e, group):
            hi = min(e, lo + group)
            with limited_torch_threads(1):
                x = self._unit_t[torch.from_numpy(rows[lo:hi])]
                # unit rows: |a - b|^2 = 2 - 2 a.b (one batched matmul); a row's distance to itself is 0
                dots = x @ x.transpose(1, 2)
                # the kernel, each env on its own block, then the greedy steps: compiled passes (selection.kernels);
                # the square root stays torch's over the same padded block (its float32 sqrt is not always the
                # correctly rounded one, and which of its paths an entry takes depends on where it lies)
                squared_unit_distances(dots.numpy(), sizes[lo:hi])
                sims = dots.sqrt_().numpy()
            unit_similarities(sims, sizes[lo:hi], cfg.kernel == "cosine", np.float32(cfg.kernel_scale))
            dense_greedy_picks(sims, cov[lo:hi], w[lo:hi], sizes[lo:hi], steps[lo:hi], picks[lo:hi])
        with limited_torch_threads(1):
            value = (torch.from_numpy(cov).double() * torch.from_numpy(w).double()).sum(dim=1).numpy()
        return [(row[row >= 0], float(value[j])) for j, row in enumerate(picks)]

    # -------------------------------------------------------------------------------------- read-outs
    def _observations(self) -> np.ndarray:
        cfg, lay, c = self.config, self.obs_layout, self.n_classes
        b_n, n = self.num_envs, self.n_robots
        out = np.empty((b_n, n, self.obs_dim), dtype=np.float32)
        labeled = self._labeled_counts()
        out[:, :, lay["labeled_hist"]] = (labeled / np.maximum(labeled.sum(axis=1, keepdims=True), 1))[:, None]
        out[:, :, lay["predicted_hist"]] = self.histograms / cfg.obs_per_round
        out[:, :, lay["class_accuracy"]] = np.diagonal(self.confusion, axis1=1, axis2=2)[:, None]
        out[:, :, lay["estimated_mix"]] = self.estimated_mixes
        out[:, :, lay["budgets"]] = [cfg.n_cache / cfg.obs_per_round, min(1.0, cfg.label_budget / (n * cfg.n_cache))]
        used = self._used()
        valid = self.ledger["row"][:, :used] >= 0
        unlabeled = (valid & ~self.ledger["labeled"][:, :used]).sum(axis=1)
        out[:, :, lay["unlabeled_share"]] = (unlabeled / np.maximum(valid.sum(axis=1), 1))[:, None, None]
        out[:, :, lay["rounds_left"]] = (cfg.rounds - self.round_index) / cfg.rounds
        coverage = self.cov_cloud[np.arange(b_n)[:, None, None], self._stream_slots()]
        out[:, :, lay["mean_coverage"]] = coverage.mean(axis=2, keepdims=True)
        samples = out[:, :, lay["samples"]].reshape(b_n, n, cfg.obs_per_round, self.sample_feature_dim)  # a view
        samples[..., self.sample_layout["embedding"]] = self.pool_unit[self.stream_positions]
        samples[..., self.sample_layout["probs"]] = self.stream_probs
        samples[..., self.sample_layout["coverage"]] = coverage[..., None]
        return np.clip(out, self._low, self._high, out=out)  # unit-norm embeddings can exceed 1 by a float32 ulp

    def _feasible(self, conditionals: np.ndarray, mixes: np.ndarray) -> np.ndarray:
        out = np.empty(mixes.shape + (self.n_classes,))
        kernels.feasible_matrices(conditionals, self._env_version(), mixes, out)
        return out

    def _infos(self, last: dict | None) -> dict[str, Any]:
        cfg, b_n, n = self.config, self.num_envs, self.n_robots
        used = self._used()
        labeled_mask = self.ledger["labeled"][:, :used]
        valid_mask = self.ledger["row"][:, :used] >= 0
        ints = np.int64
        infos: dict[str, Any] = {
            "available": self.histograms.copy(),
            "feasible_matrix": self._feasible(self.confusion, self.estimated_mixes),
            "estimated_mix": self.estimated_mixes.copy(),
            "round": np.full(b_n, self.round_index, dtype=ints), "cloud_counts": self._labeled_counts(),
            "target_counts": np.tile(self.target_counts, (b_n, 1)), "n_cache": np.full(b_n, cfg.n_cache, dtype=ints),
            "label_budget": np.full(b_n, cfg.label_budget, dtype=ints), "labels_used": self.labels_used.copy(),
            "cloud_labeled": labeled_mask.sum(axis=1).astype(ints),
            "cloud_unlabeled": (valid_mask & ~labeled_mask).sum(axis=1).astype(ints),
            "validation_accuracy": self.validation_accuracy.astype(np.float64),
            "test_accuracy": self.test_accuracy.astype(np.float64),
        }
        if last is None:  # fixed schema: the keys of a step are there at reset too, with nothing done yet
            infos.update({"labeled": np.zeros(b_n, dtype=ints), **{key: np.zeros(b_n) for key in (
                "upload_objective", "upload_objective_gain", "label_objective", "coverage_gain")}})
            infos.update({"uploaded": np.zeros((b_n, n), dtype=ints),
                          "uploaded_sample_ids": np.full((b_n, n, cfg.n_cache), -1, dtype=ints),
                          "labeled_from_robot": np.zeros((b_n, n), dtype=ints)})
            infos.update({f"privacy_{k}": np.zeros((b_n, n), dtype=ints) for k in PRIVACY_COUNTS})
            infos.update({f"privacy_total_{k}": np.zeros(b_n, dtype=ints) for k in PRIVACY_COUNTS})
            return infos
        record = last["record"]
        infos["labeled"] = record["labeled"].astype(ints)
        for key in ("upload_objective", "upload_objective_gain", "label_objective", "coverage_gain"):
            infos[key] = np.asarray(record[key], dtype=np.float64).copy()
        infos["uploaded"] = last["uploaded"].astype(ints)
        infos["uploaded_sample_ids"] = last["uploaded_sample_ids"].copy()
        infos["labeled_from_robot"] = last["labeled_from_robot"].astype(ints)
        infos.update({f"privacy_{k}": last["privacy"][k].astype(ints) for k in PRIVACY_COUNTS})
        infos.update({f"privacy_total_{k}": last["privacy_total"][k].astype(ints) for k in PRIVACY_COUNTS})
        return infos

    def state(self) -> np.ndarray:
        """(B, N * obs_dim): every robot's observation, concatenated (it holds all robots' samples)."""
        return self._observations().reshape(self.num_envs, -1)

    def privileged_view(self) -> dict[str, np.ndarray]:
        """Oracle-only truth per env (as ``DualScenario.privileged_view``, every value leading with B)."""
        b_n = self.num_envs
        return {"true_mixes": self.mixes.copy(), "true_feasible_matrices": self._feasible(self.pool_conditionals(),
                                                                                          self.mixes),
                "available": self.histograms.copy(), "cloud_counts": self._labeled_counts(),
                "target_counts": np.tile(self.target_counts, (b_n, 1)),
                "n_cache": np.full(b_n, self.config.n_cache, dtype=np.int64),
                "stream_labels": self.world.pool_labels[self.stream_positions]}

    @property
    def history(self) -> list[dict]:
        """Env 0's per-round records (``histories[b]`` for env b)."""
        return self.histories[0]

    def cloud(self, b: int = 0) -> dict[str, np.ndarray]:
        """Env b's cloud ledger, as ``DualScenario.cloud()``."""
        used = self._used()
        keep = self.ledger["row"][b, :used] >= 0
        out = {key: value[b, :used][keep].copy() for key, value in self.ledger.items()}
        out["sample_id"] = self.world.source_of_row[out["row"]]
        out["true_label"] = self.world.labels[out["row"]]
        out["features"] = self.world.features[out["row"]]
        return out

    def render(self, mode: str, b: int = 0):
        rec = self.histories[b][-1] if getattr(self, "histories", None) else {}
        labels_used = int(self.labels_used[b]) if hasattr(self, "labels_used") else 0
        return (f"round {getattr(self, 'round_index', 0)}/{self.config.rounds}  labeled {rec.get('cloud_labeled', 0)}  "
                f"unlabeled {rec.get('cloud_unlabeled', 0)}  labels used {labels_used}  "
                f"val acc {rec.get('validation_accuracy', float('nan')):.3f}  "
                f"test acc {rec.get('test_accuracy', float('nan')):.3f}")

    # ------------------------------------------------------------------------------------------ snapshots
    _SNAPSHOT_FIELDS = ("seeds", "states", "mixes", "round_index", "labels_used", "stream_positions", "histograms",
                        "estimated_mixes", "stream_probs", "cov_cloud", "cov_labeled", "_n0", "_needs_reset")

    def snapshot_state(self) -> dict:
        if not hasattr(self, "ledger"):
            raise RuntimeError("snapshot() before reset(): nothing to snapshot")
        state = {name: _copied(getattr(self, name)) for name in self._SNAPSHOT_FIELDS}
        used = self._used()
        state.update(rngs=[rng.bit_generator.state for rng in self.rngs],
                     ledger={key: value[:, :used].copy() for key, value in self.ledger.items()},
                     heads=self.heads.state(), histories=[[dict(r) for r in h] for h in self.histories],
                     last=None if self._last is None else _deep_copy(self._last))
        return state

    def check_snapshot_state(self, state: dict) -> None:
        def entry(key):
            return snapshot_entry(state, key, f"state.{key}")

        cfg, b_n, n, c, obs = self.config, self.num_envs, self.n_robots, self.n_classes, self.config.obs_per_round
        n_rows = len(self.world.features)
        check_snapshot_array(entry("seeds"), "state.seeds", (b_n,), "i", 0)
        check_snapshot_array(entry("states"), "state.states", (b_n, 4), "i")
        r = check_snapshot_int(entry("round_index"), "state.round_index", 0, cfg.rounds)
        check_snapshot_array(entry("labels_used"), "state.labels_used", (b_n,), "i", 0)
        check_snapshot_array(entry("stream_positions"), "state.stream_positions", (b_n, n, obs), "i", 0,
                             len(self.world.pool) - 1)
        for key in ("mixes", "estimated_mixes"):
            check_snapshot_array(entry(key), f"state.{key}", (b_n, n, c), "f", 0.0, 1.0)
        check_snapshot_array(entry("histograms"), "state.histograms", (b_n, n, c), "i", 0, obs)
        check_snapshot_array(entry("stream_probs"), "state.stream_probs", (b_n, n, obs, c), "f", 0.0, 1.0)
        for key in ("cov_cloud", "cov_labeled"):
            check_snapshot_array(entry(key), f"state.{key}", (b_n, len(self.cloud_rows)), "f")
        n0 = check_snapshot_int(entry("_n0"), "state._n0", 0, 2**40)
        rngs = entry("rngs")
        if not isinstance(rngs, list) or len(rngs) != b_n:
            raise SnapshotError(f"snapshot field 'state.rngs' must list {b_n} generator states")
        for b, rng_state in enumerate(rngs):
            check_snapshot_rng(rng_state, f"state.rngs.{b}")
        ledger = entry("ledger")
        if not isinstance(ledger, dict) or set(ledger) != set(_LEDGER):
            raise SnapshotError(f"snapshot field 'state.ledger' must hold {sorted(_LEDGER)}")
        used = n0 + r * n * cfg.n_cache
        for key, kind in _LEDGER.items():
            low, high = {"row": (-1, n_rows - 1), "robot": (-1, n - 1), "round": (-1, r),
                         "labeled_round": (-1, r)}.get(key, (None, None))
            check_snapshot_array(ledger[key], f"state.ledger.{key}", (b_n, used), kind, low, high)
        heads = entry("heads")
        if not isinstance(heads, dict):
            raise SnapshotError("snapshot field 'state.heads' must hold the heads' statistics")
        histories = entry("histories")
        if (not isinstance(histories, list) or len(histories) != b_n
                or not all(isinstance(h, list) and len(h) == r + 1 for h in histories)):
            raise SnapshotError(f"snapshot field 'state.histories' must list {r + 1} round records per env")

    def restore_state(self, state: dict) -> None:
        for name in self._SNAPSHOT_FIELDS:
            setattr(self, name, _copied(state[name]))
        self.rngs = []
        for rng_state in state["rngs"]:
            self.rngs.append(np.random.Generator(np.random.PCG64()))
            self.rngs[-1].bit_generator.state = rng_state
        self.ledger = {key: np.asarray(value).copy() for key, value in state["ledger"].items()}
        self.heads.load_state(state["heads"])
        self._score(held_out=True, stream=False)  # the round's own view (stream_probs ...) is in the snapshot
        self.histories = [[dict(r) for r in h] for h in state["histories"]]
        self._last = None if state["last"] is None else _deep_copy(state["last"])

    def content_arrays(self):
        dataset = self.world.dataset
        return dataset, [dataset.features, dataset.labels]


def _argmax_is_itself(dots: torch.Tensor, ref_index: np.ndarray, ref_position: np.ndarray,
                      ground: np.ndarray) -> torch.Tensor:
    """(B, g) bool: whether the first reference of largest dot product (``dots`` (B, K, g)) is the ground row
    itself, as ``ref_index.gather(1, dots.max(dim=1).indices) == ground`` (max with indices is ~10x slower than
    ``amax``). Only a ground row that is one of env b's references can be its own argmax: the argmax runs on those
    (at most K) columns only. ``ref_position`` (B, K): each reference's position in ``ground`` (-1: not in it)."""
    b_n, k, g = dots.shape
    out = np.zeros((b_n, g), dtype=bool)
    env, slot = np.nonzero(ref_position >= 0)
    if len(env):
        pos = ref_position[env, slot]
        first = first_argmax_columns(dots.numpy(), env, pos)  # the first maximum, as numpy's argmax
        out[env, pos] = ref_index[env, first] == ground[pos]
    return torch.from_numpy(out)


def _copied(value: Any) -> Any:
    return value.copy() if isinstance(value, np.ndarray) else value


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return _copied(value)
