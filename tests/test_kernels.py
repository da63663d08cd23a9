"""Tests of datagames_env.core.kernels against independent numpy / scipy / plain-Python references.

Every random test uses fixed seeds and a significance level of 1e-4, so a correct kernel fails with probability
about 1e-4 per test and the suite is reproducible.
"""

from __future__ import annotations

import inspect
import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import optimize, stats

from datagames_env.core import kernels

ALPHA = 1e-4  # significance level of every statistical test here

_binomial = kernels.binomial
_multinomial_into = kernels.multinomial_into


@numba.njit(cache=False)
def _binomial_samples(state, n, p, size):
    out = np.empty(size, dtype=np.int64)
    for k in range(size):
        out[k] = _binomial(state, n, p)
    return out


@numba.njit(cache=False)
def _multinomial_samples(state, n, pvals, size):
    out = np.empty((size, pvals.shape[0]), dtype=np.int64)
    for k in range(size):
        _multinomial_into(state, n, pvals, out[k])
    return out


def _state(seed: int) -> np.ndarray:
    return kernels.seed_states(np.array([seed]))[0].copy()


def _chi2_binomial_pvalue(samples: np.ndarray, n: int, p: float) -> float:
    """Chi-square goodness of fit of integer samples to Binomial(n, p); tail bins pooled to expected >= 5."""
    size = len(samples)
    assert samples.min() >= 0 and samples.max() <= n
    # only a window of the support can hold bins with 5 expected draws (n may be 10^7)
    first = int(max(0, stats.binom.ppf(1e-12, n, p) - 1))
    last = int(min(n, stats.binom.isf(1e-12, n, p) + 1))
    window = np.arange(first, last + 1)
    big = window[stats.binom.pmf(window, n, p) * size >= 5.0]
    lo, hi = int(big[0]), int(big[-1])
    if hi <= lo:
        return 1.0
    counts = np.bincount(np.minimum(samples, hi), minlength=hi + 1)
    observed = np.concatenate([[counts[:lo + 1].sum()], counts[lo + 1:hi], [counts[hi]]])
    expected = np.concatenate([[stats.binom.cdf(lo, n, p)], stats.binom.pmf(np.arange(lo + 1, hi), n, p),
                               [stats.binom.sf(hi - 1, n, p)]]) * size
    expected *= size / expected.sum()
    return float(stats.chisquare(observed, expected).pvalue)


# ------------------------------------------------------------------------------------------ random streams
def test_seed_states_are_per_seed_and_nonzero():
    a = kernels.seed_states(np.array([1, 2, 3]))
    assert a.shape == (3, 4) and a.dtype == np.uint64
    for b, seed in enumerate([1, 2, 3]):
        np.testing.assert_array_equal(a[b], kernels.seed_states(np.array([seed]))[0])
    assert len({tuple(r) for r in a}) == 3
    assert (a != 0).any(axis=1).all()


def test_next_double_is_uniform():
    state = _state(7)
    u = np.array([kernels.next_double(state) for _ in range(20000)])
    assert u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > ALPHA


# ------------------------------------------------------------------------------------------------ binomial
BINOMIAL_CASES = [
    (5, 0.3),          # inversion
    (19, 0.5),         # inversion, n p just below 10
    (1000, 0.003),     # inversion, tiny n p with large n
    (10**7, 2e-7),     # inversion, huge n
    (20, 0.9),         # p > 0.5: flipped, inversion
    (30, 0.999),       # p > 0.5: flipped, tiny
    (50, 0.2),         # n p = 10: BTRS
    (100, 0.5),        # BTRS
    (2000, 0.7),       # p > 0.5: flipped, BTRS, log-factorials past the table (k >= 64)
    (10**6, 0.01),     # BTRS, Stirling series
]


@pytest.mark.parametrize(("n", "p"), BINOMIAL_CASES)
def test_binomial_matches_scipy_pmf(n, p):
    size = 1_000_000  # 10x the usual 100k: subtle BTRS errors (a loose squeeze) show only at this size
    samples = _binomial_samples(_state(1000 + n % 97), n, p, size)
    assert samples.min() >= 0 and samples.max() <= n
    assert _chi2_binomial_pvalue(samples, n, p) > ALPHA
    # the first two moments, as a second, coarser check
    mean, var = n * p, n * p * (1 - p)
    assert abs(samples.mean() - mean) < 5 * math.sqrt(var / size)
    assert samples.var() == pytest.approx(var, rel=0.02)


def test_log_factorial_matches_lgamma():
    log_factorial = getattr(kernels, "_log_factorial", None)
    if log_factorial is None:
        pytest.skip("kernels has no _log_factorial helper any more")
    for k in list(range(200)) + [1000, 12345, 10**6, 10**9]:
        assert log_factorial(float(k)) == pytest.approx(math.lgamma(k + 1.0), rel=1e-14, abs=1e-14), k


def test_binomial_edge_cases():
    state = _state(3)
    for _ in range(50):
        assert _binomial(state, 0, 0.5) == 0
        assert _binomial(state, 10, 0.0) == 0
        assert _binomial(state, 10, 1.0) == 10
        assert _binomial(state, 0, 1.0) == 0
        assert _binomial(state, 7, 1e-300) == 0
        assert 0 <= _binomial(state, 3, 0.5) <= 3
    assert (_binomial_samples(state, 1, 0.5, 10_000) <= 1).all()


def test_binomial_is_reproducible_from_the_state():
    a = _binomial_samples(_state(5), 100, 0.3, 1000)
    b = _binomial_samples(_state(5), 100, 0.3, 1000)
    c = _binomial_samples(_state(6), 100, 0.3, 1000)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------------------------- multinomial
def test_multinomial_moments_and_support():
    n, size = 30, 100_000
    pvals = np.array([0.2, 0.0, 0.6, 0.2, 0.0]) * 3.0  # need not be normalised
    p = pvals / pvals.sum()
    draws = _multinomial_samples(_state(11), n, pvals, size)
    assert (draws.sum(axis=1) == n).all()
    assert (draws[:, [1, 4]] == 0).all()
    assert (draws >= 0).all()
    mean = draws.mean(axis=0)
    se = np.sqrt(n * p * (1 - p) / size)
    assert np.all(np.abs(mean - n * p) <= 5 * se + 1e-12)
    cov = np.cov(draws, rowvar=False)
    theory = n * (np.diag(p) - np.outer(p, p))
    np.testing.assert_allclose(cov, theory, atol=0.03 * n * p.max())
    # each marginal is Binomial(n, p_j)
    for j in (0, 2, 3):
        assert _chi2_binomial_pvalue(draws[:, j], n, p[j]) > ALPHA


def test_multinomial_edge_cases():
    state = _state(2)
    out = np.full(4, 99, dtype=np.int64)
    _multinomial_into(state, 0, np.array([0.5, 0.5, 0.0, 0.0]), out)
    np.testing.assert_array_equal(out, 0)
    out[:] = 99
    _multinomial_into(state, 5, np.zeros(4), out)
    np.testing.assert_array_equal(out, 0)
    _multinomial_into(state, 17, np.array([0.0, 0.0, 2.0, 0.0]), out)
    np.testing.assert_array_equal(out, [0, 0, 17, 0])
    _multinomial_into(state, 1000, np.array([1e-300, 0.0, 1.0, 1e-300]), out)
    assert out.sum() == 1000 and out[1] == 0


def test_categorical_matches_weights():
    state = _state(9)
    weights = np.array([0.0, 3.0, 1.0, 0.0, 6.0])
    draws = np.array([kernels.categorical(state, weights, weights.sum()) for _ in range(20000)])
    counts = np.bincount(draws, minlength=5)
    assert counts[0] == counts[3] == 0
    assert stats.chisquare(counts[[1, 2, 4]], 20000 * weights[[1, 2, 4]] / 10.0).pvalue > ALPHA


def test_draw_predicted_histograms_are_multinomial():
    rng = np.random.default_rng(0)
    n_env, n_robot, c = 2, 3, 4
    marginals = rng.dirichlet(np.ones(c), size=(n_env, n_robot))
    marginals[1, 2, 0] = 0.0
    states = kernels.seed_states(np.array([4, 5]))
    out = np.empty((n_env, n_robot, c), dtype=np.int64)
    totals = np.zeros((n_env, n_robot, c))
    for _ in range(3000):
        kernels.draw_predicted_histograms(states, marginals, 40, out)
        assert (out.sum(axis=2) == 40).all()
        assert out[1, 2, 0] == 0
        totals += out
    expected = 40 * marginals / marginals.sum(axis=2, keepdims=True)
    np.testing.assert_allclose(totals / 3000, expected, atol=0.35)


# ------------------------------------------------------------------------------------ uploads vs reference
def _tiny_world():
    """A hand-built pool of 30 samples, 3 classes, one model version (lookup tables as core.py builds them)."""
    c = 3
    confusion_counts = {0: [7, 2, 1], 1: [1, 8, 1], 2: [0, 3, 7]}  # true class -> predictions per class
    labels, preds = [], []
    for y, row in confusion_counts.items():
        for j, k in enumerate(row):
            labels += [y] * k
            preds += [j] * k
    order = np.random.default_rng(1).permutation(len(labels))  # cells not contiguous in the pool
    labels = np.asarray(labels, dtype=np.int64)[order]
    preds = np.asarray(preds, dtype=np.int64)[order]
    cells = labels * c + preds
    joint = np.bincount(cells, minlength=c * c).reshape(c, c)
    return {
        "c": c,
        "labels": labels,
        "preds": preds,
        "conditionals": (joint / joint.sum(axis=1, keepdims=True))[None],
        "cell_start": np.concatenate([[0], np.cumsum(joint.ravel())]).astype(np.int64)[None],
        "cell_members": np.argsort(cells, kind="stable").astype(np.int64)[None],
        "class_members": np.argsort(labels, kind="stable").astype(np.int64),
        "class_start": np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=c))]).astype(np.int64),
    }


def _reference_uploads(world, mix, counts, obs_per_round, trials, seed):
    """Materialise each round: obs_per_round samples (true class ~ mix, uniform within the class, the model's
    prediction), then upload counts[j] samples predicted j, uniformly without replacement. Rounds with fewer than
    counts[j] samples predicted j are rejected (the env caps counts by availability). Returns per predicted class
    the uploaded pool positions of all accepted rounds."""
    rng = np.random.default_rng(seed)
    c = world["c"]
    sizes = np.diff(world["class_start"])
    y = rng.choice(c, size=(trials, obs_per_round), p=mix)
    within = np.minimum((rng.random((trials, obs_per_round)) * sizes[y]).astype(np.int64), sizes[y] - 1)
    positions = world["class_members"][world["class_start"][y] + within]
    predicted = world["preds"][positions]
    keep = np.ones(trials, dtype=bool)
    chosen = {}
    for j in range(c):
        keep &= (predicted == j).sum(axis=1) >= counts[j]
        keys = np.where(predicted == j, rng.random(predicted.shape), np.inf)
        picks = np.argsort(keys, axis=1)[:, :counts[j]]
        chosen[j] = np.take_along_axis(positions, picks, axis=1)
    return {j: chosen[j][keep].ravel() for j in range(c)}, int(keep.sum())


def test_draw_uploads_matches_a_materialised_reference():
    world = _tiny_world()
    c, n_cache = world["c"], 5
    mix = np.array([0.5, 0.3, 0.2])
    counts = np.array([2, 1, 1])  # 4 of 5 slots used: the last stays empty
    robots = 20_000
    upload_counts = np.tile(counts, (1, robots, 1)).astype(np.int64)
    true_mixes = np.tile(mix, (1, robots, 1))
    robot_version = np.zeros((1, robots), dtype=np.int64)
    ids = np.empty((1, robots, n_cache), dtype=np.int64)
    labels, predicted = np.empty_like(ids), np.empty_like(ids)
    kernels.draw_uploads(kernels.seed_states(np.array([21])), upload_counts, true_mixes, robot_version,
                         world["conditionals"], world["cell_start"], world["cell_members"], ids, labels, predicted)
    ids, labels, predicted = ids[0], labels[0], predicted[0]
    # slots filled from the left in predicted-class order, then -1
    np.testing.assert_array_equal(predicted, np.tile([0, 0, 1, 2, -1], (robots, 1)))
    assert (ids[:, 4] == -1).all() and (labels[:, 4] == -1).all()
    # every upload is a real pool sample with the stated true label and the model's prediction
    np.testing.assert_array_equal(world["labels"][ids[:, :4]], labels[:, :4])
    np.testing.assert_array_equal(world["preds"][ids[:, :4]], predicted[:, :4])

    reference, accepted = _reference_uploads(world, mix, counts, obs_per_round=12, trials=30_000, seed=5)
    assert accepted > 10_000
    n_pool = len(world["labels"])
    r = world["conditionals"][0]
    for j in range(c):
        kernel_ids = ids[predicted == j]
        table = np.stack([np.bincount(kernel_ids, minlength=n_pool), np.bincount(reference[j], minlength=n_pool)])
        table = table[:, table.sum(axis=0) > 0]
        assert table.shape[1] >= 2
        # same distribution over pool samples (hence over true labels) as the materialised rounds
        assert stats.chi2_contingency(table).pvalue > ALPHA, j
        # and the true labels follow p(y | yhat = j) = mix_y R[y, j] / sum
        theory = mix * r[:, j] / (mix * r[:, j]).sum()
        label_counts = np.bincount(world["labels"][kernel_ids], minlength=c)
        support = theory > 0
        assert (label_counts[~support] == 0).all()
        assert stats.chisquare(label_counts[support], theory[support] * label_counts.sum()).pvalue > ALPHA


def test_draw_uploads_per_robot_mixes_and_empty_rows():
    world = _tiny_world()
    n_cache = 3
    true_mixes = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.3, 0.3, 0.4]]])
    counts = np.array([[[3, 0, 0], [0, 1, 2], [0, 0, 0]]], dtype=np.int64)
    ids = np.empty((1, 3, n_cache), dtype=np.int64)
    labels, predicted = np.empty_like(ids), np.empty_like(ids)
    states = kernels.seed_states(np.array([3]))
    for _ in range(200):
        kernels.draw_uploads(states, counts, true_mixes, np.zeros((1, 3), dtype=np.int64), world["conditionals"],
                             world["cell_start"], world["cell_members"], ids, labels, predicted)
        assert (labels[0, 0] == 0).all()            # robot 0 sees only class 0
        assert (labels[0, 1] == 2).all()            # robot 1 sees only class 2
        np.testing.assert_array_equal(predicted[0, 1], [1, 2, 2])
        assert (ids[0, 2] == -1).all() and (labels[0, 2] == -1).all() and (predicted[0, 2] == -1).all()


# ------------------------------------------------------------------------------------------- allocation
def _reference_allocate(shares, available, n_cache):
    """Plain Python, from the docstring of kernels.allocate_uploads."""
    c = len(shares)
    total = sum(shares)
    scale = n_cache / total if total > 1.0 else float(n_cache)
    budget = math.floor(min(total, 1.0) * n_cache + 0.5)
    quota = [s * scale for s in shares]
    out = [math.floor(q + 1e-9) for q in quota]
    while sum(out) < budget:  # largest remainder, ties to the lower class
        fracs = [quota[j] - out[j] for j in range(c)]
        top = max(fracs)
        j = min(j for j in range(c) if fracs[j] >= top - 1e-12)
        out[j] += 1
    while sum(out) > budget:  # float overshoot only
        fracs = [(quota[j] - out[j], j) for j in range(c) if out[j] > 0]
        out[min(fracs)[1]] -= 1
    leftover = 0
    for j in range(c):
        if out[j] > available[j]:
            leftover += out[j] - available[j]
            out[j] = available[j]
    preference = sorted(range(c), key=lambda j: (-shares[j], -available[j], j))
    for j in preference:
        if leftover == 0:
            break
        take = min(available[j] - out[j], leftover)
        if take > 0:
            out[j] += take
            leftover -= take
    return out


def _kernel_allocate(shares, available, n_cache):
    shares = np.asarray(shares, dtype=np.float64).reshape(1, 1, -1)
    available = np.asarray(available, dtype=np.int64).reshape(1, 1, -1)
    out = np.full(shares.shape, -7, dtype=np.int64)
    kernels.allocate_uploads(shares, available, n_cache, out)
    return out[0, 0]


@st.composite
def _allocation_case(draw):
    c = draw(st.integers(1, 10))
    # shares on a grid of hundredths (actions are float32; exact float ties of distinct shares are not meaningful)
    shares = draw(st.lists(st.integers(0, 100), min_size=c, max_size=c))
    available = draw(st.lists(st.integers(0, 25), min_size=c, max_size=c))
    n_cache = draw(st.integers(1, 20))
    return [s / 100 for s in shares], available, n_cache


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_allocation_case())
def test_allocate_uploads_matches_reference(case):
    shares, available, n_cache = case
    got = _kernel_allocate(shares, available, n_cache)
    want = _reference_allocate(shares, available, n_cache)
    assert got.tolist() == want
    assert (got >= 0).all() and (got <= np.asarray(available)).all()
    budget = math.floor(min(sum(shares), 1.0) * n_cache + 0.5)
    assert got.sum() == min(budget, sum(available))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=1, max_size=12),
       st.lists(st.integers(0, 40), min_size=12, max_size=12), st.integers(1, 30))
def test_allocate_uploads_invariants_on_any_float32_shares(shares, available, n_cache):
    available = available[:len(shares)]
    got = _kernel_allocate(shares, available, n_cache)
    assert (got >= 0).all() and (got <= np.asarray(available)).all()
    budget = math.floor(min(math.fsum(shares), 1.0) * n_cache + 0.5)
    assert got.sum() == min(budget, sum(available))
    if sum(available) >= n_cache and math.fsum(shares) >= 1.0:
        assert got.sum() == n_cache  # a full budget is always spent when the robot has enough samples


def test_allocate_uploads_examples():
    # all-zero shares upload nothing
    assert _kernel_allocate([0.0, 0.0, 0.0], [5, 5, 5], 4).tolist() == [0, 0, 0]
    # a share sum above 1 is normalised
    assert _kernel_allocate([1.0, 1.0], [9, 9], 4).tolist() == [2, 2]
    # below 1 leaves budget unused: 0.25 * 4 = 1
    assert _kernel_allocate([0.25, 0.0], [9, 9], 4).tolist() == [1, 0]
    # largest remainder, ties to the lower class
    assert _kernel_allocate([0.5, 0.5, 0.0], [9, 9, 9], 3).tolist() == [2, 1, 0]
    # caps move the lost budget to the most preferred class with samples left
    assert _kernel_allocate([0.7, 0.3, 0.0], [1, 9, 9], 5).tolist() == [1, 4, 0]
    # among equal shares, more available first
    assert _kernel_allocate([1.0, 0.0, 0.0], [0, 2, 9], 3).tolist() == [0, 0, 3]
    # nothing available: nothing uploaded
    assert _kernel_allocate([1.0, 1.0], [0, 0], 3).tolist() == [0, 0]


def test_allocate_uploads_batched_equals_rowwise():
    rng = np.random.default_rng(4)
    shares = rng.random((3, 5, 6)) * (rng.random((3, 5, 6)) < 0.6)
    available = rng.integers(0, 4, (3, 5, 6))
    out = np.empty((3, 5, 6), dtype=np.int64)
    kernels.allocate_uploads(shares, available, 4, out)
    for b in range(3):
        for i in range(5):
            assert out[b, i].tolist() == _reference_allocate(shares[b, i].tolist(), available[b, i].tolist(), 4)


def test_top_scores_ties_to_the_lower_index():
    scores = np.array([[[0.1, 0.9, 0.5, 0.9, 0.0]]])
    out = np.empty((1, 1, 3), dtype=np.int64)
    kernels.top_scores(scores, 3, out)
    assert out[0, 0].tolist() == [1, 3, 2]


# ------------------------------------------------------------------------------------ simplex projection
_PROJECT_ARGS = len(inspect.signature(kernels.project_to_simplex.py_func).parameters)


def _project(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    out = np.empty_like(v)
    if _PROJECT_ARGS >= 3:
        kernels.project_to_simplex(v, out, np.empty_like(v))
    else:
        kernels.project_to_simplex(v, out)
    return out


def _project_bisection(v: np.ndarray) -> np.ndarray:
    """Sort-free reference: theta with sum(max(v - theta, 0)) = 1, by bisection."""
    lo, hi = v.min() - 1.0, v.max()
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.maximum(v - mid, 0.0).sum() > 1.0:
            lo = mid
        else:
            hi = mid
    return np.maximum(v - 0.5 * (lo + hi), 0.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-10.0, 10.0, allow_nan=False), min_size=1, max_size=12))
def test_project_to_simplex_matches_bisection(values):
    v = np.asarray(values)
    got = _project(v)
    assert (got >= 0).all()
    assert got.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(got, _project_bisection(v), atol=1e-8)
    # KKT: got = max(v - theta, 0) for one theta; positive entries share it, zero entries lie below it
    positive = got > 1e-12
    theta = (v[positive] - got[positive]).mean()
    np.testing.assert_allclose(v[positive] - got[positive], theta, atol=1e-8)
    assert (v[~positive] <= theta + 1e-8).all()


@pytest.mark.parametrize("seed", range(5))
def test_project_to_simplex_minimises_the_distance(seed):
    v = np.random.default_rng(seed).normal(0.0, 1.0, 6)
    got = _project(v)
    res = optimize.minimize(lambda x: np.sum((x - v) ** 2), np.full(6, 1 / 6), jac=lambda x: 2 * (x - v),
                            method="SLSQP", bounds=[(0, 1)] * 6,
                            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0}], options={"ftol": 1e-14})
    assert res.success
    np.testing.assert_allclose(got, res.x, atol=1e-5)
    assert np.sum((got - v) ** 2) <= res.fun + 1e-9


def test_project_to_simplex_fixed_points():
    p = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(_project(p), p, atol=1e-15)
    np.testing.assert_allclose(_project(np.array([5.0, 0.0, 0.0])), [1.0, 0.0, 0.0])
    np.testing.assert_allclose(_project(np.array([1.0, 1.0])), [0.5, 0.5])
    np.testing.assert_allclose(_project(np.array([-3.0])), [1.0])


# ---------------------------------------------------------------------------------------- mix estimation
def _estimate(histograms, confusions, method, iterations=50, robot_version=None):
    histograms = np.asarray(histograms)
    n_env, n_robot, c = histograms.shape
    confusions = np.asarray(confusions, dtype=np.float64)
    pinv = np.stack([np.linalg.pinv(m.T) for m in confusions])
    if robot_version is None:
        robot_version = np.zeros((n_env, n_robot), dtype=np.int64)
    out = np.empty((n_env, n_robot, c))
    kernels.estimate_mixes(histograms, robot_version, confusions, pinv, method, iterations, out)
    return out


def _random_confusion(rng, c, diag=0.6):
    return diag * np.eye(c) + (1 - diag) * rng.dirichlet(np.ones(c), size=c)


def _log_likelihood(hist, confusion, p):
    pred = confusion.T @ p
    with np.errstate(divide="ignore"):
        terms = np.where(hist > 0, hist * np.log(pred), 0.0)
    return terms.sum()


@pytest.mark.parametrize("method", [0, 1])
def test_identity_confusion_returns_the_normalised_histogram(method):
    rng = np.random.default_rng(0)
    hist = rng.integers(0, 30, (2, 3, 5))
    hist[0, 1] = [0, 0, 7, 0, 0]
    got = _estimate(hist, np.eye(5)[None], method)
    np.testing.assert_allclose(got, hist / hist.sum(axis=2, keepdims=True), atol=1e-12)


@pytest.mark.parametrize("method", [0, 1])
def test_empty_histogram_gives_the_uniform_mix(method):
    got = _estimate(np.zeros((1, 2, 4), dtype=np.int64), np.eye(4)[None], method)
    np.testing.assert_allclose(got, 0.25)


@pytest.mark.parametrize("method", [0, 1])
@pytest.mark.parametrize("seed", range(3))
def test_exact_histogram_recovers_the_mix(method, seed):
    rng = np.random.default_rng(seed)
    c = 6
    confusion = _random_confusion(rng, c)
    p = rng.dirichlet(np.ones(c))
    q = confusion.T @ p
    hist = np.round(q * 1e9).astype(np.int64).reshape(1, 1, c)
    got = _estimate(hist, confusion[None], method)[0, 0]
    np.testing.assert_allclose(got, p, atol=1e-3)
    assert got.sum() == pytest.approx(1.0) and (got >= 0).all()


def test_estimates_use_each_robots_model_version():
    rng = np.random.default_rng(3)
    confusions = np.stack([_random_confusion(rng, 4), _random_confusion(rng, 4, 0.8)])
    hist = rng.integers(0, 50, (2, 3, 4))
    versions = np.array([[0, 1, 0], [1, 1, 0]])
    for method in (0, 1):
        together = _estimate(hist, confusions, method, robot_version=versions)
        for b in range(2):
            for i in range(3):
                alone = _estimate(hist[b:b + 1, i:i + 1], confusions[versions[b, i]][None], method)
                np.testing.assert_allclose(together[b, i], alone[0, 0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", range(10))
def test_em_never_decreases_the_log_likelihood(seed):
    rng = np.random.default_rng(100 + seed)
    c = 5
    confusion = _random_confusion(rng, c, diag=rng.uniform(0.3, 0.9))
    p = rng.dirichlet(np.full(c, 0.5))
    hist = rng.multinomial(60, confusion.T @ p).reshape(1, 1, c)
    bbse = _estimate(hist, confusion[None], 0)[0, 0]
    previous = -np.inf
    for iterations in range(30):
        em = _estimate(hist, confusion[None], 1, iterations)[0, 0]
        assert em.sum() == pytest.approx(1.0) and (em >= 0).all()
        ll = _log_likelihood(hist[0, 0], confusion, em)
        assert ll >= previous - 1e-9, iterations  # EM is monotone from its start
        previous = ll
    em = _estimate(hist, confusion[None], 1, 50)[0, 0]
    assert _log_likelihood(hist[0, 0], confusion, em) >= _log_likelihood(hist[0, 0], confusion, bbse) - 1e-9


def _maximum_likelihood_mix(hist, confusion, iterations=20_000):
    """Reference MLE: plain EM from the uniform mix, run long (the log-likelihood is concave in p)."""
    q = hist / hist.sum()
    p = np.full(len(hist), 1.0 / len(hist))
    for _ in range(iterations):
        p = p * (confusion @ (q / (confusion.T @ p)))
        p /= p.sum()
    return p


@pytest.mark.parametrize("seed", range(10))
def test_em_approaches_the_maximum_likelihood(seed):
    rng = np.random.default_rng(200 + seed)
    c = 5
    confusion = _random_confusion(rng, c, diag=rng.uniform(0.3, 0.9))
    p = rng.dirichlet(np.full(c, 0.5))
    hist = rng.multinomial(60, confusion.T @ p)
    best = _log_likelihood(hist, confusion, _maximum_likelihood_mix(hist, confusion))
    em = _estimate(hist.reshape(1, 1, c), confusion[None], 1, 50)[0, 0]
    # 50 EM steps (what the core runs) end within 0.05 nats of the maximum on 60 observations
    assert best - 0.05 <= _log_likelihood(hist, confusion, em) <= best + 1e-9


# -------------------------------------------------------------------------------- per-env random streams
def test_batched_kernels_equal_each_env_alone():
    """Env b of a batch draws exactly what env b draws alone: its stream is advanced only by its own robots."""
    world = _tiny_world()
    seeds = np.array([5, 17, 123])
    n_env, n_robot, c, n_cache, n_obs = 3, 4, world["c"], 3, 9
    rng = np.random.default_rng(0)
    mixes = rng.dirichlet(np.ones(c), size=(n_env, n_robot))
    marginals = mixes @ world["conditionals"][0]
    shares = rng.random((n_env, n_robot, c))
    versions = np.zeros((n_env, n_robot), dtype=np.int64)

    def run(b_slice, states):
        k = len(range(*b_slice.indices(n_env)))
        hist = np.empty((k, n_robot, c), dtype=np.int64)
        kernels.draw_predicted_histograms(states, marginals[b_slice], 12, hist)
        counts = np.empty_like(hist)
        kernels.allocate_uploads(shares[b_slice], hist, n_cache, counts)
        ids = np.empty((k, n_robot, n_cache), dtype=np.int64)
        labels, predicted = np.empty_like(ids), np.empty_like(ids)
        kernels.draw_uploads(states, counts, mixes[b_slice], versions[b_slice], world["conditionals"],
                             world["cell_start"], world["cell_members"], ids, labels, predicted)
        positions = np.empty((k, n_robot, n_obs), dtype=np.int64)
        kernels.draw_stream_samples(states, mixes[b_slice], world["class_start"], world["class_members"], positions)
        return hist, ids, labels, predicted, positions, states

    batch = run(slice(0, 3), kernels.seed_states(seeds))
    for b in range(n_env):
        alone = run(slice(b, b + 1), kernels.seed_states(seeds[b:b + 1]))
        for got, want in zip(batch, alone):
            np.testing.assert_array_equal(got[b], want[0])
