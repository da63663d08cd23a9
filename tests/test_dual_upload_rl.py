"""A learned upload policy for dual (issue 18): PPO through the vector runner on the cloud model's accuracy gain
(``reward: accuracy``, the default of ``dual_default``), its checkpoint as an ``rllib:`` upload policy in the harness
with a labeler after the slash, and the reward it trains on: the shared change of validation accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

REPO = Path(__file__).resolve().parents[1]
# dual_default at test size, the reward named explicitly (it is the default)
TINY = {"n_robots": 3, "rounds": 2, "obs_per_round": 20, "n_cache": 2, "label_budget": 2, "reward": "accuracy"}
ray_group = pytest.mark.xdist_group("ray")


def test_accuracy_reward_is_the_shared_change_of_validation_accuracy():
    """Every robot of an env gets the same reward, and it is this round's validation accuracy minus the last."""
    import datagames_env

    env = datagames_env.vector_env(2, "dual_default", **TINY)
    _, infos = env.reset(seed=7)
    before = np.asarray(infos["validation_accuracy"], dtype=np.float64).reshape(2, -1)[:, 0]
    rng = np.random.default_rng(0)
    for _ in range(TINY["rounds"]):
        _, rewards, _, _, infos = env.step(rng.random(env.action_space.shape).astype(np.float32))
        assert rewards.shape == (2, TINY["n_robots"])
        assert (rewards == rewards[:, :1]).all()  # shared by the fleet: no per-robot credit
        after = np.asarray(infos["validation_accuracy"], dtype=np.float64).reshape(2, -1)[:, 0]
        np.testing.assert_allclose(rewards[:, 0], after - before, atol=1e-6)
        before = after


@ray_group
def test_ppo_on_the_accuracy_reward_trains_and_evaluates_as_rllib_upload_policy(tmp_path, one_torch_thread):
    """Two PPO iterations through the vector runner on tiny dual; the checkpoint plays as ``rllib:`` and as
    ``rllib:PATH/random`` (the labeler overridden), uploading n_cache samples per robot and round."""
    import ray

    from agents.rllib_train import TrainSettings, init_ray, train
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env
    from datagames_env.harness.episode import run_episode
    from datagames_env.policy import make_policy

    ray.shutdown()
    init_ray(None, 1)
    try:
        settings = TrainSettings(config="dual_default", overrides=dict(TINY), iterations=2, vector_runner=True,
                                 train_batch_size=12, minibatch_size=12, num_epochs=1, progress=False,
                                 checkpoint_every=0, out=str(tmp_path), run_name="up")
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [12, 24]
    assert np.isfinite([h["episode_return_mean"] for h in result["history"]]).all()
    meta = json.loads((tmp_path / "up" / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["settings"]["config"] == "dual_default" and meta["settings"]["overrides"]["reward"] == "accuracy"

    for labeler in (None, "random"):
        spec = f"rllib:{result['checkpoint']}" + (f"/{labeler}" if labeler else "")
        env = make_parallel_env("dual_default", **TINY, **({"labeler": labeler} if labeler else {}))
        record = run_episode(env, make_policy(spec, env), seed=300)
        assert len(record["rounds"]) == TINY["rounds"] + 1
        for rnd in record["rounds"][1:]:
            assert rnd["uploaded"] == TINY["n_robots"] * TINY["n_cache"]  # the top n_cache scores of each robot
            assert 0.0 <= rnd["test_accuracy"] <= 1.0
        env.close()
