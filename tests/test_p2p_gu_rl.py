"""A learned GU sharer on p2p (issue 18): PPO through the vector runner on the peers' feedback reward
(``reward: feedback``), its checkpoint as an ``rllib:`` policy in the harness and in the sweep's check mode
(``benchmarks/sweep_p2p.py``), and the reward equal to the feedback the infos report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

REPO = Path(__file__).resolve().parents[1]
# p2p_default at test size, the reward named explicitly (it is the default)
TINY = {"rounds": 2, "obs_per_round": 40, "reward": "feedback"}
ray_group = pytest.mark.xdist_group("ray")


def _sweep_module():
    spec = importlib.util.spec_from_file_location("sweep_p2p", REPO / "benchmarks" / "sweep_p2p.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_feedback_reward_is_the_mean_utility_the_peers_returned():
    """Per env and robot, the reward of a step is the mean of ``feedback_utilities`` over the robot's n_share cached
    samples; each utility is the fraction of the robot's receivers that voted the sample novel (2 receivers here:
    0, 1/2 or 1), and 0 for a sample that did not leave (``sent_mask``)."""
    import datagames_env

    env = datagames_env.vector_env(3, "p2p_default", **TINY)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    rewarded = 0.0
    for _ in range(TINY["rounds"]):
        _, rewards, _, _, infos = env.step(rng.random(env.action_space.shape).astype(np.float32))
        utilities = infos["feedback_utilities"]
        assert utilities.shape == (3, 3, env.batched.n_share)
        np.testing.assert_allclose(rewards, utilities.mean(axis=2), rtol=1e-6, atol=1e-7)
        receivers = infos["neighbor_mask"].sum(axis=2)[..., None]  # (B, N, 1): every robot linked to both others
        np.testing.assert_allclose(utilities * receivers, np.round(utilities * receivers), atol=1e-6)
        assert (utilities[~infos["sent_mask"]] == 0).all()
        rewarded += float(rewards.sum())
    assert rewarded > 0  # some shared sample was novel to a peer: the check above is not all zeros


def test_feedback_reward_of_the_parallel_env_is_the_same_feedback():
    """The B = 1 face (what RLlib's own runner and ``datagames eval`` step) reports the same: reward per robot =
    mean of its ``feedback_utilities``."""
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

    env = make_parallel_env("p2p_default", **TINY)
    env.reset(seed=5)
    rng = np.random.default_rng(1)
    while env.agents:
        actions = {a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents}
        _, rewards, _, _, infos = env.step(actions)
        for agent, reward in rewards.items():
            assert reward == pytest.approx(float(np.mean(infos[agent]["feedback_utilities"])), abs=1e-7)
    env.close()


@ray_group
def test_ppo_on_the_feedback_reward_trains_and_evaluates_as_rllib_policy(tmp_path, one_torch_thread):
    """Two PPO iterations through the vector runner on tiny p2p with the feedback reward; the checkpoint plays as
    ``rllib:`` in the harness and in the sweep's check mode, where it picks exactly n_share samples per robot and
    round and reports the GU metrics."""
    import ray

    from agents.rllib_train import TrainSettings, init_ray, train
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env
    from datagames_env.harness.episode import run_episode
    from datagames_env.policy import make_policy

    ray.shutdown()
    init_ray(None, 1)
    try:
        settings = TrainSettings(config="p2p_default", overrides=dict(TINY), iterations=2, vector_runner=True,
                                 train_batch_size=12, minibatch_size=12, num_epochs=1, gamma=0.0, progress=False,
                                 checkpoint_every=0, out=str(tmp_path), run_name="gu")
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [12, 24]
    returns = [h["episode_return_mean"] for h in result["history"]]
    assert np.isfinite(returns).all() and min(returns) >= 0  # feedback rewards lie in [0, 1]
    meta = json.loads((tmp_path / "gu" / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["settings"]["overrides"]["reward"] == "feedback" and meta["settings"]["gamma"] == 0.0

    env = make_parallel_env("p2p_default", **TINY)
    record = run_episode(env, make_policy(f"rllib:{result['checkpoint']}", env), seed=300)
    assert len(record["rounds"]) == TINY["rounds"] + 1
    env.close()

    rows = _sweep_module().run_point("p2p_default", f"rllib:{result['checkpoint']}", [300, 301], **TINY)
    assert [r["seed"] for r in rows] == [300, 301]
    for r in rows:
        assert 0.0 <= r["rare_share_after_first"] <= 1.0 and 0.0 <= r["peer_rare_acc"] <= 1.0
