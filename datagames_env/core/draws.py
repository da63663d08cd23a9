"""Episode seeding and stream draws shared by every scenario that streams pool samples (the cloud game's
:class:`~datagames_env.core.batched.BatchedCore`, DUAL's paper and fast tiers).

=============================  ======================================================================================
Function                       What it draws
=============================  ======================================================================================
``seed_episodes(seeds)``       per env a numpy Generator (episode-level draws) and a xoshiro256** state (per-step
                               draws, advanced in place by the numba kernels): ``(rngs, states (B, 4))``
``draw_mixes(stream, ...)``    every robot's true class mix, ``(B, N, C)``, one env after the other from its Generator
``initial_clouds(...)``        the initial cloud rows of every env: the world's fixed draw, or one per env
``drift(mixes, stream, rngs)`` the mixes of the next round (``stream.drift``), env by env
``draw_round(...)``            the pool positions every robot of every env observes this round, ``(B, N, obs)``
``predicted_histograms(...)``  per robot the histogram of predicted classes of what it observed, ``(B, N, C)``
=============================  ======================================================================================

Env b draws only from its own Generator and state, so env b of a batch equals a batch of one reset with
``seeds[b]``, draw for draw. The order of the calls is part of the contract: seed, mixes, initial cloud.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from . import kernels
from ..data.streams import draw_class_mixes, drift_mixes

__all__ = ["draw_mixes", "draw_round", "drift", "initial_clouds", "predicted_histograms", "seed_episodes"]


def seed_episodes(seeds: Sequence[int]) -> tuple[list[np.random.Generator], np.ndarray]:
    """``(rngs, states)``: env b's Generator (PCG64 of ``SeedSequence([seed, 0])``) and xoshiro state."""
    rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(s), 0]))) for s in seeds]
    return rngs, kernels.seed_states(seeds)


def draw_mixes(stream, n_robots: int, n_classes: int, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """``(B, N, C)`` true class mixes (``stream`` is a :class:`~datagames_env.config.StreamConfig`)."""
    return np.stack([draw_class_mixes(stream, n_robots, n_classes, rng) for rng in rngs])


def initial_clouds(rngs: Sequence[np.random.Generator], fixed: np.ndarray | None,
                   draw: Callable[[np.random.Generator], np.ndarray]) -> list[np.ndarray]:
    """Env b's initial cloud: ``fixed`` (the world's draw, ``world_seed`` set) or ``draw(rngs[b])``."""
    if fixed is not None:
        return [fixed] * len(rngs)
    return [draw(rng) for rng in rngs]


def drift(mixes: np.ndarray, stream, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """The next round's ``(B, N, C)`` mixes under ``stream.drift``."""
    return np.stack([drift_mixes(m, stream, rng) for m, rng in zip(mixes, rngs)])


def draw_round(states: np.ndarray, mixes: np.ndarray, world, obs_per_round: int) -> np.ndarray:
    """``(B, N, obs_per_round)`` pool positions: robot i of env b draws classes from its mix and a pool sample
    of each class (``world.class_start`` / ``class_members``). Advances ``states`` in place."""
    b_n, n = mixes.shape[:2]
    positions = np.empty((b_n, n, obs_per_round), dtype=np.int64)
    kernels.draw_stream_samples(states, mixes, world.class_start, world.class_members, positions)
    return positions


def predicted_histograms(predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """``(B, N, C)`` int64 counts of each predicted class over the last axis of ``predicted`` ``(B, N, m)``:
    one bincount for every robot of every env."""
    b_n, n = predicted.shape[:2]
    flat = predicted + n_classes * np.arange(b_n * n).reshape(b_n, n, 1)
    counts = np.bincount(flat.ravel(), minlength=b_n * n * n_classes).reshape(b_n, n, n_classes)
    return counts.astype(np.int64, copy=False)
