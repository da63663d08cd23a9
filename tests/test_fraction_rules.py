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
    with pytest.raises(ValueError, match="greedy-share needs loss 'l2'"):
        make_policy("greedy-share", datagames_env.parallel_env("default", loss="kl", **SMALL))


def test_greedy_share_plays_selection_mode():
    env = datagames_env.parallel_env("default", action_mode="selection", **SMALL)
    policy = make_policy("greedy-share", env)
    observations, infos = env.reset(seed=3)
    while env.agents:
        observations, _, _, _, infos = env.step(policy.act(observations, infos))
    assert len(env.distance_history) == SMALL["rounds"] + 1
    assert len(env.ledger()["sample_id"]) <= SMALL["rounds"] * SMALL["n_robots"] * SMALL["n_cache"]
    env.close()


def test_share_map_with_the_rules_floor_is_greedy_share():
    """``--model gap-share``'s map (``ShareMap``) with every floor at m acts as ``greedy-share:m`` over an episode
    (the same arithmetic), and forgets the last cloud at round 0."""
    from baselines.fraction import ShareMap

    env = datagames_env.parallel_env("default", **SMALL)
    policy, share_map = make_policy("greedy-share:0.3", env), ShareMap()
    agents = env.possible_agents
    for seed in (100, 101):
        observations, infos = env.reset(seed=seed)
        for _ in range(SMALL["rounds"]):
            actions = policy.act(observations, infos)
            first = infos[agents[0]]
            mapped = share_map(np.stack([infos[a]["feasible_matrix"] for a in agents])[None],
                               first["cloud_counts"][None], first["target_counts"], np.full((1, len(agents)), 0.3),
                               np.stack([infos[a]["uploaded_true_labels"] for a in agents])[None],
                               np.asarray([first["round"]]), SMALL["n_cache"],
                               np.stack([infos[a]["available"] for a in agents])[None])[0]
            for k, agent in enumerate(agents):
                np.testing.assert_array_equal(mapped[k], actions[agent])
            observations, _, _, _, infos = env.step(actions)
    env.close()


@pytest.mark.xdist_group("ray")
def test_gap_share_trains_and_its_checkpoint_evaluates_through_rllib(tmp_path, monkeypatch, one_torch_thread):
    """Two PPO updates of ``--model gap-share``; ``rllib:`` plays the checkpoint through greedy-share's map with the
    module's floors."""
    pytest.importorskip("ray.rllib")
    import ray

    from agents.rllib_train import TrainSettings, init_ray, train
    from baselines.fraction import ShareMap
    from datagames_env.harness.episode import run_episode

    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    init_ray(None, 1)
    try:
        result = train(TrainSettings(config="default", overrides=dict(SMALL), model="gap-share", vector_runner=True,
                                     train_batch_size=36, minibatch_size=18, num_epochs=1, iterations=2,
                                     progress=False, checkpoint_every=0, out="runs", lr=1e-4,
                                     fraction_concentration=40.0, initial_fraction=0.3))
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [36, 72]
    env = datagames_env.parallel_env("default", **SMALL)
    policy = make_policy(f"rllib:{tmp_path / result['checkpoint']}", env)
    assert policy.env_action == "greedy-share"
    record = run_episode(env, policy, seed=300)
    assert np.isfinite(record["final_distance"]) and policy.last_stats["messages"] == 0
    observations, infos = env.reset(seed=301)
    actions = policy.act(observations, infos)
    floors = policy._decide(observations)
    assert all(abs(floors[a][0] - 0.3) < 0.05 for a in floors)  # near the configured start after two updates
    agents = env.possible_agents
    first = infos[agents[0]]
    expected = ShareMap()(np.stack([infos[a]["feasible_matrix"] for a in agents])[None], first["cloud_counts"][None],
                          first["target_counts"], np.stack([floors[a][0] for a in agents])[None],
                          np.stack([infos[a]["uploaded_true_labels"] for a in agents])[None],
                          np.asarray([first["round"]]), SMALL["n_cache"],
                          np.stack([infos[a]["available"] for a in agents])[None])[0]
    for k, agent in enumerate(agents):
        assert env.action_space(agent).contains(actions[agent])
        np.testing.assert_allclose(actions[agent], expected[k], rtol=0, atol=1e-6)
    env.close()
