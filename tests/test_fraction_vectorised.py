"""``baselines.fraction._row_problems`` over all envs at once equals the per-env ``_validate`` + ``_needed_budget``
loop it replaced (issue 18: that loop held the gap-fraction map below BenchMARL's 50k agent-steps/s)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.fraction import _greedy_rows_native, _row_problems, greedy_fraction_shares
from baselines.solvers import _columns, _max_iter, _needed_budget, _validate


def _loop_row_problems(feasible, cloud, target, n_cache, available, loss):
    """The replaced implementation, env by env (the reference)."""
    b, n, c = feasible.shape[:3]
    Ps, caps, budgets, gaps = [], [], np.empty(b * n), np.empty((b * n, c))
    for e in range(b):
        P, cloud_e, target_e, budget, cap = _validate(feasible[e], cloud[e], target[e], n_cache,
                                                      None if available is None else available[e])
        if loss == "l2":
            budget, cap = _needed_budget(P, cloud_e, target_e, budget, cap)
        if not cap.any():
            budget = 0.0
        Ps.append(P)
        caps.append(cap)
        budgets[e * n:(e + 1) * n] = budget
        gaps[e * n:(e + 1) * n] = target_e - cloud_e
    return np.concatenate(Ps), np.concatenate(caps), budgets, gaps


def _instances(seed: int, b: int = 24, n: int = 4, c: int = 5):
    """Random problems with the edge cases mixed in: empty columns, a robot or an env with nothing available,
    zero gap (cloud = target), cloud above target, a budget that the L2 cut does or does not tighten."""
    rng = np.random.default_rng(seed)
    P = rng.random((b, n, c, c))
    P /= P.sum(axis=2, keepdims=True)
    P[rng.random((b, n, c)) < 0.2] = 0.0  # columns (predictions) a robot cannot make: P[e, i, :, j] = 0
    P = np.where(rng.random((b, n, 1, c)) < 0.2, 0.0, P)
    P[1] = 0.0  # an env where no robot has any available column
    available = rng.integers(0, 6, (b, n, c)).astype(float)
    available[2] = 0.0  # an env with empty availability
    available[3, 0] = 0.0
    cloud = rng.integers(0, 30, (b, c)).astype(float)
    target = cloud + rng.integers(-5, 20, (b, c))
    target = np.maximum(target, 0.0)
    target[4] = cloud[4]  # zero gap
    return P, cloud, target, available


@pytest.mark.parametrize("n_cache", [0, 3, 1e9])
@pytest.mark.parametrize("with_available", [True, False])
@pytest.mark.parametrize("loss", ["l2", "kl"])
def test_vectorised_row_problems_equal_the_per_env_loop(n_cache, with_available, loss):
    for seed in range(3):
        P, cloud, target, available = _instances(seed)
        available = available if with_available else None
        new = _row_problems(P, cloud, target, n_cache, available, loss)
        old = _loop_row_problems(P, cloud, target, n_cache, available, loss)
        for name, a, b in zip(("P", "caps", "budgets", "gaps"), new, old):
            assert a.shape == b.shape, name
            # copies, minima and differences are exact; the cut goes through a norm (a BLAS dot on both paths,
            # bit-equal here, but two code paths get a tolerance)
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, err_msg=name)
        assert not new[2][1 * 4:2 * 4].any()  # env 1 has no available column: budget 0


@pytest.mark.parametrize("fraction", [0.0, 1.0, "random"])
def test_shares_from_vectorised_problems_equal_the_loop(fraction):
    P, cloud, target, available = _instances(7)
    b, n, c = P.shape[:3]
    f = np.random.default_rng(1).random((b, n)) if fraction == "random" else np.full((b, n), fraction)
    shares = greedy_fraction_shares(P, cloud, target, f, 4, available)
    Pr, caps, budgets, gaps = _loop_row_problems(P, cloud, target, 4, available, "l2")
    counts = _greedy_rows_native(Pr, _columns(Pr), caps, budgets, gaps * f.reshape(-1)[:, None], _max_iter(c))
    np.testing.assert_allclose(shares, np.clip(counts.reshape(b, n, c) / 4, 0, 1), rtol=0, atol=1e-9)
    if fraction == 0.0:
        assert not shares.any()


def test_bad_values_name_the_env_and_change_nothing():
    P, cloud, target, available = _instances(3, b=6)
    bad = P.copy()
    bad[2, 1, 0, 3] = np.nan
    with pytest.raises(ValueError, match="env 2: P must be finite"):
        _row_problems(bad, cloud, target, 3, available, "l2")
    neg = available.copy()
    neg[3, 0, 1] = -1.0
    with pytest.raises(ValueError, match="env 3: available must be >= 0"):
        _row_problems(P, cloud, target, 3, neg, "l2")
    low = cloud.copy()
    low[1, 0] = -2.0
    with pytest.raises(ValueError, match="env 1: cloud must be >= 0"):
        greedy_fraction_shares(P, low, target, 0.5, 3, available)
    with pytest.raises(ValueError, match="n_cache"):
        _row_problems(P, cloud, target, -1, available, "l2")
    heavy = P.copy()
    heavy[0, 0, :, 0] = 0.6
    with pytest.raises(ValueError, match="env 0: P columns must be probability vectors"):
        _row_problems(heavy, cloud, target, 3, available, "l2")
