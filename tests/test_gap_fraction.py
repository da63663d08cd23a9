"""The gap-fraction action (issue 18): Greedy towards ``cloud + f (target - cloud)`` as a baseline
(``greedy-fraction:<f>``) and as the action map of ``--model gap-fraction`` in training and ``rllib:`` evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import datagames_env
from baselines.fraction import greedy_fraction_shares, solve_greedy_fraction
from datagames_env.policy import make_policy

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
ray_group = pytest.mark.xdist_group("ray")


def _play(env, policies, seed, rounds):
    """Step ``env`` with the first policy; every policy acts on the same observations each round."""
    observations, infos = env.reset(seed=seed)
    for policy in policies:
        policy.reset(seed)
    out = []
    for _ in range(rounds):
        actions = [p.act(observations, infos) for p in policies]
        out.append((actions, infos))
        observations, _, _, _, infos = env.step(actions[0])
    return out


def test_fraction_one_is_greedy_and_fraction_zero_uploads_nothing():
    env = datagames_env.parallel_env("default", rounds=3)
    for seed in (100, 101):
        greedy, one, zero = make_policy("greedy", env), make_policy("greedy-fraction:1", env), \
            make_policy("greedy-fraction:0", env)
        for (g, f1, f0), infos in _play(env, [greedy, one, zero], seed, 3):
            for agent in g:  # the same compiled solver on the same numbers
                np.testing.assert_allclose(f1[agent], g[agent], rtol=0, atol=1e-12)
                assert not np.any(f0[agent])
    # the documented limit: all-zero shares upload nothing
    observations, infos = env.reset(seed=100)
    zero = make_policy("greedy-fraction:0", env)
    _, _, _, _, infos = env.step(zero.act(observations, infos))
    assert all(infos[a]["n_uploaded"] == 0 for a in env.possible_agents)


def test_each_robot_aims_at_its_fraction_of_the_gap_and_the_rule_names_bad_fractions():
    """With a budget that does not bind and perfect feasible matrices, robot i uploads exactly f_i (target - cloud)
    where the gap is positive (nothing where the cloud is already above the target)."""
    perfect = np.stack([np.eye(3)] * 3)
    cloud, target = np.array([4.0, 1.0, 9.0]), np.array([8.0, 3.0, 5.0])
    counts = solve_greedy_fraction(perfect, cloud, target, 100, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(counts, [[0, 0, 0], [1.0, 0.5, 0], [4.0, 2.0, 0]], atol=1e-9)
    env = datagames_env.parallel_env("default", rounds=2)
    assert make_policy("greedy-fraction", env).fraction == pytest.approx(0.35)
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(ValueError, match="greedy-fraction"):
            make_policy(f"greedy-fraction:{bad}", env)
    with pytest.raises(ValueError, match="fraction must be finite and in \\[0, 1\\]; at index \\(0, 1\\)"):
        greedy_fraction_shares(np.ones((1, 2, 3, 3)) / 3, np.ones((1, 3)), np.ones(3), [[0.2, 1.2]], 2)


def test_batched_map_equals_one_env_at_a_time():
    """The vector runner's map over B envs is the per-env solve, row for row (the same arithmetic)."""
    venv = datagames_env.vector_env(3, "default", **SMALL)
    _, infos = venv.reset(seed=5)
    feasible = venv.batched.estimated_feasible_matrices()
    target = venv.batched.core.target_counts
    f = np.random.default_rng(0).random((3, SMALL["n_robots"]))
    shares = greedy_fraction_shares(feasible, infos["cloud_counts"], target, f, SMALL["n_cache"], infos["available"])
    for e in range(3):
        counts = solve_greedy_fraction(feasible[e], infos["cloud_counts"][e], target, SMALL["n_cache"], f[e],
                                       infos["available"][e])
        np.testing.assert_array_equal(shares[e], counts / SMALL["n_cache"])


def test_fraction_beta_is_a_distribution_on_the_encoded_fraction():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ray.rllib")
    from agents.modules import FractionBeta

    inputs = torch.tensor([[0.0, 0.0], [2.0, 1.0], [-3.0, -1.0]])
    dist = FractionBeta.from_logits(inputs)
    torch.manual_seed(0)
    action = dist.sample()
    assert action.shape == (3, 1) and bool(((action > -1) & (action < 1)).all())
    f = (action[:, 0] + 1) / 2
    np.testing.assert_allclose(dist.logp(action).numpy(), dist.beta.log_prob(f).numpy(), rtol=1e-6)
    mode = dist.to_deterministic().sample()
    np.testing.assert_allclose(((mode[:, 0] + 1) / 2).numpy(), torch.sigmoid(inputs[:, 0]).numpy(), rtol=1e-6)
    assert torch.isfinite(dist.entropy()).all() and float(dist.kl(dist).abs().max()) < 1e-6


def test_gap_fraction_needs_the_vector_runner():
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, build_ppo_config

    with pytest.raises(ValueError, match="--vector-runner"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction"))


@ray_group
def test_gap_fraction_trains_and_its_checkpoint_evaluates_through_rllib(tmp_path, monkeypatch, one_torch_thread):
    """Two PPO updates; the checkpoint names no folder of this machine, and ``rllib:`` plays it through the same
    map (its actions are Greedy towards the module's fraction)."""
    pytest.importorskip("ray.rllib")
    import ray

    from agents.portable import absolute_paths_in
    from agents.rllib_train import TrainSettings, init_ray, train
    from datagames_env.harness.episode import run_episode

    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    init_ray(None, 1)
    try:
        result = train(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction", vector_runner=True,
                                     train_batch_size=36, minibatch_size=18, num_epochs=1, iterations=2,
                                     progress=False, checkpoint_every=0, out="runs"))
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [36, 72]
    checkpoint = tmp_path / "moved"
    (tmp_path / result["checkpoint"]).rename(checkpoint)
    assert absolute_paths_in(checkpoint) == {}
    assert json.loads((checkpoint / "datagames_meta.json").read_text())["settings"]["model"] == "gap-fraction"

    env = datagames_env.parallel_env("default", **SMALL)
    policy = make_policy(f"rllib:{checkpoint}", env)
    record = run_episode(env, policy, seed=300)
    assert np.isfinite(record["final_distance"])
    observations, infos = env.reset(seed=301)
    actions = policy.act(observations, infos)
    fractions = policy._decide(observations)
    assert all(0.0 <= fractions[a][0] <= 1.0 for a in fractions)
    expected = {a: solve_greedy_fraction(infos[a]["feasible_matrix"][None], infos[a]["cloud_counts"],
                                         infos[a]["target_counts"], SMALL["n_cache"], fractions[a][0],
                                         infos[a]["available"][None])[0] / SMALL["n_cache"] for a in actions}
    for agent in actions:
        assert env.action_space(agent).contains(actions[agent])
        np.testing.assert_allclose(actions[agent], expected[agent], rtol=0, atol=1e-6)
