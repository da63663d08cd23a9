"""Compiled kernels of the batched selection paths (numba; the library reference implementations are in
:mod:`~datagames_env.selection.submodular`).

=========================  ============================================================================================
Kernel                     What it does
=========================  ============================================================================================
``dense_greedy_picks``     greedy facility location for E independent problems on dense similarity blocks, in place
``squared_unit_distances``  squared distances of unit rows from their dot products, in place, per problem block
``unit_similarities``      kernel similarities from distances, in place, per problem block
``first_argmax_columns``   numpy's ``argmax`` over K of chosen columns ``dots[env, :, column]``, read row by row
=========================  ============================================================================================
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["dense_greedy_picks", "first_argmax_columns", "squared_unit_distances", "unit_similarities"]


@njit(cache=True)
def _gain(sims, covered, weights, e, i, m):  # pragma: no cover - compiled
    acc = np.float32(0.0)
    for j in range(m):
        residual = sims[e, i, j] - covered[e, j]
        if residual > np.float32(0.0):
            acc = acc + residual * weights[e, j]
    return acc


@njit(cache=True)
def dense_greedy_picks(sims, covered, weights, sizes, steps, picks):  # pragma: no cover - compiled
    """Greedy facility location per problem e, each on its own ``sizes[e]`` leading rows and columns.

    ``sims`` float32 (E, M, M): similarity of candidate i to ground entry j; ``covered`` float32 (E, M): each
    ground entry's coverage, raised in place by every pick; ``weights`` float32 (E, M), >= 0; ``steps`` int64
    (E,): at most this many picks; ``picks`` int64 (E, T) filled from the left, -1 after the last pick. Each step
    picks the first candidate of largest gain ``sum_j weights_j * max(sims_ij - covered_j, 0)`` among those not
    picked, and stops when no gain is positive. The gain is a float32 sum in column order: the arithmetic of a
    (M, M) @ (M, 1) product of the clamped residuals (measured bit for bit against ``torch.bmm``).

    Lazy and still exact: every term of that sum can only shrink as coverage rises, and float32 rounding is
    monotone, so a candidate's last computed gain bounds its gain now. After the first step (all gains), a step
    evaluates candidates by decreasing bound and stops at the first bound below the best gain found; the pick is
    the one the full scan makes (ties: the lower index).
    """
    zero = np.float32(0.0)
    for e in range(sims.shape[0]):
        m = sizes[e]
        picked = np.zeros(m, dtype=np.bool_)
        bound = np.empty(m, dtype=np.float32)
        for i in range(m):
            bound[i] = _gain(sims, covered, weights, e, i, m)
        for t in range(steps[e]):
            best = -1
            best_gain = zero
            if t == 0:
                for i in range(m):
                    if bound[i] > best_gain:
                        best, best_gain = i, bound[i]
            else:
                order = np.argsort(-bound, kind="mergesort")  # decreasing bound, ties by index
                for i in order:
                    if picked[i]:
                        continue
                    if bound[i] < best_gain or bound[i] <= zero:
                        break
                    gain = _gain(sims, covered, weights, e, i, m)
                    bound[i] = gain
                    if gain > best_gain or (gain == best_gain and gain > zero and i < best):
                        best, best_gain = i, gain
            if best < 0:
                break
            picks[e, t] = best
            picked[best] = True
            bound[best] = -np.inf
            for j in range(m):
                if sims[e, best, j] > covered[e, j]:
                    covered[e, j] = sims[e, best, j]


@njit(cache=True)
def squared_unit_distances(dots, sizes):  # pragma: no cover - compiled
    """``dots`` float32 (E, M, M) of unit rows -> squared distances ``max(2 - 2 a.b, 0)`` (0 on the diagonal: a
    row and itself), in place, on each problem's leading ``sizes[e]`` block; the rest becomes 0. The float32
    operations of torch's ``mul_(-2).add_(2).clamp_(0)`` one by one (IEEE: the same bits)."""
    zero, two, minus_two = np.float32(0.0), np.float32(2.0), np.float32(-2.0)
    for e in range(dots.shape[0]):
        m = sizes[e]
        for i in range(dots.shape[1]):
            for j in range(dots.shape[2]):
                if i >= m or j >= m or i == j:
                    dots[e, i, j] = zero
                else:
                    squared = dots[e, i, j] * minus_two + two
                    dots[e, i, j] = squared if squared > zero else zero


@njit(cache=True)
def unit_similarities(distances, sizes, cosine, scale):  # pragma: no cover - compiled
    """``distances`` float32 (E, M, M) -> kernel similarities ``1 - distance^2 / 2`` (``cosine``) or
    ``1 / (1 + scale * distance)``, floored at 0, in place on each problem's leading ``sizes[e]`` block: torch's
    ``square_().mul_(-0.5).add_(1)`` / ``mul_(scale).add_(1).reciprocal_()``, ``clamp_(0)`` one operation at a
    time. ``scale``: a float32. (The square root between the two kernels stays torch's: its vectorised float32
    sqrt is not always the correctly rounded one.)"""
    zero, one, minus_half = np.float32(0.0), np.float32(1.0), np.float32(-0.5)
    for e in range(distances.shape[0]):
        m = sizes[e]
        for i in range(m):
            for j in range(m):
                distance = distances[e, i, j]
                if cosine:
                    value = (distance * distance) * minus_half + one
                else:
                    value = one / (distance * scale + one)
                distances[e, i, j] = value if value > zero else zero


@njit(cache=True)
def first_argmax_columns(dots, env, column):  # pragma: no cover - compiled
    """``dots[env[p], :, column[p]].argmax()`` for every pair p (the first index of the largest value, as numpy's
    argmax; ``env`` sorted ascending): ``dots`` float32 (B, K, g). Gathering those columns reads K entries a row
    apart per pair (a cache miss each: 1.2 s of a 500-robot dual episode); here each env's rows are read in order,
    the pairs of that env side by side."""
    n = env.shape[0]
    out = np.zeros(n, dtype=np.int64)
    best = np.empty(n, dtype=dots.dtype)
    start = 0
    while start < n:
        stop = start
        e = env[start]
        while stop < n and env[stop] == e:
            stop += 1
        for p in range(start, stop):
            best[p] = dots[e, 0, column[p]]
        for k in range(1, dots.shape[1]):
            for p in range(start, stop):
                value = dots[e, k, column[p]]
                if value > best[p]:
                    best[p] = value
                    out[p] = k
        start = stop
    return out
