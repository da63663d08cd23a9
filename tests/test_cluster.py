"""The scaling flags of `datagames train`: a real two-node Ray cluster on this machine (head plus a second node
with its own resource) that trains through `--ray-address` with the env runner on the second node, and the
learner (GPU) flags as far as the config goes (no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("ray.rllib")
pytest.importorskip("torch")

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
RUNNER_RESOURCE = "datagames_runner"  # the resource of the second node of conftest.two_node_cluster

# One xdist worker for every Ray test (`--dist loadgroup`), as in test_agents.py.
ray_group = pytest.mark.xdist_group("ray")


@ray_group
def test_train_through_ray_address_runs_the_env_runner_on_the_second_node(two_node_cluster, tmp_path):
    from datagames_env.harness.cli import main

    cluster, worker = two_node_cluster
    head_id = cluster.head_node.node_id
    code = main(["train", "--config", "default", *[f"--set={k}={v}" for k, v in SMALL.items()],
                 "--iterations", "2", "--train-batch-size", "90", "--minibatch-size", "45", "--num-epochs", "1",
                 "--num-env-runners", "1", "--env-runner-resource", f"{RUNNER_RESOURCE}=1",
                 "--ray-address", cluster.address, "--out", str(tmp_path), "--name", "cluster",
                 "--checkpoint-every", "0"])
    assert code == 0
    # Where the env runner actor lived, from the cluster's own actor table (dead actors stay listed).
    actors = cluster.global_state.actor_table(None).values()
    runners = [a for a in actors if a["ActorClassName"].endswith("EnvRunner")]
    assert runners, f"no env runner actor in {[a['ActorClassName'] for a in actors]}"
    assert {a["Address"]["NodeID"] for a in runners} == {worker.node_id} != {head_id}
    run = tmp_path / "cluster"
    history = json.loads((run / "history.json").read_text())
    # 90 agent steps per update, exactly as with one environment per runner (auto: 10 of 10 episodes)
    assert [h["agent_steps"] for h in history] == [90, 180]
    meta = json.loads((run / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["iteration"] == 2 and meta["settings"]["env_runner_resources"] == {RUNNER_RESOURCE: 1.0}
    assert (run / "checkpoint" / "learner_group").is_dir()  # RLlib's checkpoint, loadable by rllib:PATH


def test_learner_flags_give_the_learner_config_without_a_gpu():
    from agents.rllib_train import TrainSettings, build_ppo_config

    config = build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), num_learners=2,
                                            num_gpus_per_learner=1, train_batch_size=4000, minibatch_size=500,
                                            num_env_runners=4, num_envs_per_env_runner=2,
                                            env_runner_resources={RUNNER_RESOURCE: 1}))
    assert config.num_learners == 2 and config.num_gpus_per_learner == 1
    assert config.train_batch_size_per_learner == 2000  # the total split over the learners
    assert config.total_train_batch_size == 4000 and config.minibatch_size == 500
    assert config.num_env_runners == 4 and config.num_envs_per_env_runner == 2
    assert config.custom_resources_per_env_runner == {RUNNER_RESOURCE: 1}


def test_cli_scaling_flags_reach_the_train_settings(monkeypatch, tmp_path):
    """Parse only: `datagames train` hands the flags to TrainSettings (the training itself is replaced)."""
    import agents.rllib_train
    from datagames_env.harness.cli import main

    seen = {}

    def fake_train(settings, log=print):
        seen["settings"] = settings
        return {"history": [], "elapsed_s": 0.0, "checkpoint": str(tmp_path)}

    monkeypatch.setattr(agents.rllib_train, "train", fake_train)
    code = main(["train", "--num-learners", "2", "--num-gpus-per-learner", "1", "--num-env-runners", "8",
                 "--num-envs-per-env-runner", "4", "--ray-address", "auto", "--env-runner-resource", "sampler=0.5",
                 "--env-runner-resource", "big_node", "--out", str(tmp_path)])
    settings = seen["settings"]
    assert code == 0
    assert (settings.num_learners, settings.num_gpus_per_learner) == (2, 1.0)
    assert (settings.num_env_runners, settings.num_envs_per_env_runner) == (8, 4)
    assert settings.ray_address == "auto" and settings.env_runner_resources == {"sampler": 0.5, "big_node": 1.0}


@pytest.mark.parametrize(("overrides", "rllib_envs", "sb3_envs"), [
    ({}, 10, 10),                               # default: 20 episodes of 100 agent steps
    ({"n_robots": 20, "rounds": 7}, 5, 7),      # the MNIST configs' fleet: 15 episodes (RLlib), 1,960 rows (SB3)
])
def test_auto_envs_per_runner_keep_the_update_batch(overrides, rllib_envs, sb3_envs):
    """More environments per runner only batch the per-step work: the automatic choice never changes how many
    agent steps an update trains on (RLlib: whole episodes until the batch is full; SB3: whole episodes per row)."""
    from agents.rllib_train import TrainSettings, build_ppo_config
    from agents.sb3_train import _rollout_steps, sb3_num_envs

    settings = TrainSettings(config="default", overrides=overrides)
    assert build_ppo_config(settings).num_envs_per_env_runner == rllib_envs
    n, rounds = overrides.get("n_robots", 10), overrides.get("rounds", 10)
    episode = n * rounds
    assert -(-2000 // (episode * rllib_envs)) * rllib_envs == -(-2000 // episode)  # episodes per update
    assert sb3_num_envs(settings) == sb3_envs
    assert _rollout_steps(2000, sb3_envs * n, rounds) * sb3_envs == _rollout_steps(2000, n, rounds)
    explicit = TrainSettings(config="default", overrides=overrides, num_envs_per_env_runner=1)
    assert build_ppo_config(explicit).num_envs_per_env_runner == 1 and sb3_num_envs(explicit) == 1
