"""The cloud game's objective (Data Games, scenario ``datagames``): the target, the distance to it, the reward.

The batched core (:mod:`datagames_env.core`) simulates streams, perception and uploads; what the robots are
paid for is this scenario's business, kept here.

=====================  ============================================================================
Name                   What it is
=====================  ============================================================================
``target_counts``      (C,) float64: ``target.kind`` uniform / proportions (of ``target.total``, default the
                       initial cloud plus every round's upload budget) / explicit counts
``distance``           ``loss: l2``: ``|| cloud - target ||_2``; ``loss: kl``: KL(target || cloud) on
                       proportions, the cloud smoothed by +0.5 per class
``rewards``            ``reward: shared``: (d_before - d_after) / upload_budget for every robot;
                       ``reward: marginal``: (d_without_i - d_after) / n_cache, robot i's own contribution
=====================  ============================================================================
"""

from __future__ import annotations

import numpy as np

from ..config import ConfigError, EnvConfig

__all__ = ["CloudGameObjective"]


class CloudGameObjective:
    """Target counts, distance and reward of one cloud-game config on a dataset of ``n_classes`` classes."""

    def __init__(self, cfg: EnvConfig, n_classes: int, dataset_name: str) -> None:
        t = cfg.target
        for key, values in (("target.proportions", t.proportions), ("target.counts", t.counts)):
            if values is not None and len(values) != n_classes:
                raise ConfigError(f"config key '{key}' has {len(values)} entries but dataset "
                                  f"'{dataset_name}' has {n_classes} classes")
        if t.kind == "counts" and t.total is not None:
            raise ConfigError("config key 'target.total' cannot be combined with target.kind 'counts' (counts fix the total)")
        self.n_classes = n_classes
        self.loss, self.reward = cfg.loss, cfg.reward
        self.upload_budget, self.n_cache = cfg.upload_budget, cfg.n_cache
        total = t.total if t.total is not None else cfg.initial_cloud_size + cfg.rounds * cfg.upload_budget
        if t.kind == "counts":
            self.target_counts = np.asarray(t.counts, dtype=np.float64)
        elif t.kind == "proportions":
            p = np.asarray(t.proportions, dtype=np.float64)
            self.target_counts = p / p.sum() * total
        else:
            self.target_counts = np.full(n_classes, total / n_classes)

    def distance(self, cloud_counts: np.ndarray) -> np.ndarray:
        """Distance of cloud class counts ``(..., C)`` to the target, ``(...)``."""
        if self.loss == "l2":
            return np.linalg.norm(cloud_counts - self.target_counts, axis=-1)
        # KL(target || cloud) on proportions; cloud smoothed by +0.5 per class so empty classes stay finite
        t = self.target_counts / self.target_counts.sum()
        q = (cloud_counts + 0.5) / (cloud_counts.sum(axis=-1, keepdims=True) + 0.5 * self.n_classes)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(t > 0, t * np.log(t / q), 0.0)
        return terms.sum(axis=-1)

    def rewards(self, cloud_counts: np.ndarray, before: np.ndarray, after: np.ndarray,
                uploaded_labels: np.ndarray) -> np.ndarray:
        """(B, N) rewards of a step that took the distance from ``before`` to ``after`` (B,), the cloud now at
        ``cloud_counts`` (B, C) after the uploads' true labels ``uploaded_labels`` (B, N, n_cache; -1 unused)."""
        b_n, n = uploaded_labels.shape[:2]
        if self.reward == "shared":
            return np.repeat(((before - after) / self.upload_budget)[:, None], n, axis=1)
        # the distance had robot i uploaded nothing this round, the others as they did
        own = np.zeros((b_n, n, self.n_classes))
        b_idx, i_idx, s_idx = np.nonzero(uploaded_labels >= 0)
        np.add.at(own, (b_idx, i_idx, uploaded_labels[b_idx, i_idx, s_idx]), 1.0)
        return (self.distance(cloud_counts[:, None, :] - own) - after[:, None]) / self.n_cache
