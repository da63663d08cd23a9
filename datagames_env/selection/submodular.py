"""Facility-location selection for DUAL and Fleet Active Learning, with the cloud set counted as covered.

The objective over a *ground* set G of embeddings, for a selection S of candidates::

    f(S) = sum_{g in G} max(coverage0[g], max_{s in S} sim(g, s))

``coverage0[g]`` is the best similarity of g to what the cloud already holds (0 without a cloud), so the cloud
set counts as already covered and f(S) - f({}) is a normalised, monotone submodular function: greedy reaches at
least (1 - 1/e) of the optimum under a cardinality constraint (Nemhauser et al. 1978) and 1/2 under a partition
matroid (the per-robot caps of the centralized variant). The *coverage vector* ``coverage[g]`` (best similarity of
g to the cloud + selected set) is the whole state: the marginal gain of candidate c is
``sum_g max(0, sim(g, c) - coverage[g])``, and selecting c updates ``coverage = max(coverage, sim(:, c))``.

=============================  ===================================================================================
Name                           What it is
=============================  ===================================================================================
``similarity``                 kernel on embeddings, torch float32: ``inverse_distance`` 1 / (1 + scale * ||a - b||)
                               (the Fleet-AL kernel, scale 0.01) or ``cosine`` (on L2-normalised rows)
``max_similarity``             coverage vector of a ground set by a reference set, computed in row blocks
``FacilityLocation``           ground set + candidates + kernel; blocked marginal gains
``greedy``                     plain greedy (reference): all gains re-evaluated every iteration
``lazy_greedy``                Minoux's lazy greedy with a heap of stale upper bounds; same picks as ``greedy``
``stochastic_greedy``          Mirzasoleiman et al. 2015: gains of a random sample per iteration (optional, faster)
``fleet_independent``          Fleet-AL "distributed": each robot maximises f over its own data
``fleet_interactive``          robots in turn; each folds the earlier robots' picks into its coverage vector
``fleet_centralized``          one greedy over all robots' data with at most ``k`` picks per robot (privileged)
``fleet_objective``            f over the union of all robots' ground sets (the fleet-level score of a round)
``dense_objective_reference``  numpy float64, dense, brute-force helpers: the tests' reference
=============================  ===================================================================================

Memory bound. No function here builds a dense similarity matrix over all fleet data (the public Fleet-AL code
builds a float64 N x N matrix: 4.6 GB at 24k points). Similarities are computed for blocks of at most
``block_rows`` candidate (or ground) rows against the other set: a float32 block plus its float64 work copy,
``12 * block_rows * n_ground`` bytes, kept under ``max_block_bytes`` (default 64 MiB) by choosing
``block_rows = max(1, max_block_bytes // (12 * n_ground))``. Peak extra memory is therefore about
``max_block_bytes + O((n_ground + n_candidates) * (E + 3) * 8)`` bytes, whatever the fleet size.

Exactness. Distances use ``torch.cdist(..., compute_mode="donot_use_mm_for_euclid_dist")``: every entry is
computed on its own, so the similarity of a pair does not depend on which block it was computed in (the matmul
form ``|a|^2 + |b|^2 - 2ab`` differs in the last bits between a 1-row and a 64-row call). Gains are row sums in
float64 numpy. Hence ``lazy_greedy`` re-evaluating one candidate gets bit-for-bit the gain ``greedy`` computes
in a block, and both select the same items in the same order (ties: lowest candidate index).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

Kernel = Literal["inverse_distance", "cosine"]
KERNELS: tuple[str, ...] = ("inverse_distance", "cosine")
DEFAULT_SCALE = 0.01  # Fleet-AL's kernel 1 / (1 + 0.01 * euclidean distance)
DEFAULT_MAX_BLOCK_BYTES = 64 * 2**20
_BYTES_PER_BLOCK_ENTRY = 12  # float32 similarity + float64 work copy

__all__ = [
    "DEFAULT_MAX_BLOCK_BYTES",
    "DEFAULT_SCALE",
    "KERNELS",
    "FacilityLocation",
    "FleetSelection",
    "Selection",
    "block_rows_for",
    "brute_force_best",
    "dense_objective_reference",
    "dense_similarity_reference",
    "fleet_centralized",
    "fleet_independent",
    "fleet_interactive",
    "fleet_objective",
    "greedy",
    "lazy_greedy",
    "max_similarity",
    "similarity",
    "stochastic_greedy",
]


# ----------------------------------------------------------------------------------------------- kernel


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32) if not isinstance(x, torch.Tensor) else x,
                        dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-d (n, embedding_dim) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf (shape {tuple(t.shape)})")
    return t.contiguous()


def _check_kernel(kernel: str, scale: float) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {list(KERNELS)}, got {kernel!r}")
    if not scale > 0:
        raise ValueError(f"kernel scale must be > 0, got {scale}")


def _unit(t: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows; an all-zero row becomes the uniform unit vector (as perception's embeddings do)."""
    norms = t.norm(dim=1, keepdim=True)
    uniform = torch.full_like(t, 1.0 / math.sqrt(max(t.shape[1], 1)))
    return torch.where(norms > 1e-12, t / norms.clamp_min(1e-12), uniform)


def similarity(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, kernel: Kernel = "inverse_distance",
               scale: float = DEFAULT_SCALE) -> torch.Tensor:
    """Similarities ``(len(a), len(b))`` float32; each entry computed on its own (see the module docstring).

    ``inverse_distance``: ``1 / (1 + scale * ||a - b||)`` in (0, 1]. ``cosine``: rows are L2-normalised first,
    then ``1 - ||a - b||^2 / 2`` (= the cosine) in [-1, 1]. Callers bound memory by passing blocks of ``a``.
    """
    _check_kernel(kernel, scale)
    a, b = _as_tensor(a, "a"), _as_tensor(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding widths differ: a has shape {tuple(a.shape)}, b has shape {tuple(b.shape)}")
    if kernel == "cosine":
        a, b = _unit(a), _unit(b)
    distance = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    # in place: no temporaries beside the block itself (the memory bound counts 4 bytes per entry here)
    if kernel == "cosine":
        return distance.square_().mul_(-0.5).add_(1.0)
    return distance.mul_(scale).add_(1.0).reciprocal_()


def block_rows_for(n_columns: int, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> int:
    """Rows per similarity block so that ``12 * rows * n_columns`` bytes stay under ``max_block_bytes``."""
    if max_block_bytes < 1:
        raise ValueError(f"max_block_bytes must be >= 1, got {max_block_bytes}")
    return max(1, int(max_block_bytes) // (_BYTES_PER_BLOCK_ENTRY * max(1, int(n_columns))))


def max_similarity(ground: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor,
                   kernel: Kernel = "inverse_distance", scale: float = DEFAULT_SCALE,
                   max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES, floor: float = 0.0) -> np.ndarray:
    """Coverage vector: for each ground row its best similarity to ``reference`` (``floor`` if that is empty or
    lower). float64 ``(len(ground),)``; blocks of ground rows, memory ``12 * block * len(reference)`` bytes."""
    ground = _as_tensor(ground, "ground")
    reference = _as_tensor(reference, "reference") if len(reference) else None
    out = np.full(len(ground), float(floor), dtype=np.float64)
    if reference is None or len(ground) == 0:
        return out
    _check_kernel(kernel, scale)
    if ground.shape[1] != reference.shape[1]:
        raise ValueError(f"embedding widths differ: ground has shape {tuple(ground.shape)}, reference has shape "
                         f"{tuple(reference.shape)}")
    if kernel == "cosine":
        ground, reference = _unit(ground), _unit(reference)
    step = block_rows_for(len(reference), max_block_bytes)
    for start in range(0, len(ground), step):
        nearest = _nearest_distance(ground[start:start + step], reference)
        # the kernels decrease with the distance, so the best similarity is the kernel of the nearest distance
        # (the same float operations as `similarity`, on one entry per row)
        best = (nearest.square_().mul_(-0.5).add_(1.0) if kernel == "cosine"
                else nearest.mul_(scale).add_(1.0).reciprocal_())
        out[start:start + step] = np.maximum(out[start:start + step], best.double().numpy())
    return out


def _nearest_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of ``a``, its distance to the nearest row of ``b``, bit-for-bit what the exact (entry by entry)
    ``torch.cdist`` gives, at about the cost of a matrix product: the matmul form ``|a|^2 + |b|^2 - 2ab`` finds the
    few candidate columns within its rounding error of each row's minimum, and only those are computed exactly."""
    approx = torch.addmm((a * a).sum(dim=1, keepdim=True), a, b.T, alpha=-2.0).add_((b * b).sum(dim=1))
    # bound of the float32 rounding of both forms, with a wide margin (entries are sums of E products)
    scale = float((a * a).sum(dim=1).max()) + float((b * b).sum(dim=1).max())
    tolerance = 64 * a.shape[1] * torch.finfo(torch.float32).eps * scale + 1e-30
    rows, columns = torch.nonzero(approx <= approx.min(dim=1, keepdim=True).values + tolerance, as_tuple=True)
    # one exact entry per candidate pair (a batch of 1 x 1 distances: the same per-entry kernel as a full cdist)
    exact = torch.cdist(a[rows].unsqueeze(1), b[columns].unsqueeze(1), compute_mode="donot_use_mm_for_euclid_dist")
    nearest = torch.full((len(a),), float("inf"))
    return nearest.scatter_reduce_(0, rows, exact.view(-1), reduce="amin")


# ------------------------------------------------------------------------------------- facility location


@dataclass
class Selection:
    """Result of one greedy run: picks in order, each pick's marginal gain, the final coverage vector, the
    objective ``f(S) = coverage.sum()`` (weighted if the ground is), its gain over the empty selection, and how
    many gains were evaluated."""

    indices: np.ndarray
    gains: np.ndarray
    coverage: np.ndarray
    value: float
    gain: float
    evaluations: int


class FacilityLocation:
    """``f(S) = sum_g max(coverage0[g], max_{s in S} sim(g, s))`` for candidates against a ground set.

    ``ground`` ``(n_ground, E)`` and ``candidates`` ``(n_candidates, E)`` embeddings (the same array for the usual
    "select from what you see"); ``initial_coverage`` ``(n_ground,)``: best similarity of each ground point to the
    cloud set (default 0: nothing covered, and negative cosine similarities never count). ``weights``
    ``(n_ground,)``, optional: ground point g counts ``weights[g]`` times, ``f(S) = sum_g w_g max(...)`` (a ground
    multiset stored once per distinct point: the same objective at the cost of the distinct points).
    """

    def __init__(self, ground: np.ndarray | torch.Tensor, candidates: np.ndarray | torch.Tensor | None = None,
                 initial_coverage: np.ndarray | None = None, kernel: Kernel = "inverse_distance",
                 scale: float = DEFAULT_SCALE, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
                 weights: np.ndarray | None = None) -> None:
        _check_kernel(kernel, scale)
        self.ground = _as_tensor(ground, "ground")
        self.candidates = self.ground if candidates is None else _as_tensor(candidates, "candidates")
        if self.candidates.shape[1] != self.ground.shape[1]:
            raise ValueError(f"candidates have shape {tuple(self.candidates.shape)} but ground has "
                             f"{tuple(self.ground.shape)}: embedding widths must match")
        n_ground = len(self.ground)
        if initial_coverage is None:
            self.initial_coverage = np.zeros(n_ground, dtype=np.float64)
        else:
            cov = np.asarray(initial_coverage, dtype=np.float64)
            if cov.shape != (n_ground,):
                raise ValueError(f"initial_coverage has shape {cov.shape}, expected ({n_ground},) (one per ground row)")
            if not np.isfinite(cov).all():
                raise ValueError("initial_coverage contains NaN or inf")
            self.initial_coverage = cov.copy()
        self.weights = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            if w.shape != (n_ground,) or not np.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"weights must be ({n_ground},) finite numbers >= 0 (one per ground row), got shape "
                                 f"{w.shape}")
            self.weights = w
        self.kernel = kernel
        self.scale = float(scale)
        self.block_rows = block_rows_for(n_ground, max_block_bytes)
        self.evaluations = 0

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    def candidate_similarities(self, idx: np.ndarray) -> np.ndarray:
        """float32 ``(len(idx), n_ground)``; callers pass at most ``block_rows`` indices."""
        return similarity(self.candidates[torch.as_tensor(idx, dtype=torch.long)], self.ground,
                          self.kernel, self.scale).numpy()

    def gains(self, coverage: np.ndarray, idx: np.ndarray | Sequence[int] | None = None) -> np.ndarray:
        """Marginal gains ``sum_g max(0, sim(g, c) - coverage[g])`` of candidates ``idx`` (all if None), float64.

        Computed ``block_rows`` candidates at a time; the gain of a candidate is bit-for-bit the same whichever
        block it is computed in (per-entry distances, per-row float64 sums)."""
        idx = np.arange(self.n_candidates) if idx is None else np.asarray(idx, dtype=np.int64)
        out = np.empty(len(idx), dtype=np.float64)
        for start in range(0, len(idx), self.block_rows):
            chunk = idx[start:start + self.block_rows]
            work = self.candidate_similarities(chunk).astype(np.float64)
            work -= coverage
            np.maximum(work, 0.0, out=work)
            if self.weights is not None:
                work *= self.weights
            out[start:start + len(chunk)] = work.sum(axis=1)
            del work  # free before the next block is allocated: peak stays one block
        self.evaluations += len(idx)
        return out

    def add(self, coverage: np.ndarray, candidate: int) -> np.ndarray:
        """The coverage vector after adding one candidate (a new array)."""
        row = self.candidate_similarities(np.array([candidate]))[0].astype(np.float64)
        return np.maximum(coverage, row)

    def value(self, selected: Sequence[int] | np.ndarray) -> float:
        """f(S) for a selection (computed from scratch, in blocks)."""
        coverage = self.initial_coverage.copy()
        selected = np.asarray(selected, dtype=np.int64)
        for start in range(0, len(selected), self.block_rows):
            block = self.candidate_similarities(selected[start:start + self.block_rows]).astype(np.float64)
            np.maximum(coverage, block.max(axis=0), out=coverage)
        return self.total(coverage)

    def total(self, coverage: np.ndarray) -> float:
        """f for a coverage vector: its (weighted) sum."""
        return float(coverage.sum() if self.weights is None else (coverage * self.weights).sum())


def _caps(n_candidates: int, groups: np.ndarray | None, caps: np.ndarray | int | None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Group id per candidate and the cap per group (one group with an infinite cap without a matroid)."""
    if groups is None:
        return np.zeros(n_candidates, dtype=np.int64), np.array([np.iinfo(np.int64).max], dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.shape != (n_candidates,) or (n_candidates and groups.min() < 0):
        raise ValueError(f"groups must be ({n_candidates},) non-negative ints (one per candidate), got shape "
                         f"{groups.shape}")
    n_groups = int(groups.max()) + 1 if n_candidates else 0
    if caps is None:
        raise ValueError("groups given without caps: pass the most picks per group (an int or one per group)")
    caps = np.full(n_groups, int(caps), dtype=np.int64) if np.isscalar(caps) else np.asarray(caps, dtype=np.int64)
    if caps.shape != (n_groups,) or (caps < 0).any():
        raise ValueError(f"caps must be a non-negative int or ({n_groups},) ints (one per group), got {caps}")
    return groups, caps


def _check_k(k: int) -> int:
    if int(k) != k or k < 0:
        raise ValueError(f"k (how many to select) must be a non-negative integer, got {k}")
    return int(k)


def _result(fl: FacilityLocation, picks: list[int], gains: list[float], coverage: np.ndarray,
            evaluations: int) -> Selection:
    value = fl.total(coverage)
    return Selection(np.asarray(picks, dtype=np.int64), np.asarray(gains, dtype=np.float64), coverage, value,
                     value - fl.total(fl.initial_coverage), evaluations)


def greedy(fl: FacilityLocation, k: int, groups: np.ndarray | None = None, caps: np.ndarray | int | None = None
           ) -> Selection:
    """Plain greedy (the reference): every iteration evaluates the gain of every eligible candidate and takes
    the largest (ties: lowest index). Stops after ``k`` picks or when no candidate is eligible. ``groups`` +
    ``caps``: at most ``caps[g]`` picks from group g (a partition matroid). O(k * n_candidates * n_ground)."""
    k = _check_k(k)
    group_of, cap = _caps(fl.n_candidates, groups, caps)
    taken = np.zeros(len(cap), dtype=np.int64)
    chosen = np.zeros(fl.n_candidates, dtype=bool)
    coverage = fl.initial_coverage.copy()
    picks, gains = [], []
    start_evaluations = fl.evaluations
    while len(picks) < k:
        eligible = np.flatnonzero(~chosen & (taken[group_of] < cap[group_of]))
        if len(eligible) == 0:
            break
        g = fl.gains(coverage, eligible)
        best = int(np.argmax(g))  # first maximum: the lowest index among ties
        c = int(eligible[best])
        picks.append(c)
        gains.append(float(g[best]))
        chosen[c] = True
        taken[group_of[c]] += 1
        coverage = fl.add(coverage, c)
    return _result(fl, picks, gains, coverage, fl.evaluations - start_evaluations)


def lazy_greedy(fl: FacilityLocation, k: int, groups: np.ndarray | None = None, caps: np.ndarray | int | None = None,
                refresh_batch: int = 16) -> Selection:
    """Lazy greedy (Minoux 1978): a heap of upper bounds on the gains (submodularity: gains only shrink).

    Pop the best bound; if it was computed against the current coverage it is the true maximum, else
    re-evaluate it and push it back. Heap keys ``(-gain, index)`` make ties go to the lowest index, so the
    picks equal :func:`greedy`'s exactly (same gains bit for bit, see the module docstring). A stale top is
    re-evaluated together with up to ``refresh_batch - 1`` more stale bounds from the top of the heap: one
    torch call instead of many (any mix of fresh values and upper bounds keeps the rule exact)."""
    k = _check_k(k)
    group_of, cap = _caps(fl.n_candidates, groups, caps)
    taken = np.zeros(len(cap), dtype=np.int64)
    coverage = fl.initial_coverage.copy()
    start_evaluations = fl.evaluations
    eligible = np.flatnonzero(cap[group_of] > 0)
    initial = fl.gains(coverage, eligible)
    # (negated bound, candidate, iteration the bound was computed in)
    heap = [(-float(g), int(c), 0) for g, c in zip(initial, eligible)]
    heapq.heapify(heap)
    picks, gains = [], []
    while len(picks) < k and heap:
        neg_bound, c, fresh_at = heapq.heappop(heap)
        if taken[group_of[c]] >= cap[group_of[c]]:
            continue  # its robot is full: never eligible again
        if fresh_at == len(picks):
            picks.append(c)
            gains.append(-neg_bound)
            taken[group_of[c]] += 1
            coverage = fl.add(coverage, c)
            continue
        stale = [c]
        while heap and len(stale) < refresh_batch and heap[0][2] != len(picks):
            other = heapq.heappop(heap)[1]
            if taken[group_of[other]] < cap[group_of[other]]:  # full robots' candidates are dropped, not refreshed
                stale.append(other)
        for value, candidate in zip(fl.gains(coverage, np.asarray(stale)), stale):
            heapq.heappush(heap, (-float(value), candidate, len(picks)))
    return _result(fl, picks, gains, coverage, fl.evaluations - start_evaluations)


def stochastic_greedy(fl: FacilityLocation, k: int, epsilon: float = 0.1, rng: np.random.Generator | None = None
                      ) -> Selection:
    """Stochastic greedy (Mirzasoleiman et al. 2015): each iteration evaluates a random sample of
    ``ceil(n / k * ln(1 / epsilon))`` remaining candidates; (1 - 1/e - epsilon) in expectation. No caps."""
    k = _check_k(k)
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be in (0, 1), got {epsilon}")
    rng = np.random.default_rng() if rng is None else rng
    n = fl.n_candidates
    sample_size = max(1, math.ceil(n / max(k, 1) * math.log(1.0 / epsilon)))
    chosen = np.zeros(n, dtype=bool)
    coverage = fl.initial_coverage.copy()
    picks, gains = [], []
    start_evaluations = fl.evaluations
    while len(picks) < min(k, n):
        remaining = np.flatnonzero(~chosen)
        sample = np.sort(rng.choice(remaining, size=min(sample_size, len(remaining)), replace=False))
        g = fl.gains(coverage, sample)
        best = int(np.argmax(g))
        c = int(sample[best])
        picks.append(c)
        gains.append(float(g[best]))
        chosen[c] = True
        coverage = fl.add(coverage, c)
    return _result(fl, picks, gains, coverage, fl.evaluations - start_evaluations)


# ------------------------------------------------------------------------------------------ fleet variants


@dataclass
class FleetSelection:
    """Per-robot picks (indices into that robot's samples), each robot's final coverage vector, and the
    messages exchanged (embeddings sent between robots; 0 for independent and centralized)."""

    selected: list[np.ndarray]
    coverages: list[np.ndarray]
    messages: int = 0
    evaluations: int = 0
    extra: dict = field(default_factory=dict)


def _robot_inputs(embeddings: Sequence[np.ndarray], initial_coverages: Sequence[np.ndarray] | None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for i, emb in enumerate(embeddings):
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2:
            raise ValueError(f"robot_{i}: embeddings must be (n_samples, E), got shape {emb.shape}")
        cov = np.zeros(len(emb)) if initial_coverages is None else np.asarray(initial_coverages[i], np.float64)
        if cov.shape != (len(emb),):
            raise ValueError(f"robot_{i}: initial coverage has shape {cov.shape}, expected ({len(emb)},)")
        out.append((emb, cov))
    if len({e.shape[1] for e, _ in out}) > 1:
        raise ValueError(f"robots' embedding widths differ: {[e.shape for e, _ in out]}")
    return out


def _select(fl: FacilityLocation, k: int, lazy: bool, **kw) -> Selection:
    return (lazy_greedy if lazy else greedy)(fl, k, **kw)


def fleet_independent(embeddings: Sequence[np.ndarray], k: int, initial_coverages: Sequence[np.ndarray] | None = None,
                      kernel: Kernel = "inverse_distance", scale: float = DEFAULT_SCALE, lazy: bool = True,
                      max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> FleetSelection:
    """Fleet-AL "distributed" / DUAL stage 1: robot i maximises f over its own samples (ground = candidates =
    its round), its coverage started from the cloud set (``initial_coverages[i]``); no communication."""
    robots = _robot_inputs(embeddings, initial_coverages)
    selected, coverages, evaluations = [], [], 0
    for emb, cov in robots:
        fl = FacilityLocation(emb, None, cov, kernel, scale, max_block_bytes)
        result = _select(fl, k, lazy)
        selected.append(result.indices)
        coverages.append(result.coverage)
        evaluations += result.evaluations
    return FleetSelection(selected, coverages, 0, evaluations)


def fleet_interactive(embeddings: Sequence[np.ndarray], k: int, initial_coverages: Sequence[np.ndarray] | None = None,
                      kernel: Kernel = "inverse_distance", scale: float = DEFAULT_SCALE, lazy: bool = True,
                      order: Sequence[int] | None = None, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
                      ) -> FleetSelection:
    """Fleet-AL "interactive" (sequential): robots choose in ``order`` (default 0..N-1). Each robot receives
    the embeddings picked by the robots before it (the growing cloud set; ``k`` rows per earlier robot),
    folds them into its own coverage vector (``max(coverage, sim(., picked))``), then runs greedy. Samples
    close to what an earlier robot already sends are worth less, so the fleet avoids duplicate uploads."""
    robots = _robot_inputs(embeddings, initial_coverages)
    order = list(range(len(robots))) if order is None else [int(i) for i in order]
    if sorted(order) != list(range(len(robots))):
        raise ValueError(f"order must be a permutation of 0..{len(robots) - 1}, got {order}")
    selected: list[np.ndarray] = [np.zeros(0, np.int64)] * len(robots)
    coverages: list[np.ndarray] = [np.zeros(0)] * len(robots)
    sent: list[np.ndarray] = []
    messages = evaluations = 0
    for i in order:
        emb, cov = robots[i]
        if sent:
            received = np.concatenate(sent)
            messages += len(received)
            cov = np.maximum(cov, max_similarity(emb, received, kernel, scale, max_block_bytes))
        fl = FacilityLocation(emb, None, cov, kernel, scale, max_block_bytes)
        result = _select(fl, k, lazy)
        selected[i], coverages[i] = result.indices, result.coverage
        evaluations += result.evaluations
        sent.append(emb[result.indices])
    return FleetSelection(selected, coverages, messages, evaluations)


def fleet_centralized(embeddings: Sequence[np.ndarray], k: int, initial_coverages: Sequence[np.ndarray] | None = None,
                      kernel: Kernel = "inverse_distance", scale: float = DEFAULT_SCALE, lazy: bool = True,
                      max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> FleetSelection:
    """Fleet-AL "centralized": one greedy over the union of all robots' samples (ground = candidates = the
    fleet's round), at most ``k`` picks per robot (partition matroid: greedy is a 1/2-approximation).
    Privileged: it needs every robot's raw data in one place. Memory: blocks of the union, never dense."""
    robots = _robot_inputs(embeddings, initial_coverages)
    sizes = [len(e) for e, _ in robots]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ground = np.concatenate([e for e, _ in robots]) if robots else np.zeros((0, 1), np.float32)
    cov = np.concatenate([c for _, c in robots]) if robots else np.zeros(0)
    groups = np.repeat(np.arange(len(robots)), sizes)
    fl = FacilityLocation(ground, None, cov, kernel, scale, max_block_bytes)
    result = _select(fl, k * len(robots), lazy, groups=groups, caps=np.full(len(robots), k))
    selected = [np.sort(result.indices[groups[result.indices] == i] - offsets[i]) for i in range(len(robots))]
    coverages = [result.coverage[offsets[i]:offsets[i + 1]] for i in range(len(robots))]
    return FleetSelection(selected, coverages, 0, result.evaluations, {"order": result.indices})


def fleet_objective(embeddings: Sequence[np.ndarray], selected: Sequence[np.ndarray],
                    initial_coverages: Sequence[np.ndarray] | None = None, kernel: Kernel = "inverse_distance",
                    scale: float = DEFAULT_SCALE, max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES) -> dict[str, float]:
    """f over the union of all robots' ground sets for the union of their picks: ``value`` (sum),
    ``initial`` (cloud only), ``gain`` = value - initial, ``mean_coverage`` = value / n_ground."""
    robots = _robot_inputs(embeddings, initial_coverages)
    ground = np.concatenate([e for e, _ in robots])
    cov0 = np.concatenate([c for _, c in robots])
    picked = np.concatenate([robots[i][0][np.asarray(s, dtype=np.int64)] for i, s in enumerate(selected)])
    covered = np.maximum(cov0, max_similarity(ground, picked, kernel, scale, max_block_bytes)) if len(picked) else cov0
    value, initial = float(covered.sum()), float(cov0.sum())
    return {"value": value, "initial": initial, "gain": value - initial, "mean_coverage": value / max(len(ground), 1)}


# ------------------------------------------------------------------------------------- dense references


def dense_similarity_reference(a: np.ndarray, b: np.ndarray, kernel: Kernel = "inverse_distance",
                               scale: float = DEFAULT_SCALE) -> np.ndarray:
    """numpy float64, dense: the tests' reference for :func:`similarity` (small inputs only)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if kernel == "cosine":
        def unit(x: np.ndarray) -> np.ndarray:
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            return np.where(norms > 1e-12, x / np.maximum(norms, 1e-12), 1.0 / math.sqrt(x.shape[1]))
        return unit(a) @ unit(b).T
    distance = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))
    return 1.0 / (1.0 + scale * distance)


def dense_objective_reference(similarities: np.ndarray, selected: Sequence[int],
                              initial_coverage: np.ndarray | None = None) -> float:
    """f(S) from a dense ``(n_candidates, n_ground)`` similarity matrix (reference)."""
    sims = np.asarray(similarities, np.float64)
    cov = np.zeros(sims.shape[1]) if initial_coverage is None else np.asarray(initial_coverage, np.float64)
    sel = list(selected)
    return float(np.maximum(cov, sims[sel].max(axis=0)).sum()) if sel else float(cov.sum())


def brute_force_best(similarities: np.ndarray, k: int, initial_coverage: np.ndarray | None = None,
                     groups: np.ndarray | None = None, caps: np.ndarray | None = None) -> tuple[float, tuple]:
    """The optimum over all subsets of size <= k (respecting caps) by enumeration: tiny instances only."""
    n = len(similarities)
    best, best_set = dense_objective_reference(similarities, [], initial_coverage), ()
    for size in range(1, min(k, n) + 1):
        for subset in itertools.combinations(range(n), size):
            if groups is not None:
                counts = np.bincount(np.asarray(groups)[list(subset)], minlength=len(caps))
                if (counts > caps).any():
                    continue
            value = dense_objective_reference(similarities, subset, initial_coverage)
            if value > best:
                best, best_set = value, subset
    return best, best_set
