"""What the robots see, shared by every scenario: per-robot class mixes, their drift, the initial cloud.

=========================  ==========================================================================================
Name                       What it is
=========================  ==========================================================================================
``draw_class_mixes``       per-robot class mixes ``(N, C)`` of a :class:`~datagames_env.config.StreamConfig` (uniform,
                           an explicit matrix, Dirichlet, rare specialists)
``drift_mixes``            one round of drift: ``(1 - drift) * mixes + drift * Dirichlet(alpha)`` fresh mixes
``draw_initial_cloud``     dataset rows of an initial cloud: a (Dirichlet-skewed or given) class mix, drawn per class
``draw_domain_stream``     one robot's stream over visual domains (p2p): ``(rounds, obs_per_round)`` pool ids with
                           exact per-round domain quotas
``domain_quotas``          those quotas: ``(D,)`` samples per round per domain (largest remainder)
=========================  ==========================================================================================

All randomness comes from the ``numpy.random.Generator`` passed in: a scenario owns its generators (seeding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import ConfigError, StreamConfig

__all__ = ["domain_quotas", "draw_class_mixes", "draw_domain_stream", "draw_initial_cloud", "drift_mixes"]


def draw_class_mixes(stream: StreamConfig, n_robots: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Per-robot class mixes ``(n_robots, C)`` for the stream kinds of :class:`StreamConfig`: uniform, an explicit
    matrix (rows normalised), Dirichlet(alpha), or rare specialists (a few robots see the rare classes, the others
    (almost) only the common ones). Shared by every scenario with per-robot class streams."""
    s, c, n = stream, n_classes, n_robots
    if s.kind == "uniform":
        return np.full((n, c), 1.0 / c)
    if s.kind == "matrix":
        m = np.asarray(s.mixes, dtype=np.float64)
        if m.shape != (n, c):
            raise ConfigError(f"config key 'stream.mixes' must be ({n}, {c}) (robots x classes), got {m.shape}")
        return m / m.sum(axis=1, keepdims=True)
    if s.kind == "dirichlet":
        return rng.dirichlet(np.full(c, s.alpha), size=n)
    rare = np.asarray(s.rare_classes if s.rare_classes is not None else [c - 2, c - 1])
    if rare.min() < 0 or rare.max() >= c or len(set(rare.tolist())) >= c:
        raise ConfigError(f"config key 'stream.rare_classes' must be distinct classes in 0..{c - 1} leaving a "
                          f"common class, got {rare.tolist()}")
    common = np.setdiff1d(np.arange(c), rare)
    mixes = np.zeros((n, c))
    mixes[:, common] = rng.dirichlet(np.full(len(common), s.alpha), size=n)
    specialists = rng.choice(n, size=s.n_specialists, replace=False)
    rare_share = np.full(n, s.others_rare_share)
    rare_share[specialists] = s.specialist_rare_share
    mixes *= (1.0 - rare_share)[:, None]
    mixes[:, rare] += rare_share[:, None] / len(rare)
    return mixes


def drift_mixes(mixes: np.ndarray, stream: StreamConfig, rng: np.random.Generator) -> np.ndarray:
    """One environment's mixes ``(N, C)`` after one round of drift towards fresh Dirichlet(alpha) mixes."""
    fresh = rng.dirichlet(np.full(mixes.shape[-1], stream.alpha), size=mixes.shape[0])
    return (1.0 - stream.drift) * mixes + stream.drift * fresh


def draw_initial_cloud(rng: np.random.Generator, size: int, alpha: float, proportions: Sequence[float] | None,
                       members_of_class: Sequence[np.ndarray], pool: np.ndarray, no_member_error: str = "") -> np.ndarray:
    """Dataset rows of an initial cloud of ``size`` samples: the class mix is ``proportions`` (normalised) or drawn
    from Dirichlet(``alpha``); per class, distinct members (pool positions) where there are enough, with
    replacement otherwise. ``no_member_error`` names the config key to blame when a class has no member at all."""
    n_classes = len(members_of_class)
    if proportions is not None:
        mix = np.asarray(proportions, dtype=np.float64)
        mix = mix / mix.sum()
    else:
        mix = rng.dirichlet(np.full(n_classes, alpha))
    per_class = rng.multinomial(size, mix)
    chosen = []
    for y, members in enumerate(members_of_class):  # C draws of a few samples each: not a hot path
        k = int(per_class[y])
        if k and len(members) == 0:
            raise ConfigError(f"{no_member_error or 'initial cloud'}: class {y} has no sample to draw the initial "
                              "cloud from")
        chosen.append(rng.choice(members, size=k, replace=k > len(members)))  # size 0 draws nothing
    return pool[np.concatenate(chosen).astype(np.int64)]


def domain_quotas(shares: np.ndarray, obs_per_round: int) -> np.ndarray:
    """Samples per round of each domain, int ``(D,)`` summing to ``obs_per_round``: ``shares`` (D,) normalised, as
    exact quotas by largest remainder (ties to the lower domain)."""
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    raw = shares * obs_per_round
    quotas = np.floor(raw).astype(int)
    quotas[np.argsort(-(raw - quotas), kind="stable")[: obs_per_round - quotas.sum()]] += 1
    return quotas


def draw_domain_stream(shares: np.ndarray, pools: Sequence[np.ndarray], rounds: int, obs_per_round: int,
                       rng: np.random.Generator, exclude: np.ndarray, who: str = "robot",
                       domain_names: Sequence[str] | None = None, quotas: np.ndarray | None = None) -> np.ndarray:
    """Pool ids one robot observes, ``(rounds, obs_per_round)``: ``shares`` (D,) of its rounds per domain as exact
    per-round quotas (largest remainder), each domain's ``pools[d]`` (minus ``exclude``) consumed along a seeded
    permutation, wrapping only when the pool is exhausted; each round's samples in a random order. ``quotas``:
    :func:`domain_quotas` of ``shares`` computed beforehand (a caller drawing many streams of one robot)."""
    if quotas is None:
        quotas = domain_quotas(shares, obs_per_round)
    per_domain = []
    for d, pool in enumerate(pools):
        if quotas[d] == 0:
            per_domain.append(np.zeros((rounds, 0), dtype=np.int64))
            continue
        if len(exclude):
            pool = pool[~np.isin(pool, exclude)]
        if len(pool) == 0:
            name = domain_names[d] if domain_names is not None else str(d)
            raise ConfigError(f"{who}: domain '{name}' has no samples left after its initial labeled set")
        need = rounds * quotas[d]
        order = np.concatenate([rng.permutation(pool) for _ in range(-(-need // len(pool)))])[:need]
        per_domain.append(order.reshape(rounds, quotas[d]))
    # each round shuffled on its own: permuted(axis=1) makes the draws of one permutation per row, in row order
    return rng.permuted(np.concatenate(per_domain, axis=1).astype(np.int64, copy=False), axis=1)
