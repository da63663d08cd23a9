"""The action map of ``--model sweep-fraction`` (learned communication, ``datagames_env.faces.comm``): Greedy towards a
fraction of the gap (``baselines.fraction``), then Gauss-Seidel sweeps of best responses towards that fraction of
the gap the others leave (Interactive's, capped). ``datagames_env.faces.comm.interactive_fraction_shares`` checks the
sweep count against its protocol and calls :func:`interactive_fraction_shares` by entry point (the package imports
no baseline)."""

from __future__ import annotations

import numpy as np

from .fraction import _batch_arrays, _check_available, _check_fractions, _greedy_rows_native, _row_problems
from .solvers import _columns, _max_iter

__all__ = ["interactive_fraction_shares"]


def interactive_fraction_shares(feasible, cloud, target, fraction, n_cache, available, sweeps: int) -> np.ndarray:
    """Greedy towards a fraction of the gap, then ``sweeps`` Gauss-Seidel sweeps of best responses towards the
    fraction of the gap the others leave: the action map of ``--model sweep-fraction``
    (``datagames_env.faces.comm.interactive_fraction_shares``, which checks ``sweeps`` against its protocol's limit
    and calls this by entry point). ``feasible`` (B, N, C, C) estimated feasible matrices, ``cloud`` (B, C),
    ``target`` (B, C) or (C,), ``fraction`` (B, N) in [0, 1], ``available`` (B, N, C). Returns shares
    ``counts / n_cache`` (B, N, C) in [0, 1]. L2 loss only (Wolfe, compiled)."""
    if int(sweeps) != sweeps or sweeps < 0:
        raise ValueError(f"sweeps must be a non-negative integer, got {sweeps!r}")
    sweeps = int(sweeps)
    feasible, cloud, target, (b, n, c) = _batch_arrays(feasible, cloud, target)
    _check_available(available, (b, n, c), required=True)
    f = _check_fractions(fraction, (b, n))
    P_rows, cap_rows, budget_rows, gap_rows = _row_problems(feasible, cloud, target, n_cache, available, "l2",
                                                            interactive=True)  # Interactive's budget cut
    PT_rows = _columns(P_rows)
    max_iter = _max_iter(c)
    counts = _greedy_rows_native(P_rows, PT_rows, cap_rows, budget_rows, gap_rows * f.reshape(b * n, 1),
                                 max_iter).reshape(b, n, c)
    P, PT = P_rows.reshape(b, n, c, c), PT_rows.reshape(b, n, c, c)
    caps, budgets, d = cap_rows.reshape(b, n, c), budget_rows.reshape(b, n), target - cloud
    contributions = np.einsum("bnyj,bnj->bny", P, counts)
    for _ in range(sweeps):
        for i in range(n):  # robot i of every env at once
            others = contributions.sum(axis=1) - contributions[:, i]
            counts[:, i] = _greedy_rows_native(P[:, i], PT[:, i], caps[:, i], budgets[:, i],
                                               (d - others) * f[:, i:i + 1], max_iter)
            contributions[:, i] = np.einsum("byj,bj->by", P[:, i], counts[:, i])
    return np.clip(counts / max(float(n_cache), 1.0), 0.0, 1.0)
