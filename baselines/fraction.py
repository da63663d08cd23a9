"""Greedy towards a fraction of the gap: the hand rule ``greedy-fraction:<f>`` and the action map of the learned
``gap-fraction`` module (``agents.modules.GapFractionModule``).

| policy               | reads                                                 | solves                                        |
|----------------------|-------------------------------------------------------|-----------------------------------------------|
| `greedy-fraction:<f>`| as `greedy`: its own estimated feasible matrix + availability, the public cloud and target counts | Problem 2 towards ``cloud + f (target - cloud)`` |

Robot i with fraction ``f_i`` in [0, 1] solves Greedy's problem (``baselines.solvers.solve_greedy``, same
Wolfe solver, same caps and budget cut) for the target ``cloud + f_i (target - cloud)``:

    min over a_i in S_i of || P_i a_i - f_i (target - cloud) ||_2

* ``f = 1`` is Greedy (the same compiled loop on the same numbers).
* ``f = 0`` asks for nothing: ``a = 0`` is the unique optimum wherever every available column of ``P_i`` has mass,
  so the robot uploads nothing (shares 0: the environment rounds an all-zero share vector to zero uploads).
* In between, each robot fills only part of the gap: N robots that each chase the whole gap (Greedy) overshoot
  the classes they all can reach. On ``default`` the rule with ``f = 0.35`` (scanned on seeds 100-119) scores about
  0.78x Greedy's final distance on seeds 300-319 (docs/learned.md).

``loss: kl`` configs go through cvxpy robot by robot (slow, but the same solver as Greedy's).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .policies import _SolverPolicy
from .solvers import (_CACHE, _columns, _max_iter, _min_norm_point, _needed_budget, _validate, _workspace,
                      solve_greedy)

__all__ = ["GreedyFractionPolicy", "greedy_fraction_shares", "solve_greedy_fraction"]

DEFAULT_FRACTION = 0.35  # the rule's best fraction on seeds 100-119 of `default` (docs/learned.md)


@njit(cache=_CACHE)
def _greedy_rows_native(P, PT, caps, budgets, gaps, max_iter):
    """``baselines.solvers._greedy_native`` with a gap and a budget per robot (row): each row's own problem."""
    n_rows, n_classes = caps.shape
    actions = np.zeros((n_rows, n_classes))
    ws = _workspace(1, n_classes)
    for i in range(n_rows):
        if budgets[i] > 0.0:
            _min_norm_point(P[i:i + 1], PT[i:i + 1], caps[i:i + 1], budgets[i], gaps[i], max_iter, ws,
                            actions[i:i + 1])
    return actions


def _check_fractions(fraction, shape: tuple) -> np.ndarray:
    f = np.broadcast_to(np.asarray(fraction, dtype=np.float64), shape)
    if not np.isfinite(f).all() or f.min(initial=0.0) < 0.0 or f.max(initial=0.0) > 1.0:
        bad = np.argwhere(~np.isfinite(f) | (f < 0.0) | (f > 1.0))[0]
        raise ValueError(f"fraction must be finite and in [0, 1]; at index {tuple(int(i) for i in bad)} it is "
                         f"{f[tuple(bad)]!r}")
    return f


def _row_problems(feasible, cloud, target, n_cache, available, loss):
    """Validated arrays of every env's problem: P (B*N, C, C), caps (B*N, C), budgets (B*N,), gaps d (B*N, C)."""
    b, n, c = feasible.shape[:3]
    Ps, caps, budgets, gaps = [], [], np.empty(b * n), np.empty((b * n, c))
    for e in range(b):
        P, cloud_e, target_e, budget, cap = _validate(feasible[e], cloud[e], target[e], n_cache,
                                                      None if available is None else available[e])
        if loss == "l2":  # the same cut as solve_greedy: exact, and valid for any f <= 1 (the gap only shrinks)
            budget, cap = _needed_budget(P, cloud_e, target_e, budget, cap)
        if not cap.any():
            budget = 0.0
        Ps.append(P)
        caps.append(cap)
        budgets[e * n:(e + 1) * n] = budget
        gaps[e * n:(e + 1) * n] = target_e - cloud_e
    return np.concatenate(Ps), np.concatenate(caps), budgets, gaps


def greedy_fraction_shares(feasible, cloud, target, fraction, n_cache, available=None, loss: str = "l2"
                           ) -> np.ndarray:
    """The environment's allocation action of every robot of B envs: ``feasible`` (B, N, C, C) estimated feasible
    matrices, ``cloud`` (B, C) and ``target`` (B, C) or (C,) counts, ``fraction`` (B, N) in [0, 1] (or
    broadcastable), ``available`` (B, N, C) samples per predicted class. Returns shares ``counts / n_cache``
    (B, N, C) in [0, 1], as ``greedy`` hands the environment."""
    feasible = np.asarray(feasible, dtype=np.float64)
    if feasible.ndim != 4 or feasible.shape[2] != feasible.shape[3]:
        raise ValueError(f"feasible must have shape (B, N, C, C), got {feasible.shape}")
    b, n, c = feasible.shape[:3]
    cloud = np.asarray(cloud, dtype=np.float64)
    target = np.broadcast_to(np.asarray(target, dtype=np.float64), (b, c)) if np.ndim(target) == 1 else \
        np.asarray(target, dtype=np.float64)
    if cloud.shape != (b, c) or target.shape != (b, c):
        raise ValueError(f"cloud and target must have shape (B, C) = ({b}, {c}), got {cloud.shape} and {target.shape}")
    if available is not None and np.shape(available) != (b, n, c):
        raise ValueError(f"available must have shape (B, N, C) = ({b}, {n}, {c}), got {np.shape(available)}")
    f = _check_fractions(fraction, (b, n)).reshape(b * n)
    loss = loss.lower()
    if loss == "l2":
        P, caps, budgets, gaps = _row_problems(feasible, cloud, target, n_cache, available, loss)
        counts = _greedy_rows_native(P, _columns(P), caps, budgets, gaps * f[:, None], _max_iter(c))
    else:  # cvxpy, robot by robot: Greedy's own solver with the robot's target
        counts = np.zeros((b * n, c))
        for e in range(b):
            for i in range(n):
                aim = cloud[e] + f[e * n + i] * (target[e] - cloud[e])
                counts[e * n + i] = solve_greedy(feasible[e, i:i + 1], cloud[e], np.maximum(aim, 0.0), n_cache,
                                                 None if available is None else available[e, i:i + 1], loss=loss)[0]
    return np.clip(counts.reshape(b, n, c) / max(float(n_cache), 1.0), 0.0, 1.0)


def solve_greedy_fraction(P, cloud, target, n_cache, fraction, available=None, loss: str = "l2") -> np.ndarray:
    """Counts (N, C) of N robots of one env, robot i Greedy towards ``cloud + fraction_i (target - cloud)``
    (``fraction`` a scalar or (N,)); arguments otherwise as :func:`baselines.solvers.solve_greedy`."""
    P = np.asarray(P, dtype=np.float64)
    shares = greedy_fraction_shares(P[None], np.asarray(cloud)[None], np.asarray(target)[None],
                                    np.broadcast_to(np.asarray(fraction, dtype=np.float64), P.shape[:1])[None],
                                    n_cache, None if available is None else np.asarray(available)[None], loss)
    return shares[0] * max(float(n_cache), 1.0)


class GreedyFractionPolicy(_SolverPolicy):
    """``greedy-fraction:<f>``: every robot runs Greedy towards ``cloud + f (target - cloud)`` (module docstring);
    ``greedy-fraction`` alone uses f = 0.35."""

    name = "greedy-fraction"

    def __init__(self, env, fraction: float | str = DEFAULT_FRACTION, loss: str | None = None) -> None:
        super().__init__(env, loss)
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise ValueError(f"greedy-fraction:<f>: f must be a number in [0, 1], got {fraction!r}") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"greedy-fraction:<f>: f must be in [0, 1], got {value}")
        self.fraction = value
        self.name = f"greedy-fraction:{value:g}"

    def _solve(self, observations, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        self.last_stats = {"messages": 0, "sweeps": 0}
        return solve_greedy_fraction(feasible, cloud, target, self.n_cache, self.fraction, available, self.loss)
