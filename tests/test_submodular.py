"""Facility-location solvers (datagames_env/selection/submodular.py): exactness of lazy greedy, approximation guarantees against
brute force, blocked == dense similarities, matroid caps, fleet variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from baselines.submodular import (
    FacilityLocation,
    brute_force_best,
    dense_objective_reference,
    dense_similarity_reference,
    fleet_centralized,
    fleet_independent,
    fleet_interactive,
    fleet_objective,
    greedy,
    lazy_greedy,
    max_similarity,
    similarity,
    stochastic_greedy,
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KERNELS = st.sampled_from(["inverse_distance", "cosine"])


@st.composite
def instances(draw, max_n: int = 20, max_dim: int = 4, grid: bool = True):
    """Small point sets. On a coarse integer grid, duplicates and exact ties are common (the hard case for
    lazy == plain greedy); scale 0.5 makes the inverse-distance kernel far from flat."""
    n = draw(st.integers(1, max_n))
    dim = draw(st.integers(1, max_dim))
    elements = st.integers(-3, 3).map(float) if grid else st.floats(-5, 5, allow_nan=False, width=32)
    points = draw(arrays(np.float32, (n, dim), elements=elements))
    if draw(st.booleans()):
        coverage = draw(arrays(np.float64, (n,), elements=st.floats(0, 1, allow_nan=False)))
    else:
        coverage = None
    return points, coverage


@SETTINGS
@given(instance=instances(), k=st.integers(0, 22), kernel=KERNELS, block=st.sampled_from([12, 100, 2**26]))
def test_lazy_greedy_equals_plain_greedy_exactly(instance, k, kernel, block):
    points, coverage = instance
    plain = greedy(FacilityLocation(points, None, coverage, kernel, 0.5, block), k)
    lazy = lazy_greedy(FacilityLocation(points, None, coverage, kernel, 0.5, 2**26), k)
    assert plain.indices.tolist() == lazy.indices.tolist()
    assert np.array_equal(plain.gains, lazy.gains)
    assert np.array_equal(plain.coverage, lazy.coverage)
    assert len(plain.indices) == min(k, len(points))
    assert len(set(plain.indices.tolist())) == len(plain.indices)


@SETTINGS
@given(instance=instances(max_n=16), k=st.integers(1, 20), kernel=KERNELS, n_groups=st.integers(1, 4),
       cap=st.integers(0, 3), data=st.data())
def test_lazy_equals_plain_with_per_robot_caps(instance, k, kernel, n_groups, cap, data):
    points, coverage = instance
    groups = np.asarray(data.draw(st.lists(st.integers(0, n_groups - 1), min_size=len(points), max_size=len(points))))
    caps = np.full(int(groups.max()) + 1, cap)
    plain = greedy(FacilityLocation(points, None, coverage, kernel, 0.5), k, groups, caps)
    lazy = lazy_greedy(FacilityLocation(points, None, coverage, kernel, 0.5), k, groups, caps)
    assert plain.indices.tolist() == lazy.indices.tolist()
    counts = np.bincount(groups[plain.indices], minlength=len(caps))
    assert (counts <= caps).all()
    # greedy stops only when k is reached or every group is full / exhausted
    if len(plain.indices) < k:
        assert all(counts[g] == min(caps[g], (groups == g).sum()) for g in range(len(caps)))


@SETTINGS
@given(instance=instances(max_n=8, grid=False), k=st.integers(1, 3), kernel=KERNELS)
def test_greedy_reaches_one_minus_one_over_e_of_brute_force(instance, k, kernel):
    points, coverage = instance
    sims = dense_similarity_reference(points, points, kernel, 0.5)
    cov0 = np.zeros(len(points)) if coverage is None else coverage
    best, _ = brute_force_best(sims, k, cov0)
    result = lazy_greedy(FacilityLocation(points, None, cov0, kernel, 0.5), k)
    empty = dense_objective_reference(sims, [], cov0)
    # the guarantee is on the normalised function f(S) - f({}); float32 similarities: small slack
    assert result.value - empty >= (1 - 1 / math.e) * (best - empty) - 1e-5 * len(points)
    assert result.value <= best + 1e-5 * len(points)
    assert result.value == pytest.approx(dense_objective_reference(sims, result.indices, cov0), abs=1e-5 * len(points))


@SETTINGS
@given(instance=instances(max_n=8, grid=False), kernel=KERNELS, data=st.data())
def test_greedy_with_caps_reaches_half_of_brute_force(instance, kernel, data):
    points, coverage = instance
    groups = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=len(points), max_size=len(points))))
    caps = np.full(int(groups.max()) + 1, 1)
    sims = dense_similarity_reference(points, points, kernel, 0.5)
    cov0 = np.zeros(len(points)) if coverage is None else coverage
    best, _best_set = brute_force_best(sims, len(caps), cov0, groups, caps)
    result = lazy_greedy(FacilityLocation(points, None, cov0, kernel, 0.5), len(caps), groups, caps)
    empty = dense_objective_reference(sims, [], cov0)
    assert result.value - empty >= 0.5 * (best - empty) - 1e-5 * len(points)


@SETTINGS
@given(a=arrays(np.float32, st.tuples(st.integers(1, 30), st.just(5)), elements=st.floats(-4, 4, width=32)),
       b=arrays(np.float32, st.tuples(st.integers(1, 30), st.just(5)), elements=st.floats(-4, 4, width=32)),
       kernel=KERNELS)
def test_blocked_similarity_equals_dense(a, b, kernel):
    dense = dense_similarity_reference(a, b, kernel, 0.01)
    assert np.allclose(similarity(a, b, kernel).numpy(), dense, atol=2e-6)
    # coverage vector in 1-row blocks == one block == the dense reference's row maxima (floored at 0)
    one_row = max_similarity(a, b, kernel, max_block_bytes=1)
    whole = max_similarity(a, b, kernel, max_block_bytes=2**30)
    assert np.array_equal(one_row, whole)
    assert np.allclose(whole, np.maximum(dense.max(axis=1), 0.0), atol=2e-6)
    # marginal gains do not depend on the block a candidate was computed in
    fl_small = FacilityLocation(a, b, None, kernel, 0.01, max_block_bytes=1)
    fl_large = FacilityLocation(a, b, None, kernel, 0.01, max_block_bytes=2**30)
    assert fl_small.block_rows == 1
    cov = np.linspace(0, 0.5, len(a))
    assert np.array_equal(fl_small.gains(cov), fl_large.gains(cov))


def test_block_rows_respect_the_memory_bound():
    fl = FacilityLocation(np.zeros((10_000, 4), np.float32), np.zeros((50, 4), np.float32),
                          max_block_bytes=4 * 2**20)
    assert fl.block_rows == 4 * 2**20 // (12 * 10_000)
    assert 12 * fl.block_rows * 10_000 <= 4 * 2**20


def test_fleet_variants_respect_caps_and_count_messages():
    rng = np.random.default_rng(0)
    robots = [rng.normal(size=(n, 6)).astype(np.float32) for n in (40, 25, 3)]
    covs = [rng.uniform(0, 0.9, len(r)) for r in robots]
    for variant in (fleet_independent, fleet_interactive, fleet_centralized):
        result = variant(robots, 5, covs)
        for r, picks in zip(robots, result.selected):
            assert len(picks) == min(5, len(r)) and len(set(picks.tolist())) == len(picks)
            assert picks.min() >= 0 and picks.max() < len(r)
    interactive = fleet_interactive(robots, 5, covs)
    assert interactive.messages == 5 + (5 + 5)  # robot 1 receives 5 embeddings, robot 2 receives 10
    # the first robot of the interactive order has nothing to fold in: same picks as independent
    independent = fleet_independent(robots, 5, covs)
    assert independent.selected[0].tolist() == interactive.selected[0].tolist()
    # centralized optimises the fleet objective directly: never worse than independent by more than its 1/2 bound
    central = fleet_centralized(robots, 5, covs)
    f_central = fleet_objective(robots, central.selected, covs)["gain"]
    f_independent = fleet_objective(robots, independent.selected, covs)["gain"]
    assert f_central >= 0.5 * f_independent


def test_interactive_avoids_duplicates_across_robots():
    """Two robots seeing the same scenes: independently they upload the same ones; interactively the second
    robot sends something else, and the fleet objective is higher."""
    rng = np.random.default_rng(1)
    scenes = rng.normal(size=(30, 4)).astype(np.float32) * 3
    robots = [scenes, scenes.copy()]
    independent = fleet_independent(robots, 3, scale=0.5)
    interactive = fleet_interactive(robots, 3, scale=0.5)
    assert independent.selected[0].tolist() == independent.selected[1].tolist()
    assert not set(interactive.selected[0].tolist()) & set(interactive.selected[1].tolist())
    assert (fleet_objective(robots, interactive.selected, scale=0.5)["value"]
            > fleet_objective(robots, independent.selected, scale=0.5)["value"])


def test_stochastic_greedy_picks_k_distinct_and_is_close_to_greedy():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(200, 8)).astype(np.float32)
    fl = FacilityLocation(points, scale=0.5)
    result = stochastic_greedy(fl, 10, epsilon=0.05, rng=np.random.default_rng(0))
    assert len(set(result.indices.tolist())) == 10
    assert result.gain >= 0.9 * lazy_greedy(fl, 10).gain


def test_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"initial_coverage has shape \(3,\), expected \(4,\)"):
        FacilityLocation(np.zeros((4, 2)), initial_coverage=np.zeros(3))
    with pytest.raises(ValueError, match="embedding widths"):
        similarity(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="robot_1: embeddings must be"):
        fleet_independent([np.zeros((3, 2)), np.zeros(3)], 1)
    with pytest.raises(ValueError, match="kernel must be one of"):
        similarity(np.zeros((1, 2)), np.zeros((1, 2)), kernel="rbf")
    with pytest.raises(ValueError, match="NaN"):
        FacilityLocation(np.array([[np.nan, 0.0]]))


@pytest.mark.parametrize("kernel", ["inverse_distance", "cosine"])
def test_max_similarity_equals_the_entrywise_maximum_bit_for_bit(kernel):
    # the fast path (matmul candidates, exact distances of the candidates only) must give exactly the maximum of
    # the entry-by-entry similarities, also with near ties, duplicates and tiny blocks
    rng = np.random.default_rng(0)
    for trial in range(24):
        ground = rng.normal(size=(int(rng.integers(1, 300)), 6)).astype(np.float32)
        reference = rng.normal(size=(int(rng.integers(1, 200)), 6)).astype(np.float32)
        if trial % 3 == 0:
            reference = np.concatenate([reference, ground[:4] + 1e-7, ground[4:7]])
        if trial % 4 == 0:
            ground *= 100.0
            reference *= 100.0
        want = np.maximum(0.0, similarity(ground, reference, kernel).max(dim=1).values.double().numpy())
        got = max_similarity(ground, reference, kernel, max_block_bytes=2048 if trial % 2 else 2**26)
        np.testing.assert_array_equal(got, want)
