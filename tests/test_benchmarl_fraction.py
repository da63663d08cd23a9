"""The gap-fraction action on the TorchRL / BenchMARL face: ``torchrl_env(action="gap-fraction")``, the task key
``action``, ``datagames train --algo benchmarl-mappo --model gap-fraction`` and its evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")
pytest.importorskip("benchmarl")

import datagames_env  # noqa: E402

SMALL = {"n_robots": 4, "rounds": 3}


def test_fraction_one_is_greedy():
    """f = 1 for every robot steps the env exactly as Greedy's actions do (same solver; tolerance for two paths)."""
    from datagames_env.policy import make_policy

    env = datagames_env.torchrl_env(1, "default", seed=7, action="gap-fraction", **SMALL)
    assert env.action_spec[("robots", "action")].shape == (1, 4, 1)
    td = env.reset()
    par = datagames_env.parallel_env("default", **SMALL)
    obs, infos = par.reset(seed=7)
    greedy = make_policy("greedy", par)
    greedy.reset(seed=7)
    np.testing.assert_allclose(td["robots", "observation"][0].numpy(), np.stack([obs[a] for a in par.agents]),
                               atol=1e-6)
    for _ in range(SMALL["rounds"]):
        td["robots", "action"] = torch.ones(1, 4, 1)
        td = env.step(td)["next"]
        obs, rewards, _, _, infos = par.step(greedy.act(obs, infos))
        agents = list(obs)
        np.testing.assert_allclose(td["robots", "observation"][0].numpy(), np.stack([obs[a] for a in agents]),
                                   atol=1e-5)
        np.testing.assert_allclose(td["robots", "reward"][0, :, 0].numpy(), [rewards[a] for a in agents], atol=1e-5)
        assert abs(float(td["distance"][0, 0]) - infos[agents[0]]["distance"]) < 1e-4
    assert bool(td["done"].all())


def test_fraction_zero_uploads_nothing_and_bad_input_is_named():
    env = datagames_env.torchrl_env(2, "default", seed=1, action="gap-fraction", **SMALL)
    td = env.reset()
    before = td["distance"].clone()
    td["robots", "action"] = torch.zeros(2, 4, 1)
    out = env.step(td)["next"]
    assert torch.equal(out["distance"], before) and float(out["robots", "reward"].abs().max()) == 0.0
    with pytest.raises(ValueError, match="action 'nope'"):
        datagames_env.torchrl_env(1, "default", action="nope")
    with pytest.raises(ValueError, match="allocation mode.*'p2p'"):
        datagames_env.torchrl_env(1, "p2p_default", action="gap-fraction")
    with pytest.raises(ValueError, match="allocation mode.*selection"):
        datagames_env.torchrl_env(1, "default", action="gap-fraction", action_mode="selection")

    from datagames_env.benchmarl import DataGamesTask, make_task

    task = DataGamesTask.DEFAULT_FRACTION.get_from_yaml()
    assert task.action == "gap-fraction" and task.config["action"] == "gap-fraction"
    assert make_task("default").action == "env"
    with pytest.raises(ValueError, match="action 'x'"):
        make_task("default", action="x")
    with pytest.raises(ValueError, match="allocation mode"):
        make_task("default", action="gap-fraction", action_mode="selection")


def test_mappo_on_gap_fraction_trains_and_evaluates_as_in_training(tmp_path):
    """One MAPPO iteration on the gap-fraction action; `datagames eval` maps the checkpoint's fractions as the
    training env does: its final distances equal a deterministic rollout of the actor on torchrl_env."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from datagames_env.harness.cli import main

    code = main(["train", "--algo", "benchmarl-mappo", "--model", "gap-fraction", "--config", "default",
                 "--iterations", "1", "--train-batch-size", "600", "--minibatch-size", "300", "--num-epochs", "1",
                 "--checkpoint-every", "0", "--out", str(tmp_path / "runs"), "--name", "gf", "--seed", "0",
                 "--no-progress", "--set", "n_robots=4", "--set", "rounds=3"])
    assert code == 0
    checkpoint = tmp_path / "runs" / "gf" / "checkpoint"
    meta = json.loads((checkpoint / "datagames_meta.json").read_text())
    assert meta["action"] == "gap-fraction" and json.loads((checkpoint.parent / "history.json").read_text())
    out = tmp_path / "eval"
    code = main(["eval", "--config", "default", "--set", "n_robots=4", "--set", "rounds=3", "--policies",
                 f"benchmarl:{checkpoint}", "--seeds", "2", "--first-seed", "100", "--workers", "1",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    episodes = json.loads((out / "results.json").read_text())["episodes"]
    played = [e["final_distance"] for e in sorted(episodes, key=lambda e: e["seed"])]

    actor = torch.load(checkpoint / "policy.pt", weights_only=False)
    env = datagames_env.torchrl_env(2, "default", seed=100, action="gap-fraction", **SMALL)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(3, actor, break_when_any_done=False)
    fractions = rollout["robots", "action"]
    assert fractions.shape == (2, 3, 4, 1) and float(fractions.min()) >= 0.0 and float(fractions.max()) <= 1.0
    np.testing.assert_allclose(played, rollout["next", "distance"][:, -1, 0].numpy(), rtol=1e-4)
