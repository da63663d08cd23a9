"""DUAL scenario (datagames_env/dual.py): PettingZoo API, observation contract, the two stages, determinism over
whole episodes, the privacy property (dual half), policies and the command line. Small digits instances only."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pettingzoo.test import parallel_api_test

from baselines.dual_policies import DUAL_POLICIES, make_dual_policy
from baselines.submodular import fleet_objective
from datagames_env.config import ConfigError
from datagames_env.scenarios.dual import DualConfig, load_dual_config, uncertainty
from datagames_env.faces.pettingzoo import DualParallelEnv
from datagames_env.faces.pettingzoo import DualParallelEnv as parallel_env  # dual unless the config says otherwise
from datagames_env.harness.cli import main as _cli_main
from datagames_env.scenarios.batching import BatchOfOne

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
         "initial_cloud_size": 40, "perception.train_steps": 60}


def dual_main(argv: list[str]) -> int:
    """``datagames dual ...``: the alias of the shared CLI with dual_default as the default config."""
    return _cli_main(["dual", *argv])


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def env0(env: DualParallelEnv, name: str):
    """An array of the scenario as the paper tier holds it (robots first): env 0 of the fast tier's batch."""
    value = getattr(env, name)
    return value[0] if isinstance(env.scenario, BatchOfOne) else value


def small_env(**extra) -> DualParallelEnv:
    return parallel_env(None, **{**SMALL, **extra})


def play(env: DualParallelEnv, policy: str = "random", seed: int = 0) -> list:
    p = make_dual_policy(policy, env)
    p.reset(seed)
    obs, infos = env.reset(seed=seed)
    trace = [(obs, infos)]
    while env.agents:
        obs, rewards, terms, _truncs, infos = env.step(p.act(obs, infos))
        trace.append((obs, rewards, terms, infos))
    return trace


def test_parallel_api_test():
    parallel_api_test(small_env(), num_cycles=5)


def test_observation_contract():
    env = small_env()
    obs, _infos = env.reset(seed=3)
    lay = env.obs_layout
    assert lay["context"] == slice(0, env.context_dim)
    assert lay["samples"].stop - lay["samples"].start == env.n_samples * env.sample_feature_dim
    assert env.observation_space("robot_0").shape == (env.context_dim + env.n_samples * env.sample_feature_dim,)
    assert env.observation_space("robot_1") is env.observation_space("robot_1")
    assert env.action_space("robot_0").shape == (SMALL["obs_per_round"],)
    for agent, o in obs.items():
        assert env.observation_space(agent).contains(o) and np.isfinite(o).all()
        samples = o[lay["samples"]].reshape(env.n_samples, env.sample_feature_dim)
        assert np.allclose(np.linalg.norm(samples[:, env.sample_layout["embedding"]], axis=1), 1.0, atol=1e-5)
        assert np.allclose(samples[:, env.sample_layout["probs"]].sum(axis=1), 1.0, atol=1e-5)
        cov = samples[:, env.sample_layout["coverage"]]
        assert ((cov >= 0) & (cov <= 1)).all()
        assert o[lay["mean_coverage"]][0] == pytest.approx(cov.mean(), abs=1e-6)
    # fresh arrays every call: mutating one observation changes nothing the env holds
    obs["robot_0"][:] = 0
    assert np.any(env.state()[:env.obs_layout["samples"].stop] != 0)


@pytest.mark.parametrize("tier", ["fast", "paper"])
def test_two_stages_only_labeled_samples_train_the_model(tier):
    env = small_env(labeler="submodular", **{"perception.tier": tier})
    trace = play(env, "submodular-independent", seed=1)
    cloud = env.cloud()
    assert len(env.history) == SMALL["rounds"] + 1
    n_robots, n_cache, budget = SMALL["n_robots"], SMALL["n_cache"], SMALL["label_budget"]
    for r, record in enumerate(env.history[1:]):
        assert record["uploaded"] == n_robots * n_cache  # no privacy filter active: every pick leaves
        assert record["labeled"] == budget
        assert ((cloud["round"] == r) & (cloud["robot"] >= 0)).sum() == n_robots * n_cache
    assert env.labels_used == budget * SMALL["rounds"] == int((cloud["labeled_round"] >= 0).sum())
    assert (~cloud["labeled"]).sum() == SMALL["rounds"] * (n_robots * n_cache - budget)  # unlabeled rest is kept
    # the model after the last retrain was trained on exactly the labeled multiset (fast tier: the head's counts)
    labeled_rows = cloud["row"][cloud["labeled"]]
    if isinstance(env.scenario, BatchOfOne):
        counts = np.bincount(env.world.labels[labeled_rows], minlength=env.n_classes)
        assert np.array_equal(env.heads.counts[0, 0], counts)
    else:
        assert np.array_equal(np.sort(env._version_rows), np.sort(labeled_rows))
    last = trace[-1]
    assert all(last[2].values()) and env.agents == []
    info = last[3]["robot_0"]
    assert info["labels_used"] == env.labels_used and info["labeled"] == budget
    assert sum(last[3][a]["labeled_from_robot"] for a in last[3]) == budget


def test_label_pool_round_labels_only_this_rounds_uploads():
    env = small_env(label_pool="round", labeler="entropy")
    play(env, "random", seed=2)
    cloud = env.cloud()
    labeled_uploads = cloud["labeled"] & (cloud["robot"] >= 0)
    assert np.array_equal(cloud["labeled_round"][labeled_uploads], cloud["round"][labeled_uploads])


def test_whole_episode_is_deterministic_for_a_seed():
    runs = [play(small_env(**{"privacy.private_fraction": 0.2}), "submodular-interactive", seed=5) for _ in range(2)]
    for step_a, step_b in zip(*runs):
        for part_a, part_b in zip(step_a, step_b):
            assert json.dumps(part_a, default=_plain, sort_keys=True) == json.dumps(part_b, default=_plain,
                                                                                     sort_keys=True)
    other = play(small_env(**{"privacy.private_fraction": 0.2}), "submodular-interactive", seed=6)
    assert not np.array_equal(runs[0][0][0]["robot_0"], other[0][0]["robot_0"])


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(["blur", "drop", "pass"]), prefer_private=st.booleans())
def test_no_private_sample_reaches_the_cloud_unfiltered(seed, mode, prefer_private):
    """Dual half of the shared privacy property: any seed, any scores. blur: every private upload is stored as
    the blurred copy (differs from what the robot saw inside the patch, equal outside); drop: none reaches the
    cloud; pass: they arrive unchanged and are counted as passed. Filtered counts add up with the ledger."""
    env = parallel_env(None, **{**SMALL, "rounds": 2, "privacy.mode": mode, "privacy.private_fraction": 0.3})
    world = env.world
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    totals = {"private": 0, "dropped": 0, "blurred": 0, "passed_private": 0}
    while env.agents:
        actions = {}
        for agent in env.agents:
            scores = rng.random(env.n_samples)
            if prefer_private:  # the adversarial policy: try to upload private samples first
                i = env.possible_agents.index(agent)
                scores += world.private[world.pool[env0(env, "stream_positions")[i]]]
            actions[agent] = scores
        _obs, _, _, _, infos = env.step(actions)
        for k in totals:
            totals[k] += infos["robot_0"][f"privacy_total_{k}"]
            assert infos["robot_0"][f"privacy_total_{k}"] == sum(infos[a][f"privacy_{k}"] for a in infos)
    cloud = env.cloud()
    uploads = cloud["robot"] >= 0
    private_uploads = uploads & world.private[cloud["sample_id"]]
    assert not world.private[cloud["sample_id"][~uploads]].any()  # the initial cloud is public
    raw = world.robot_features[cloud["sample_id"]]
    if mode == "drop":
        assert not private_uploads.any()
        assert totals["dropped"] == totals["private"] and totals["blurred"] == totals["passed_private"] == 0
    elif mode == "blur":
        assert (cloud["blurred"] == private_uploads).all()
        assert totals["blurred"] == totals["private"] == int(private_uploads.sum())
        for k in np.flatnonzero(private_uploads):
            stored = world.as_images(cloud["features"][k:k + 1])[0]
            seen = world.as_images(raw[k:k + 1])[0]
            top, left, bottom, right = world.regions[cloud["sample_id"][k]]
            assert not np.array_equal(stored[..., top:bottom, left:right], seen[..., top:bottom, left:right])
            outside = np.ones(stored.shape, bool)
            outside[..., top:bottom, left:right] = False
            assert np.array_equal(stored[outside], seen[outside])
    else:
        assert totals["passed_private"] == totals["private"] == int(private_uploads.sum())
        assert np.array_equal(cloud["features"][private_uploads], raw[private_uploads])
    assert not cloud["blurred"][~private_uploads].any()
    if mode != "pass":  # nothing in the cloud equals a private sample as the robot saw it
        assert all(not np.array_equal(cloud["features"][k], raw[k]) for k in np.flatnonzero(private_uploads))
    assert uploads.sum() == env.config.rounds * env.config.n_robots * env.config.n_cache - totals["dropped"]


def test_invalid_actions_name_the_robot_and_change_nothing():
    env = small_env()
    _obs, _ = env.reset(seed=0)
    good = {a: np.zeros(env.n_samples) for a in env.agents}
    before = (len(env.history), env.cloud()["row"].copy())
    with pytest.raises(ValueError, match="robot_1: action contains NaN"):
        env.step({**good, "robot_1": np.full(env.n_samples, np.nan)})
    with pytest.raises(ValueError, match=r"robot_2: action must have shape \(30,\)"):
        env.step({**good, "robot_2": np.zeros(5)})
    with pytest.raises(ValueError, match="missing actions"):
        env.step({"robot_0": good["robot_0"]})
    assert len(env.history) == before[0] and np.array_equal(env.cloud()["row"], before[1])
    first_positions = env0(env, "stream_positions")[0, :SMALL["n_cache"]].copy()
    env.step(good)  # still steps normally
    # ties go to the lower index: all-zero scores upload the first n_cache samples
    cloud = env.cloud()
    uploaded = cloud["sample_id"][(cloud["robot"] == 0) & (cloud["round"] == 0)]
    assert np.array_equal(uploaded, env.world.pool[first_positions])


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="unknown config key 'label_budgt' \\(did you mean 'label_budget'"):
        load_dual_config(None, label_budgt=3)
    with pytest.raises(ConfigError, match="n_cache .* cannot exceed obs_per_round"):
        load_dual_config(None, n_cache=100, obs_per_round=10)
    with pytest.raises(ConfigError, match="privacy.mode"):
        load_dual_config(None, **{"privacy.mode": "smudge"})
    with pytest.raises(ConfigError, match="scenario"):
        load_dual_config({"scenario": "p2p"})
    with pytest.raises(ConfigError, match="'labeler'"):
        load_dual_config(None, labeler="oracle")
    assert load_dual_config("dual_default") == DualConfig() == load_dual_config(None)  # the YAML lists the defaults


def test_scenario_factory_builds_dual():
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

    env = make_parallel_env("dual_default", **{k: v for k, v in SMALL.items()})
    assert isinstance(env, DualParallelEnv)


@pytest.mark.parametrize("tier", ["fast", "paper"])
@pytest.mark.parametrize("name", sorted(DUAL_POLICIES))
def test_every_policy_acts_validly(name, tier):
    env = small_env(**{"perception.tier": tier})
    policy = make_dual_policy(name, env)
    policy.reset(0)
    obs, infos = env.reset(seed=4)
    actions = policy.act(obs, infos)
    for agent in env.agents:
        assert env.action_space(agent).contains(np.asarray(actions[agent], dtype=np.float32)), name
    assert policy.privileged == (name in ("submodular-centralized", "oracle"))
    env.step(actions)


def test_submodular_upload_covers_more_than_random_and_uncertainty():
    env = small_env(n_robots=4, obs_per_round=60, n_cache=5)
    obs, infos = env.reset(seed=7)
    lay = env.sample_layout
    samples = [obs[a][env.obs_layout["samples"]].reshape(env.n_samples, -1) for a in env.agents]
    embeddings = [s[:, lay["embedding"]] for s in samples]
    coverages = [s[:, lay["coverage"]].ravel().astype(np.float64) for s in samples]
    values = {}
    for name in ("random", "entropy", "submodular-independent", "submodular-interactive", "submodular-centralized"):
        policy = make_dual_policy(name, env)
        policy.reset(0)
        actions = policy.act(obs, infos)
        picks = [np.argsort(-actions[a], kind="stable")[:5] for a in env.agents]
        values[name] = fleet_objective(embeddings, picks, coverages, kernel="inverse_distance")["gain"]
    assert values["submodular-independent"] > values["random"]
    assert values["submodular-independent"] > values["entropy"]
    assert values["submodular-interactive"] >= 0.99 * values["submodular-independent"]
    assert values["submodular-centralized"] >= values["submodular-independent"] * 0.99
    assert lay["coverage"].stop == env.sample_feature_dim


def test_cosine_kernel_and_coverage_reward():
    env = small_env(kernel="cosine", reward="coverage", labeler="margin")
    trace = play(env, "submodular-independent", seed=0)
    for obs, rewards, _, infos in trace[1:]:
        assert rewards["robot_0"] == pytest.approx(infos["robot_0"]["coverage_gain"])
        assert rewards["robot_0"] >= 0  # labeling only adds coverage
        assert len(set(rewards.values())) == 1


def test_uncertainty_scores():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    assert np.argsort(uncertainty(probs, "entropy")).tolist() == [0, 1, 2]
    assert uncertainty(probs, "margin")[1] == pytest.approx(1.0) and uncertainty(probs, "margin")[0] == 0.0


def test_cli_eval_writes_results(tmp_path):
    out = tmp_path / "dual"
    argv = ["eval", "--config", "dual_default", "--policies", "random/random,submodular-independent", "--seeds", "1",
            "--out", str(out)] + [f"--set={k}={v}" for k, v in {**SMALL, "rounds": 2}.items()]
    assert dual_main(argv) == 0
    payload = json.loads((out / "results.json").read_text())
    assert payload["policies"] == ["random/random", "submodular-independent"]
    assert len(payload["summary"]["random/random"]["test_accuracy_mean"]) == 3
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "rounds.csv").read_text().count("\n") == 1 + 2 * 3
    assert "relative to `random/random`" in (out / "summary.md").read_text()
    assert dual_main(["eval", "--policies", "nonsense", "--seeds", "1", "--out", str(out)]) == 2
