"""Baseline policies acting in the environment, and the evaluation harness end to end."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

import datagames_env
from datagames_env.harness import evaluate
from datagames_env.harness.reports.datagames import episode_lower_bound
from datagames_env.policy import POLICIES, Policy, make_policy

SMALL = dict(n_robots=4, rounds=3, obs_per_round=60, n_cache=3, initial_cloud_size=40)


def play(env, policy, seed):
    obs, infos = env.reset(seed=seed)
    policy.reset(seed)
    while env.agents:
        obs, _, _, _, infos = env.step(policy.act(obs, infos))
    return env.distance_history


@pytest.mark.parametrize("name", ["random", "uniform", "greedy", "interactive", "oracle"])
@pytest.mark.parametrize("mode", ["allocation", "selection"])
def test_every_policy_plays_both_modes(name, mode):
    env = datagames_env.parallel_env(action_mode=mode, **SMALL)
    policy = make_policy(name, env)
    assert isinstance(policy, Policy)
    history = play(env, policy, seed=3)
    assert len(history) == SMALL["rounds"] + 1
    uploads = env.ledger()
    assert len(uploads["sample_id"]) <= SMALL["rounds"] * SMALL["n_robots"] * SMALL["n_cache"]


def test_unknown_policy_names_the_choices():
    env = datagames_env.parallel_env(**SMALL)
    with pytest.raises(ValueError, match="unknown policy 'gredy'.*greedy"):
        make_policy("gredy", env)


def test_only_oracle_is_privileged():
    env = datagames_env.parallel_env(**SMALL)
    flags = {name: make_policy(name, env).privileged for name in ["random", "uniform", "greedy", "interactive", "oracle"]}
    assert flags == {"random": False, "uniform": False, "greedy": False, "interactive": False, "oracle": True}


def test_greedy_reads_only_its_own_infos():
    """Greedy for robot i must not change when other robots' infos change."""
    env = datagames_env.parallel_env(**SMALL)
    obs, infos = env.reset(seed=0)
    greedy = make_policy("greedy", env)
    base = greedy.act(obs, infos)
    other = dict(infos)
    other["robot_1"] = {**infos["robot_1"], "feasible_matrix": np.eye(env.n_classes),
                        "available": np.full(env.n_classes, 99)}
    changed = greedy.act(obs, other)
    for agent in ["robot_0", "robot_2", "robot_3"]:
        np.testing.assert_allclose(base[agent], changed[agent])


def test_paper_ordering_on_the_embedded_default():
    """The paper's ordering on the default config (where the fleet can reach the target, so coordination
    matters), mean over seeds with common random numbers: oracle <= interactive < greedy < uniform.
    Single episodes are noisy (integer uploads, sampled labels), the means are far apart."""
    env = datagames_env.parallel_env()
    final = {}
    for name in ["uniform", "greedy", "interactive", "oracle"]:
        policy = make_policy(name, env)
        final[name] = np.mean([play(env, policy, seed)[-1] for seed in range(3)])
    assert final["oracle"] < final["interactive"] < final["greedy"] < final["uniform"], final


def test_episode_lower_bound_is_below_every_policy():
    env = datagames_env.parallel_env(**SMALL)
    for name in ["greedy", "oracle"]:
        history = play(env, make_policy(name, env), seed=1)
        bound = episode_lower_bound(env.core.cloud_counts[0] * 0 + np.bincount(
            env.core.world.dataset.labels[env.core.initial_ids[0]], minlength=env.n_classes),
            env.core.target_counts, env.config.upload_budget, env.config.rounds)
        assert all(b <= d + 1e-9 for b, d in zip(bound, history))


def test_evaluate_writes_the_results_folder(tmp_path):
    payload = evaluate(None, ["uniform", "greedy", "oracle"], [0, 1], tmp_path, workers=1, progress=False, **SMALL)
    for name in ["results.json", "rounds.csv", "final.csv", "distance.png", "final_counts.png", "final_distance.png",
                 "summary.md"]:
        assert (tmp_path / name).stat().st_size > 0, name
    data = json.loads((tmp_path / "results.json").read_text())
    assert {(e["policy"], e["seed"]) for e in data["episodes"]} == {(p, s) for p in ["uniform", "greedy", "oracle"]
                                                                     for s in [0, 1]}
    with open(tmp_path / "rounds.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 * (SMALL["rounds"] + 1)
    # the harness reports what a direct run of the same policy and seed gives
    env = datagames_env.parallel_env(**SMALL)
    direct = play(env, make_policy("greedy", env), seed=1)
    episode = next(e for e in payload["episodes"] if e["policy"] == "greedy" and e["seed"] == 1)
    np.testing.assert_allclose([r["distance"] for r in episode["rounds"]], direct)
    summary = (tmp_path / "summary.md").read_text()
    assert "| greedy |" in summary and "Lower bound" in summary


def test_evaluate_results_do_not_depend_on_workers(tmp_path):
    one = evaluate(None, ["random", "interactive"], [4, 5], tmp_path / "a", workers=1, progress=False, **SMALL)
    two = evaluate(None, ["random", "interactive"], [4, 5], tmp_path / "b", workers=2, progress=False, **SMALL)
    key = lambda p: [(e["policy"], e["seed"], e["final_distance"], e["messages"]) for e in p["episodes"]]
    assert key(one) == key(two)


def test_evaluate_falls_back_when_ray_is_unreachable(tmp_path):
    with pytest.warns(UserWarning, match="local processes"):
        payload = evaluate(None, ["uniform"], [0], tmp_path, workers=1, progress=False,
                           ray_address="ray://127.0.0.1:1", **SMALL)
    assert len(payload["episodes"]) == 1


def test_evaluate_rejects_unknown_policies_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown policies"):
        evaluate(None, ["greedy", "nope"], [0], tmp_path, progress=False, **SMALL)
    assert not (tmp_path / "results.json").exists()


def test_cli_run_and_eval(tmp_path, capsys):
    from datagames_env.harness.cli import main

    assert main(["run", "--policy", "greedy", "--seed", "0", "--out", str(tmp_path), "--set", "n_robots=3",
                 "--set", "rounds=2"]) == 0
    assert (tmp_path / "default-greedy-seed0+n_robots=3+rounds=2" / "distance.png").exists()  # --set names the folder
    assert main(["eval", "--policies", "uniform,oracle", "--seeds", "2", "--workers", "1", "--out",
                 str(tmp_path / "ev"), "--set", "n_robots=3", "--set", "rounds=2"]) == 0
    assert (tmp_path / "ev" / "summary.md").exists()
    assert main(["run", "--set", "n_robot=3"]) == 2
    assert "did you mean 'n_robots'" in capsys.readouterr().err
    assert set(POLICIES) >= {"random", "uniform", "greedy", "interactive", "oracle"}


@pytest.mark.xdist_group("ray")
def test_ray_results_equal_local_results(tmp_path):
    """Where ray is installed (extra 'cluster'), a local Ray runtime gives exactly the local results."""
    ray = pytest.importorskip("ray")
    ray.shutdown()  # a runtime left by another test must not be reused (or fail) here
    local = evaluate(None, ["uniform", "greedy"], [0, 1], tmp_path / "local", workers=1, progress=False, **SMALL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # a silent fallback to local processes would pass vacuously
            remote = evaluate(None, ["uniform", "greedy"], [0, 1], tmp_path / "ray", ray_address="local",
                              progress=False, **SMALL)
    finally:
        ray.shutdown()
    key = lambda p: [(e["policy"], e["seed"], e["final_distance"]) for e in p["episodes"]]
    assert key(local) == key(remote)


def test_interactive_sum_takes_the_same_actions_with_fewer_messages():
    env = datagames_env.parallel_env(**SMALL)
    obs, infos = env.reset(seed=2)
    full, summed = make_policy("interactive", env), make_policy("interactive-sum", env)
    a, b = full.act(obs, infos), summed.act(obs, infos)
    for agent in a:
        np.testing.assert_allclose(a[agent], b[agent])
    n = SMALL["n_robots"]
    assert full.last_stats["sweeps"] == summed.last_stats["sweeps"]
    assert full.last_stats["messages"] == n * (n - 1) * (1 + full.last_stats["sweeps"])
    assert summed.last_stats["messages"] == n + 2 * n * summed.last_stats["sweeps"]


class _FakeRay:
    """Stands in for the ``ray`` module: ``init`` raises the given errors in turn, then succeeds."""

    def __init__(self, errors):
        self.errors, self.inits, self.shutdowns = list(errors), [], 0

    def is_initialized(self):
        return False

    def init(self, address=None, **kwargs):
        self.inits.append(address)
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self):
        self.shutdowns += 1


def test_a_local_ray_start_that_times_out_is_tried_again_and_a_cluster_address_is_not(monkeypatch):
    import sys

    from datagames_env.harness.ray_runtime import LOCAL_START_ATTEMPTS, start_ray

    timeout = Exception("The current node timed out during startup. This could happen because ...")
    fake = _FakeRay([timeout, timeout])
    monkeypatch.setitem(sys.modules, "ray", fake)
    start_ray("local", log_to_driver=False)
    assert fake.inits == [None, None, None] and fake.shutdowns == 2

    fake = _FakeRay([timeout] * LOCAL_START_ATTEMPTS)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(Exception, match="timed out during startup"):
        start_ray(None)
    assert len(fake.inits) == LOCAL_START_ATTEMPTS

    for address, error in (("ray://head:10001", timeout), (None, ConnectionError("refused"))):
        fake = _FakeRay([error])
        monkeypatch.setitem(sys.modules, "ray", fake)
        with pytest.raises(type(error)):
            start_ray(address)
        assert fake.inits == [address] and fake.shutdowns == 0
