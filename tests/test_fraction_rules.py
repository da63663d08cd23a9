"""Greedy towards a fraction of the gap per class (issue 18, round 5): ``greedy-share:<m>``, the fraction of each
class from the robot's share of last round's public uploads, and its map ``class_fraction_shares``."""

from __future__ import annotations

import numpy as np
import pytest

import datagames_env
from baselines.fraction import class_fraction_shares, greedy_fraction_shares, share_fractions
from datagames_env.policy import make_policy

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}


def _problem(seed=0, b=2, n=3, c=4):
    rng = np.random.default_rng(seed)
    feasible = rng.dirichlet(np.ones(c), size=(b, n, c)).transpose(0, 1, 3, 2)  # columns p(y | yhat = j)
    cloud = rng.integers(0, 10, size=(b, c)).astype(float)
    target = np.full(c, 12.0)
    available = rng.integers(0, 6, size=(b, n, c)).astype(float)
    return feasible, cloud, target, available


def test_a_fraction_the_same_for_every_class_is_greedy_fraction():
    """The same solver on the same gaps: one fraction broadcast over the classes gives greedy-fraction's shares."""
    feasible, cloud, target, available = _problem()
    for f in (0.0, 0.35, 1.0):
        a = class_fraction_shares(feasible, cloud, target, np.full((2, 3, 4), f), 5, available)
        b = greedy_fraction_shares(feasible, cloud, target, np.full((2, 3), f), 5, available)
        np.testing.assert_array_equal(a, b)


def test_each_robot_aims_at_its_fraction_of_each_class_gap():
    """Perfect feasible matrices and a budget that does not bind: robot i uploads F_ic (target - cloud)_c."""
    perfect = np.stack([np.eye(3)] * 2)[None]
    cloud, target = np.array([[4.0, 1.0, 9.0]]), np.array([8.0, 3.0, 9.0])
    fractions = np.array([[[0.5, 1.0, 1.0], [0.25, 0.0, 1.0]]])
    shares = class_fraction_shares(perfect, cloud, target, fractions, 100)
    np.testing.assert_allclose(shares * 100, [[[2.0, 2.0, 0.0], [1.0, 0.0, 0.0]]], atol=1e-9)


def test_class_fraction_shares_names_bad_input():
    feasible, cloud, target, available = _problem()
    with pytest.raises(ValueError, match=r"fractions must have shape \(B, N, C\) = \(2, 3, 4\)"):
        class_fraction_shares(feasible, cloud, target, np.full((2, 3), 0.3), 5, available)
    bad = np.full((2, 3, 4), 0.3)
    bad[1, 2, 0] = 1.5
    with pytest.raises(ValueError, match=r"at index \(1, 2, 0\)"):
        class_fraction_shares(feasible, cloud, target, bad, 5, available)


def test_share_fractions_follow_the_robots_share_of_last_rounds_uploads():
    gap = np.array([5.0, 5.0, 5.0, -2.0])
    own = np.array([[3.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    first = share_fractions(gap, own, None, floor=0.3, unseen=0.35)
    np.testing.assert_allclose(first, [[0.35, 0.35, 0.35, 1.0]] * 2)
    fleet = np.array([3.0, 10.0, 0.0, 1.0])
    f = share_fractions(gap, own, fleet, floor=0.3, unseen=0.35)
    # robot 0 uploaded all of class 0 -> its whole gap; class 1: one of ten -> the floor; nobody uploaded class 2;
    # class 3 is over its target -> Greedy's aim (fraction 1)
    np.testing.assert_allclose(f, [[1.0, 0.3, 0.35, 1.0], [0.3, 0.3, 0.35, 1.0]])


def test_greedy_share_plays_without_messages_and_starts_as_greedy_fraction():
    env = datagames_env.parallel_env("default", target={"total": 1000}, **SMALL)  # every gap positive at first
    share, fraction = make_policy("greedy-share", env), make_policy("greedy-fraction:0.35", env)
    assert share.name == "greedy-share:0.3" and share.floor == pytest.approx(0.3)
    for episode in range(2):  # the second episode starts from a fresh memory, as the first did
        observations, infos = env.reset(seed=100)
        if episode == 0:
            share.reset(100)
        first = share.act(observations, infos)
        expected = fraction.act(observations, infos)
        gaps = infos[env.possible_agents[0]]["target_counts"] - infos[env.possible_agents[0]]["cloud_counts"]
        assert (gaps > 0).all()  # round 1: every class gets 0.35, as greedy-fraction:0.35
        for agent in first:
            np.testing.assert_allclose(first[agent], expected[agent], rtol=0, atol=1e-12)
        assert share.last_stats == {"messages": 0, "sweeps": 0}
        distance = None
        for _ in range(SMALL["rounds"]):
            actions = share.act(observations, infos)
            for a in actions.values():
                assert a.shape == (10,) and np.all((a >= 0) & (a <= 1))
            observations, _, _, _, infos = env.step(actions)
            distance = infos[env.possible_agents[0]]["distance"]
        assert np.isfinite(distance)
    env.close()


def test_greedy_share_names_bad_arguments():
    env = datagames_env.parallel_env("default", **SMALL)
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(ValueError, match="greedy-share"):
            make_policy(f"greedy-share:{bad}", env)
    env.close()
    with pytest.raises(ValueError, match="greedy-share needs action_mode 'allocation' and loss 'l2'"):
        make_policy("greedy-share", datagames_env.parallel_env("default", loss="kl", **SMALL))
