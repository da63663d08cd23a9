"""One definition of per-sample uncertainty from class probabilities, for every scenario and detector."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy", "margin", "uncertainty"]


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the last axis (``(..., C)`` -> ``(...)``); zero probabilities add nothing."""
    probs = np.asarray(probs)
    return -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(axis=-1)


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_top1 - p_top2)`` per row of ``(n, C)``: 1 when the top two tie, 0 when one class has all mass."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] < 2:
        return 1.0 - probs[:, 0]
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top2[:, 1] - top2[:, 0])


def uncertainty(probs: np.ndarray, kind: str) -> np.ndarray:
    """Per-sample uncertainty from class probabilities ``(n, C)``: ``entropy`` (nats) or ``margin``
    (1 - (p_top1 - p_top2)); higher = more uncertain."""
    if kind == "entropy":
        return entropy(np.asarray(probs, dtype=np.float64))
    if kind == "margin":
        return margin(probs)
    raise ValueError(f"uncertainty kind must be 'entropy' or 'margin', got {kind!r}")
