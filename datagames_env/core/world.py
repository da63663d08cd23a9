"""The world all environments of one config share: dataset, split, pool lookup tables, perception cache."""

from __future__ import annotations

import functools
import json

import numpy as np

from ..config import ConfigError, EnvConfig
from ..data.datasets import Dataset, DatasetSplits, load_dataset, split_dataset
from ..perception import Perception

__all__ = ["World", "get_world"]


class World:
    """What all environments of one config share: the dataset, its split, the stream pool's lookup tables
    and the perception cache (a model version is trained once per training multiset and seed).

    ``cfg`` is any scenario config with ``dataset`` and ``perception`` keys."""

    def __init__(self, cfg: EnvConfig, dataset: Dataset | None = None) -> None:
        dcfg = cfg.dataset
        self.dataset = dataset if dataset is not None else load_dataset(dcfg.name, dcfg.data_dir, dcfg.download)
        self.n_classes = self.dataset.n_classes
        self.splits = self._split(cfg)
        self.pool = self.splits.pool
        self.pool_labels = self.dataset.labels[self.pool]
        counts = np.bincount(self.pool_labels, minlength=self.n_classes)
        if (counts == 0).any():
            missing = np.flatnonzero(counts == 0).tolist()
            raise ConfigError(f"dataset '{self.dataset.name}': classes {missing} have no samples in the stream pool")
        # pool positions grouped by true class, for materialising streams and drawing the initial cloud
        self.class_members = np.argsort(self.pool_labels, kind="stable").astype(np.int64)
        self.class_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        features, labels = self._model_rows(cfg)
        self.perception = Perception(features, labels, self.splits.pool, self.splits.validation, self.splits.test,
                                     self.n_classes, cfg.perception,
                                     max_threads=1)  # small models: a second thread only spins under load

    def _split(self, cfg) -> DatasetSplits:
        """Pool / validation / test of the dataset (a scenario may hold more rows out of the pool)."""
        dcfg = cfg.dataset
        return split_dataset(self.dataset.labels, dcfg.validation_fraction, dcfg.test_fraction, dcfg.split_seed)

    def _model_rows(self, cfg) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows and labels the perception cache trains and scores on (a scenario may add rows)."""
        return self.dataset.features, self.dataset.labels

    def pool_ids_of_class(self, y: int) -> np.ndarray:
        return self.class_members[self.class_start[y]:self.class_start[y + 1]]

    def members_of_classes(self) -> list[np.ndarray]:
        """Pool positions of each class, in class order."""
        return [self.pool_ids_of_class(y) for y in range(self.n_classes)]


@functools.lru_cache(maxsize=8)
def _cached_world(key: str) -> World:
    return World(EnvConfig.model_validate(json.loads(key)))


def get_world(cfg: EnvConfig) -> World:
    """Worlds are cached per (dataset, perception) config so many envs of one config share models."""
    key = json.dumps({"dataset": cfg.dataset.model_dump(), "perception": cfg.perception.model_dump()}, sort_keys=True)
    return _cached_world(key)


