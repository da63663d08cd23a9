"""The peer-to-peer GU sharing scenario: config, PettingZoo contract, feedback semantics, OoD detectors, domains,
policies and the eval harness. Everything runs on the embedded digits (no files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from baselines.p2p_policies import GUPolicy, OraclePolicy, RandomSharePolicy, make_p2p_policy
from datagames_env.config import ConfigError, PerceptionConfig
from datagames_env.data.domains import corrupt
from datagames_env.perception.ood import NoveltyDetector, novelty, train_dropout_classifier
from datagames_env.scenarios.p2p import load_p2p_config
from datagames_env.faces.pettingzoo import P2PParallelEnv
from datagames_env.perception import train_classifier
from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

# A small, fast variant of p2p_default: 3 robots, 3 rounds, 30 observations, 3 shared per round.
SMALL = {"rounds": 3, "obs_per_round": 30, "perception.train_steps": 60}
# Tests of the paper tier's per-robot networks (p2p_default runs the fast tier: tests/test_p2p_fast.py)
PAPER = {"perception.tier": "paper"}


@pytest.fixture(scope="module")
def env() -> P2PParallelEnv:
    torch.set_num_threads(1)
    return P2PParallelEnv("p2p_default", **SMALL)


@pytest.fixture(scope="module")
def paper_env() -> P2PParallelEnv:
    torch.set_num_threads(1)
    return P2PParallelEnv("p2p_default", **SMALL, **PAPER)


@pytest.fixture(scope="module")
def frozen_env() -> P2PParallelEnv:
    """Models never retrain: received samples can be re-scored against the same receiver models after a step."""
    return P2PParallelEnv("p2p_default", **SMALL, **PAPER, **{"perception.retrain_every": 0})


def _random_actions(env, rng):
    return {a: rng.random(env.n_samples).astype(np.float32) for a in env.agents}


# ------------------------------------------------------------------------------------------------------- config


def test_config_loads_and_unknown_keys_are_named():
    cfg = load_p2p_config("p2p_default")
    assert cfg.scenario == "p2p" and cfg.n_robots == 3 and cfg.n_share == 10
    assert cfg.perception.retrain_every == 1
    with pytest.raises(ConfigError, match="ood.detectr"):
        load_p2p_config("p2p_default", **{"ood.detectr": "ensemble"})
    with pytest.raises(ConfigError, match="ood.detector"):
        load_p2p_config("p2p_default", **{"ood.detector": "bogus"})
    with pytest.raises(ConfigError, match=r"robot_1.*unknown domains \['rain'\]"):
        load_p2p_config("p2p_default", robots=[{"stream": {"digits": 1}, "initial_labeled": {"digits": 5}},
                                               {"stream": {"rain": 1}, "initial_labeled": {"digits": 5}}])
    with pytest.raises(ConfigError, match="rare_domains"):
        load_p2p_config("p2p_default", rare_domains=["rain"])
    # perception blocks without retrain_every retrain every round in this scenario
    assert load_p2p_config("p2p_default", perception={"model": "mlp"}).perception.retrain_every == 1


def test_scenario_factory_and_toy_config_resolve():
    assert isinstance(make_parallel_env("p2p_default", **SMALL), P2PParallelEnv)
    toy = load_p2p_config("p2p_toy")
    assert [d.name for d in toy.domains] == ["mnist", "kmnist", "third"] and toy.n_share == 20
    assert toy.domains[2].fallback is not None and toy.domains[2].fallback.corruption == "fog"


# ---------------------------------------------------------------------------------------- PettingZoo contract


def test_parallel_api_test(env):
    from pettingzoo.test import parallel_api_test

    parallel_api_test(env, num_cycles=5)


def test_observation_layout_contract(env):
    obs, _infos = env.reset(seed=3)
    lay = env.obs_layout
    assert lay["context"] == slice(0, env.context_dim) and lay["samples"].start == env.context_dim
    assert env.context_dim + env.n_samples * env.sample_feature_dim == env.observation_space("robot_0").shape[0]
    assert env.observation_space("robot_0") is env.observation_space("robot_0")
    assert env.action_space("robot_1").shape == (env.config.obs_per_round,)
    e = env.embedding_dim
    for agent, o in obs.items():
        assert o.dtype == np.float32 and np.isfinite(o).all() and env.observation_space(agent).contains(o)
        samples = o[lay["samples"]].reshape(env.n_samples, env.sample_feature_dim)
        np.testing.assert_allclose(np.linalg.norm(samples[:, :e], axis=1), 1.0, atol=1e-4)
        np.testing.assert_allclose(samples[:, e:].sum(axis=1), 1.0, atol=1e-4)
        np.testing.assert_allclose(o[lay["domain_hist"]].sum(), 1.0, atol=1e-5)
    # fresh dicts every call; agents empty at the end
    obs2, _ = env.reset(seed=3)
    assert obs2 is not obs and all(np.array_equal(obs[a], obs2[a]) for a in obs)
    rng = np.random.default_rng(0)
    while env.agents:
        _, _, terms, truncs, _ = env.step(_random_actions(env, rng))
    assert env.agents == [] and all(terms.values()) and not any(truncs.values())
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


def test_invalid_actions_name_the_robot(env):
    env.reset(seed=0)
    good = _random_actions(env, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"robot_1: action must have shape \(30,\)"):
        env.step({**good, "robot_1": np.zeros(7)})
    with pytest.raises(ValueError, match="robot_2: action contains NaN"):
        env.step({**good, "robot_2": np.full(env.n_samples, np.nan)})
    with pytest.raises(ValueError, match=r"missing actions for \['robot_0'\]"):
        env.step({a: v for a, v in good.items() if a != "robot_0"})


def _episode_trace(env, seed):
    obs, infos = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    trace = [np.concatenate([obs[a] for a in env.possible_agents])]
    while env.agents:
        obs, rewards, _, _, infos = env.step(_random_actions(env, rng))
        trace.append(np.concatenate([obs[a] for a in obs] + [np.array(list(rewards.values()))]
                                    + [infos[a]["feedback_utilities"] for a in infos]
                                    + [infos[a]["domain_accuracy"] for a in infos]))
    return trace


def test_whole_episode_determinism(env):
    # a second env: nothing may leak between instances or depend on call history
    other = P2PParallelEnv("p2p_default", **SMALL)
    first = _episode_trace(env, 11)
    _episode_trace(env, 5)  # a different episode in between
    again = _episode_trace(env, 11)
    fresh = _episode_trace(other, 11)
    assert len(first) == SMALL["rounds"] + 1
    for a, b, c in zip(first, again, fresh):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(first[1], _episode_trace(env, 12)[1])


# ------------------------------------------------------------------------------------------ feedback semantics


def test_utility_is_the_fraction_of_peers_that_found_a_sample_novel(frozen_env):
    env = frozen_env
    _, infos = env.reset(seed=1)
    models = [(r.model.classifiers, r.model.threshold) for r in env._robots]
    sizes = [infos[a]["labeled_size"] for a in env.possible_agents]
    _obs, rewards, _, _, infos = env.step(_random_actions(env, np.random.default_rng(1)))
    for tx in env.last_transmissions:
        i, receivers = tx["sender"], tx["receivers"]
        assert receivers == [j for j in range(3) if j != i]  # topology all
        votes = np.zeros(len(tx["sent_ids"]))
        for j in receivers:  # max_softmax is deterministic: recompute every receiver's vote independently
            votes += env.detector.novel(models[j][0], tx["sent_features"], models[j][1])
        info = infos[f"robot_{i}"]
        np.testing.assert_allclose(info["feedback_utilities"][info["sent_mask"]], votes / len(receivers), atol=1e-6)
        assert set(np.unique(info["feedback_utilities"])) <= {0.0, 0.5, 1.0}
        assert rewards[f"robot_{i}"] == pytest.approx(float(np.mean(info["feedback_utilities"])))
        # the cached slots are the top n_share scores of the action
        assert len(info["cached_slots"]) == env.n_share
    for k, a in enumerate(env.possible_agents):
        assert infos[a]["labeled_size"] - sizes[k] == infos[a]["n_kept"] <= infos[a]["n_received"]
        assert infos[a]["n_received"] == sum(infos[b]["n_sent"] for b in env.possible_agents if b != a)


def test_top_scores_are_cached(frozen_env):
    env = frozen_env
    env.reset(seed=2)
    scores = {a: np.linspace(0, 1, env.n_samples, dtype=np.float32)[::-1].copy() for a in env.agents}
    _, _, _, _, infos = env.step(scores)
    for a in infos:
        assert sorted(infos[a]["cached_slots"].tolist()) == list(range(env.n_share))


def test_receivers_keep_all_when_configured():
    env = P2PParallelEnv("p2p_default", **SMALL, receiver_keeps="all", **{"perception.retrain_every": 0})
    _, infos0 = env.reset(seed=0)
    _, _, _, _, infos = env.step(_random_actions(env, np.random.default_rng(0)))
    for a in env.possible_agents:
        # everything received is new (disjoint draws) unless another peer sent the same image this round
        assert 0 < infos[a]["n_kept"] <= infos[a]["n_received"] == 2 * env.n_share
        assert infos[a]["labeled_size"] == infos0[a]["labeled_size"] + infos[a]["n_kept"]


def test_topologies():
    ring = P2PParallelEnv("p2p_default", **SMALL, topology="ring",
                          robots=[{"stream": {"digits": 1.0}, "initial_labeled": {"digits": 40}}] * 5,
                          **{"ood.calibration_size": 10})
    _, infos = ring.reset(seed=0)
    assert np.flatnonzero(infos["robot_0"]["neighbor_mask"]).tolist() == [1, 4]
    assert np.flatnonzero(infos["robot_2"]["neighbor_mask"]).tolist() == [1, 3]
    isolated = P2PParallelEnv("p2p_default", **SMALL, topology={"kind": "random", "p": 0.0})
    isolated.reset(seed=0)
    _, rewards, _, _, infos = isolated.step(_random_actions(isolated, np.random.default_rng(0)))
    assert all(r == 0.0 for r in rewards.values()) and all(i["n_received"] == 0 and i["n_sent"] == 0 for i in infos.values())
    full = P2PParallelEnv("p2p_default", **SMALL, topology={"kind": "random", "p": 1.0})
    _, infos = full.reset(seed=0)
    assert infos["robot_0"]["neighbor_mask"].sum() == 2


def test_potential_reward_is_shared_and_matches_the_labeled_cell_deficit():
    env = P2PParallelEnv("p2p_default", **SMALL, reward="potential", **{"perception.retrain_every": 0})
    env.reset(seed=4)
    target = env.config.potential_cell_target

    def distance():
        counts = env.privileged_view()["labeled_cell_counts"]
        return np.sqrt((np.clip(target - counts, 0, None) ** 2).sum(axis=(1, 2))).sum()

    before = distance()
    _, rewards, _, _, infos = env.step(_random_actions(env, np.random.default_rng(4)))
    expected = (before - distance()) / (env.config.n_robots * env.n_share)
    assert len(set(rewards.values())) == 1
    assert next(iter(rewards.values())) == pytest.approx(expected)
    assert expected > 0 or sum(i["n_kept"] for i in infos.values()) == 0


def test_initial_models_are_trained_once_per_world_seed(paper_env):
    env = paper_env
    env.reset(seed=0)
    trainings = env.n_trainings
    env.reset(seed=1)
    assert env.n_trainings == trainings  # world_seed fixed: cached first models, no training at reset


# ----------------------------------------------------------------------------------------------- OoD detectors


@pytest.fixture(scope="module")
def digits_models(paper_env):
    env = paper_env
    """A model of robot_0 (clean digits only) and the clean / fog test images."""
    world = env.world
    return env._initial_robots(0)[0][5], world.test_features[0], world.test_features[1]


def _auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    return float((outside[:, None] > inside[None, :]).mean() + 0.5 * (outside[:, None] == inside[None, :]).mean())


def test_detectors_score_a_rare_domain_as_more_novel(digits_models):
    model, clean, fog = digits_models
    classifier = model.classifiers[0]
    cfg = PerceptionConfig(model="mlp", train_steps=150, hidden=64, embedding_dim=16)
    with_dropout = train_dropout_classifier(clean[:0].reshape(0, *clean.shape[1:]), np.zeros(0, int), 10, cfg, 0, 0.25)
    assert not with_dropout.trained  # empty set -> untrained, like train_classifier
    for detector, models in (("max_softmax", classifier), ("mc_dropout", classifier),
                             ("ensemble", [classifier, classifier])):
        inside, outside = novelty(models, clean, detector), novelty(models, fog, detector)
        assert inside.min() >= 0 and outside.max() <= 1
        if detector != "ensemble":  # two identical members carry no disagreement
            assert _auroc(inside, outside) > 0.7, detector
    # identical ensemble members: zero epistemic uncertainty
    np.testing.assert_allclose(novelty([classifier, classifier], fog, "ensemble", uncertainty="epistemic"), 0,
                               atol=1e-6)


def test_mc_dropout_and_ensemble_on_trained_members(digits_models):
    _, clean, fog = digits_models
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, len(clean))  # any labels: we test the detector mechanics, not accuracy
    cfg = PerceptionConfig(model="mlp", train_steps=40, hidden=32, embedding_dim=8)
    dropout_model = train_dropout_classifier(clean, labels, 10, cfg, seed=0, dropout=0.3)
    a = novelty(dropout_model, fog, "mc_dropout", dropout=0.3, seed=5)
    np.testing.assert_array_equal(a, novelty(dropout_model, fog, "mc_dropout", dropout=0.3, seed=5))
    assert not np.array_equal(a, novelty(dropout_model, fog, "mc_dropout", dropout=0.3, seed=6))
    members = [train_classifier(clean, labels, 10, cfg, seed=s) for s in range(2)]
    epistemic = novelty(members, fog, "ensemble", uncertainty="epistemic")
    assert epistemic.max() > 0 and (epistemic <= novelty(members, fog, "ensemble") + 1e-9).all()


def test_calibrated_threshold_and_errors(digits_models):
    model, clean, _ = digits_models
    detector = NoveltyDetector("max_softmax", calibration_quantile=0.8)
    threshold = detector.calibrate(model.classifiers, clean)
    assert np.mean(detector.novel(model.classifiers, clean, threshold)) <= 0.2 + 1e-9
    assert NoveltyDetector("max_softmax", threshold=0.3).calibrate(model.classifiers, clean) == 0.3
    with pytest.raises(ValueError, match="ood.detector"):
        NoveltyDetector("energy")
    with pytest.raises(ValueError, match="at least 2 models"):
        novelty(model.classifiers[0], clean, "ensemble")


@pytest.mark.parametrize("detector", ["mc_dropout", "ensemble"])
def test_env_runs_with_bayesian_detectors(detector):
    env = P2PParallelEnv("p2p_default", rounds=2, obs_per_round=20, **{"perception.train_steps": 30,
                                                                        "ood.detector": detector, **PAPER})
    env.reset(seed=0)
    assert len(env._robots[0].model.classifiers) == (3 if detector == "ensemble" else 1)
    _, rewards, _, _, _infos = env.step(_random_actions(env, np.random.default_rng(0)))
    assert all(0.0 <= r <= 1.0 for r in rewards.values())


# --------------------------------------------------------------------------------------------------- domains


def test_corruptions_are_deterministic_and_in_range():
    rng = np.random.default_rng(0)
    images = rng.random((16, 1, 8, 8)).astype(np.float32) * 0.5
    for kind in ("fog", "snow", "noise"):
        out = corrupt(images, kind, 0.8, seed=3)
        assert out.shape == images.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1 and not np.allclose(out, images)
        np.testing.assert_array_equal(out, corrupt(images, kind, 0.8, seed=3))
    assert corrupt(images, "fog", 0.8).mean() > images.mean() + 0.2  # haze brightens and flattens
    np.testing.assert_array_equal(corrupt(images, "none"), images)
    with pytest.raises(ValueError, match="rain"):
        corrupt(images, "rain")
    with pytest.raises(ValueError, match="shape"):
        corrupt(images[:, 0], "fog")


def test_domains_built_on_one_dataset_are_disjoint(paper_env):
    env = paper_env
    world = env.world
    assert env.world.domain_sources == ["digits", "digits+fog", "digits+snow"]
    sizes = [len(p) for p in world.pool_by_domain]
    assert sum(sizes) == len(world.features) and min(sizes) > 400
    # fog / snow never show a clean digit's exact pixels
    clean = {x.tobytes() for x in world.features[world.pool_by_domain[0]]}
    assert not any(x.tobytes() in clean for x in world.features[world.pool_by_domain[1]])


def test_fallback_domain_when_files_are_missing(tmp_path):
    with pytest.warns(UserWarning, match="fallback"):
        env = P2PParallelEnv("p2p_default", **SMALL, data_dir=str(tmp_path),
                             domains=[{"name": "digits", "dataset": "digits"},
                                      {"name": "fog", "dataset": "fashion_mnist",
                                       "fallback": {"name": "fog", "dataset": "digits", "corruption": "fog"}},
                                      {"name": "snow", "dataset": "digits", "corruption": "snow"}])
    assert env.world.domain_sources[1].startswith("digits+fog (fallback")
    with pytest.raises(Exception, match=r"domains.1 \(fog\)"):
        P2PParallelEnv("p2p_default", **SMALL, data_dir=str(tmp_path),
                       domains=[{"name": "digits"}, {"name": "fog", "dataset": "kmnist"}, {"name": "snow"}])


# -------------------------------------------------------------------------------------------------- policies


def test_oracle_shares_rare_data_and_random_does_not(frozen_env):
    env = frozen_env
    shares = {}
    for policy in (OraclePolicy(env), RandomSharePolicy(env)):
        obs, infos = env.reset(seed=0)
        policy.reset(0)
        while env.agents:
            obs, _, _, _, infos = env.step(policy.act(obs, infos))
        shares[policy.name] = [infos[a]["rare_share_cached"] for a in ("robot_1", "robot_2")]
    assert OraclePolicy.privileged and not RandomSharePolicy.privileged
    assert min(shares["oracle"]) == 1.0  # 6 rare per round, 3 slots: all rare
    assert max(shares["random"]) < 0.6


class _StubEnv:
    """The attributes GUPolicy reads, for a synthetic learning test."""

    def __init__(self) -> None:
        self.possible_agents = ["robot_0"]
        self.n_samples, self.n_share, self.sample_feature_dim = 40, 8, 6
        self.obs_layout = {"context": slice(0, 2), "samples": slice(2, 2 + 40 * 6)}


def test_gu_policy_learns_the_feedback():
    # Utility 1 for samples whose first feature is positive: after a few rounds of feedback GU must rank them first.
    env, rng = _StubEnv(), np.random.default_rng(0)
    gu = GUPolicy(env, explore=0.0)
    gu.reset(0)
    infos = {"robot_0": {}}
    for _ in range(6):
        obs = rng.normal(size=2 + 40 * 6).astype(np.float32)
        scores = gu.act({"robot_0": obs}, infos)["robot_0"]
        features = obs[2:].reshape(40, 6)
        slots = np.argsort(-scores, kind="stable")[:8]
        infos = {"robot_0": {"cached_slots": slots, "sent_mask": np.ones(8, bool),
                             "feedback_utilities": (features[slots, 0] > 0).astype(np.float32)}}
    obs = rng.normal(size=2 + 40 * 6).astype(np.float32)
    scores = gu.act({"robot_0": obs}, infos)["robot_0"]
    top = np.argsort(-scores)[:8]
    assert (obs[2:].reshape(40, 6)[top, 0] > 0).mean() >= 0.85
    assert gu.n_updates >= 5


def test_make_p2p_policy_specs(env):
    assert make_p2p_policy("gu", env).name == "gu"
    obj = RandomSharePolicy(env)
    assert make_p2p_policy(obj, env) is obj
    assert make_p2p_policy("baselines.p2p_policies:OraclePolicy", env).name == "oracle"
    with pytest.raises(ValueError, match="unknown policy 'greedy' for scenario 'p2p'.*gu"):
        make_p2p_policy("greedy", env)


# ---------------------------------------------------------------------------------------------------- harness


def test_eval_cli_writes_results(tmp_path):
    from datagames_env.harness.cli import main

    out = tmp_path / "res"
    rc = main(["p2p", "eval", "--config", "p2p_default", "--policies", "random,oracle,gu", "--seeds", "2",
               "--set", "rounds=2", "--set", "obs_per_round=20", "--set", "perception.train_steps=30",
               "--set", "privacy.private_fraction=0.3", "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("results.json", "rounds.csv", "accuracy.png", "rare_share.png", "summary.md"):
        assert (out / name).is_file(), name
    payload = json.loads((out / "results.json").read_text())
    assert payload["policies"] == ["random", "oracle", "gu"] and len(payload["episodes"]) == 6
    assert payload["summary"]["oracle"]["robots"]["robot_1"]["rare_share_cached"][0] == 1.0
    assert payload["summary"]["random"]["privacy_per_episode"]["n_blurred"] > 0
    assert "Rare-domain share" in (out / "summary.md").read_text()
    rows = (out / "rounds.csv").read_text().splitlines()
    assert len(rows) == 1 + 6 * 3 * 3  # header + episodes x (round 0 + 2 rounds) x robots
    assert main(["p2p", "eval", "--policies", "nope", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    (out / "summary.md").unlink()
    assert main(["p2p", "report", str(out)]) == 0 and (out / "summary.md").is_file()  # rebuilt from results.json


def test_warm_started_retraining_fine_tunes_the_current_model():
    warm = P2PParallelEnv("p2p_default", **{**SMALL, **PAPER, "perception.warm_start": True, "perception.retrain_steps": 5})
    warm.reset(seed=0)
    before = [r.model.classifiers[0] for r in warm._robots]
    warm.step(_random_actions(warm, np.random.default_rng(0)))
    retrained = [i for i, r in enumerate(warm._robots) if r.n_trainings]
    assert retrained  # receivers kept something and retrained
    for i in retrained:
        after = warm._robots[i].model.classifiers[0]
        assert after is not before[i] and torch.equal(after.input_mean, before[i].input_mean)  # continued from it
