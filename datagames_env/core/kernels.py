"""Compiled (numba) kernels of the batched core: everything that runs per step, per robot.

Why numba: numpy's batched ``Generator.multinomial`` alone costs ~20 ms for 1024 envs x 20 robots x 10
classes on one core, the whole budget of a 1M robot-steps/s step. And the vector env must equal B
separately seeded parallel envs draw for draw, so each env needs its own random stream: here an
xoshiro256** state per env, advanced only by that env's robots in a fixed order.

Each kernel has a numpy/scipy reference it is tested against (``tests/test_kernels.py``):
binomial/multinomial against scipy's pmf, allocation against a plain Python implementation, the mix
estimators against cvxpy-free closed forms and scipy's NNLS-style checks.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_CACHE = True  # numba caches compiled kernels in __pycache__: a fresh process skips most compile time

_U64 = np.uint64


# --------------------------------------------------------------------------------------------- random
def seed_states(seeds: np.ndarray) -> np.ndarray:
    """xoshiro256** states (len(seeds), 4) from integer seeds, via numpy's SeedSequence (well mixed)."""
    states = np.empty((len(seeds), 4), dtype=np.uint64)
    for row, seed in enumerate(seeds):
        words = np.random.SeedSequence([int(seed), 0x5EED]).generate_state(4, dtype=np.uint64)
        if not words.any():  # the all-zero state is the one xoshiro cannot leave
            words[0] = 1
        states[row] = words
    return states


@njit(inline="always", cache=_CACHE)
def _rotl(x, k):
    return (x << _U64(k)) | (x >> _U64(64 - k))


@njit(cache=_CACHE)
def next_u64(state):
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    result = _rotl(s1 * _U64(5), 7) * _U64(9)
    t = s1 << _U64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    state[0], state[1], state[2], state[3] = s0, s1, s2, s3
    return result


@njit(cache=_CACHE)
def next_double(state):
    """Uniform in [0, 1) with 53 random bits."""
    return float(next_u64(state) >> _U64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=_CACHE)
def _binomial_inversion(state, n, p):
    # Sequential search from 0; used when n * p < 10 (few steps on average). As numpy's legacy sampler.
    u = next_double(state)
    mean = n * p
    if u <= 1.0 - mean:  # P(X = 0) = q^n >= 1 - n p (Bernoulli): decided without a transcendental
        return 0
    q = 1.0 - p
    qn = math.exp(n * math.log(q))
    bound = min(n, mean + 10.0 * math.sqrt(mean * q + 1.0))
    x = 0
    px = qn
    while u > px:
        x += 1
        if x > bound:
            x = 0
            px = qn
            u = next_double(state)
        else:
            u -= px
            px = ((n - x + 1) * p * px) / (x * q)
    return x


_LOG_FACTORIAL_TABLE = np.array([math.lgamma(k + 1.0) for k in range(64)])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(inline="always", cache=_CACHE)
def _log_factorial(k):
    # table below 64, else Stirling's series to z^-5: error < 1e-15 there; 4x faster than math.lgamma
    if k < 64:
        return _LOG_FACTORIAL_TABLE[int(k)]
    z = k + 1.0
    iz = 1.0 / z
    iz2 = iz * iz
    return (z - 0.5) * math.log(z) - z + _HALF_LOG_2PI + iz * (1.0 / 12.0 - iz2 * (1.0 / 360.0 - iz2 / 1260.0))


@njit(cache=_CACHE)
def _binomial_btrs(state, n, p):
    # Hormann (1993) transformed rejection with squeeze; exact acceptance test on log-factorials. Their
    # set-up is deferred until the first draw that misses the squeeze (~15% of draws): it dominated the cost.
    spq = math.sqrt(n * p * (1.0 - p))
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    have_exact_setup = False
    alpha = 0.0
    log_odds = 0.0
    m = 0.0
    log_pmf_mode = 0.0
    while True:
        u = next_double(state) - 0.5
        v = next_double(state)
        us = 0.5 - abs(u)
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return int(k)
        if not have_exact_setup:
            alpha = (2.83 + 5.1 / b) * spq
            log_odds = math.log(p / (1.0 - p))
            m = math.floor((n + 1) * p)
            log_pmf_mode = _log_factorial(m) + _log_factorial(n - m)
            have_exact_setup = True
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= log_pmf_mode - _log_factorial(k) - _log_factorial(n - k) + (k - m) * log_odds:
            return int(k)


@njit(cache=_CACHE)
def binomial(state, n, p):
    """Exact Binomial(n, p) draw."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    flip = p > 0.5
    pp = 1.0 - p if flip else p
    k = _binomial_inversion(state, n, pp) if n * pp < 10.0 else _binomial_btrs(state, n, pp)
    return n - k if flip else k


@njit(cache=_CACHE)
def multinomial_into(state, n, pvals, out):
    """Exact Multinomial(n, pvals) by conditional binomials; pvals need not be normalised."""
    n_cat = pvals.shape[0]
    total = 0.0
    last = -1
    for j in range(n_cat):
        out[j] = 0
        if pvals[j] > 0.0:
            total += pvals[j]
            last = j
    if last < 0:
        return
    remaining_n = n
    remaining_p = total
    for j in range(last):
        if remaining_n == 0:
            return
        pj = pvals[j]
        if pj <= 0.0:
            continue
        ratio = pj / remaining_p
        ratio = min(ratio, 1.0)
        x = binomial(state, remaining_n, ratio)
        out[j] = x
        remaining_n -= x
        remaining_p -= pj
    out[last] = remaining_n


@njit(cache=_CACHE)
def categorical(state, weights, total):
    """Index drawn with probability weights[j] / total (total > 0)."""
    u = next_double(state) * total
    acc = 0.0
    last_positive = 0
    for j in range(weights.shape[0]):
        if weights[j] > 0.0:
            acc += weights[j]
            last_positive = j
            if u < acc:
                return j
    return last_positive  # float round-off at the top end


# ------------------------------------------------------------------------------------------- per round
@njit(cache=_CACHE)
def draw_predicted_histograms(states, predicted_marginals, obs_per_round, out):
    """out[b, i] ~ Multinomial(obs_per_round, predicted_marginals[b, i]): what robot i sees this round.

    predicted_marginals[b, i, j] = sum_y p_i(y) R[y, j], with R the pool's empirical p(yhat | y)."""
    n_env, n_robot, _ = predicted_marginals.shape
    for b in range(n_env):
        for i in range(n_robot):
            multinomial_into(states[b], obs_per_round, predicted_marginals[b, i], out[b, i])


@njit(cache=_CACHE)
def draw_uploads(states, upload_counts, true_mixes, robot_version, conditionals, cell_start, cell_members,
                 out_ids, out_labels, out_predicted):
    """Turn per-predicted-class upload counts into real pool samples.

    For robot i, a sample it predicted as class j has true class y with probability
    p_i(y) R[y, j] / sum_y' p_i(y') R[y', j]. The a_j uploads of predicted class j are a uniformly random
    subset of the round's samples predicted j; such a subset of exchangeable i.i.d. draws is itself i.i.d.,
    so its true labels are exactly Multinomial(a_j, p_i(. | j)): no need to materialise the round.
    The sample is then a uniform member of the pool cell (y, j) of the robot's model version.

    out_* have shape (B, N, n_cache) and are filled from the left; unused slots are -1.
    """
    n_env, n_robot, n_class = upload_counts.shape
    weights = np.empty(n_class)
    for b in range(n_env):
        for i in range(n_robot):
            v = robot_version[b, i]
            slot = 0
            for j in range(n_class):
                a = upload_counts[b, i, j]
                if a <= 0:
                    continue
                total = 0.0
                for y in range(n_class):
                    weights[y] = true_mixes[b, i, y] * conditionals[v, y, j]
                    total += weights[y]
                for _ in range(a):
                    if total <= 0.0:  # cannot happen for counts capped by availability; keep the slot empty
                        break
                    y = categorical(states[b], weights, total)
                    cell = y * n_class + j
                    start = cell_start[v, cell]
                    size = cell_start[v, cell + 1] - start
                    pick = start + min(int(next_double(states[b]) * size), size - 1)
                    out_ids[b, i, slot] = cell_members[v, pick]
                    out_labels[b, i, slot] = y
                    out_predicted[b, i, slot] = j
                    slot += 1
            for s in range(slot, out_ids.shape[2]):
                out_ids[b, i, s] = -1
                out_labels[b, i, s] = -1
                out_predicted[b, i, s] = -1


@njit(cache=_CACHE)
def draw_stream_samples(states, true_mixes, class_start, class_members, out_positions):
    """Selection mode: materialise each robot's round, out_positions[b, i, t] = a pool position whose
    true class is drawn from p_i(y), uniform within the class."""
    n_env, n_robot, n_obs = out_positions.shape
    n_class = true_mixes.shape[2]
    for b in range(n_env):
        for i in range(n_robot):
            total = 0.0
            for y in range(n_class):
                total += true_mixes[b, i, y]
            for t in range(n_obs):
                y = categorical(states[b], true_mixes[b, i], total)
                start = class_start[y]
                size = class_start[y + 1] - start
                out_positions[b, i, t] = class_members[start + min(int(next_double(states[b]) * size), size - 1)]


# -------------------------------------------------------------------------------------------- actions
@njit(cache=_CACHE)
def allocate_uploads(shares, available, n_cache, out):
    """Allocation action -> integer upload counts per predicted class.

    shares[b, i] in [0, 1]^C (already clipped): the share of the n_cache budget per predicted class. A sum
    above 1 is normalised; a sum below 1 leaves budget unused (the paper's 1'a <= N_cache). Quotas are
    rounded by largest remainder (ties: lower class first), capped by what the robot has of each predicted
    class, and budget lost to the caps moves to classes that still have samples, most preferred first
    (higher share, then more available, then lower class).
    """
    n_env, n_robot, n_class = shares.shape
    quota = np.empty(n_class)
    for b in range(n_env):
        for i in range(n_robot):
            s = 0.0
            for j in range(n_class):
                s += shares[b, i, j]
            scale = n_cache / s if s > 1.0 else float(n_cache)
            budget = int(math.floor(min(s, 1.0) * n_cache + 0.5))
            given = 0
            for j in range(n_class):
                quota[j] = shares[b, i, j] * scale
                out[b, i, j] = int(math.floor(quota[j] + 1e-9))
                given += out[b, i, j]
            # largest remainder: hand out what flooring left, biggest fractional part first
            while given < budget:
                best = -1
                best_frac = -1.0
                for j in range(n_class):
                    frac = quota[j] - out[b, i, j]
                    if frac > best_frac + 1e-12:
                        best_frac = frac
                        best = j
                out[b, i, best] += 1
                given += 1
            while given > budget:  # float round-up overshoot (sum of floors above budget): take from smallest
                worst = -1
                worst_frac = 2.0
                for j in range(n_class):
                    if out[b, i, j] > 0:
                        frac = quota[j] - out[b, i, j]
                        if frac < worst_frac:
                            worst_frac = frac
                            worst = j
                out[b, i, worst] -= 1
                given -= 1
            leftover = 0
            for j in range(n_class):
                if out[b, i, j] > available[b, i, j]:
                    leftover += out[b, i, j] - available[b, i, j]
                    out[b, i, j] = available[b, i, j]
            while leftover > 0:  # preference: higher share, then more available, then lower class
                best = -1
                for j in range(n_class):
                    if available[b, i, j] - out[b, i, j] <= 0:
                        continue
                    if best < 0 or shares[b, i, j] > shares[b, i, best] or (
                            shares[b, i, j] == shares[b, i, best] and available[b, i, j] > available[b, i, best]):
                        best = j
                if best < 0:
                    break
                take = min(available[b, i, best] - out[b, i, best], leftover)
                out[b, i, best] += take
                leftover -= take


@njit(cache=_CACHE)
def top_scores(scores, n_cache, out):
    """Selection action: indices of the n_cache highest scores per robot (ties: lower index first)."""
    n_env, n_robot, _ = scores.shape
    for b in range(n_env):
        for i in range(n_robot):
            order = np.argsort(-scores[b, i], kind="mergesort")
            for s in range(n_cache):
                out[b, i, s] = order[s]


# ------------------------------------------------------------------------------------ mix estimation
@njit(cache=_CACHE)
def project_to_simplex(v, out, scratch):
    """Euclidean projection of v onto the probability simplex (sort-based, Held et al.). ``scratch`` is a
    buffer of v's length: an insertion sort in place, since np.sort allocates per call (C is small)."""
    n = v.shape[0]
    for k in range(n):  # descending insertion sort into scratch
        x = v[k]
        pos = k
        while pos > 0 and scratch[pos - 1] < x:
            scratch[pos] = scratch[pos - 1]
            pos -= 1
        scratch[pos] = x
    css = 0.0
    theta = 0.0
    for k in range(n):
        css += scratch[k]
        t = (css - 1.0) / (k + 1)
        if scratch[k] - t > 0.0:
            theta = t
    for k in range(n):
        out[k] = max(v[k] - theta, 0.0)


@njit(cache=_CACHE)
def estimate_mixes(histograms, robot_version, confusions, pinv_transposed, method, em_iterations, out):
    """Each robot's estimate of its true class mix from its predicted-class histogram.

    p(yhat) = C' p(y). method 0 (BBSE on the simplex): p = project_simplex(pinv(C') q), the
    black-box shift estimate (Lipton et al. 2018) made a distribution. method 1 (EM): maximum likelihood
    of the histogram over the simplex (Saerens et al. 2002), started from the BBSE estimate.
    """
    n_env, n_robot, n_class = histograms.shape
    q = np.empty(n_class)
    raw = np.empty(n_class)
    p = np.empty(n_class)
    pred = np.empty(n_class)
    scratch = np.empty(n_class)
    for b in range(n_env):
        for i in range(n_robot):
            v = robot_version[b, i]
            total = 0.0
            for j in range(n_class):
                total += histograms[b, i, j]
            if total <= 0:
                for j in range(n_class):
                    out[b, i, j] = 1.0 / n_class
                continue
            for j in range(n_class):
                q[j] = histograms[b, i, j] / total
            for y in range(n_class):
                acc = 0.0
                for j in range(n_class):
                    acc += pinv_transposed[v, y, j] * q[j]
                raw[y] = acc
            # pinv(C') q sums to 1 when C has full rank; then, with no negative entry, it is its own projection
            s = 0.0
            inside = True
            for y in range(n_class):
                s += raw[y]
                if raw[y] < 0.0:
                    inside = False
            if inside and abs(s - 1.0) < 1e-9:
                for y in range(n_class):
                    p[y] = raw[y] / s
            else:
                project_to_simplex(raw, p, scratch)
            if method == 1:
                for y in range(n_class):  # start inside the simplex so no class is stuck at exactly zero
                    p[y] = 0.9 * p[y] + 0.1 / n_class
                for _ in range(em_iterations):
                    for j in range(n_class):
                        acc = 0.0
                        for y in range(n_class):
                            acc += confusions[v, y, j] * p[y]
                        pred[j] = acc
                    norm = 0.0
                    for y in range(n_class):
                        acc = 0.0
                        for j in range(n_class):
                            if pred[j] > 0.0:
                                acc += confusions[v, y, j] * q[j] / pred[j]
                        p[y] *= acc
                        norm += p[y]
                    for y in range(n_class):
                        p[y] /= norm
            for y in range(n_class):
                out[b, i, y] = p[y]


# ------------------------------------------------------------------------------------ read-outs
@njit(cache=_CACHE)
def first_non_finite(values):
    """Flat index of the first NaN/inf in values, or -1."""
    flat = values.ravel()
    for k in range(flat.shape[0]):
        if not np.isfinite(flat[k]):
            return k
    return -1


@njit(cache=_CACHE)
def fill_context_observations(cloud_counts, target_counts, histograms, obs_per_round, estimated_mixes,
                              class_accuracy, confusions, robot_version, rounds_left, out):
    """Write the per-robot context block of the observation, in the order of ``BatchedCore.obs_layout``:
    cloud_hist, target, gap, predicted_hist, estimated_mix, class_accuracy, purity, gap_fill (C each),
    rounds_left (1). With P the estimated feasible matrix (column j = p(y | yhat = j) = C[y, j] m_y / mass_j):
    purity[j] = P[j, j], gap_fill[j] = sum_y P[y, j] gap[y] (how much of the gap one upload of predicted class j
    is expected to fill; negative where it mostly adds classes the cloud already has); 0 where mass_j = 0."""
    n_env, n_robot, n_class = histograms.shape
    target_total = 0.0
    for j in range(n_class):
        target_total += target_counts[j]
    for b in range(n_env):
        cloud_total = 0.0
        for j in range(n_class):
            cloud_total += cloud_counts[b, j]
        cloud_norm = 1.0 / max(cloud_total, 1.0)
        for i in range(n_robot):
            row = out[b, i]
            v = robot_version[b, i]
            for j in range(n_class):
                gap = (target_counts[j] - cloud_counts[b, j]) / target_total
                row[j] = cloud_counts[b, j] * cloud_norm
                row[n_class + j] = target_counts[j] / target_total
                row[2 * n_class + j] = min(1.0, max(-1.0, gap))
                row[3 * n_class + j] = histograms[b, i, j] / obs_per_round
                row[4 * n_class + j] = estimated_mixes[b, i, j]
                row[5 * n_class + j] = class_accuracy[v, j]
                mass = 0.0
                fill = 0.0
                for y in range(n_class):
                    w = confusions[v, y, j] * estimated_mixes[b, i, y]
                    mass += w
                    fill += w * min(1.0, max(-1.0, (target_counts[y] - cloud_counts[b, y]) / target_total))
                if mass > 1e-12:
                    row[6 * n_class + j] = confusions[v, j, j] * estimated_mixes[b, i, j] / mass
                    row[7 * n_class + j] = fill / mass
                else:
                    row[6 * n_class + j] = 0.0
                    row[7 * n_class + j] = 0.0
            row[8 * n_class] = rounds_left


@njit(cache=_CACHE)
def feasible_matrices(conditionals, robot_version, mixes, out):
    """out[b, i, :, j] = p_i(y | yhat = j) proportional to conditionals[v, y, j] * mixes[b, i, y]; a column
    with no mass (class j not expected among the robot's predictions) is all zeros."""
    n_env, n_robot, n_class = mixes.shape
    for b in range(n_env):
        for i in range(n_robot):
            v = robot_version[b, i]
            for j in range(n_class):
                mass = 0.0
                for y in range(n_class):
                    mass += conditionals[v, y, j] * mixes[b, i, y]
                inv = 1.0 / mass if mass > 1e-12 else 0.0
                for y in range(n_class):
                    out[b, i, y, j] = conditionals[v, y, j] * mixes[b, i, y] * inv


@njit(cache=_CACHE)
def add_uploads(cloud_counts, uploaded_labels):
    """cloud_counts[b, y] += number of uploads of env b with true label y (-1 slots ignored)."""
    n_env, n_robot, n_slot = uploaded_labels.shape
    for b in range(n_env):
        for i in range(n_robot):
            for s in range(n_slot):
                y = uploaded_labels[b, i, s]
                if y >= 0:
                    cloud_counts[b, y] += 1.0
