"""Out-of-distribution (novelty) detectors: does a received sample look new to *my* model?

In the peer-to-peer scenario (:mod:`datagames_env.scenarios.p2p`) every receiver scores each shared sample against its own
local model; the fraction of peers that found a sample novel is the sample's utility, returned to its sender.

One interface for every detector: :func:`novelty` ``(models, features) -> scores`` in [0, 1] (higher = more
novel), and ``scores > threshold`` -> novel flags (:meth:`NoveltyDetector.novel`). ``models`` is one
:class:`~datagames_env.perception.Classifier` or a list of them (the ensemble's members; single-model detectors
use the first).

================  ==============================================================================================
detector          score
================  ==============================================================================================
``max_softmax``   Hendrycks & Gimpel's baseline: ``(1 - max_y p(y|x)) / (1 - 1/C)``
``mc_dropout``    Gal & Ghahramani: ``mc_samples`` stochastic passes with dropout (rate ``dropout``) on the head's
                  input; the models should be trained with the same dropout (:func:`train_dropout_classifier`)
``ensemble``      Lakshminarayanan et al.: the members' predictive distributions (train them with different seeds)
================  ==============================================================================================

The two Bayesian detectors score ``uncertainty = "total"``: the entropy of the mean prediction, or
``"epistemic"``: the mutual information between prediction and weights (entropy of the mean minus mean
entropy); both are divided by ``log C`` so they lie in [0, 1].

A fixed threshold rarely transfers between datasets and model versions, so :meth:`NoveltyDetector.calibrate`
sets it to a quantile of the scores on held-out in-distribution samples (e.g. 0.95: about 5% false alarms on
the receiver's own domain).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn import functional as F

from ..config import PerceptionConfig
from .models import Classifier, train_classifier
from .uncertainty import entropy

__all__ = ["DETECTORS", "NoveltyDetector", "novelty", "train_dropout_classifier"]

Detector = Literal["max_softmax", "mc_dropout", "ensemble"]
DETECTORS: tuple[str, ...] = ("max_softmax", "mc_dropout", "ensemble")


def _as_models(models: Classifier | Sequence[Classifier]) -> list[Classifier]:
    if isinstance(models, Classifier):
        return [models]
    models = list(models)
    if not models or not all(isinstance(m, Classifier) for m in models):
        raise TypeError("models must be a Classifier or a non-empty sequence of Classifiers")
    return models


def _bayesian_score(member_probs: np.ndarray, uncertainty: str) -> np.ndarray:
    """``member_probs`` (T, n, C) -> total or epistemic uncertainty (n,) in [0, 1]."""
    n_classes = member_probs.shape[-1]
    mean = member_probs.mean(axis=0)
    total = entropy(mean)
    score = total if uncertainty == "total" else total - entropy(member_probs).mean(axis=0)
    return np.clip(score / math.log(n_classes), 0.0, 1.0) if n_classes > 1 else np.zeros(len(mean))


def _mc_dropout_probs(model: Classifier, features: np.ndarray, mc_samples: int, dropout: float,
                      seed: int) -> np.ndarray:
    """(mc_samples, n, C): the embedding is computed once, only the dropout masks on the head input change."""
    generator = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    with torch.inference_mode():
        hidden = F.relu(model.model.embed(model._standardise(features)))
        out = np.empty((mc_samples, len(features), model.n_classes), dtype=np.float32)
        keep = 1.0 - dropout
        for t in range(mc_samples):  # loop over passes, each one batched over all samples
            mask = (torch.rand(hidden.shape, generator=generator) < keep).to(hidden.dtype) / keep
            out[t] = torch.softmax(model.model.head(hidden * mask), dim=1).numpy()
    return out


def novelty(models: Classifier | Sequence[Classifier], features: np.ndarray, detector: str = "max_softmax", *,
            mc_samples: int = 10, dropout: float = 0.25, uncertainty: str = "total", seed: int = 0) -> np.ndarray:
    """Novelty scores float64 ``(n,)`` in [0, 1] of ``features`` under ``models`` (see the module table)."""
    models = _as_models(models)
    if detector not in DETECTORS:
        raise ValueError(f"ood.detector: '{detector}' is not one of {list(DETECTORS)}")
    if uncertainty not in ("total", "epistemic"):
        raise ValueError(f"ood.uncertainty: '{uncertainty}' is not one of ['total', 'epistemic']")
    features = np.asarray(features, dtype=np.float32)
    if len(features) == 0:
        return np.zeros(0)
    if detector == "max_softmax":
        probs, _ = models[0].predict(features)
        n_classes = probs.shape[1]
        return np.clip((1.0 - probs.max(axis=1).astype(np.float64)) / max(1.0 - 1.0 / n_classes, 1e-12), 0.0, 1.0)
    if detector == "mc_dropout":
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"ood.dropout must be in (0, 1) for mc_dropout, got {dropout}")
        if mc_samples < 2:
            raise ValueError(f"ood.mc_samples must be >= 2 for mc_dropout, got {mc_samples}")
        member_probs = _mc_dropout_probs(models[0], features, mc_samples, dropout, seed)
    else:
        if len(models) < 2:
            raise ValueError(f"the ensemble detector needs at least 2 models, got {len(models)}")
        member_probs = np.stack([m.predict(features)[0] for m in models])
    return _bayesian_score(member_probs.astype(np.float64), uncertainty)


@dataclass(frozen=True)
class NoveltyDetector:
    """A configured detector: ``scores(models, x)``, ``novel(models, x, threshold)``, ``calibrate(models, x)``."""

    detector: str = "max_softmax"
    threshold: float = 0.5
    calibration_quantile: float | None = None
    mc_samples: int = 10
    dropout: float = 0.25
    uncertainty: str = "total"
    ensemble_size: int = 3

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"ood.detector: '{self.detector}' is not one of {list(DETECTORS)}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"ood.threshold must be in [0, 1], got {self.threshold}")
        if self.calibration_quantile is not None and not 0.0 < self.calibration_quantile < 1.0:
            raise ValueError(f"ood.calibration_quantile must be in (0, 1) or null, got {self.calibration_quantile}")

    @property
    def n_models(self) -> int:
        """How many models a robot must train for this detector."""
        return self.ensemble_size if self.detector == "ensemble" else 1

    def scores(self, models: Classifier | Sequence[Classifier], features: np.ndarray, seed: int = 0) -> np.ndarray:
        return novelty(models, features, self.detector, mc_samples=self.mc_samples, dropout=self.dropout,
                       uncertainty=self.uncertainty, seed=seed)

    def calibrate(self, models: Classifier | Sequence[Classifier], in_distribution: np.ndarray, seed: int = 0) -> float:
        """The threshold for these models: the configured quantile of the scores on held-out in-distribution
        samples, or the fixed ``threshold`` when no quantile is configured or there is nothing to calibrate on."""
        if self.calibration_quantile is None or len(in_distribution) == 0:
            return self.threshold
        return float(np.quantile(self.scores(models, in_distribution, seed), self.calibration_quantile))

    def novel(self, models: Classifier | Sequence[Classifier], features: np.ndarray, threshold: float | None = None,
              seed: int = 0) -> np.ndarray:
        """Boolean ``(n,)``: score strictly above the threshold (default: the fixed ``threshold``)."""
        return self.scores(models, features, seed) > (self.threshold if threshold is None else threshold)


def train_dropout_classifier(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                             seed: int, dropout: float, max_threads: int | None = None) -> Classifier:
    """Like :func:`~datagames_env.perception.train_classifier`, with dropout on the head's input during training,
    so that MC dropout at test time samples the approximate posterior it was trained for.

    Same determinism contract (seeded init and minibatches, the caller's torch RNG untouched); an empty set gives
    an untrained classifier.
    """
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"ood.dropout must be in [0, 1), got {dropout}")
    return train_classifier(features, labels, n_classes, cfg, seed, max_threads=max_threads, dropout=dropout)
