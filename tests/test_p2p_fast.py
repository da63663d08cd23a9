"""p2p on the fast perception tier (issue 17): the native batched scenario, its B = 1 parallel face, its world,
and the paper tier's batch. Everything runs on the embedded digits (no files)."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from baselines.p2p_policies import make_p2p_policy
from datagames_env.scenarios import make_batched
from datagames_env.scenarios.batching import BatchOfOne, LoopedBatch
from datagames_env.scenarios.p2p import P2PScenario, load_p2p_config
from datagames_env.faces.pettingzoo import P2PParallelEnv
from datagames_env.scenarios.p2p_fast import P2PFastBatched, get_fast_world, warm_fast_perception

SMALL = {"rounds": 3, "obs_per_round": 30}
FLOAT_TOL = 1e-5  # B = 1 and B > 1 run the same arithmetic on differently shaped batches


def _cfg(**overrides):
    return load_p2p_config("p2p_default", **{**SMALL, **overrides})


def _episode(scenario, seeds, action_seed=0):
    """Observations, rewards and infos of a whole episode with seeded random actions (B, N, A)."""
    obs, infos = scenario.reset(np.asarray(seeds))
    out = [(obs, None, infos)]
    for r in range(scenario.config.rounds):
        t = scenario.step(np.stack([_actions(scenario, seed, r, action_seed) for seed in seeds]))
        out.append((t.observations, t.rewards, t.infos))
    return out


def _actions(scenario, seed, round_index, action_seed=0):
    """Env ``seed``'s (N, A) actions of a round: the same whatever the batch around it."""
    shape = (scenario.n_robots, scenario.action_width)
    return np.random.default_rng([action_seed, seed, round_index]).random(shape)


def _close(a, b, where):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, where
    if a.dtype.kind == "f":
        np.testing.assert_allclose(a, b, rtol=FLOAT_TOL, atol=FLOAT_TOL, err_msg=where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where)


def test_default_configs_are_fast_and_the_table_names_the_batched_scenario():
    assert load_p2p_config("p2p_default").perception.tier == "fast"
    assert load_p2p_config("p2p_toy").perception.tier == "fast"
    assert isinstance(make_batched("p2p_default", 2, **SMALL), P2PFastBatched)
    paper = make_batched("p2p_default", 2, **SMALL, **{"perception.tier": "paper"})
    assert isinstance(paper, LoopedBatch)
    env = P2PParallelEnv("p2p_default", **SMALL)
    assert isinstance(env.scenario, BatchOfOne) and isinstance(env.scenario.batched, P2PFastBatched)
    assert isinstance(P2PParallelEnv("p2p_default", **SMALL, **{"perception.tier": "paper"}).scenario, P2PScenario)


def test_bad_public_domains_are_named():
    with pytest.raises(Exception, match="perception.public_domains"):
        _cfg(**{"perception.public_domains": ["nowhere"]})


def test_public_split_is_held_out_of_pools_and_tests():
    world = get_fast_world(_cfg())
    pools = np.concatenate(world.pool_by_domain)
    assert len(world.public_ids) > 0 and not np.isin(world.public_ids, pools).any()
    assert set(world.domains[world.public_ids].tolist()) == {0}  # the base domain only: rare domains stay novel
    assert not np.isin(world.test_rows, world.public_ids).any()
    assert world.unit.shape[1] == _cfg().perception.embedding_dim
    np.testing.assert_allclose(np.linalg.norm(world.unit, axis=1), 1.0, atol=1e-5)


def test_env_b_equals_the_b1_scenario_reset_with_seeds_b():
    cfg = _cfg()
    seeds = [5, 11, 3]
    batch = _episode(P2PFastBatched(cfg, 3), seeds)
    for b, seed in enumerate(seeds):
        one = _episode(P2PFastBatched(cfg, 1), [seed])
        for r, ((obs_b, rew_b, info_b), (obs_1, rew_1, info_1)) in enumerate(zip(batch, one)):
            _close(obs_b[b], obs_1[0], f"observations env {b} round {r}")
            if rew_b is not None:
                _close(rew_b[b], rew_1[0], f"rewards env {b} round {r}")
            assert set(info_b) == set(info_1)
            for key in info_b:
                _close(info_b[key][b], info_1[key][0], f"info {key} env {b} round {r}")


def test_same_seeds_give_the_same_episode_and_fixed_info_schema():
    cfg = _cfg(**{"faults.message_loss": 0.3, "faults.liars": 0.34, "faults.robust": "median"})
    first, second = _episode(P2PFastBatched(cfg, 2), [1, 2]), _episode(P2PFastBatched(cfg, 2), [1, 2])
    keys = set(first[0][2])
    for (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) in zip(first, second):
        assert set(info_a) == keys
        np.testing.assert_array_equal(obs_a, obs_b)
        if rew_a is not None:
            np.testing.assert_array_equal(rew_a, rew_b)
        for key in keys:
            np.testing.assert_array_equal(info_a[key], info_b[key])
            assert not (np.asarray(info_a[key]).dtype.kind == "f" and np.isnan(info_a[key]).any())
    lost = sum(int(info["n_sent"].sum() * 2 - info["n_received"].sum()) for _, _, info in first[1:])
    assert lost > 0  # message loss happened (every robot has 2 peers under topology all)


def test_utility_is_the_fraction_of_receivers_whose_head_found_the_sample_novel():
    scenario = P2PFastBatched(_cfg(**{"perception.retrain_every": 0}), 2)
    scenario.reset(np.array([0, 1]))
    thresholds = scenario._thresholds.copy()
    t = scenario.step(np.random.default_rng(3).random((2, 3, 30)))
    cached_ids, sent_rows, kept, *_ = scenario._last_sent
    for b in range(2):
        for i in range(3):
            for slot in range(scenario.n_share):
                if not kept[b, i, slot]:
                    assert t.infos["feedback_utilities"][b, i, slot] == 0
                    continue
                votes = []
                for j in np.flatnonzero(scenario._adjacency[b, i]):
                    ids = np.zeros((2, 3, 1), dtype=np.int64)
                    ids[b, j, 0] = sent_rows[b, i, slot]
                    score = scenario.heads.predict(ids).novelty(scenario.config.perception.novelty)[b, j, 0]
                    votes.append(score > thresholds[b, j])
                assert t.infos["feedback_utilities"][b, i, slot] == pytest.approx(np.mean(votes), abs=1e-6)
    assert (t.infos["trained"] == 0).all()


def test_receivers_label_what_they_keep_once_and_heads_refit():
    scenario = P2PFastBatched(_cfg(receiver_keeps="all"), 2)
    _, infos = scenario.reset(np.array([0, 1]))
    before = infos["labeled_size"].copy()
    t = scenario.step(np.random.default_rng(0).random((2, 3, 30)))
    assert (t.infos["labeled_size"] - before == t.infos["n_kept"]).all()
    assert (t.infos["n_kept"] <= t.infos["n_received"]).all() and t.infos["n_kept"].sum() > 0
    assert (t.infos["trained"] == (t.infos["n_kept"] > 0)).all()
    assert (scenario.heads.counts.sum(axis=2) == t.infos["labeled_size"]).all()


def test_invalid_actions_name_env_and_robot_and_change_nothing():
    scenario = P2PFastBatched(_cfg(), 2)
    scenario.reset(np.array([0, 1]))
    actions = np.random.default_rng(0).random((2, 3, 30))
    actions[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match="env 1: robot_2"):
        scenario.step(actions)
    with pytest.raises(ValueError, match="shape"):
        scenario.step(actions[:, :2])
    assert scenario.round_index == 0
    with pytest.raises(ValueError, match="seeds"):
        scenario.reset(np.array([0]))


def test_snapshot_restores_the_episode_exactly():
    scenario = P2PFastBatched(_cfg(**{"faults.message_loss": 0.2}), 2)
    scenario.reset(np.array([4, 5]))
    rng = np.random.default_rng(1)
    scenario.step(rng.random((2, 3, 30)))
    saved = scenario.snapshot_state()
    scenario.check_snapshot_state(saved)
    actions = rng.random((2, 3, 30))
    first = scenario.step(actions)
    scenario.restore_state(saved)
    again = scenario.step(actions)
    np.testing.assert_array_equal(first.observations, again.observations)
    np.testing.assert_array_equal(first.rewards, again.rewards)
    for key in first.infos:
        np.testing.assert_array_equal(first.infos[key], again.infos[key])


def test_parallel_face_on_the_fast_tier():
    env = P2PParallelEnv("p2p_default", **SMALL)
    parallel_api_test(env, num_cycles=4)
    obs, infos = env.reset(seed=2)
    assert env.obs_layout["samples"].stop == env.observation_space("robot_0").shape[0]
    assert set(infos["robot_0"]) >= {"domain_accuracy", "feedback_memory_features", "round", "n_share"}
    assert isinstance(infos["robot_0"]["round"], int) and infos["robot_0"]["domain_accuracy"].shape == (3,)
    assert "robot_0" in env.scenario.render("ansi")
    snapshot = env.snapshot()
    actions = {a: np.full(env.n_samples, 0.5, np.float32) for a in env.agents}
    step = env.step(actions)
    env.restore(snapshot)
    again = env.step(actions)
    for a in env.possible_agents:
        np.testing.assert_array_equal(step[0][a], again[0][a])


@pytest.mark.parametrize("policy", ["random", "oracle", "gu"])
def test_baselines_run_on_the_fast_tier(policy):
    env = P2PParallelEnv("p2p_default", **SMALL)
    chosen = make_p2p_policy(policy, env)
    chosen.reset(0)
    obs, infos = env.reset(seed=0)
    while env.agents:
        obs, rewards, _, _, infos = env.step(chosen.act(obs, infos))
    assert all(0.0 <= r <= 1.0 for r in rewards.values())


def test_paper_tier_batch_equals_its_parallel_env():
    overrides = {"rounds": 2, "obs_per_round": 20, "perception.train_steps": 30, "perception.tier": "paper"}
    batch = make_batched("p2p_default", 2, **overrides)
    steps = _episode(batch, [7, 8])
    for b, seed in enumerate([7, 8]):
        scenario = P2PScenario("p2p_default", **overrides)
        obs, infos = scenario.reset(seed)
        _close(steps[0][0][b], obs, f"reset env {b}")
        for r in range(2):
            t = scenario.step(_actions(scenario, seed, r))
            _close(steps[r + 1][0][b], t.observations, f"observations env {b} round {r}")
            _close(steps[r + 1][1][b], t.rewards, f"rewards env {b} round {r}")


def test_warm_fast_perception_builds_the_cache_files():
    paths = warm_fast_perception("p2p_default", **SMALL)
    assert paths and all(p.is_file() and p.suffix == ".npz" for p in paths)
    assert warm_fast_perception("p2p_default", **{"perception.tier": "paper"}) == []


def test_feedback_memory_keeps_the_last_sent_samples():
    scenario = P2PFastBatched(_cfg(feedback_memory=5), 2)
    scenario.reset(np.array([0, 1]))
    sent_ids, sent_utilities = [[[] for _ in range(3)] for _ in range(2)], [[[] for _ in range(3)] for _ in range(2)]
    for r in range(3):
        t = scenario.step(np.random.default_rng(r).random((2, 3, 30)))
        cached_ids = scenario._last_sent[0]
        for b in range(2):
            for i in range(3):
                mask = t.infos["sent_mask"][b, i]
                sent_ids[b][i] += cached_ids[b, i][mask].tolist()
                sent_utilities[b][i] += t.infos["feedback_utilities"][b, i][mask].tolist()
    for b in range(2):
        for i in range(3):
            size = int(t.infos["feedback_memory_size"][b, i])
            assert size == min(5, len(sent_ids[b][i]))
            assert scenario._memory_ids[b, i, :size].tolist() == sent_ids[b][i][-5:]
            np.testing.assert_allclose(t.infos["feedback_memory_utilities"][b, i, :size], sent_utilities[b][i][-5:])
            assert not t.infos["feedback_memory_features"][b, i, size:].any()
            np.testing.assert_allclose(t.infos["feedback_memory_features"][b, i, :size, :16],
                                       scenario.world.unit[sent_ids[b][i][-5:]], atol=1e-6)


@pytest.mark.parametrize("mode", ["blur", "drop", "pass"])
def test_no_private_sample_leaves_unfiltered_on_the_fast_tier(mode):
    env = P2PParallelEnv("p2p_default", **SMALL, receiver_keeps="all",
                         privacy={"mode": mode, "private_fraction": 0.4, "patch_size": 3})
    world = env.world
    env.reset(seed=3)
    rng = np.random.default_rng(3)
    while env.agents:
        private_now = world.private[env.scenario.batched._round_ids[0]]
        actions = {a: (0.5 * private_now[k] + 0.5 * rng.random(env.n_samples)).astype(np.float32)
                   for k, a in enumerate(env.agents)}  # prefer private samples: the filter's worst case
        _, _, _, _, infos = env.step(actions)
        for tx in env.last_transmissions:
            info = infos[f"robot_{tx['sender']}"]
            cached_private = world.private[tx["cached_ids"]]
            sent_private = world.private[tx["sent_ids"]]
            assert info["n_private_cached"] == cached_private.sum() > 0
            if mode == "drop":
                assert not sent_private.any() and info["n_dropped"] == cached_private.sum()
            elif mode == "blur":
                np.testing.assert_array_equal(tx["blurred"], sent_private)
                assert info["n_blurred"] + info["n_dropped"] == cached_private.sum()
                for k in np.flatnonzero(sent_private):
                    top, left, bottom, right = world.regions[tx["sent_ids"][k]]
                    raw, sent = world.features[tx["sent_ids"][k]], tx["sent_features"][k]
                    assert not np.array_equal(sent[:, top:bottom, left:right], raw[:, top:bottom, left:right])
            else:
                np.testing.assert_array_equal(tx["sent_ids"], tx["cached_ids"])
                assert info["n_passed_private"] == cached_private.sum()


def test_heads_classify_and_correct_agree_with_predict_and_fit_a_subset():
    scenario = P2PFastBatched(_cfg(), 2)
    scenario.reset(np.array([0, 1]))
    heads, rows = scenario.heads, scenario.world.test_rows[:50]
    ids = np.broadcast_to(rows, (2, 3, len(rows)))
    probs = heads.predict(ids).probs
    predicted = probs.argmax(axis=-1)
    top2 = np.sort(probs, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 1e-4  # two code paths (shared rows, per-head rows): near-ties may differ
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(heads.classify(rows)[clear], predicted[clear])
    np.testing.assert_array_equal(heads.correct(rows)[clear], (predicted == scenario.world.table_labels[rows])[clear])
    some = np.array([[True, False, True], [False, False, True]])
    assert (heads.classify(rows, some)[~some] == -1).all() and not heads.correct(rows, some)[~some].any()
    before = heads.predict(ids).probs
    heads.add(np.broadcast_to(rows[:20], (2, 3, 20)))
    heads.fit(some)  # only these heads see the new rows
    after = heads.predict(ids).probs
    np.testing.assert_array_equal(after[~some], before[~some])
    assert not np.allclose(after[some], before[some])


def _reference_stream(shares, pools, rounds, obs_per_round, rng, exclude):
    """draw_domain_stream as 0dbebaf wrote it (a permutation call per round): the draws must not change."""
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    raw = shares * obs_per_round
    quotas = np.floor(raw).astype(int)
    quotas[np.argsort(-(raw - quotas), kind="stable")[: obs_per_round - quotas.sum()]] += 1
    per_domain = []
    for d, pool in enumerate(pools):
        if quotas[d] == 0:
            per_domain.append(np.zeros((rounds, 0), dtype=np.int64))
            continue
        pool = pool[~np.isin(pool, exclude)]
        need = rounds * quotas[d]
        order = np.concatenate([rng.permutation(pool) for _ in range(-(-need // len(pool)))])[:need]
        per_domain.append(order.reshape(rounds, quotas[d]))
    stream = np.empty((rounds, obs_per_round), dtype=np.int64)
    for r in range(rounds):
        stream[r] = rng.permutation(np.concatenate([p[r] for p in per_domain]))
    return stream


def test_domain_streams_keep_their_draws():
    from datagames_env.data.streams import domain_quotas, draw_domain_stream

    for seed in range(40):
        g = np.random.default_rng(seed)
        pools = [np.sort(g.choice(3000, int(g.integers(5, 200)), replace=False)) for _ in range(3)]
        shares = g.random(3) * (g.random(3) < 0.7) + np.eye(3)[seed % 3]
        exclude = g.choice(3000, int(g.integers(0, 40))) if seed % 2 else np.zeros(0, dtype=np.int64)
        rounds, obs = int(g.integers(1, 9)), int(g.integers(1, 60))
        expected = _reference_stream(shares, pools, rounds, obs, np.random.default_rng([seed, 1]), exclude)
        rng = np.random.default_rng([seed, 1])
        drawn = draw_domain_stream(shares, pools, rounds, obs, rng, exclude)
        np.testing.assert_array_equal(drawn, expected)
        again = draw_domain_stream(None, pools, rounds, obs, np.random.default_rng([seed, 1]), exclude,
                                   quotas=domain_quotas(shares, obs))
        np.testing.assert_array_equal(again, expected)
        assert domain_quotas(shares, obs).sum() == obs


def test_reset_from_the_fixed_world_seed_template_equals_a_fresh_reset():
    cfg = _cfg()
    assert cfg.world_seed is not None
    used = P2PFastBatched(cfg, 2)
    _episode(used, [40, 41])  # its first reset builds the template; the next one starts from it
    again = _episode(used, [7, 8])
    fresh = _episode(P2PFastBatched(cfg, 2), [7, 8])
    for r, ((obs_a, rew_a, info_a), (obs_b, rew_b, info_b)) in enumerate(zip(again, fresh)):
        _close(obs_a, obs_b, f"observations round {r}")
        if rew_a is not None:
            _close(rew_a, rew_b, f"rewards round {r}")
        for key in info_a:
            _close(info_a[key], info_b[key], f"info {key} round {r}")


def test_env_b_equals_b1_without_a_fixed_world_seed():
    cfg = _cfg(world_seed=None, rounds=2, obs_per_round=20)
    seeds = [3, 9]
    batch = _episode(P2PFastBatched(cfg, 2), seeds)
    assert not np.array_equal(batch[0][2]["domain_accuracy"][0], batch[0][2]["domain_accuracy"][1])
    for b, seed in enumerate(seeds):
        one = _episode(P2PFastBatched(cfg, 1), [seed])
        for r, ((obs_b, _, info_b), (obs_1, _, info_1)) in enumerate(zip(batch, one)):
            _close(obs_b[b], obs_1[0], f"observations env {b} round {r}")
            for key in ("domain_accuracy", "ood_threshold", "labeled_size", "n_kept"):
                _close(info_b[key][b], info_1[key][0], f"info {key} env {b} round {r}")
