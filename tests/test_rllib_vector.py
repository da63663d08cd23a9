"""RLlib PPO fed in bulk from ``vector_env`` (agents/rllib_vector_runner.py): batches true to the environment,
fresh episodes, GAE as RLlib defines it, training end to end, checkpoints shared with RLlib's own runner, and
the env runner on a second node of a Ray cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
torch = pytest.importorskip("torch")

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
# p2p and dual at test size, on their default (fast, natively batched) perception tier
OTHER_SCENARIOS = {"p2p_default": {"rounds": 2, "obs_per_round": 40},
                   "dual_default": {"n_robots": 3, "rounds": 2, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
                                    "initial_cloud_size": 40}}
ray_group = pytest.mark.xdist_group("ray")


def _settings(**fields):
    from agents.rllib_train import TrainSettings

    base = dict(config="default", overrides=dict(SMALL), train_batch_size=36, minibatch_size=18, num_epochs=1,
                progress=False, checkpoint_every=0, vector_runner=True)
    base.update(fields)
    return TrainSettings(**base)


@pytest.fixture
def local_ray():
    import ray

    from agents.rllib_train import init_ray

    ray.shutdown()
    init_ray(None, 1)
    yield
    ray.shutdown()


def _runner(settings):
    from agents.rllib_train import build_ppo_config
    from agents.rllib_vector_runner import VectorEnvRunner

    config = build_ppo_config(settings)
    return VectorEnvRunner(config=config), config


def test_vector_runner_batches_are_the_environments_rewards_terminations_and_observations(one_torch_thread):
    """Replaying the recorded actions on a vector env reset with the runner's seeds gives back the recorded
    observations and rewards; the last round is a termination (no truncation); observations lie in the Box;
    the logged episode return is the env's reward summed over robots and rounds."""
    import datagames_env
    from agents.rllib_vector_runner import RobotEpisodes

    runner, config = _runner(_settings(seed=7))
    b = runner.num_envs
    assert b == 4  # 36 agent steps per update = 4 envs x 3 robots x 3 rounds, in one vector env
    episodes = runner.sample()
    assert len(episodes) == b and all(isinstance(e, RobotEpisodes) for e in episodes)
    assert sum(e.agent_steps() for e in episodes) == 36
    replay = datagames_env.vector_env(b, "default", **SMALL)
    from agents.rllib_vector_runner import TRAIN_FIRST_SEED

    obs, _ = replay.reset(seed=TRAIN_FIRST_SEED + (7 + 0) * b)  # the first reset: + (seed + worker_index) * B + b
    space = replay.single_observation_space
    recorded_obs = np.stack([e.obs for e in episodes])  # (B, N, T+1, D)
    np.testing.assert_array_equal(recorded_obs[:, :, 0], obs)
    for t in range(SMALL["rounds"]):
        actions = np.stack([e.actions[:, t] for e in episodes])  # module actions in [-1, 1]
        obs, rewards, terminations, truncations, _ = replay.step((actions + 1.0) / 2.0)
        np.testing.assert_array_equal(np.stack([e.rewards[:, t] for e in episodes]), rewards)
        np.testing.assert_array_equal(np.stack([e.terminateds[:, t] for e in episodes]), terminations)
        np.testing.assert_array_equal(recorded_obs[:, :, t + 1], obs)
        assert not truncations.any()
    assert all(e.terminateds[:, -1].all() and not e.terminateds[:, :-1].any() for e in episodes)
    assert all(space.contains(row) for e in episodes for row in e.obs.reshape(-1, e.obs.shape[-1]))
    metrics = runner.get_metrics()
    returns = [e.get_return() for e in episodes]
    assert float(metrics["episode_return_mean"]) == pytest.approx(np.mean(returns), rel=1e-5)
    assert sum(int(v) for v in metrics["num_agent_steps_sampled"].values()) == 36
    runner.stop()


def test_vector_runner_episodes_are_fresh_draws_and_logp_is_the_modules(one_torch_thread):
    """Every sample() starts new episodes from the vector env's seeded generator (not one replayed seed), and
    the stored log-probabilities are those of the module's own distribution for the stored actions."""
    from ray.rllib.core.columns import Columns

    runner, _ = _runner(_settings(seed=3))
    first, second = runner.sample(), runner.sample()
    start = lambda episodes: np.stack([e.obs[:, 0] for e in episodes])  # noqa: E731
    assert not np.array_equal(start(first), start(second))
    assert not np.allclose([e.get_return() for e in first], [e.get_return() for e in second])
    again, _ = _runner(_settings(seed=3))  # the same seed: the same two draws
    np.testing.assert_array_equal(start(again.sample()), start(first))
    module = runner.module["shared"]
    episode = first[0]
    with torch.no_grad():
        inputs = module.forward_exploration({Columns.OBS: torch.from_numpy(episode.obs[:, :-1].reshape(-1, episode.obs.shape[-1]))})
        dist = module.get_exploration_action_dist_cls().from_logits(inputs[Columns.ACTION_DIST_INPUTS])
        logp = dist.logp(torch.from_numpy(episode.actions.reshape(-1, episode.actions.shape[-1])))
    np.testing.assert_allclose(logp.numpy(), episode.logp.reshape(-1), rtol=1e-5, atol=1e-5)
    # the allocation actions are n_cache draws over the classes: shares (a + 1) / 2 sum to 1
    np.testing.assert_allclose(((episode.actions + 1) / 2).sum(-1), 1.0, atol=1e-6)
    runner.stop()
    again.stop()


def test_vectorised_gae_matches_rllib_and_the_textbook_recursion():
    """Terminated rows against RLlib's own ``compute_value_targets``; rows cut before the end against the plain
    per-step recursion with the bootstrap value (two code paths: a float tolerance)."""
    from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets

    from agents.rllib_vector_runner import vectorised_gae

    rng = np.random.default_rng(0)
    rows, steps, gamma, lambda_ = 6, 5, 0.97, 0.9
    rewards = rng.normal(size=(rows, steps)).astype(np.float32)
    values = rng.normal(size=(rows, steps + 1)).astype(np.float32)
    terminateds = np.zeros((rows, steps), bool)
    terminateds[:3, -1] = True  # rows 0-2 end the task; rows 3-5 are cut and bootstrap from values[:, -1]
    advantages, targets = vectorised_gae(torch.from_numpy(rewards), torch.from_numpy(values),
                                         torch.from_numpy(terminateds), gamma, lambda_)
    for r in range(3):
        expected = compute_value_targets(values=values[r, :steps], rewards=rewards[r],
                                         terminateds=terminateds[r].astype(np.float32),
                                         truncateds=np.zeros(steps, np.float32), gamma=gamma, lambda_=lambda_)
        np.testing.assert_allclose(targets[r].numpy(), expected, rtol=1e-5, atol=1e-5)
    for r in range(3, rows):
        running, expected = 0.0, np.zeros(steps)
        for t in reversed(range(steps)):
            delta = rewards[r, t] + gamma * values[r, t + 1] - values[r, t]
            running = delta + gamma * lambda_ * running
            expected[t] = running
        np.testing.assert_allclose(advantages[r].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose((targets - advantages).numpy(), values[:, :steps], atol=1e-6)


def test_array_learner_batch_has_what_ppo_needs(one_torch_thread):
    """The learner pipeline turns RobotEpisodes into one module batch: a row per agent step, the columns of
    PPO's loss, advantages standardised over real rows, value targets = raw advantages + values."""
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from agents.rllib_vector_runner import ArrayLearnerConnector

    runner, config = _runner(_settings(seed=1))
    episodes = runner.sample()
    connector = ArrayLearnerConnector(lambda **kw: pytest.fail("fallback used"), gamma=0.99, lambda_=0.95)
    batch = connector(rl_module=runner.module, batch={}, episodes=episodes)
    module_batch = batch["shared"]
    n = sum(e.agent_steps() for e in episodes)
    for column in (Columns.OBS, Columns.ACTIONS, Columns.ACTION_LOGP, Columns.ACTION_DIST_INPUTS,
                   Postprocessing.ADVANTAGES, Postprocessing.VALUE_TARGETS):
        assert module_batch[column].shape[0] == n, column
    advantages = module_batch[Postprocessing.ADVANTAGES]
    assert abs(float(advantages.mean())) < 1e-5 and float(advantages.std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_array_equal(module_batch[Columns.OBS].numpy(),
                                  np.concatenate([e.obs[:, :-1].reshape(-1, e.obs.shape[-1]) for e in episodes]))
    with pytest.raises(ValueError, match="num_learners"):
        episodes[0][:2]  # RLlib's sharder may not cut an env's robot-episodes
    runner.stop()


def test_vector_runner_with_a_module_per_robot(one_torch_thread):
    """``--per-robot``: each robot's rows go through its own module, and the learner batch is split by module."""
    from agents.rllib_vector_runner import ArrayLearnerConnector

    runner, _ = _runner(_settings(per_robot=True, seed=2))
    episodes = runner.sample()
    robots = [f"robot_{i}" for i in range(SMALL["n_robots"])]
    assert list(episodes[0].module_ids) == list(episodes[0].agent_ids) == robots
    batch = ArrayLearnerConnector(None, gamma=0.99, lambda_=0.95)(rl_module=runner.module, batch={}, episodes=episodes)
    assert sorted(batch) == robots
    assert all(batch[r]["obs"].shape[0] == len(episodes) * SMALL["rounds"] for r in robots)
    runner.stop()


@ray_group
def test_ppo_trains_with_the_vector_runner_and_shares_checkpoints_with_rllibs_runner(local_ray, one_torch_thread,
                                                                                    tmp_path):
    """Two PPO updates with the vector runner (agent steps counted, the module changes, losses finite); its
    checkpoint loads as an `rllib:` policy; a checkpoint of RLlib's own runner resumes with the vector runner."""
    import datagames_env
    from agents.policies import RLlibCheckpointPolicy
    from agents.rllib_train import build_ppo_config, iteration_summary

    algo = build_ppo_config(_settings(seed=0)).build_algo()
    try:
        before = {k: np.array(v) for k, v in algo.get_module("shared").get_state().items()}
        results = [algo.train() for _ in range(2)]
        assert [iteration_summary(r)["agent_steps"] for r in results] == [36, 72]
        learner = results[-1]["learners"]["shared"]
        assert np.isfinite(float(learner["total_loss"])) and np.isfinite(float(learner["vf_loss"]))
        after = algo.get_module("shared").get_state()
        assert any(not np.allclose(before[k], np.asarray(after[k])) for k in before)
        algo.save_to_path(str(tmp_path / "vector"))
    finally:
        algo.stop()
    env = datagames_env.parallel_env("default", **SMALL)
    policy = RLlibCheckpointPolicy(env, tmp_path / "vector")
    observations, infos = env.reset(seed=0)
    actions = policy.act(observations, infos)
    assert set(actions) == set(env.possible_agents)
    assert all(env.action_space(a).contains(np.asarray(actions[a], np.float32)) for a in actions)

    plain = build_ppo_config(_settings(seed=0, vector_runner=False)).build_algo()
    try:
        plain.train()
        plain.save_to_path(str(tmp_path / "plain"))
        trained = plain.get_module("shared").get_state()
    finally:
        plain.stop()
    resumed = build_ppo_config(_settings(seed=0)).build_algo()
    try:
        resumed.restore_from_path(str(tmp_path / "plain"))
        restored = resumed.env_runner.module["shared"].get_state()
        assert all(np.allclose(np.asarray(trained[k]), np.asarray(restored[k])) for k in restored)
        assert iteration_summary(resumed.train())["iteration"] == 2
    finally:
        resumed.stop()


def test_vector_runner_refuses_what_the_vector_env_does_not_have():
    from agents.rllib_train import build_ppo_config
    from agents.rllib_vector_runner import vector_env_of
    from datagames_env.config import ConfigError

    for config in ("default", *OTHER_SCENARIOS):  # dropout lives in the parallel face, for every scenario
        with pytest.raises(ConfigError, match="faults.dropout"):
            vector_env_of({"config": config, "overrides": {"faults.dropout": 0.1}}, 2)
    with pytest.raises(ValueError, match="global_state"):
        vector_env_of({"config": "default", "global_state": True}, 2)
    with pytest.raises(ValueError, match="message_sweeps"):
        vector_env_of({"config": "default", "message_sweeps": 1}, 2)
    # the automatic envs per runner: one update's episodes in one vector env
    config = build_ppo_config(_settings(train_batch_size=360))
    assert config.num_envs_per_env_runner == 40 and config.total_train_batch_size == 360


@ray_group
def test_vector_runner_runs_on_a_second_ray_node(two_node_cluster, tmp_path):
    from agents.rllib_train import train

    cluster, worker = two_node_cluster
    result = train(_settings(iterations=2, num_env_runners=1, env_runner_resources={"datagames_runner": 1},
                             ray_address=cluster.address, out=str(tmp_path), run_name="cluster"), log=lambda *a: None)
    actors = cluster.global_state.actor_table(None).values()
    runners = [a for a in actors if a["ActorClassName"] == "VectorEnvRunner"]
    assert runners, f"no VectorEnvRunner actor in {[a['ActorClassName'] for a in actors]}"
    assert {a["Address"]["NodeID"] for a in runners} == {worker.node_id} != {cluster.head_node.node_id}
    assert [h["agent_steps"] for h in result["history"]] == [36, 72]
    meta = json.loads((tmp_path / "cluster" / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["settings"]["vector_runner"] is True


def _other_settings(config: str, **fields):
    """One update = two envs of one episode each (3 robots x 2 rounds x 2 envs = 12 agent steps)."""
    return _settings(config=config, overrides=dict(OTHER_SCENARIOS[config]), train_batch_size=12, minibatch_size=12,
                     **fields)


@pytest.mark.parametrize("config", sorted(OTHER_SCENARIOS))
def test_vector_runner_samples_p2p_and_dual_with_the_per_sample_picks(config, one_torch_thread):
    """p2p and dual through the vector runner: the module is the one RLlib's runner builds (per-sample scores,
    Plackett-Luce top-k picks), every robot picks exactly k samples, and replaying the recorded actions on a vector
    env reset with the runner's seeds gives back the recorded observations and rewards (the same code at the same
    B, so equal up to float noise)."""
    import datagames_env
    from agents.modules import SampleScoringModule
    from agents.rllib_vector_runner import TRAIN_FIRST_SEED

    runner, _ = _runner(_other_settings(config, seed=5))
    b = runner.num_envs
    assert b == 2
    module = runner.module["shared"].unwrapped()
    assert isinstance(module, SampleScoringModule) and module.select_k
    episodes = runner.sample()
    rounds = OTHER_SCENARIOS[config]["rounds"]
    assert len(episodes) == b and sum(e.agent_steps() for e in episodes) == 12
    for e in episodes:  # picks are encoded as (k - r) / k, unpicked samples 0 (agents.distributions)
        assert ((e.actions > 0).sum(-1) == module.select_k).all()
        assert e.terminateds[:, -1].all() and not e.terminateds[:, :-1].any()
    replay = datagames_env.vector_env(b, config, **OTHER_SCENARIOS[config])
    obs, _ = replay.reset(seed=TRAIN_FIRST_SEED + 5 * b)
    recorded_obs = np.stack([e.obs for e in episodes])  # (B, N, T+1, D)
    np.testing.assert_allclose(recorded_obs[:, :, 0], obs, atol=1e-6)
    for t in range(rounds):
        actions = np.stack([e.actions[:, t] for e in episodes])
        obs, rewards, terminations, _, _ = replay.step((actions + 1.0) / 2.0)  # normalize_actions: [-1, 1] -> [0, 1]
        np.testing.assert_allclose(np.stack([e.rewards[:, t] for e in episodes]), rewards, atol=1e-6)
        np.testing.assert_allclose(recorded_obs[:, :, t + 1], obs, atol=1e-6)
        np.testing.assert_array_equal(np.stack([e.terminateds[:, t] for e in episodes]), terminations)
    runner.stop()


@ray_group
@pytest.mark.parametrize("config", sorted(OTHER_SCENARIOS))
def test_ppo_trains_p2p_and_dual_with_the_vector_runner_and_the_checkpoint_plays_as_rllib_policy(
        config, local_ray, one_torch_thread, tmp_path):
    """`datagames train --algo ppo --vector-runner --config p2p_default` (dual_default): two updates through the
    vector runner change the module; the checkpoint plays an episode of the same scenario as an `rllib:` policy."""
    from agents.rllib_train import train
    from datagames_env.harness.episode import run_episode
    from datagames_env.policy import make_policy
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

    result = train(_other_settings(config, iterations=2, out=str(tmp_path), run_name=config), log=lambda *a: None)
    assert [h["agent_steps"] for h in result["history"]] == [12, 24]
    assert np.isfinite([h["episode_return_mean"] for h in result["history"]]).all()
    meta = json.loads((tmp_path / config / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["settings"]["vector_runner"] is True and meta["settings"]["config"] == config
    env = make_parallel_env(config, **OTHER_SCENARIOS[config])
    policy = make_policy(f"rllib:{result['checkpoint']}", env)
    record = run_episode(env, policy, seed=300)
    assert len(record["rounds"]) == OTHER_SCENARIOS[config]["rounds"] + 1  # the reset and every round
    env.close()
