"""BADGE gradient embeddings for DUAL's facility location (issue 19, Fleet-AL's ``unc_type: badge``): the
embedding itself, the upload policies' ``embedding`` option and the stage-2 labeler of ``baselines.dual_badge``.
Small digits instances of dual_default (its cached fast-tier extractor)."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.dual_badge import BadgeLabelDualScenario, BadgeLabelFastDual, badge_scenario
from baselines.dual_policies import (SubmodularIndependentBadgePolicy, SubmodularIndependentPolicy,
                                     badge_embeddings, badge_origin_coverage)
from datagames_env.config import ConfigError
from datagames_env.faces.pettingzoo import DualParallelEnv

SMALL = {"n_robots": 3, "rounds": 2, "obs_per_round": 30, "n_cache": 4, "label_budget": 3, "initial_cloud_size": 10}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def test_badge_embedding_is_the_last_layer_gradient():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 4)).astype(np.float32)
    p = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
    p[0] = [0.0, 1.0, 0.0]  # a confident sample: zero gradient
    g = badge_embeddings(e, p)
    assert g.shape == (5, 12) and g.dtype == np.float32
    assert np.abs(g[0]).max() < 1e-7
    onehot = np.eye(3, dtype=np.float32)[p.argmax(axis=1)]
    np.testing.assert_allclose(g.reshape(5, 3, 4), (onehot - p)[:, :, None] * e[:, None, :], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(g, axis=1),
                               np.linalg.norm(onehot - p, axis=1) * np.linalg.norm(e, axis=1), rtol=1e-5)
    cov = badge_origin_coverage(g, "inverse_distance", 0.01)
    assert cov[0] == 1.0 and (cov[1:] < 1.0).all()


def test_badge_bad_input_is_named():
    with pytest.raises(ValueError, match="same n"):
        badge_embeddings(np.zeros((3, 4)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        badge_embeddings(np.full((1, 2), np.nan), np.full((1, 2), 0.5))
    with pytest.raises(ValueError, match="config key 'kernel'"):
        badge_origin_coverage(np.zeros((1, 2)), "cosine", 0.01)
    env = DualParallelEnv("dual_default", **SMALL)
    with pytest.raises(ValueError, match="embedding must be one of"):
        SubmodularIndependentPolicy(env, embedding="gradients")
    with pytest.raises(ValueError, match="config key 'kernel'"):
        SubmodularIndependentBadgePolicy(DualParallelEnv("dual_default", kernel="cosine", **SMALL))
    with pytest.raises(ConfigError, match="config key 'kernel'"):
        BadgeLabelFastDual("dual_default", 1, kernel="cosine", **SMALL)


def test_badge_upload_skips_confident_samples_and_changes_picks():
    env = DualParallelEnv("dual_default", **SMALL)
    obs, infos = env.reset(seed=3)
    features, badge = SubmodularIndependentPolicy(env), SubmodularIndependentBadgePolicy(env)
    a, b = features.act(obs, infos), badge.act(obs, infos)
    assert all(np.array_equal(b[r], v) for r, v in badge.act(obs, infos).items())  # the same call twice
    assert any(not np.array_equal(a[r], b[r]) for r in obs), "BADGE picked what the feature embedding picked"
    # make 6 samples of every robot unsure and the rest certain: BADGE must upload only the unsure ones (a certain sample has
    # zero gradient, covered by the cloud at the origin), the feature embedding does not look at probabilities
    lay, width, n = env.scenario.sample_layout, env.scenario.sample_feature_dim, env.scenario.config.obs_per_round
    unsure = np.arange(6) * 5
    edited = {}
    for robot, o in obs.items():
        o = o.copy()
        block = o[env.obs_layout["samples"]].reshape(n, width)
        probs = block[:, lay["probs"]]
        sure = np.setdiff1d(np.arange(n), unsure)
        probs[sure] = np.eye(probs.shape[1], dtype=np.float32)[probs[sure].argmax(axis=1)]
        probs[unsure] = 0.5 * probs[unsure] + 0.5 / probs.shape[1]  # the head may be sure of these too
        block[:, lay["probs"]] = probs
        o[env.obs_layout["samples"]] = block.ravel()
        edited[robot] = o
    scores = badge.act(edited, infos)
    for robot, s in scores.items():
        top = np.argsort(-s, kind="stable")[:env.scenario.config.n_cache]
        assert set(top) <= set(unsure), robot


def _episode(env, policy, seed):
    obs, infos = env.reset(seed=seed)
    policy.reset(seed)
    accs, labeled = [], []
    while env.agents:
        obs, _, _, _, infos = env.step(policy.act(obs, infos))
        fast = env.scenario.batched
        used = fast._used()
        labeled.append(np.sort(fast.ledger["row"][0, :used][fast.ledger["labeled"][0, :used]]))
        accs.append(infos[env.possible_agents[0]]["test_accuracy"])
    return accs, labeled


def test_badge_labeler_is_deterministic_and_changes_labels():
    env = DualParallelEnv(scenario=badge_scenario("dual_default", **SMALL))
    plain = DualParallelEnv("dual_default", **SMALL)
    assert isinstance(env.scenario.batched, BadgeLabelFastDual)
    first = _episode(env, SubmodularIndependentPolicy(env), 5)
    again = _episode(env, SubmodularIndependentPolicy(env), 5)
    assert first[0] == again[0] and all(np.array_equal(x, y) for x, y in zip(first[1], again[1]))
    other = _episode(plain, SubmodularIndependentPolicy(plain), 5)
    # same uploads in round 1 (the same policy on the same observation), different labels from the labeler
    assert not np.array_equal(first[1][0], other[1][0])
    assert all(len(x) == len(y) for x, y in zip(first[1], other[1]))  # the same label budget is spent


def test_badge_scenario_leaves_other_labelers_alone():
    cfg = {**SMALL, "labeler": "entropy"}
    badge_env = DualParallelEnv(scenario=badge_scenario("dual_default", **cfg))
    plain = DualParallelEnv("dual_default", **cfg)
    a = _episode(badge_env, SubmodularIndependentPolicy(badge_env), 7)
    b = _episode(plain, SubmodularIndependentPolicy(plain), 7)
    assert a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


def test_badge_labeler_on_the_paper_tier():
    cfg = {**SMALL, "perception.tier": "paper", "perception.train_steps": 30}
    env, plain = DualParallelEnv(scenario=badge_scenario("dual_default", **cfg)), DualParallelEnv("dual_default", **cfg)
    assert isinstance(env.scenario, BadgeLabelDualScenario)

    def labeled_after_one_round(e):
        obs, infos = e.reset(seed=2)
        e.step(SubmodularIndependentPolicy(e).act(obs, infos))
        cloud = e.scenario._cloud
        return np.sort(cloud["row"][cloud["labeled"]])

    first, again, other = labeled_after_one_round(env), labeled_after_one_round(env), labeled_after_one_round(plain)
    assert np.array_equal(first, again)
    assert len(first) == len(other) and not np.array_equal(first, other)
