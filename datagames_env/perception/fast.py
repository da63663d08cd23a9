"""Fast-tier perception: one frozen feature extractor shared by every robot, and batched per-robot heads on it.

The paper tier (:mod:`~datagames_env.perception.models`) trains a network per robot and retrains it per round;
that is what the papers' experiments do and it costs about a second of Adam steps per robot per round. The fast
tier follows the GU paper's own description ("each robot starts with a generic ML model pre-trained on anonymized
public datasets", then specialises it): a network is pretrained ONCE on a designated public split, frozen, run
once over every array the scenario will ever score, and cached on disk; each robot keeps only a small head on
those features. Heads are Gaussian class models kept as running sufficient statistics, so a round of "training"
for every robot of every env is a few batched matrix products and one batched Cholesky factorisation.

=======================  ===================================================================================
Name                     What it is
=======================  ===================================================================================
``FeatureExtractor``     the frozen network: ``transform(x) -> float32 (n, d)`` standardised embeddings, plus
                         the pretraining rows' class means and pooled within-class covariance (the heads' prior)
``cached_features``      pretrain (or load from the disk cache) and embed a whole feature array -> FastFeatures
``cache_dir``            ``$DATAGAMES_CACHE_DIR``, else ``platformdirs.user_cache_dir("datagames_env")``
``BatchedHeads``         per-(env, robot) heads, shape (B, N): ``add`` rows, ``fit`` all at once, ``predict``
                         probabilities and Mahalanobis OoD scores (``probabilities``: without the scores),
                         ``calibrate`` OoD thresholds, ``reset`` envs
``HeadOutput``           ``probs`` (B, N, m, C), ``mahalanobis`` (B, N, m); ``novelty(kind)``, ``uncertainty(kind)``
=======================  ===================================================================================

Heads (docs/fast_perception.md has the derivation and measurements). Per head the running sums are the class
counts ``n_c``, class sums ``S_c`` and the scatter ``X^T X``; ``fit`` turns them into

* class means shrunk to the public prior: ``mu_c = (S_c + mean_prior * mu0_c) / (n_c + mean_prior)``;
* a covariance shrunk to the public pooled within-class covariance ``Sigma0``:
  ``Sigma = (W + cov_prior * Sigma0) / (n - classes_present + cov_prior)``, ``W`` the within-class scatter;
* ``head="student"`` (default): the Bayesian posterior predictive of that model under its conjugate
  (normal-inverse-Wishart) prior, a multivariate Student-t per class with ``nu = n - classes_present + cov_prior
  - d + 1`` degrees of freedom (at least 1) and scale ``s_c Sigma``, ``s_c = 1 + 1 / (n_c + mean_prior)``:
  ``softmax(log pi_c - d/2 log s_c - (nu + d)/2 log(1 + d_c / (s_c nu)))`` with
  ``d_c = (x - mu_c)^T Sigma^-1 (x - mu_c)`` and Laplace-smoothed class priors ``pi_c = (n_c + 1) / (n + C)``.
  Proper probabilities, no temperature to tune, and, unlike the plug-in Gaussian, less confident far from every
  class (a fogged digit gets a higher entropy than a clean one; measured in docs/fast_perception.md);
* ``head="lda"``: the plug-in Gaussian posteriors ``softmax(-d_c / 2 + log pi_c)`` (linear discriminant
  analysis): the same argmax almost everywhere, but overconfident on shifted inputs;
* ``head="ridge"``: ridge regression of one-hot labels on ``[x, 1]`` (penalty ``ridge``), probabilities
  ``softmax(scores / temperature)``: the literal closed-form head, kept for comparison;
* OoD score (either head): ``min_c d_c``, the Mahalanobis detector of Lee et al. (2018) with the head's means and
  covariance.

A head without samples is the generic public model (its prior); one with many samples is its own. Statistics and
fits are float64 torch, predictions float32 (CPU, no Python loop over envs, robots or samples); outputs are float32
numpy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import PerceptionConfig
from ..data.datasets import DatasetError
from .models import Classifier, build_model, limited_torch_threads, train_classifier
from .uncertainty import entropy, margin

__all__ = ["CACHE_DIR_ENV_VAR", "BatchedHeads", "FastFeatures", "FeatureExtractor", "HEADS", "HeadOutput",
           "NOVELTY_KINDS",
           "cache_dir", "cache_key", "cached_features"]

CACHE_DIR_ENV_VAR = "DATAGAMES_CACHE_DIR"
CACHE_SUBDIR = "fast_perception"
FORMAT = "datagames-fast-perception-v1"  # part of the key: a new file layout never reads an old file
# PerceptionConfig knobs that do not change the pretrained extractor (they are about per-robot retraining)
_NOT_EXTRACTOR = frozenset({"per_robot", "retrain_every"})
HEADS = ("student", "lda", "ridge")
NOVELTY_KINDS = ("mahalanobis", "max_softmax", "entropy", "margin")
_DTYPE = torch.float64


def cache_dir() -> Path:
    """Where cached extractors live: ``$DATAGAMES_CACHE_DIR`` if set, else the user cache directory."""
    override = os.environ.get(CACHE_DIR_ENV_VAR)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("datagames_env"))


# ------------------------------------------------------------------------------------------------- extractor


@dataclass(frozen=True)
class FeatureExtractor:
    """A frozen pretrained network and the statistics of its pretraining rows in its own feature space.

    ``transform`` gives the network's embedding (pre-activation: more Gaussian than after the ReLU, and it holds
    all the information the network's own head sees) standardised by the pretraining rows' mean and scale.
    """

    classifier: Classifier
    feature_mean: np.ndarray  # float32 (d,)
    feature_scale: np.ndarray  # float32 (d,)
    prior_means: np.ndarray  # float64 (C, d): class means of the pretraining rows (a class without rows: 0)
    prior_covariance: np.ndarray  # float64 (d, d): their pooled within-class covariance, positive definite

    @property
    def dim(self) -> int:
        return int(self.feature_mean.shape[0])

    @property
    def n_classes(self) -> int:
        return self.classifier.n_classes

    def transform(self, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """float32 ``(n, d)`` features of ``features`` (rows shaped like the pretraining rows)."""
        return _standardised(_embed(self.classifier, features, batch_size), self.feature_mean, self.feature_scale)


def _embed(classifier: Classifier, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    features = np.asarray(features)
    out = np.empty((len(features), classifier.embedding_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(features), max(1, int(batch_size))):
            rows = features[start:start + batch_size]
            out[start:start + len(rows)] = classifier.model.embed(classifier._standardise(rows)).numpy()
    return out


def _standardised(embedding: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return ((embedding - mean) / scale).astype(np.float32)


def _class_statistics(features: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Class means (C, d) and pooled within-class covariance (d, d) of rows, float64; a small ridge keeps the
    covariance positive definite even for degenerate pretraining sets."""
    x = features.astype(np.float64)
    d = x.shape[1]
    counts = np.bincount(labels, minlength=n_classes)
    sums = np.zeros((n_classes, d))
    np.add.at(sums, labels, x)
    means = sums / np.maximum(counts, 1)[:, None]
    centred = x - means[labels]
    dof = max(len(x) - int(np.count_nonzero(counts)), 1)
    covariance = centred.T @ centred / dof
    jitter = 1e-3 * max(float(np.trace(covariance)) / d, 1e-6)
    return means, covariance + jitter * np.eye(d)


# ---------------------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class FastFeatures:
    """What :func:`cached_features` returns: the extractor, the features of every row, and where they live."""

    extractor: FeatureExtractor
    features: np.ndarray  # float32 (n, d), read-only
    key: str
    path: Path
    built: bool  # True: trained in this call (cache miss, or an unreadable cache file)


def _array_digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _extractor_config(cfg: PerceptionConfig) -> dict:
    return {name: getattr(cfg, name) for name in PerceptionConfig.model_fields if name not in _NOT_EXTRACTOR}


def _checked_inputs(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                    pretrain_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(cfg, PerceptionConfig):
        raise TypeError(f"cfg must be a PerceptionConfig, got {type(cfg).__name__}")
    features = np.asarray(features)
    labels = np.asarray(labels)
    if features.ndim not in (2, 4) or features.dtype.kind != "f":
        raise DatasetError(f"features must be float (n, d) vectors or (n, C, H, W) images, got dtype {features.dtype} "
                           f"shape {features.shape}")
    if labels.shape != (len(features),) or labels.dtype.kind not in "iu":
        raise DatasetError(f"labels must be integer ({len(features)},) like the features' rows, got dtype "
                           f"{labels.dtype} shape {labels.shape}")
    if n_classes < 1 or (len(labels) and (labels.min() < 0 or labels.max() >= n_classes)):
        raise DatasetError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
    ids = np.asarray(pretrain_ids)
    if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
        raise DatasetError(f"pretrain_ids must be a non-empty 1-d integer array of rows to pretrain on, got dtype "
                           f"{ids.dtype} shape {ids.shape}")
    if ids.min() < 0 or ids.max() >= len(features):
        raise DatasetError(f"pretrain_ids must index rows [0, {len(features)}), got range [{ids.min()}, {ids.max()}]")
    return features, labels.astype(np.int64), np.unique(ids).astype(np.int64)


def cache_key(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
              pretrain_ids: np.ndarray) -> str:
    """sha256 of everything the cached file depends on: the arrays' content, the (sorted, unique) pretraining
    ids, the extractor's perception config, the torch version and this module's file format."""
    features, labels, ids = _checked_inputs(features, labels, n_classes, cfg, pretrain_ids)
    parts = {"format": FORMAT, "features": _array_digest(features), "labels": _array_digest(labels),
             "n_classes": int(n_classes), "pretrain_ids": _array_digest(ids), "perception": _extractor_config(cfg),
             "torch": torch.__version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached_features(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
                    pretrain_ids: np.ndarray, *, directory: str | os.PathLike[str] | None = None) -> FastFeatures:
    """The frozen extractor pretrained on rows ``pretrain_ids`` of ``features`` / ``labels`` and the float32
    features of EVERY row of ``features``, from the disk cache when a sound file is there, else built and stored.

    Pretraining is :func:`~datagames_env.perception.train_classifier` with ``cfg`` and ``cfg.seed`` on one torch
    thread (bitwise deterministic). ``directory`` defaults to :func:`cache_dir`. A cache file is never trusted
    blindly: it is read without pickle and checked against its key and every shape; an unreadable or mismatching
    file is rebuilt with a warning. Writes are atomic (temporary file, then rename); a failed write warns and the
    features are still returned. Rows that should be scored later (privacy-filtered copies, test sets) are best
    part of ``features``; :meth:`FeatureExtractor.transform` embeds anything else.
    """
    features, labels, ids = _checked_inputs(features, labels, n_classes, cfg, pretrain_ids)
    key = cache_key(features, labels, n_classes, cfg, ids)
    path = Path(directory if directory is not None else cache_dir()).expanduser() / CACHE_SUBDIR / f"{key}.npz"
    if path.is_file():
        try:
            extractor, pool = _load(path, key, features.shape, n_classes, cfg)
            return FastFeatures(extractor, pool, key, path, built=False)
        except Exception as exc:  # any damage (BadZipFile, pickled arrays, wrong key or shape): rebuild, never trust
            warnings.warn(f"fast perception cache {path} is unreadable ({type(exc).__name__}: {exc}); rebuilding it",
                          stacklevel=2)
    extractor, pool = _build(features, labels, n_classes, cfg, ids)
    _store(path, key, extractor, pool)
    return FastFeatures(extractor, pool, key, path, built=True)


def _build(features: np.ndarray, labels: np.ndarray, n_classes: int, cfg: PerceptionConfig,
           ids: np.ndarray) -> tuple[FeatureExtractor, np.ndarray]:
    with limited_torch_threads(1):  # 1 and 2 threads differ in the last bits: the cache needs one answer
        classifier = train_classifier(features[ids], labels[ids], n_classes, cfg, cfg.seed)
        embedding = _embed(classifier, features)
    pretrain = embedding[ids]
    mean = pretrain.mean(axis=0)
    scale = pretrain.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0).astype(np.float32)
    pool = _standardised(embedding, mean, scale)
    prior_means, prior_covariance = _class_statistics(pool[ids], labels[ids], n_classes)
    pool.setflags(write=False)
    return FeatureExtractor(classifier, mean.astype(np.float32), scale, prior_means, prior_covariance), pool


def _save_arrays(handle, arrays: dict[str, np.ndarray]) -> None:
    np.savez(handle, **arrays)


def _store(path: Path, key: str, extractor: FeatureExtractor, pool: np.ndarray) -> None:
    clf = extractor.classifier
    arrays = {"key": np.array(key), "features": pool, "feature_mean": extractor.feature_mean,
              "feature_scale": extractor.feature_scale, "prior_means": extractor.prior_means,
              "prior_covariance": extractor.prior_covariance, "input_mean": clf.input_mean.numpy(),
              "input_scale": clf.input_scale.numpy(), "train_size": np.array(clf.train_size)}
    arrays.update({f"param.{name}": value.detach().contiguous().numpy()
                   for name, value in clf.model.state_dict().items()})
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            _save_arrays(handle, arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as exc:
        warnings.warn(f"could not write the fast perception cache {path} ({exc}); the features are used "
                      f"without caching", stacklevel=3)
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _load(path: Path, key: str, shape: tuple[int, ...], n_classes: int,
          cfg: PerceptionConfig) -> tuple[FeatureExtractor, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    if str(arrays["key"]) != key:
        raise ValueError(f"the file holds key {str(arrays['key'])[:16]}..., not {key[:16]}...")
    d = cfg.embedding_dim
    expected = {"features": ((shape[0], d), np.float32), "feature_mean": ((d,), np.float32),
                "feature_scale": ((d,), np.float32), "prior_means": ((n_classes, d), np.float64),
                "prior_covariance": ((d, d), np.float64)}
    for name, (want_shape, want_dtype) in expected.items():
        array = arrays[name]
        if array.shape != want_shape or array.dtype != want_dtype or not np.isfinite(array).all():
            raise ValueError(f"{name}: expected finite {np.dtype(want_dtype).name} {want_shape}, got "
                             f"{array.dtype} {array.shape}")
    with torch.random.fork_rng(devices=[]):  # the weights are overwritten: keep the caller's RNG untouched
        model = build_model(shape[1:], n_classes, cfg)
    state = {name[len("param."):]: torch.from_numpy(value)
             for name, value in arrays.items() if name.startswith("param.")}
    model.load_state_dict(state, strict=True)  # RuntimeError on a missing, extra or mis-shaped weight
    classifier = Classifier(model, n_classes, torch.from_numpy(arrays["input_mean"]),
                            torch.from_numpy(arrays["input_scale"]), train_size=int(arrays["train_size"]))
    pool = arrays["features"]
    pool.setflags(write=False)
    return FeatureExtractor(classifier, arrays["feature_mean"], arrays["feature_scale"], arrays["prior_means"],
                            arrays["prior_covariance"]), pool


# ---------------------------------------------------------------------------------------------------- heads


@dataclass(frozen=True)
class HeadOutput:
    """Per (env, robot, sample): class probabilities float32 ``(B, N, m, C)`` and the Mahalanobis OoD score
    float32 ``(B, N, m)`` (min over classes of the squared distance to the head's class means)."""

    probs: np.ndarray
    mahalanobis: np.ndarray | None  # None where the caller asked for probabilities only

    def uncertainty(self, kind: str) -> np.ndarray:
        """``entropy`` (nats) or ``margin`` (1 - (p_top1 - p_top2)) per sample, (B, N, m) float64
        (:mod:`~datagames_env.perception.uncertainty`)."""
        n_classes = self.probs.shape[-1]
        if kind == "entropy":
            return entropy(self.probs.astype(np.float64))
        if kind == "margin":
            return margin(self.probs.reshape(-1, n_classes)).reshape(self.probs.shape[:-1])
        raise ValueError(f"uncertainty kind must be 'entropy' or 'margin', got {kind!r}")

    def novelty(self, kind: str = "mahalanobis") -> np.ndarray:
        """OoD score per sample, higher = more novel, (B, N, m) float64: ``mahalanobis``, ``max_softmax``
        (``(1 - max p) / (1 - 1/C)``, in [0, 1]), ``entropy`` or ``margin``."""
        if kind == "mahalanobis":
            if self.mahalanobis is None:
                raise ValueError("these outputs were computed without Mahalanobis scores (mahalanobis=False)")
            return self.mahalanobis.astype(np.float64)
        if kind == "max_softmax":
            n_classes = self.probs.shape[-1]
            if n_classes < 2:
                return np.zeros(self.probs.shape[:-1])
            top = self.probs.max(axis=-1).astype(np.float64)
            return np.clip((1.0 - top) / (1.0 - 1.0 / n_classes), 0.0, 1.0)
        if kind in ("entropy", "margin"):
            return self.uncertainty(kind)
        raise ValueError(f"novelty kind must be one of {list(NOVELTY_KINDS)}, got {kind!r}")


class BatchedHeads:
    """One head per (env, robot) on shared frozen features: running statistics, batched fits and predictions.

    ``features`` is the feature table ``(n_rows, d)`` every id refers to (e.g. :attr:`FastFeatures.features`,
    with the pool, its privacy-filtered copies, test rows); ``labels`` its labels. ``add`` and ``predict`` take ids
    ``(B, N, m)`` with an optional boolean ``valid`` of the same shape (padding: robots with fewer rows). ``fit``
    refits every head; ``predict`` uses the last fit, so statistics can grow between two retrainings. The heads
    are fitted once at construction (no rows yet: every head is the prior). See the module docstring for the math.
    """

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_classes: int, n_envs: int, n_robots: int, *,
                 head: Literal["student", "lda", "ridge"] = "student", prior_means: np.ndarray | None = None,
                 prior_covariance: np.ndarray | None = None, mean_prior: float = 1.0, cov_prior: float = 10.0,
                 ridge: float = 1.0, temperature: float = 0.1) -> None:
        table = np.asarray(features)
        if table.ndim != 2 or table.shape[0] < 1 or table.dtype.kind != "f" or not np.isfinite(table).all():
            raise ValueError(f"features must be a finite float (n_rows, d) table, got dtype {table.dtype} "
                             f"shape {table.shape}")
        n_rows, d = table.shape
        labels = np.asarray(labels)
        if labels.shape != (n_rows,) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integer ({n_rows},), one per feature row, got dtype {labels.dtype} "
                             f"shape {labels.shape}")
        if n_classes < 1 or labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}]")
        if n_envs < 1 or n_robots < 1:
            raise ValueError(f"n_envs and n_robots must be >= 1, got {n_envs} and {n_robots}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {list(HEADS)}, got {head!r}")
        for name, value in (("mean_prior", mean_prior), ("cov_prior", cov_prior), ("ridge", ridge),
                            ("temperature", temperature)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        prior_means = np.zeros((n_classes, d)) if prior_means is None else np.asarray(prior_means, dtype=np.float64)
        if prior_means.shape != (n_classes, d) or not np.isfinite(prior_means).all():
            raise ValueError(f"prior_means must be finite ({n_classes}, {d}), got shape {prior_means.shape}")
        prior_covariance = np.eye(d) if prior_covariance is None else np.asarray(prior_covariance, dtype=np.float64)
        if (prior_covariance.shape != (d, d) or not np.isfinite(prior_covariance).all()
                or not np.allclose(prior_covariance, prior_covariance.T)
                or np.linalg.eigvalsh(prior_covariance).min() <= 0):
            raise ValueError(f"prior_covariance must be a symmetric positive definite ({d}, {d}) matrix")
        self.n_envs, self.n_robots, self.n_classes = int(n_envs), int(n_robots), int(n_classes)
        self.dim, self.n_rows = d, n_rows
        self.head = head
        self.mean_prior, self.cov_prior, self.ridge, self.temperature = (float(mean_prior), float(cov_prior),
                                                                          float(ridge), float(temperature))
        self._table = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float64))
        self._table32 = self._table.to(torch.float32)
        self._labels = torch.from_numpy(labels.astype(np.int64))
        self._prior_means = torch.from_numpy(prior_means)
        self._prior_scatter = torch.from_numpy(prior_covariance) * self.cov_prior
        shape = (self.n_envs, self.n_robots)
        self._counts = torch.zeros(shape + (n_classes,), dtype=_DTYPE)
        self._sums = torch.zeros(shape + (n_classes, d), dtype=_DTYPE)
        self._scatter = torch.zeros(shape + (d, d), dtype=_DTYPE)
        self.fit()

    @classmethod
    def from_extractor(cls, extracted: FastFeatures, labels: np.ndarray, n_envs: int, n_robots: int,
                       **kwargs) -> BatchedHeads:
        """Heads on :attr:`FastFeatures.features` with the extractor's public class means and covariance as prior."""
        ex = extracted.extractor
        kwargs.setdefault("prior_means", ex.prior_means)
        kwargs.setdefault("prior_covariance", ex.prior_covariance)
        return cls(extracted.features, labels, ex.n_classes, n_envs, n_robots, **kwargs)

    # ------------------------------------------------------------------------------------------ statistics
    @property
    def counts(self) -> np.ndarray:
        """Labeled rows per (env, robot, class), int64 (B, N, C)."""
        return self._counts.numpy().round().astype(np.int64)

    def _checked_ids(self, ids: np.ndarray, valid: np.ndarray | None,
                     name: str = "ids") -> tuple[torch.Tensor, torch.Tensor]:
        ids = np.asarray(ids)
        if ids.ndim != 3 or ids.shape[:2] != (self.n_envs, self.n_robots) or (ids.size and ids.dtype.kind not in "iu"):
            expected = f"({self.n_envs}, {self.n_robots}, m)"
            raise ValueError(f"{name} must be integer row ids of shape (B, N, m) = {expected}, got dtype {ids.dtype} "
                             f"shape {ids.shape}")
        if valid is None:
            valid = np.ones(ids.shape, dtype=bool)
        valid = np.asarray(valid)
        if valid.shape != ids.shape or valid.dtype != bool:
            raise ValueError(f"valid must be a boolean mask shaped like {name} {ids.shape}, got dtype {valid.dtype} "
                             f"shape {valid.shape}")
        ids = ids.astype(np.int64, copy=False)
        bad = valid & ((ids < 0) | (ids >= self.n_rows))
        if bad.any():
            b, n, k = np.argwhere(bad)[0]
            raise ValueError(f"{name}[env {b}, robot {n}] holds row {ids[b, n, k]} (position {k}), outside the feature "
                             f"table's rows [0, {self.n_rows})")
        valid = valid if valid.flags.writeable else valid.copy()  # torch refuses read-only (broadcast) views
        return torch.from_numpy(np.where(valid, ids, 0)), torch.from_numpy(valid)

    def add(self, ids: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the labeled rows ``ids`` (B, N, m) (where ``valid``) to each head's statistics. Checked before
        anything changes: bad input raises ``ValueError`` and leaves the statistics as they were."""
        index, mask = self._checked_ids(ids, valid)
        x = self._table[index]  # (B, N, m, d)
        weight = mask.to(_DTYPE).unsqueeze(-1)
        onehot = torch.nn.functional.one_hot(self._labels[index], self.n_classes).to(_DTYPE) * weight
        self._counts += onehot.sum(dim=2)
        self._sums += onehot.transpose(2, 3) @ x
        self._scatter += (x * weight).transpose(2, 3) @ x

    def reset(self, envs: np.ndarray | None = None, refit: bool = True) -> None:
        """Forget the rows of the envs where ``envs`` (bool (B,)) is True (all envs by default) and refit
        (``refit=False``: leave the fit to the caller, who adds rows first)."""
        if envs is None:
            mask = torch.ones(self.n_envs, dtype=torch.bool)
        else:
            envs = np.asarray(envs)
            if envs.shape != (self.n_envs,) or envs.dtype != bool:
                raise ValueError(f"envs must be a boolean mask of shape ({self.n_envs},), got dtype {envs.dtype} "
                                 f"shape {envs.shape}")
            mask = torch.from_numpy(envs)
        for stat in (self._counts, self._sums, self._scatter):
            stat[mask] = 0.0
        if refit:
            self.fit()

    # ----------------------------------------------------------------------------------------------- fitting
    _STATS = ("counts", "sums", "scatter")

    def state(self) -> dict[str, np.ndarray]:
        """Copies of the running statistics and of those the last fit used (float64 numpy): all a snapshot needs."""
        current = {name: getattr(self, f"_{name}").numpy().copy() for name in self._STATS}
        return {**current, **{f"fitted_{name}": value.numpy().copy() for name, value in zip(self._STATS, self._fitted)}}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state`: statistics and the fit they had (checked first; a bad state changes nothing)."""
        shapes = {"counts": self._counts.shape, "sums": self._sums.shape, "scatter": self._scatter.shape}
        loaded = {}
        for name, shape in shapes.items():
            for key in (name, f"fitted_{name}"):
                value = np.asarray(state.get(key))
                if value.shape != tuple(shape) or value.dtype.kind != "f" or not np.isfinite(value).all():
                    raise ValueError(f"state[{key!r}] must be finite float {tuple(shape)}, got {value.dtype} "
                                     f"{value.shape}")
                loaded[key] = torch.from_numpy(np.array(value, dtype=np.float64))
        self._counts, self._sums, self._scatter = (loaded[f"fitted_{name}"] for name in self._STATS)
        self.fit()
        self._counts, self._sums, self._scatter = (loaded[name] for name in self._STATS)

    _FITTED = ("_project_t", "_precision", "_white_norms", "_logit_project_t", "_logit_bias", "_logit_rate", "_offset",
               "_slope", "_rate", "_ridge_weights")

    def export_env(self, env: int) -> dict[str, torch.Tensor]:
        """Copies of env ``env``'s heads (statistics, the statistics of the last fit, the fit): a template that
        :meth:`import_env` puts into other envs, e.g. when every env starts from the same labeled sets."""
        if not 0 <= int(env) < self.n_envs:
            raise ValueError(f"env must be in [0, {self.n_envs}), got {env}")
        tensors = {name: getattr(self, f"_{name}") for name in self._STATS}
        tensors.update({f"fitted_{name}": value for name, value in zip(self._STATS, self._fitted)})
        tensors.update({name: getattr(self, name) for name in self._FITTED if hasattr(self, name)})
        return {name: value[int(env)].clone() for name, value in tensors.items()}

    def import_env(self, template: dict[str, torch.Tensor], envs: np.ndarray | None = None) -> None:
        """Set the envs where ``envs`` (bool (B,), default all) to the heads of :meth:`export_env` (of heads with
        the same robots, classes, features and options)."""
        mask = slice(None) if envs is None else torch.from_numpy(np.asarray(envs, dtype=bool))
        expected = set(self.export_env(0))
        if set(template) != expected:
            raise ValueError(f"template must hold {sorted(expected)}, got {sorted(template)}")
        for name in self._STATS:
            getattr(self, f"_{name}")[mask] = template[name]
        for stat, name in zip(self._fitted, self._STATS):
            stat[mask] = template[f"fitted_{name}"]
        for name in self._FITTED:
            if hasattr(self, name):
                getattr(self, name)[mask] = template[name]

    def fit(self, heads: np.ndarray | None = None) -> None:
        """Refit every head from its statistics: one batched Cholesky (and one batched solve for ``ridge``).
        ``heads`` bool (B, N): refit only these (the others keep their last fit)."""
        if heads is None:
            self._fit_all()
            return
        heads = np.asarray(heads)
        if heads.shape != (self.n_envs, self.n_robots) or heads.dtype != bool:
            raise ValueError(f"heads must be a boolean mask of shape ({self.n_envs}, {self.n_robots}), got dtype "
                             f"{heads.dtype} shape {heads.shape}")
        if heads.all():
            self._fit_all()
            return
        if not heads.any():
            return
        self._fit_all(torch.from_numpy(np.flatnonzero(heads)))

    def _fit_all(self, index: torch.Tensor | None = None) -> None:
        """Fit every head, or only the flat head indices ``index`` (the others keep their fit)."""
        counts, sums, scatter = self._counts, self._sums, self._scatter
        if index is not None:  # a batch (1, h) of the chosen heads
            counts, sums, scatter = (t.flatten(0, 1)[index].unsqueeze(0) for t in (counts, sums, scatter))
        out = {"_fitted": (counts.clone(), sums.clone(), scatter.clone())}
        n = counts.sum(dim=-1)
        empirical = sums / counts.clamp_min(1.0).unsqueeze(-1)
        within = scatter - empirical.transpose(2, 3) @ sums
        within = 0.5 * (within + within.transpose(2, 3))
        dof = (n - (counts > 0).sum(dim=-1)).clamp_min(0.0)
        covariance = (within + self._prior_scatter) / (dof + self.cov_prior)[..., None, None]
        means = (sums + self.mean_prior * self._prior_means) / (counts + self.mean_prior).unsqueeze(-1)
        cholesky, info = torch.linalg.cholesky_ex(covariance)
        if bool((info > 0).any()):  # rounding in the scatter subtraction: fall back to the prior's share alone
            covariance = covariance + self._prior_scatter / (dof + self.cov_prior)[..., None, None] * 1e-6
            cholesky = torch.linalg.cholesky(covariance)
        eye = torch.eye(self.dim, dtype=_DTYPE).expand_as(cholesky)
        whiten = torch.linalg.solve_triangular(cholesky, eye, upper=False)  # L^-1: |L^-1 v|^2 = v' S^-1 v
        white_means = means @ whiten.transpose(2, 3)  # (B, N, C, d)
        log_prior = torch.log((counts + 1.0) / (n + self.n_classes).unsqueeze(-1))  # (B, N, C)
        # prediction runs in float32 (elementwise float64 on (B, N, m, C) measured 3-4x slower); per head and class:
        # logits = offset - slope * log1p(distance * rate) (student) or offset - distance / 2 (lda), with
        # distance = |L^-1 x|^2 - 2 x' Sigma^-1 mu_c + |L^-1 mu_c|^2: one product x @ [L^-T | Sigma^-1 mu] per row
        whiten_t = whiten.transpose(2, 3)
        out["_project_t"] = torch.cat([whiten_t, whiten_t @ white_means.transpose(2, 3)], dim=-1).to(
            torch.float32).contiguous()  # (B, N, d, d + C)
        # Sigma^-1 flattened (B, N, d * d): |L^-1 x|^2 = (x x')_flat . this, for rows shared by many heads
        out["_precision"] = (whiten.transpose(2, 3) @ whiten).flatten(2).to(torch.float32).contiguous()
        out["_white_norms"] = white_means.square().sum(dim=-1).unsqueeze(2).to(torch.float32)  # (B, N, 1, C)
        if self.head == "student":
            nu = (dof + self.cov_prior - self.dim + 1.0).clamp_min(1.0).unsqueeze(-1)  # (B, N, 1)
            scale = 1.0 + 1.0 / (counts + self.mean_prior)  # (B, N, C)
            out["_offset"] = (log_prior - 0.5 * self.dim * torch.log(scale)).unsqueeze(2).to(torch.float32)
            out["_slope"] = (0.5 * (nu + self.dim)).unsqueeze(2).to(torch.float32)  # (B, N, 1, 1)
            out["_rate"] = (1.0 / (scale * nu)).unsqueeze(2).to(torch.float32)  # (B, N, 1, C)
        else:
            out["_offset"] = log_prior.unsqueeze(2).to(torch.float32)
        # the logits' own product (probabilities without OoD scores, shared test rows): rate_c * distance_c =
        # rate_c |L^-1 x|^2 + x' (-2 rate_c Sigma^-1 mu_c) + rate_c |L^-1 mu_c|^2, rate 1 for lda: the scaling
        # folded into the weights saves passes over (B, N, m, C)
        rate = 1.0 / (scale * nu) if self.head == "student" else torch.ones_like(counts)  # (B, N, C)
        cross = whiten_t @ white_means.transpose(2, 3)  # (B, N, d, C): Sigma^-1 mu_c
        out["_logit_project_t"] = torch.cat([whiten_t, -2.0 * cross * rate.unsqueeze(2)], dim=-1).to(
            torch.float32).contiguous()  # (B, N, d, d + C)
        out["_logit_bias"] = torch.cat([torch.zeros(counts.shape[:2] + (1, self.dim), dtype=_DTYPE),
                                      (white_means.square().sum(dim=-1) * rate).unsqueeze(2)], dim=-1).to(
            torch.float32).contiguous()  # (B, N, 1, d + C)
        out["_logit_rate"] = rate.unsqueeze(2).to(torch.float32)  # (B, N, 1, C)
        if self.head == "ridge":
            d = self.dim
            total = sums.sum(dim=2)  # (B, N, d)
            gram = torch.zeros(counts.shape[:2] + (d + 1, d + 1), dtype=_DTYPE)
            gram[..., :d, :d] = scatter
            gram[..., :d, d] = total
            gram[..., d, :d] = total
            gram[..., d, d] = n
            gram += self.ridge * torch.eye(d + 1, dtype=_DTYPE)
            target = torch.cat([sums.transpose(2, 3), counts.unsqueeze(2)], dim=2)  # (B, N, d + 1, C)
            out["_ridge_weights"] = (torch.linalg.solve(gram, target) / self.temperature).to(torch.float32)
        if index is None:
            for name, value in out.items():
                setattr(self, name, value)
            return
        for name, value in out.items():  # in place: every fitted tensor is contiguous, so flatten is a view
            for target, new in zip(self._fitted if name == "_fitted" else (getattr(self, name),),
                                   value if name == "_fitted" else (value,)):
                assert target.is_contiguous(), name
                target.flatten(0, 1)[index] = new[0]

    # ------------------------------------------------------------------------------------------- prediction
    def predict(self, ids: np.ndarray, valid: np.ndarray | None = None, mahalanobis: bool = True) -> HeadOutput:
        """Each head's output on its own rows ``ids`` (B, N, m) of the feature table (invalid slots: row 0);
        ``mahalanobis=False`` skips the OoD scores (``HeadOutput.mahalanobis`` is None then)."""
        index, _ = self._checked_ids(ids, valid)
        return self._output(self._table32[index], mahalanobis)

    def probabilities(self, ids: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``predict(ids, valid).probs`` bit for bit (the same arithmetic), without computing the OoD scores that
        it would discard: float32 (B, N, m, C)."""
        index, _ = self._checked_ids(ids, valid)
        return self._output(self._table32[index], mahalanobis=True, with_scores=False).probs

    def predict_features(self, features: np.ndarray) -> HeadOutput:
        """Outputs for explicit features: ``(m, d)`` scored by every head, or ``(B, N, m, d)`` one set per head."""
        x = np.asarray(features)
        if x.ndim == 2 and x.shape[1] == self.dim:
            x = np.broadcast_to(x, (self.n_envs, self.n_robots) + x.shape)
        if x.shape[:2] != (self.n_envs, self.n_robots) or x.ndim != 4 or x.shape[3] != self.dim:
            raise ValueError(f"features must be (m, {self.dim}) or ({self.n_envs}, {self.n_robots}, m, {self.dim}), "
                             f"got shape {np.asarray(features).shape}")
        return self._output(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))

    def classify(self, rows: np.ndarray, heads: np.ndarray | None = None) -> np.ndarray:
        """Every head's predicted class on the same rows ``rows`` (m,) of the feature table, int64 (B, N, m): the
        argmax of :meth:`predict`'s probabilities without computing them. ``heads`` bool (B, N): compute only
        these (the others get -1)."""
        logits, chosen, out = self._shared_logits(rows, heads)
        if logits is not None:
            out.reshape(-1, out.shape[-1])[chosen.numpy()] = logits.max(dim=-1).indices.T.numpy()
        return out

    def correct(self, rows: np.ndarray, heads: np.ndarray | None = None) -> np.ndarray:
        """Whether each head's prediction on the rows ``rows`` (m,) is their label, bool (B, N, m) (False for heads
        not in ``heads``): :meth:`classify` compared with the labels, without an argmax (a tie with the label's
        class counts as correct)."""
        logits, chosen, out = self._shared_logits(rows, heads)
        result = np.zeros(out.shape, dtype=bool)
        if logits is not None:
            labels = self._labels[torch.from_numpy(np.asarray(rows).astype(np.int64))]
            at_label = logits.gather(-1, labels.view(-1, 1, 1).expand(-1, logits.shape[1], 1))[..., 0]
            result.reshape(-1, out.shape[-1])[chosen.numpy()] = (at_label >= logits.amax(dim=-1)).T.numpy()
        return result

    def _shared_logits(self, rows: np.ndarray, heads: np.ndarray | None):
        """Logits (m, h, C) of the chosen heads on the same rows, the chosen flat head indices, a -1 output."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0
                                             or rows.max() >= self.n_rows)):
            raise ValueError(f"rows must be 1-d integer ids in [0, {self.n_rows}), got dtype {rows.dtype} shape "
                             f"{rows.shape}")
        shape = (self.n_envs, self.n_robots)
        if heads is None:
            heads = np.ones(shape, dtype=bool)
        heads = np.asarray(heads)
        if heads.shape != shape or heads.dtype != bool:
            raise ValueError(f"heads must be a boolean mask of shape {shape}, got dtype {heads.dtype} shape "
                             f"{heads.shape}")
        out = np.full(shape + (len(rows),), -1, dtype=np.int64)
        chosen = torch.from_numpy(np.flatnonzero(heads))
        if not len(chosen) or not len(rows):
            return None, chosen, out
        x = self._table32[torch.from_numpy(rows.astype(np.int64))]  # (m, d), the same for every head
        h, d, c = len(chosen), self.dim, self.n_classes
        # every chosen head in two matrix products over the shared rows: x' Sigma^-1 x from the rows' outer
        # products, (m, d * d) @ (d * d, h), and the cross terms x' Sigma^-1 mu_c, (m, d) @ (d, h * C)
        outer = (x[:, :, None] * x[:, None, :]).reshape(len(rows), d * d)
        quadratic = outer @ self._precision.flatten(0, 1)[chosen].T  # (m, h)

        def per_head(t: torch.Tensor) -> torch.Tensor:  # (B, N, 1, C') fit -> (1, h, C') beside (m, h, C)
            return t.flatten(0, 1)[chosen].view(1, h, -1)

        weight = self._logit_project_t.flatten(0, 1)[chosen][..., d:].permute(1, 0, 2).reshape(d, h * c)
        bias = self._logit_bias.flatten(0, 1)[chosen][..., 0, d:].reshape(1, h * c)
        scaled = torch.addmm(bias, x, weight).view(len(rows), h, c)  # rate * distance, less rate |L^-1 x|^2
        scaled.addcmul_(quadratic.unsqueeze(-1), per_head(self._logit_rate)).clamp_min_(0.0)
        if self.head == "student":  # offset - slope * log1p(rate * distance)
            logits = torch.addcmul(per_head(self._offset), scaled.log1p_(), per_head(self._slope), value=-1.0)
        elif self.head == "lda":
            logits = torch.add(per_head(self._offset), scaled, alpha=-0.5)
        else:
            weights = self._ridge_weights.flatten(0, 1)[chosen]
            logits = (x @ weights[:, :-1, :] + weights[:, -1:, :]).transpose(0, 1)
        return logits, chosen, out

    def _distance(self, z: torch.Tensor, white_norms: torch.Tensor) -> torch.Tensor:
        """Squared Mahalanobis distances (..., C) from ``z = x @ project_t`` (..., d + C)."""
        d = self.dim
        white_sq = z[..., :d].square().sum(dim=-1, keepdim=True)
        return torch.add(white_norms, z[..., d:], alpha=-2.0).add_(white_sq).clamp_min_(0.0)

    def _distances(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float32 (B, N, m, d) -> squared Mahalanobis distances (B, N, m, C)."""
        return self._distance(x @ self._project_t, self._white_norms)

    def _output(self, x: torch.Tensor, mahalanobis: bool = True, with_scores: bool = True) -> HeadOutput:
        """``x`` float32 (B, N, m, d) -> probabilities and Mahalanobis scores (``mahalanobis=False``: None, and the
        probabilities of the scaled-logit path; ``with_scores=False``: the distance path's probabilities, no scores)."""
        if not mahalanobis and self.head != "ridge":
            return HeadOutput(torch.softmax(self._scaled_logits(x), dim=-1).numpy(), None)
        distance = self._distances(x)
        scores = distance.amin(dim=-1).numpy() if mahalanobis and with_scores else None
        if self.head == "student":  # in place: offset - slope * log1p(distance * rate)
            logits = distance.mul_(self._rate).log1p_().mul_(self._slope).neg_().add_(self._offset)
        elif self.head == "lda":
            logits = distance.mul_(-0.5).add_(self._offset)
        else:
            logits = x @ self._ridge_weights[..., :-1, :] + self._ridge_weights[..., -1:, :]
        return HeadOutput(torch.softmax(logits, dim=-1).numpy(), scores)

    def _scaled_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, N, m, C) of ``x`` float32 (B, N, m, d) from the fit's scaled product (student, lda)."""
        b_, n, m, d = x.shape
        z = torch.baddbmm(self._logit_bias.flatten(0, 1), x.reshape(b_ * n, m, d),
                          self._logit_project_t.flatten(0, 1)).view(b_, n, m, -1)
        scaled = z[..., d:].addcmul_(z[..., :d].square().sum(dim=-1, keepdim=True), self._logit_rate).clamp_min_(0.0)
        if self.head == "student":
            return torch.addcmul(self._offset, scaled.log1p_(), self._slope, value=-1.0)
        return torch.add(self._offset, scaled, alpha=-0.5)

    def novelty(self, ids: np.ndarray, valid: np.ndarray | None = None, kind: str = "mahalanobis") -> np.ndarray:
        """``predict(ids, valid).novelty(kind)`` (B, N, m) float64; ``mahalanobis`` without the probabilities."""
        if kind not in NOVELTY_KINDS:
            raise ValueError(f"novelty kind must be one of {list(NOVELTY_KINDS)}, got {kind!r}")
        if kind != "mahalanobis":
            return HeadOutput(self.probabilities(ids, valid), None).novelty(kind)
        index, _ = self._checked_ids(ids, valid)
        return self._distances(self._table32[index]).amin(dim=-1).numpy().astype(np.float64)

    def calibrate(self, ids: np.ndarray, valid: np.ndarray | None = None, quantile: float = 0.95,
                  kind: str = "mahalanobis", fallback: float = np.inf) -> np.ndarray:
        """Per-head OoD thresholds float64 (B, N): the ``quantile`` of ``novelty(kind)`` over each head's held-out
        in-distribution rows ``ids`` (where ``valid``); ``fallback`` for a head without any such row."""
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if kind not in NOVELTY_KINDS:
            raise ValueError(f"novelty kind must be one of {list(NOVELTY_KINDS)}, got {kind!r}")
        _, mask = self._checked_ids(ids, valid)
        mask = mask.numpy()
        scores = np.sort(np.where(mask, self.novelty(ids, valid, kind), np.inf), axis=-1)
        # np.nanquantile's default ("linear") per head, without its Python loop over rows
        count = mask.sum(axis=-1)
        position = np.maximum(count - 1, 0) * quantile
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, np.maximum(count - 1, 0))
        at_low = np.take_along_axis(scores, low[..., None], axis=-1)[..., 0]
        at_high = np.take_along_axis(scores, high[..., None], axis=-1)[..., 0]
        value = at_low + (position - low) * (at_high - at_low)
        value = np.where(high == low, at_low, value)  # inf - inf where a head has one row
        return np.where(count > 0, value, float(fallback))
