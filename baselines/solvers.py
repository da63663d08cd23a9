"""Solvers of the Data Games baselines: Oracle (Problem 1), Greedy (Problem 2), Interactive (Problem 3 /
Algorithm 1), the Lemma-6 lower bound, and the loss itself.

The problem (``papers/data-games.txt``, Section 3; GUIDE section 3)
------------------------------------------------------------------
N robots, C classes. Robot i has a feasible data matrix ``P_i`` (C x C): column j is ``p(y | yhat = j)``, a
probability vector, or all zeros when the robot cannot produce predicted class j. Its action ``a_i`` in R^C is
how many samples of each *predicted* class it uploads; they add the expected true counts ``v_i = P_i a_i`` to the
cloud. The feasible set of robot i is the capped simplex

    S_i = { a in R^C : 0 <= a <= u_i,  1'a <= n_cache },
    u_ij = min(available_ij, n_cache)   (0 where column j of P_i has no mass, sum < 1e-12),

and with ``d = target - cloud`` and the cloud after the round ``x = cloud + sum_i P_i a_i``:

    L2 loss    L(a) = || x - target ||_2 = || sum_i P_i a_i - d ||_2
    KL loss    L(a) = sum_y kl_div(target_y, x_y),   kl_div(t, x) = t log(t / x) - t + x   (0 log 0 = 0)

The KL option is the *generalized* KL divergence of counts (cvxpy's ``kl_div``): jointly convex, >= 0, zero
iff x = target, and it charges overshoot (x_y > target_y) too. It is infinite when target_y > 0 and x_y = 0;
:func:`solve_oracle` raises ValueError when some such class cannot be reached by any feasible action.

    Oracle       (Problem 1)  min over (a_1..a_N) in S_1 x ... x S_N of L          -- joint, privileged
    Greedy       (Problem 2)  each robot alone: min over a_i in S_i of L(cloud + P_i a_i)
    Interactive  (Problem 3)  Algorithm 1: start at Greedy, then sweep i = 1..N, robot i best-responds
                              min over a_i in S_i of L(cloud + sum_{k != i} P_k a_k + P_i a_i)

Backends
--------
``"cvxpy"`` is the reference (L2 and KL; CLARABEL by default). ``"native"`` (L2 only) is exact and compiled:

* The L2 problem is a Euclidean projection. With ``H = sum_i P_i S_i`` (a Minkowski sum of polytopes in R^C),
  Oracle = the point of H nearest to d. We run **Wolfe's minimum-norm-point algorithm** on ``H - d``: it
  keeps a "corral" of at most C + 1 affinely independent vertices of H, and its only contact with the N*C
  variables is the linear minimisation oracle (LMO) over H, which splits by robot into fractional knapsacks:
  robot i takes the predicted classes with the most negative ``(P_i' x)_j`` up to its caps until its budget is
  spent. An iteration costs O(N C^2) plus O(C^3) for the corral's affine minimiser (a small Householder QR,
  updated when a point enters). Wolfe terminates finitely with the exact projection (up to round-off): the
  Frank-Wolfe gap ``x'(x - q)`` it stops on bounds ``L^2/2 - L*^2/2``. Actions are the corral's convex
  combination of LMO vertices, so they are feasible by construction.
* Iteration counts (C = 10, benchmarks/bench_solvers.py): ~11 when the fleet can reach the half-space bound
  (typical for large N), 50-100 at N = 20 when many robots must split their budget between two classes (each
  corral point is a joint vertex, so Wolfe pays for that degeneracy with a slow linear tail), ~300 on a hard
  N = 10,000 instance. Measured: N = 10,000 in 30-450 ms on one core.
* Why not projected gradient (FISTA)? The Hessian ``A'A`` (A = [P_1 ... P_N]) has rank <= C and a norm that
  grows with N: first-order methods converge slowly on exactly these degenerate faces and need an
  active-set polish to reach 1e-6 relative; Wolfe is exact and needs no step size.
* Greedy and every Interactive best response are the N = 1 case of the same routine (3-7 iterations); all
  robots' problems run in one compiled loop (no Python per robot).

Interactive: messages and stopping
----------------------------------
A sweep visits every robot once, in order; robot i best-responds to the current shared contributions of the
others (Gauss-Seidel: later robots in the sweep see earlier robots' new contributions). The loop stops after the
first sweep in which no contribution ``P_i a_i`` moved by more than ``tol * max(1, ||target||_2)`` in the
inf-norm (that detecting sweep is counted), or after ``max_sweeps``. Messages are counted as sent:

* ``broadcast="all"`` (Algorithm 1 as printed): line 6 shares every Greedy contribution with every other robot,
  and line 10 shares every new contribution with every other robot: ``N (N - 1) * (1 + sweeps)`` messages.
* ``broadcast="sum"`` (O(N) variant): a shared running sum ``s = sum_k P_k a_k`` (a blackboard). Each robot
  writes its Greedy contribution once (N messages); in every sweep each robot reads s (1 message) and writes
  its update (1 message): ``N + 2 N * sweeps``. Robot i recovers the others' sum as ``s - P_i a_i``. The
  iterates are identical to ``"all"``; only the count differs.
* ``channel`` (:class:`Channel`, the ``faults`` block): the same solver over an unreliable channel (lost,
  delayed, lying or bounded messages; ``broadcast="all"`` only). Robots act on the messages they received, and the
  stopping rule also waits for messages in flight. Same Greedy start, caps, sweep cap and tolerance as the perfect
  channel, and the same arithmetic: a channel whose faults never fire gives the perfect channel's plans.

Measured behaviour (benchmarks/bench_solvers.py, tests/test_solvers.py). Theorem 3 of the paper (one sweep
suffices when ``1'(target - cloud) > N n_cache``) does not hold exactly: after one sweep the loss is typically
0.01%-0.5% above Oracle's. Theorems 1-2 do hold (the loss never increases and the fixed point is Oracle's), but
best responses are block coordinate descent and contract slowly when robots' useful columns are nearly
parallel: reaching ``tol = 1e-6`` took a median of ~1,400 sweeps at N = 20, C = 10 (the default
``max_sweeps = 100`` then usually ends with ``converged=False``, ~1e-5 relative above Oracle's loss; after
one sweep the median gap was 3e-4, after ten 9e-5).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from numba import njit

__all__ = [
    "Channel",
    "InteractiveResult",
    "loss_value",
    "lower_bound",
    "solve_greedy",
    "solve_interactive",
    "solve_interactive_faulty",
    "solve_oracle",
]

LOSSES = ("l2", "kl")
BACKENDS = ("auto", "native", "cvxpy")
BROADCASTS = ("all", "sum")
ORDERS = ("gauss-seidel", "jacobi")  # who a robot answers within a sweep: the earlier robots' new plans, or last sweep's
EMPTY_COLUMN = 1e-12  # a column of P_i with less mass than this is a predicted class robot i cannot produce
_CACHE = True  # numba caches compiled code in __pycache__: a fresh process skips most compile time

# Wolfe's stopping rule: Frank-Wolfe gap x'(x - q) <= _GAP_TOL * (largest squared norm in the corral). The gap
# bounds L^2/2 - L*^2/2, so this is round-off level; the corral-size and no-progress guards end the loop when
# round-off is reached first.
_GAP_TOL = 1e-14
_BARY_TOL = 1e-13  # barycentric weights at or below this leave the corral
# Interactive's defaults, one set for the perfect and the faulty channel (a fault that never fires changes nothing)
TOL = 1e-6
MAX_SWEEPS = 100
# bounded messages: an honest contribution sums to n_cache up to round-off and must pass the bound unchanged
_BOUND_SLACK = 1e-9


# ------------------------------------------------------------------------------------------ results
@dataclass
class InteractiveResult:
    """Outcome of :func:`solve_interactive` (Algorithm 1).

    actions:   (N, C) final actions (counts per predicted class).
    sweeps:    sweeps of the while loop executed, including the one that detected convergence.
    messages:  messages sent, counted as documented in the module docstring (``broadcast``).
    history:   loss after the Greedy start, then after every sweep (length ``sweeps + 1``); ``.loss`` is the last.
    converged: True when a sweep moved no contribution by more than the tolerance (False: max_sweeps reached).
    broadcast: the message protocol counted ("all" or "sum").
    contributions: (N, C) final ``P_i a_i``, what each robot shares.
    """

    actions: np.ndarray
    sweeps: int
    messages: int
    history: np.ndarray
    converged: bool
    broadcast: str = "all"
    contributions: np.ndarray | None = field(default=None, repr=False)  # (N, C) P_i a_i at the end

    @property
    def loss(self) -> float:
        return float(self.history[-1])


# ------------------------------------------------------------------------------------------ validation
def _as_array(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array, got {type(value).__name__}") from err
    return arr


def _check_finite_nonnegative(arr: np.ndarray, name: str, allow_inf: bool = False) -> None:
    if arr.size == 0:
        return
    lowest, highest = arr.min(), arr.max()  # two reductions: NaN propagates into both
    if np.isnan(lowest) or (not allow_inf and not (np.isfinite(lowest) and np.isfinite(highest))):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    if lowest < 0:
        raise ValueError(f"{name} must be >= 0, got min {lowest:g}")


def _validate_vectors(cloud, target) -> tuple[np.ndarray, np.ndarray]:
    cloud_counts = _as_array(cloud, "cloud")
    target_counts = _as_array(target, "target")
    if cloud_counts.ndim != 1 or cloud_counts.shape[0] < 1:
        raise ValueError(f"cloud must have shape (C,), got {cloud_counts.shape}")
    n_classes = cloud_counts.shape[0]
    if target_counts.shape != (n_classes,):
        raise ValueError(f"target must have shape (C,) = ({n_classes},) like cloud, got {target_counts.shape}")
    _check_finite_nonnegative(cloud_counts, "cloud")
    _check_finite_nonnegative(target_counts, "target")
    return cloud_counts, target_counts


def _validate_n_cache(n_cache) -> float:
    try:
        if isinstance(n_cache, (str, bytes)):
            raise TypeError
        value = float(n_cache)
    except (TypeError, ValueError) as err:
        raise ValueError(f"n_cache must be a finite number >= 0, got {n_cache!r}") from err
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"n_cache must be a finite number >= 0, got {n_cache!r}")
    return value


def _validate(P, cloud, target, n_cache, available):
    """Arrays of the problem and the effective caps u (N, C): min(available, n_cache), 0 on empty columns.

    Shapes are checked here; values in one compiled pass (_scan_problem): at N = 20 a dozen small numpy calls
    cost more than the native solve itself."""
    cloud_counts = np.ascontiguousarray(_as_array(cloud, "cloud"))
    target_counts = np.ascontiguousarray(_as_array(target, "target"))
    if cloud_counts.ndim != 1 or cloud_counts.shape[0] < 1:
        raise ValueError(f"cloud must have shape (C,), got {cloud_counts.shape}")
    n_classes = cloud_counts.shape[0]
    if target_counts.shape != (n_classes,):
        raise ValueError(f"target must have shape (C,) = ({n_classes},) like cloud, got {target_counts.shape}")
    feasible_matrices = np.ascontiguousarray(_as_array(P, "P"))  # the compiled loops want row-major
    if feasible_matrices.ndim != 3 or feasible_matrices.shape[1:] != (n_classes, n_classes) \
            or feasible_matrices.shape[0] < 1:
        raise ValueError(f"P must have shape (n_robots, C, C) with C = {n_classes} (len(cloud)), "
                         f"got {feasible_matrices.shape}")
    n_robots = feasible_matrices.shape[0]
    if available is None:
        available_counts = np.zeros((0, 0))
    else:
        available_counts = np.ascontiguousarray(_as_array(available, "available"))
        if available_counts.shape != (n_robots, n_classes):
            raise ValueError(f"available must have shape (n_robots, C) = ({n_robots}, {n_classes}), "
                             f"got {available_counts.shape}")
    budget = _validate_n_cache(n_cache)
    caps = np.empty((n_robots, n_classes))
    code, i, j, value = _scan_problem(feasible_matrices, cloud_counts, target_counts, available_counts, budget, caps)
    if code:
        raise ValueError(_scan_message(code, i, j, value))
    return feasible_matrices, cloud_counts, target_counts, budget, caps


def _needed_budget(feasible_matrices, cloud_counts, target_counts, budget, caps,
                   interactive: bool = False) -> tuple[float, np.ndarray]:
    """L2: the budget and caps cut to what an optimal action can use (exact), so huge ``n_cache`` keeps the
    problem well scaled (Wolfe returned all zeros from 1e15, cvxpy was worse than doing nothing at 1e8).

    Why exact: a = 0 is feasible, so an optimal contribution x (Oracle's fleet, one Greedy robot's) has
    ||x - d|| <= ||d||, ||x|| <= 2||d||, and robot i's c_i = P_i a_i <= x componentwise (contributions are
    non-negative). Interactive starts at Greedy (loss <= (2N + 1)||d||) and its loss never rises, so every
    iterate and best response has ||c_i|| <= ||sum_k c_k|| <= (2N + 2)||d||. With m the smallest mass of an
    available column, 1'a_i <= 1'c_i / m <= sqrt(C) ||c_i|| / m. Every optimum (Oracle, each Greedy robot,
    each best response) lies inside the cut, so cutting changes no optimum."""
    n_robots, n_classes = caps.shape
    masses = feasible_matrices.sum(axis=1)
    available = masses >= EMPTY_COLUMN
    if not available.any():
        return budget, caps
    factor = 2 * n_robots + 2 if interactive else 2
    need = np.sqrt(n_classes) * factor * float(np.linalg.norm(target_counts - cloud_counts))
    need = need / masses[available].min() * 1.01 + 1.0  # the margin: round-off in the bound itself
    if need >= budget:
        return budget, caps
    return need, np.minimum(caps, need)


def _scan_message(code: int, i: int, j: int, value: float) -> str:
    name = {1: "cloud", 2: "target", 3: "P", 4: "available"}[code // 10]
    if code % 10 == 1:
        return f"{name} must be finite, got NaN or inf"
    if code % 10 == 2:
        return f"{name} must be >= 0, got min {value:g}"
    return (f"P columns must be probability vectors p(y | yhat = j) (sum 1, or 0 when unavailable); "
            f"P[{i}][:, {j}] sums to {value:.6g}")


@njit(cache=_CACHE)
def _scan_problem(P, cloud, target, available, budget, caps):
    """Value checks and caps in one pass. Returns (code, i, j, value); code 0 = valid, else 10 * which
    (1 cloud, 2 target, 3 P, 4 available) + what (1 not finite, 2 negative, 3 column sum > 1)."""
    n_robots, n_classes = caps.shape
    lowest = np.inf
    for y in range(n_classes):
        if not np.isfinite(cloud[y]):
            return 11, 0, y, cloud[y]
        lowest = min(lowest, cloud[y])
    if lowest < 0.0:
        return 12, 0, 0, lowest
    for y in range(n_classes):
        if not np.isfinite(target[y]):
            return 21, 0, y, target[y]
        lowest = min(lowest, target[y])
    if lowest < 0.0:
        return 22, 0, 0, lowest
    has_available = available.shape[0] > 0
    for i in range(n_robots):
        for j in range(n_classes):
            mass = 0.0
            for y in range(n_classes):
                v = P[i, y, j]
                if not np.isfinite(v):
                    return 31, i, j, v
                if v < 0.0:
                    return 32, i, j, v
                mass += v
            if mass > 1.0 + 1e-6:
                return 33, i, j, mass
            cap = budget
            if has_available:
                u = available[i, j]
                if np.isnan(u):
                    return 41, i, j, u
                if u < 0.0:
                    return 42, i, j, u
                cap = min(cap, u)
            caps[i, j] = 0.0 if mass < EMPTY_COLUMN else cap  # a prediction the robot cannot make
    return 0, 0, 0, 0.0


def _validate_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value.lower()


def _pick_backend(backend: str, loss: str) -> str:
    loss = _validate_choice(loss, "loss", LOSSES)
    backend = _validate_choice(backend, "backend", BACKENDS)
    if backend == "auto":
        return "native" if loss == "l2" else "cvxpy"
    if backend == "native" and loss != "l2":
        raise ValueError(f"backend='native' solves loss='l2' only, got loss={loss!r}: use backend='cvxpy' or 'auto'")
    return backend


# ------------------------------------------------------------------------------------------ loss, bound
def _loss_of_counts(counts: np.ndarray, target_counts: np.ndarray, loss: str) -> float:
    if loss == "l2":
        return float(np.linalg.norm(counts - target_counts))
    from scipy.special import kl_div  # same function as cvxpy's kl_div atom
    return float(kl_div(target_counts, counts).sum())


def loss_value(P, actions, cloud, target, loss: str = "l2") -> float:
    """L(a) for actions (N, C): ``||cloud + sum_i P_i a_i - target||_2`` or ``sum_y kl_div(target_y, x_y)``.

    Does not check feasibility of the actions (see the solvers for that)."""
    loss = _validate_choice(loss, "loss", LOSSES)
    cloud_counts, target_counts = _validate_vectors(cloud, target)
    n_classes = cloud_counts.shape[0]
    feasible_matrices = _as_array(P, "P")
    if feasible_matrices.ndim != 3 or feasible_matrices.shape[1:] != (n_classes, n_classes):
        raise ValueError(f"P must have shape (n_robots, C, C) with C = {n_classes} (len(cloud)), "
                         f"got {feasible_matrices.shape}")
    action_counts = _as_array(actions, "actions")
    if action_counts.shape != feasible_matrices.shape[:2]:
        raise ValueError(f"actions must have shape (n_robots, C) = {feasible_matrices.shape[:2]}, "
                         f"got {action_counts.shape}")
    counts = cloud_counts + np.einsum("nyj,nj->y", feasible_matrices, action_counts)
    return _loss_of_counts(counts, target_counts, loss)


def lower_bound(cloud, target, n_robots: int, n_cache: float) -> float:
    """Lower bound on the Oracle L2 loss (Lemma 6, corrected): ``max(0, 1'(target - cloud) - N n_cache) / sqrt(C)``.

    Derivation. Let ``d = target - cloud`` and ``x = sum_i P_i a_i`` the expected counts the fleet adds; Oracle
    minimises ``||x - d||_2`` over the feasible x. Every column of P_i is a probability vector or zero, and a_i
    is zero on zero columns, so ``1'P_i a_i = sum_{j available} a_ij <= 1'a_i <= n_cache`` for every feasible
    a_i (this uses a_i >= 0; the relaxation only needs the consequence). Hence every feasible x lies in the
    half-space ``{x : 1'x <= N n_cache}``, whatever the matrices P_i. Relaxing the feasible set to that whole
    half-space (x free in every other direction: the paper's "drop a >= 0", which also drops the dependence on
    the P_i) can only lower the minimum, and the minimum over the half-space is the Euclidean distance from d
    to it: 0 if ``1'd <= N n_cache``, else ``(1'd - N n_cache) / ||1||_2`` with ``||1||_2 = sqrt(C)``.

    The paper prints ``* sqrt(C)``; the distance to a half-space divides by the norm of its normal, so the
    printed form can exceed the Oracle loss (e.g. C = 2, one robot, d = (10, 10), n_cache = 0: the printed
    form gives 20 sqrt(2) > ||d|| = 10 sqrt(2), the Oracle loss).
    """
    cloud_counts, target_counts = _validate_vectors(cloud, target)
    if isinstance(n_robots, bool) or not float(n_robots).is_integer() or n_robots < 1:
        raise ValueError(f"n_robots must be an integer >= 1, got {n_robots!r}")
    budget = _validate_n_cache(n_cache)
    excess = float(np.sum(target_counts - cloud_counts)) - int(n_robots) * budget
    return max(0.0, excess) / float(np.sqrt(cloud_counts.shape[0]))


# ------------------------------------------------------------------------------------------ native (numba)
@njit(cache=_CACHE)
def _lmo(P, PT, caps, budget, x, a_out, w_out, g):
    """Vertex of S_1 x ... x S_N minimising <x, sum_i P_i a_i>. Writes it to a_out and w_out = sum_i P_i a_i.

    Per robot a fractional knapsack: the classes with the most negative gradient (P_i' x)_j first, each up to
    its cap, until the budget is spent (ties: the lower class index first). PT[i, j] is column j of P_i
    (contiguous): the gradient entries are dot products with x (skipped for unavailable classes) and w
    accumulates the picked columns; P is not read here."""
    n_robots, n_classes = caps.shape
    for y in range(n_classes):
        w_out[y] = 0.0
    for i in range(n_robots):
        for j in range(n_classes):
            a_out[i, j] = 0.0
            if caps[i, j] > 0.0:  # a dot product with the contiguous column j of P_i
                s = 0.0
                for y in range(n_classes):
                    s += PT[i, j, y] * x[y]
                g[j] = s
            else:
                g[j] = 0.0  # unavailable: never picked
        # pick the most improving class until the budget is spent: the budget usually runs out after a few
        # picks, so repeated selection beats sorting all C classes
        remaining = budget
        while remaining > 0.0:
            best = -1
            best_value = 0.0
            for j in range(n_classes):
                if g[j] < best_value:
                    best_value = g[j]
                    best = j
            if best < 0:
                break
            take = min(remaining, caps[i, best])
            a_out[i, best] = take
            remaining -= take
            g[best] = 0.0
            for y in range(n_classes):
                w_out[y] += take * PT[i, best, y]


# The affine minimiser of the corral: min_beta ||p_0 + E beta||, E = [p_1 - p_0, ..., p_{m-1} - p_0], by a
# Householder QR written out (m <= C + 1 is tiny: a LAPACK call costs more than the arithmetic). Adding a corral
# point appends one column (O(C m) update); dropping points keeps the reflectors of the columns before the first
# dropped point (column c is p_{c+1} - p_0; all of them when p_0 leaves), rebuilds Q'(-p_0) from them and
# re-pushes the rest (O(C m^2) at worst). alpha = (1 - sum beta, beta).
@njit(cache=_CACHE)
def _qr_reset(points, edges, rhs, house, norms2, raw):
    n_classes = points.shape[1]
    for y in range(n_classes):
        rhs[y] = -points[0, y]
    raw[0] = 0.0  # largest raw column norm: the scale of the rank test


@njit(cache=_CACHE)
def _qr_push(points, k, edges, rhs, house, norms2, raw):
    """Append column k (= p_{k+1} - p_0) to the factorisation of columns 0..k-1."""
    n_classes = points.shape[1]
    raw_norm2 = 0.0
    for y in range(n_classes):
        v = points[k + 1, y] - points[0, y]
        edges[y, k] = v
        raw_norm2 += v * v
    raw[k + 1] = np.sqrt(raw_norm2)
    raw[0] = max(raw[0], raw[k + 1])
    for c in range(k):  # earlier reflectors
        if norms2[c] == 0.0:
            continue
        s = 0.0
        for y in range(c, n_classes):
            s += house[y, c] * edges[y, k]
        f = 2.0 * s / norms2[c]
        for y in range(c, n_classes):
            edges[y, k] -= f * house[y, c]
    norms2[k] = 0.0
    if k >= n_classes:
        return
    norm2 = 0.0
    for y in range(k, n_classes):
        norm2 += edges[y, k] * edges[y, k]
    if norm2 == 0.0:
        return
    head = -np.sqrt(norm2) if edges[k, k] > 0.0 else np.sqrt(norm2)
    h2 = 0.0
    for y in range(k, n_classes):
        house[y, k] = edges[y, k]
    house[k, k] -= head
    for y in range(k, n_classes):
        h2 += house[y, k] * house[y, k]
    if h2 == 0.0:
        return
    norms2[k] = h2
    edges[k, k] = head
    for y in range(k + 1, n_classes):
        edges[y, k] = 0.0
    s = 0.0
    for y in range(k, n_classes):
        s += house[y, k] * rhs[y]
    f = 2.0 * s / h2
    for y in range(k, n_classes):
        rhs[y] -= f * house[y, k]


@njit(cache=_CACHE)
def _qr_solve(m, edges, rhs, raw, beta, alpha):
    """Back substitution R beta = Q'(-p_0); columns with a negligible R diagonal (affine dependence) get 0."""
    k = m - 1
    total = 0.0
    for c in range(k - 1, -1, -1):
        s = rhs[c]
        for c2 in range(c + 1, k):
            s -= edges[c, c2] * beta[c2]
        if abs(edges[c, c]) <= 1e-13 * raw[0]:
            beta[c] = 0.0
        else:
            beta[c] = s / edges[c, c]
        total += beta[c]
    alpha[0] = 1.0 - total
    for c in range(k):
        alpha[c + 1] = beta[c]


@njit(cache=_CACHE)
def _workspace(n_robots, n_classes):
    """Scratch arrays of _min_norm_point, allocated once per solve (reused across robots' best responses)."""
    slots = n_classes + 2  # a corral holds <= C + 1 affinely independent points, plus the one entering
    return (np.zeros((slots, n_classes)),            # points: corral points w_k - d, in corral order
            np.zeros((slots, n_robots, n_classes)),  # vertices: the joint actions behind them (by storage slot)
            np.zeros(slots, dtype=np.int64),         # slot: storage slot of corral point k
            np.zeros(slots), np.zeros(slots),        # lam (current weights), alpha (affine minimiser)
            np.zeros((n_robots, n_classes)),         # LMO vertex
            np.zeros(n_classes), np.zeros(n_classes),  # LMO: w = sum_i P_i a_i, gradient scratch
            np.zeros((n_classes, slots)), np.zeros(n_classes),  # QR: R (upper part of edges), Q' rhs
            np.zeros((n_classes, slots)), np.zeros(slots), np.zeros(slots + 1), np.zeros(slots),  # reflectors,
            # raw (largest raw column norm, then each column's), beta
            np.zeros(n_classes), np.zeros(n_classes),  # x, q
            np.zeros(slots))  # squared norms of the corral points


@njit(cache=_CACHE)
def _min_norm_point(P, PT, caps, budget, d, max_iter, ws, out):
    """Wolfe's minimum-norm-point algorithm on H - d, H = sum_i P_i S_i. Writes the actions to out (N, C);
    returns (status, iterations).

    status 0: Frank-Wolfe gap below tolerance; 2: corral full-dimensional (x = 0 up to round-off);
    3: no decrease of ||x|| (round-off floor); 1: max_iter reached."""
    (points, vertices, slot, lam, alpha, a_new, w_new, g, edges, rhs, house, norms2, raw, beta, x, q, pnorm2) = ws
    n_robots, n_classes = caps.shape
    for y in range(n_classes):  # a = 0 is a vertex of H: the start
        x[y] = -d[y]
        points[0, y] = x[y]
    slot[0] = 0
    vertices[0] = 0.0
    lam[0] = 1.0
    m = 1
    factored = 0  # leading QR columns valid for the current corral
    stale = True  # rhs = Q'(-p_0) must be rebuilt from the valid columns' reflectors
    xx = 0.0
    for y in range(n_classes):
        xx += x[y] * x[y]
    pnorm2[0] = xx
    status = 1
    iters = 0
    for it in range(max_iter):
        iters = it + 1
        _lmo(P, PT, caps, budget, x, a_new, w_new, g)
        scale = 0.0
        xq = 0.0
        for y in range(n_classes):
            q[y] = w_new[y] - d[y]
            scale += q[y] * q[y]
            xq += x[y] * q[y]
        qq = scale
        for k in range(m):
            scale = max(scale, pnorm2[k])
        if xx - xq <= _GAP_TOL * scale:
            status = 0
            break
        if m >= n_classes + 1:
            status = 2
            break
        free = 0  # a storage slot no corral point uses
        while True:
            taken = False
            for k in range(m):
                if slot[k] == free:
                    taken = True
            if not taken:
                break
            free += 1
        points[m] = q
        pnorm2[m] = qq
        slot[m] = free
        vertices[free] = a_new
        lam[m] = 0.0
        m += 1
        while True:  # minor cycles: move to the affine minimiser, dropping corral points that leave the hull
            if m == 1:
                alpha[0] = 1.0
            else:
                if stale:  # after a drop (or at the start): keep the columns before the first dropped point
                    _qr_reset(points, edges, rhs, house, norms2, raw)
                    for c in range(factored):
                        raw[0] = max(raw[0], raw[c + 1])
                        if norms2[c] == 0.0:
                            continue
                        s = 0.0
                        for y in range(c, n_classes):
                            s += house[y, c] * rhs[y]
                        f = 2.0 * s / norms2[c]
                        for y in range(c, n_classes):
                            rhs[y] -= f * house[y, c]
                    stale = False
                for k in range(factored, m - 1):
                    _qr_push(points, k, edges, rhs, house, norms2, raw)
                factored = m - 1
                _qr_solve(m, edges, rhs, raw, beta, alpha)
            inside = True
            for k in range(m):
                if alpha[k] <= _BARY_TOL:
                    inside = False
            if inside:
                for k in range(m):
                    lam[k] = alpha[k]
                break
            theta = 1.0
            leaving = -1
            for k in range(m):
                if alpha[k] <= _BARY_TOL:
                    gap_k = lam[k] - alpha[k]
                    if gap_k > 0.0 and lam[k] / gap_k < theta:
                        theta = lam[k] / gap_k
                        leaving = k
            if leaving < 0:  # round-off: drop the point with the smallest weight
                leaving = 0
                for k in range(1, m):
                    if alpha[k] < alpha[leaving]:
                        leaving = k
            for k in range(m):
                lam[k] = theta * alpha[k] + (1.0 - theta) * lam[k]
            lam[leaving] = 0.0
            kept = 0
            total = 0.0
            first_drop = m
            for k in range(m):
                if lam[k] <= 0.0 and k < first_drop:
                    first_drop = k
                if lam[k] > 0.0:
                    if kept != k:
                        points[kept] = points[k]
                        pnorm2[kept] = pnorm2[k]
                        slot[kept] = slot[k]
                        lam[kept] = lam[k]
                    total += lam[kept]
                    kept += 1
            m = kept
            # column c is p_{c+1} - p_0: the columns before the first dropped point keep their reflectors
            factored = min(factored, max(first_drop - 1, 0))
            stale = True
            for k in range(m):
                lam[k] /= total
        new_xx = 0.0
        for y in range(n_classes):
            s = 0.0
            for k in range(m):
                s += lam[k] * points[k, y]
            x[y] = s
            new_xx += s * s
        if new_xx >= xx:  # Wolfe decreases ||x|| strictly: no decrease means round-off
            status = 3
            break
        xx = new_xx
    for i in range(n_robots):
        for j in range(n_classes):
            s = 0.0
            for k in range(m):
                s += lam[k] * vertices[slot[k], i, j]
            out[i, j] = s
    _clip_feasible(out, caps, budget)
    return status, iters


@njit(cache=_CACHE)
def _clip_feasible(actions, caps, budget):
    """Remove round-off: 0 <= a <= caps, 1'a_i <= budget."""
    n_robots, n_classes = caps.shape
    for i in range(n_robots):
        s = 0.0
        for j in range(n_classes):
            v = actions[i, j]
            if v < 0.0:
                v = 0.0
            elif v > caps[i, j]:
                v = caps[i, j]
            actions[i, j] = v
            s += v
        if s > budget:
            for j in range(n_classes):
                actions[i, j] *= budget / s


@njit(cache=_CACHE)
def _oracle_native(P, caps, budget, target, cloud, max_iter):
    """Oracle: d = target - cloud and PT (column j of P_i contiguous) built here, not by numpy calls (at N = 20
    each numpy call costs about as much as a few Wolfe iterations). All caps zero: returns zeros at once."""
    n_robots, n_classes = caps.shape
    actions = np.zeros((n_robots, n_classes))
    PT = np.empty((n_robots, n_classes, n_classes))
    for i in range(n_robots):
        for y in range(n_classes):
            for j in range(n_classes):
                PT[i, j, y] = P[i, y, j]
    d = np.empty(n_classes)
    for y in range(n_classes):
        d[y] = target[y] - cloud[y]
    status, iters = _min_norm_point(P, PT, caps, budget, d, max_iter, _workspace(n_robots, n_classes), actions)
    return actions, status, iters


@njit(cache=_CACHE)
def _greedy_native(P, PT, caps, budget, d, max_iter):
    """Every robot's own problem (N = 1 each), one compiled loop, one shared workspace."""
    n_robots, n_classes = caps.shape
    actions = np.zeros((n_robots, n_classes))
    ws = _workspace(1, n_classes)
    for i in range(n_robots):
        _min_norm_point(P[i:i + 1], PT[i:i + 1], caps[i:i + 1], budget, d, max_iter, ws, actions[i:i + 1])
    return actions


@njit(cache=_CACHE)
def _contribution(PT, actions, i, out):
    n_classes = actions.shape[1]
    for y in range(n_classes):
        out[y] = 0.0
    for j in range(n_classes):
        if actions[i, j] != 0.0:
            for y in range(n_classes):
                out[y] += actions[i, j] * PT[i, j, y]


@njit(cache=_CACHE)
def _bound_message(message, n_cache):
    """:func:`bound_contributions` for one message, in place."""
    total = 0.0
    for y in range(message.shape[0]):
        message[y] = max(message[y], 0.0)
        total += message[y]
    if total > n_cache * (1.0 + _BOUND_SLACK):
        for y in range(message.shape[0]):
            message[y] *= n_cache / total


@njit(cache=_CACHE)
def _sweep_native(P, PT, caps, budget, d, actions, contributions, total, max_iter, ws, d_i, new,
                  believed, arrive, factor, bounded, n_cache, sent):
    """One sweep of Algorithm 1 in place (robots i = 1..N best-respond in turn); returns (moved, loss).

    The channel: ``believed`` (N, N, C) [receiver, sender] is what each robot last received; empty (0, 0, 0) for
    the perfect channel. Robot i acts on the true others' sum plus what its beliefs get wrong, a sum of exact
    zeros when every message arrived as sent: a channel whose faults never fire computes the same numbers as the
    perfect one. After its best response robot i sends ``factor[i] * P_i a_i`` (bounded: clipped) into
    ``sent[i]``; it reaches the receivers r with ``arrive[i, r]`` now (the caller queues late ones)."""
    n_robots, n_classes = caps.shape
    faulty = believed.shape[0] > 0
    moved = 0.0
    for i in range(n_robots):
        for y in range(n_classes):  # what is left for robot i given the others' shared contributions
            others = total[y] - contributions[i, y]
            if faulty:
                for k in range(n_robots):
                    if k != i:
                        others += believed[i, k, y] - contributions[k, y]
            d_i[y] = d[y] - others
        _min_norm_point(P[i:i + 1], PT[i:i + 1], caps[i:i + 1], budget, d_i, max_iter, ws, actions[i:i + 1])
        _contribution(PT, actions, i, new)
        for y in range(n_classes):
            delta = abs(new[y] - contributions[i, y])
            moved = max(moved, delta)
            total[y] += new[y] - contributions[i, y]
            contributions[i, y] = new[y]
        if faulty:
            for y in range(n_classes):
                sent[i, y] = factor[i] * new[y]
            if bounded:
                _bound_message(sent[i], n_cache)
            for r in range(n_robots):
                if arrive[i, r]:
                    for y in range(n_classes):
                        believed[r, i, y] = sent[i, y]
    for y in range(n_classes):  # no drift from the running updates
        s = 0.0
        for i in range(n_robots):
            s += contributions[i, y]
        total[y] = s
    loss = 0.0
    for y in range(n_classes):
        loss += (total[y] - d[y]) ** 2
    return moved, np.sqrt(loss)


def _max_iter(n_classes: int) -> int:
    return 200 * (n_classes + 1) + 1000


def _columns(feasible_matrices: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(feasible_matrices.transpose(0, 2, 1))  # PT[i, j] = column j of P_i


# ------------------------------------------------------------------------------------------ cvxpy reference
def _scale(cloud_counts, target_counts, budget) -> float:
    """Counts are divided by this before cvxpy sees them: interior-point tolerances are absolute-ish."""
    return float(max(1.0, np.abs(target_counts).max(), np.abs(cloud_counts).max(), budget))


def _cvxpy_objective(cp, counts, target_scaled, loss):
    if loss == "l2":  # the square has the same minimiser; as a QP it is solved more accurately than the SOC form
        return cp.sum_squares(counts - target_scaled)
    return cp.sum(cp.kl_div(target_scaled, counts))


# The reference must be tighter than the 1e-6 agreement it is tested to: CLARABEL's defaults are 1e-8; the
# L2 objective is the squared distance (a QP), where CLARABEL reaches these without "inaccurate" statuses.
_CLARABEL_SETTINGS = {"tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_feas": 1e-12}


def _cvxpy_solve(problem, solver: str | None, loss: str) -> None:
    import cvxpy as cp
    solver = (solver or cp.CLARABEL).upper()
    # KL is an exponential-cone program: CLARABEL's defaults there (tighter ones end "inaccurate")
    settings = _CLARABEL_SETTINGS if solver == cp.CLARABEL and loss == "l2" else {}
    problem.solve(solver=solver, **settings)
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise RuntimeError(f"cvxpy ({solver or 'CLARABEL'}) returned status {problem.status!r}")


def _check_kl_reachable(feasible_matrices, cloud_counts, target_counts, budget, caps) -> None:
    """Generalized KL is infinite where target_y > 0 = x_y. Refuse instances where that is unavoidable."""
    if budget > 0:
        reachable = np.einsum("nyj,nj->y", feasible_matrices, (caps > 0).astype(float)) > 0
    else:
        reachable = np.zeros_like(cloud_counts, dtype=bool)
    stuck = (target_counts > 0) & (cloud_counts <= 0) & ~reachable
    if stuck.any():
        raise ValueError(f"loss='kl' is infinite for every action: classes {np.flatnonzero(stuck).tolist()} have "
                         f"target > 0, cloud = 0 and no robot can upload them; use loss='l2'")


def _oracle_cvxpy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, solver=None):
    import cvxpy as cp
    import scipy.sparse as sp

    n_robots, n_classes = caps.shape
    s = _scale(cloud_counts, target_counts, budget)
    # z[i*C + j] = a_ij / s; stacked[:, i*C + j] = column j of P_i
    stacked = feasible_matrices.transpose(1, 0, 2).reshape(n_classes, n_robots * n_classes)
    robot_sums = sp.kron(sp.eye(n_robots), np.ones((1, n_classes)), format="csr")
    z = cp.Variable(n_robots * n_classes)
    counts = cloud_counts / s + stacked @ z
    constraints = [z >= 0, z <= caps.ravel() / s, robot_sums @ z <= budget / s]
    problem = cp.Problem(cp.Minimize(_cvxpy_objective(cp, counts, target_counts / s, loss)), constraints)
    _cvxpy_solve(problem, solver, loss)
    actions = np.asarray(z.value, dtype=np.float64).reshape(n_robots, n_classes) * s
    _clip_feasible(actions, caps, budget)
    return actions


def _greedy_cvxpy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, solver=None):
    """All robots' independent problems in one separable program: min sum_i L(cloud + P_i a_i)."""
    import cvxpy as cp
    import scipy.sparse as sp

    n_robots, n_classes = caps.shape
    s = _scale(cloud_counts, target_counts, budget)
    block = sp.block_diag(list(feasible_matrices), format="csr")  # (N*C, N*C): robot i's own P_i a_i
    robot_sums = sp.kron(sp.eye(n_robots), np.ones((1, n_classes)), format="csr")
    z = cp.Variable(n_robots * n_classes)
    counts = cp.reshape(block @ z + np.tile(cloud_counts / s, n_robots), (n_robots, n_classes), order="C")
    targets = np.tile(target_counts / s, (n_robots, 1))
    if loss == "l2":
        objective = cp.sum_squares(counts - targets)  # separable: sum_i ||cloud + P_i a_i - target||^2
    else:
        objective = cp.sum(cp.kl_div(targets, counts))
    constraints = [z >= 0, z <= caps.ravel() / s, robot_sums @ z <= budget / s]
    _cvxpy_solve(cp.Problem(cp.Minimize(objective), constraints), solver, loss)
    actions = np.asarray(z.value, dtype=np.float64).reshape(n_robots, n_classes) * s
    _clip_feasible(actions, caps, budget)
    return actions


class _BestResponseCvxpy:
    """Problem 3 for one robot as a parametrised (DPP) cvxpy problem: compiled once, solved N * sweeps times."""

    def __init__(self, n_classes, target_counts, budget, loss, scale, solver=None) -> None:
        import cvxpy as cp

        self.scale = scale
        self.solver = solver
        self.loss = loss
        self.matrix = cp.Parameter((n_classes, n_classes), nonneg=True)
        self.others = cp.Parameter(n_classes, nonneg=True)  # (cloud + sum_{k != i} P_k a_k) / s
        self.cap = cp.Parameter(n_classes, nonneg=True)
        self.action = cp.Variable(n_classes)
        counts = self.others + self.matrix @ self.action
        constraints = [self.action >= 0, self.action <= self.cap, cp.sum(self.action) <= budget / scale]
        self.problem = cp.Problem(cp.Minimize(_cvxpy_objective(cp, counts, target_counts / scale, loss)),
                                  constraints)

    def __call__(self, feasible_matrix, others_counts, cap) -> np.ndarray:
        self.matrix.value = feasible_matrix
        self.others.value = np.maximum(others_counts / self.scale, 0.0)
        self.cap.value = cap / self.scale
        _cvxpy_solve(self.problem, self.solver, self.loss)
        return np.asarray(self.action.value, dtype=np.float64) * self.scale


# ------------------------------------------------------------------------------------------ public API
def solve_oracle(P, cloud, target, n_cache, available=None, loss: str = "l2", backend: str = "auto",
                 solver: str | None = None) -> np.ndarray:
    """Problem 1: the joint optimum over all robots. Returns actions (N, C) (counts per predicted class).

    P: (N, C, C) feasible data matrices (column j = p(y | yhat = j), or zeros); cloud, target: (C,) counts;
    n_cache: per-robot upload budget; available: optional (N, C) caps per predicted class; loss: "l2" | "kl";
    backend: "auto" (native for L2, cvxpy for KL) | "native" (L2, Wolfe) | "cvxpy" (reference);
    solver: cvxpy solver name (default CLARABEL). Oracle reads every robot's P_i: privileged information.
    """
    feasible_matrices, cloud_counts, target_counts, budget, caps = _validate(P, cloud, target, n_cache, available)
    backend = _pick_backend(backend, loss)
    loss = loss.lower()
    if budget == 0:
        return np.zeros_like(caps)
    if loss == "l2":
        budget, caps = _needed_budget(feasible_matrices, cloud_counts, target_counts, budget, caps)
    if backend == "native":  # all caps zero: Wolfe stops at its start a = 0 (gap 0)
        actions, status, iterations = _oracle_native(feasible_matrices, caps, budget, target_counts, cloud_counts,
                                                     _max_iter(caps.shape[1]))
        if status == 1:  # never seen in testing; say so rather than return a silently inexact optimum
            warnings.warn(f"solve_oracle: Wolfe's algorithm stopped at its iteration limit ({iterations}); the "
                          f"actions are feasible but may be slightly suboptimal", RuntimeWarning, stacklevel=2)
        return actions
    if not caps.any():
        return np.zeros_like(caps)
    if loss == "kl":
        _check_kl_reachable(feasible_matrices, cloud_counts, target_counts, budget, caps)
    return _oracle_cvxpy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, solver)


def solve_greedy(P, cloud, target, n_cache, available=None, loss: str = "l2", backend: str = "auto",
                 solver: str | None = None) -> np.ndarray:
    """Problem 2: every robot alone against the cloud, ``min_{a_i in S_i} L(cloud + P_i a_i)``. Returns (N, C).

    Robots ignore each other, so their uploads add up (possibly overshooting classes several robots chase).
    Arguments as :func:`solve_oracle`; each robot reads only its own P_i, availability and the shared
    cloud / target counts."""
    feasible_matrices, cloud_counts, target_counts, budget, caps = _validate(P, cloud, target, n_cache, available)
    backend = _pick_backend(backend, loss)
    if loss.lower() == "l2":
        budget, caps = _needed_budget(feasible_matrices, cloud_counts, target_counts, budget, caps)
    return _greedy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss.lower(), backend, solver)


def _greedy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, backend, solver) -> np.ndarray:
    if budget == 0 or not caps.any():
        return np.zeros_like(caps)
    if backend == "native":
        return _greedy_native(feasible_matrices, _columns(feasible_matrices), caps, budget,
                              target_counts - cloud_counts, _max_iter(caps.shape[1]))
    if loss == "kl":
        for i in range(caps.shape[0]):  # each robot alone must be able to make its own KL finite
            _check_kl_reachable(feasible_matrices[i:i + 1], cloud_counts, target_counts, budget, caps[i:i + 1])
    return _greedy_cvxpy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, solver)


@dataclass
class Channel:
    """The channel that Interactive's messages cross (the ``faults`` block, issue 12). ``solve_interactive`` with
    ``channel=None`` runs over a perfect channel; with a Channel it is the same solver (same Greedy start, caps,
    sweeps, tolerance and stopping rule) whose robots act on the messages they received:

    * every message is lost with probability ``message_loss``, independently per receiver (the receiver keeps the
      last value it had from that sender, 0 before any);
    * a message that is not lost arrives ``delay_sweeps`` sweeps late with probability ``message_delay`` (in
      sending order; until then the receiver acts on what it had);
    * a liar (``liars[i]``) sends ``lie_scale * P_i a_i`` instead of the truth (its upload is still its own best
      response);
    * ``bounded``: receivers clip every message with :func:`bound_contributions`.

    Draws come from ``rng`` (loss draws only when ``message_loss`` > 0, delay draws only when ``message_delay`` >
    0). A channel whose faults never fire gives the perfect channel's plans (tests/test_hardening_faults.py)."""

    rng: np.random.Generator
    message_loss: float = 0.0
    message_delay: float = 0.0
    delay_sweeps: int = 1
    liars: np.ndarray | None = None
    lie_scale: float = 1.0
    bounded: bool = False


def _check_probability(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class _Wire:
    """A channel's state during one solve: what each robot believes [receiver, sender], and messages in flight."""

    def __init__(self, channel: Channel, n_robots: int, n_classes: int, n_cache: float) -> None:
        if not isinstance(channel, Channel):
            raise ValueError(f"channel must be a baselines.solvers.Channel or None, got {type(channel).__name__}")
        if not isinstance(channel.rng, np.random.Generator):
            raise ValueError(f"channel.rng must be a numpy Generator, got {type(channel.rng).__name__}")
        self.rng = channel.rng
        self.message_loss = _check_probability(channel.message_loss, "message_loss")
        self.message_delay = _check_probability(channel.message_delay, "message_delay")
        delay = channel.delay_sweeps
        if isinstance(delay, bool) or not float(delay).is_integer() or delay < 1:
            raise ValueError(f"delay_sweeps must be an integer >= 1, got {delay!r}")
        self.delay_sweeps = int(delay)
        liars = np.zeros(n_robots, dtype=bool) if channel.liars is None else np.asarray(channel.liars, dtype=bool)
        if liars.shape != (n_robots,):
            raise ValueError(f"liars must have shape (n_robots,) = ({n_robots},), got {liars.shape}")
        if not np.isfinite(channel.lie_scale):
            raise ValueError(f"lie_scale must be finite, got {channel.lie_scale!r}")
        self.factor = np.where(liars, float(channel.lie_scale), 1.0)
        self.bounded = bool(channel.bounded)
        self.n_cache = n_cache
        self.believed = np.zeros((n_robots, n_robots, n_classes))
        self.sent = np.zeros((n_robots, n_classes))  # this sweep's messages, by sender
        self.late: np.ndarray | None = None  # this sweep's late messages [sender, receiver]
        self.in_flight: list[tuple[int, np.ndarray, np.ndarray]] = []  # (arrival sweep, late, sent)

    def message(self, i: int, contribution: np.ndarray) -> np.ndarray:
        self.sent[i] = self.factor[i] * contribution
        if self.bounded:
            self.sent[i] = bound_contributions(self.sent[i], self.n_cache)
        return self.sent[i]

    def draw(self) -> np.ndarray:
        """Which of a sweep's messages [sender, receiver] arrive at once; the late ones go to ``self.late``."""
        n_robots = len(self.factor)
        arrive = ~np.eye(n_robots, dtype=bool)
        if self.message_loss:
            arrive &= self.rng.random((n_robots, n_robots)) >= self.message_loss
        self.late = None
        if self.message_delay:
            self.late = arrive & (self.rng.random((n_robots, n_robots)) < self.message_delay)
            arrive &= ~self.late
        return arrive

    def post(self, sweep: int) -> None:
        if self.late is not None and self.late.any():
            self.in_flight.append((sweep + self.delay_sweeps, self.late, self.sent.copy()))

    def deliver(self, sweep: int) -> None:
        # in sending order (arrival sweeps never decrease): a newer message from a sender overwrites an older one
        while self.in_flight and self.in_flight[0][0] <= sweep:
            _, late, sent = self.in_flight.pop(0)
            senders, receivers = np.nonzero(late)
            self.believed[receivers, senders] = sent[senders]

    def broadcast(self, contributions: np.ndarray) -> None:
        """Algorithm 1, line 6: every robot sends its Greedy contribution to every other (sweep 0)."""
        for i in range(len(contributions)):
            self.message(i, contributions[i])
        senders, receivers = np.nonzero(self.draw())
        self.believed[receivers, senders] = self.sent[senders]
        self.post(0)


_PERFECT = (np.zeros((0, 0, 0)), np.zeros((0, 0), dtype=np.bool_), np.zeros(0), np.zeros((0, 0)))


def solve_interactive(P, cloud, target, n_cache, available=None, tol: float = TOL, max_sweeps: int = MAX_SWEEPS,
                      loss: str = "l2", backend: str = "auto", broadcast: str = "all",
                      solver: str | None = None, channel: Channel | None = None,
                      order: str = "gauss-seidel") -> InteractiveResult:
    """Algorithm 1 (Problem 3): Greedy start, then sweeps of best responses until no robot's contribution moves.

    In a sweep robot i = 1..N solves ``min_{a_i in S_i} L(cloud + sum_{k != i} P_k a_k + P_i a_i)`` exactly,
    with the others' current (shared) contributions, and shares ``P_i a_i``. Stops after the first sweep in
    which every ``||P_i a_i (new) - P_i a_i (old)||_inf <= tol * max(1, ||target||_2)`` (converged=True), or
    after ``max_sweeps``. The loss is a convex potential of this game and every best response is exact, so the
    loss never increases and the fixed point is the Oracle optimum (Theorems 1-2). Message counts: module
    docstring (``broadcast="all"``: N(N-1) per share round; ``"sum"``: 2N per sweep via a shared sum).

    ``channel``: an unreliable channel (:class:`Channel`); the robots then best-respond to what they *believe*
    the others contribute, the stopping rule also waits until no message is in flight, and messages are the
    per-receiver ones of ``broadcast="all"`` (lost ones included). None: the perfect channel.

    ``order``: ``"gauss-seidel"`` (Algorithm 1, the default: robot i answers the new contributions of robots < i
    of the same sweep) or ``"jacobi"`` (every robot answers the contributions of the previous sweep, all at once;
    perfect channel only). Same message count. With a small ``max_sweeps`` this is the sweep-capped Interactive
    (docs/learned.md, "Communication").
    """
    feasible_matrices, cloud_counts, target_counts, budget, caps = _validate(P, cloud, target, n_cache, available)
    backend = _pick_backend(backend, loss)
    loss = loss.lower()
    broadcast = _validate_choice(broadcast, "broadcast", BROADCASTS)
    if not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if isinstance(max_sweeps, bool) or not float(max_sweeps).is_integer() or max_sweeps < 1:
        raise ValueError(f"max_sweeps must be an integer >= 1, got {max_sweeps!r}")
    order = _validate_choice(order, "order", ORDERS)
    if channel is not None and order != "gauss-seidel":
        raise ValueError(f"a channel runs the Gauss-Seidel sweeps of Algorithm 1, got order={order!r}")
    if channel is not None and broadcast != "all":
        raise ValueError(f"a channel carries the per-receiver messages of broadcast='all', got broadcast={broadcast!r}")
    max_sweeps = int(max_sweeps)
    n_robots, n_classes = caps.shape
    wire = None if channel is None else _Wire(channel, n_robots, n_classes, budget)
    if loss == "l2" and budget > 0:
        budget, caps = _needed_budget(feasible_matrices, cloud_counts, target_counts, budget, caps, interactive=True)
    move_tol = tol * max(1.0, float(np.linalg.norm(target_counts)))
    actions = _greedy(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, backend, solver)
    if backend == "native":
        sweep, contributions, start_loss = _native_sweeps(feasible_matrices, cloud_counts, target_counts, budget,
                                                          caps, actions, wire, order == "jacobi")
    else:
        sweep, contributions, start_loss = _cvxpy_sweeps(feasible_matrices, cloud_counts, target_counts, budget,
                                                         caps, loss, actions, wire, solver, order == "jacobi")
    if wire is not None:
        wire.broadcast(contributions)
    history = [start_loss]
    sweeps, converged = 0, False
    for sweeps in range(1, max_sweeps + 1):
        arrive = _PERFECT[1]
        if wire is not None:
            wire.deliver(sweeps)
            arrive = wire.draw()
        moved, sweep_loss = sweep(arrive)
        if wire is not None:
            wire.post(sweeps)
        history.append(sweep_loss)
        if moved <= move_tol and (wire is None or not wire.in_flight):
            converged = True
            break
    if broadcast == "all":
        messages = n_robots * (n_robots - 1) * (1 + sweeps)
    else:
        messages = n_robots + 2 * n_robots * sweeps
    contributions = np.einsum("nyj,nj->ny", feasible_matrices, actions)
    return InteractiveResult(actions=actions, sweeps=int(sweeps), messages=int(messages),
                             history=np.asarray(history, dtype=np.float64), converged=bool(converged),
                             broadcast=broadcast, contributions=contributions)


def _native_sweeps(feasible_matrices, cloud_counts, target_counts, budget, caps, actions, wire, jacobi=False):
    """(sweep(arrive) -> (moved, loss), contributions, start loss) of the compiled backend; state in place.
    ``jacobi``: the channel's belief path with every robot believing last sweep's contributions and no message
    arriving within the sweep (the same kernel; the beliefs are refreshed between sweeps)."""
    n_robots, n_classes = caps.shape
    PT = _columns(feasible_matrices)
    d = target_counts - cloud_counts
    contributions = np.zeros((n_robots, n_classes))
    for i in range(n_robots):
        _contribution(PT, actions, i, contributions[i])
    total = contributions.sum(axis=0)
    ws, d_i, new = _workspace(1, n_classes), np.zeros(n_classes), np.zeros(n_classes)
    max_iter = _max_iter(n_classes)
    believed, _, factor, sent = _PERFECT if wire is None else (wire.believed, None, wire.factor, wire.sent)
    bounded = wire is not None and wire.bounded
    n_cache = 0.0 if wire is None else wire.n_cache
    if jacobi:
        believed, factor, sent = np.zeros((n_robots, n_robots, n_classes)), np.ones(n_robots), np.zeros((n_robots, n_classes))
        silent = np.zeros((n_robots, n_robots), dtype=np.bool_)

    def sweep(arrive):
        if jacobi:
            believed[:] = contributions[None]
            arrive = silent
        moved, loss = _sweep_native(feasible_matrices, PT, caps, budget, d, actions, contributions, total, max_iter,
                                    ws, d_i, new, believed, arrive, factor, bounded, n_cache, sent)
        return float(moved), float(loss)

    return sweep, contributions, float(np.sqrt(((total - d) ** 2).sum()))


def _cvxpy_sweeps(feasible_matrices, cloud_counts, target_counts, budget, caps, loss, actions, wire, solver,
                  jacobi=False):
    """The reference backend's sweep, the same rules as :func:`_sweep_native` (channel and Jacobi included)."""
    n_robots, n_classes = caps.shape
    best_response = _BestResponseCvxpy(n_classes, target_counts, budget, loss,
                                       _scale(cloud_counts, target_counts, budget), solver)
    contributions = np.einsum("nyj,nj->ny", feasible_matrices, actions)
    state = {"total": contributions.sum(axis=0)}

    def sweep(arrive):
        total = state["total"]
        start = contributions.copy() if jacobi else None
        moved = 0.0
        for i in range(n_robots):
            others = total - contributions[i] if start is None else start.sum(axis=0) - start[i]
            believed_others = others
            if wire is not None:  # the truth plus what robot i's beliefs get wrong (exact zeros when nothing did)
                wrong = wire.believed[i] - contributions
                wrong[i] = 0.0
                believed_others = others + wrong.sum(axis=0)
            if caps[i].any() and budget > 0:
                a_i = best_response(feasible_matrices[i], cloud_counts + believed_others, caps[i])
                single = a_i[None].copy()
                _clip_feasible(single, caps[i:i + 1], budget)
                actions[i] = single[0]
            new = feasible_matrices[i] @ actions[i]
            moved = max(moved, float(np.abs(new - contributions[i]).max()))
            contributions[i] = new
            total = others + new
            if wire is not None:
                receivers = np.flatnonzero(arrive[i])
                wire.believed[receivers, i] = wire.message(i, new)
        state["total"] = total = contributions.sum(axis=0)
        return moved, _loss_of_counts(cloud_counts + total, target_counts, loss)

    return sweep, contributions, _loss_of_counts(cloud_counts + state["total"], target_counts, loss)


def bound_contributions(messages: np.ndarray, n_cache: float) -> np.ndarray:
    """A receiver's bound on contribution messages (the robust option of Interactive): what a robot can really add
    is non-negative and sums to at most ``n_cache`` (each column of P_k sums to 1 and ``sum a_k <= n_cache``), so
    a message is clipped at 0 and scaled down to that sum. An honest message, over ``n_cache`` by round-off at most
    (relative ``_BOUND_SLACK``), passes unchanged."""
    bounded = np.clip(messages, 0.0, None)
    total = bounded.sum(axis=-1, keepdims=True)
    return np.where(total > n_cache * (1.0 + _BOUND_SLACK), bounded * (n_cache / np.maximum(total, 1e-300)), bounded)


def solve_interactive_faulty(P, cloud, target, n_cache, available=None, *, rng: np.random.Generator,
                             message_loss: float = 0.0, message_delay: float = 0.0, delay_sweeps: int = 1,
                             liars=None, lie_scale: float = 1.0, bounded: bool = False,
                             tol: float = TOL, max_sweeps: int = MAX_SWEEPS, loss: str = "l2",
                             backend: str = "auto", solver: str | None = None) -> InteractiveResult:
    """Algorithm 1 over an unreliable channel (the ``faults`` block, issue 12): :func:`solve_interactive` with
    ``channel=Channel(rng, message_loss, ...)`` (semantics: :class:`Channel`). The same solver, defaults and
    stopping rule as the perfect channel, which also waits for messages in flight. Messages: ``N (N - 1)`` for
    the first broadcast, ``N - 1`` per best response (lost ones included)."""
    channel = Channel(rng=rng, message_loss=message_loss, message_delay=message_delay, delay_sweeps=delay_sweeps,
                      liars=liars, lie_scale=lie_scale, bounded=bounded)
    return solve_interactive(P, cloud, target, n_cache, available=available, tol=tol, max_sweeps=max_sweeps,
                             loss=loss, backend=backend, solver=solver, channel=channel)
