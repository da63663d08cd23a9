"""DUAL on the fast perception tier, batched (datagames_env/scenarios/dual_fast.py): env b of a batch equals the
batch of one reset with seeds[b], atomic steps, snapshots, the stage-2 labelers, the scenario table and the
parallel face. Small digits instances only."""

from __future__ import annotations

import numpy as np
import pytest

from datagames_env.config import ConfigError
from datagames_env.scenarios import make_batched
from datagames_env.scenarios.batching import BatchOfOne, LoopedBatch
from datagames_env.scenarios.dual import DualScenario, load_dual_config
from datagames_env.faces.pettingzoo import DualParallelEnv as parallel_env  # dual unless the config says otherwise
from datagames_env.scenarios.dual_fast import FastDual, fast_features, warm_fast_perception

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
         "initial_cloud_size": 40, "perception.train_steps": 60}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def play(batch: FastDual, seeds: list[int], action_seed: int = 0, active: np.ndarray | None = None) -> list:
    obs, infos = batch.reset(np.array(seeds))
    rng = np.random.default_rng(action_seed)
    trace = [(obs, None, infos, [dict(batch.cloud(b)) for b in range(batch.num_envs)])]
    for _ in range(batch.config.rounds):
        actions = rng.random((batch.num_envs, batch.n_robots, batch.action_width))
        out = batch.step(actions, active)
        trace.append((out.observations, out.rewards, out.infos, [batch.cloud(b) for b in range(batch.num_envs)]))
    return trace


@pytest.mark.parametrize("extra", [{}, {"privacy.private_fraction": 0.3, "labeler": "entropy", "stream.drift": 0.1,
                                        "world_seed": None}])
def test_env_b_equals_batch_of_one_with_its_seed(extra):
    """Every draw identical (streams, uploads, picks, ledger); floats within float32 rounding (rtol 1e-4)."""
    cfg = load_dual_config(None, **SMALL, **extra)
    seeds = [5, 17, 2]
    batch = play(FastDual(cfg, 3), seeds)
    for b, seed in enumerate(seeds):
        # the actions of env b in the batch are rows [b] of the batch's draws: replay them at B = 1
        one = FastDual(cfg, 1)
        obs, infos = one.reset(np.array([seed]))
        np.testing.assert_allclose(obs[0], batch[0][0][b], rtol=1e-4, atol=1e-5)
        rng = np.random.default_rng(0)
        for r in range(cfg.rounds):
            actions = rng.random((3, cfg.n_robots, one.action_width))[b:b + 1]
            out = one.step(actions)
            _obs, rewards, binfos, clouds = batch[r + 1]
            np.testing.assert_allclose(out.observations[0], _obs[b], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(out.rewards[0], rewards[b], atol=1e-6)
            for key in ("uploaded_sample_ids", "uploaded", "labeled_from_robot", "labeled", "labels_used",
                        "cloud_labeled", "privacy_total_blurred", "available"):
                assert np.array_equal(out.infos[key][0], binfos[key][b]), key
            for key in ("row", "labeled", "robot", "round", "labeled_round", "blurred"):
                assert np.array_equal(one.cloud(0)[key], clouds[b][key]), key
            for key in ("validation_accuracy", "upload_objective", "label_objective", "coverage_gain"):
                np.testing.assert_allclose(out.infos[key][0], binfos[key][b], rtol=1e-6, atol=1e-9)


def test_whole_batch_is_deterministic_and_seeds_differ():
    cfg = load_dual_config(None, **SMALL)
    a, b = play(FastDual(cfg, 2), [3, 4]), play(FastDual(cfg, 2), [3, 4])
    for (oa, ra, ia, _), (ob, rb, ib, _) in zip(a, b):
        assert np.array_equal(oa, ob) and (ra is None or np.array_equal(ra, rb))
        assert ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)
    assert not np.array_equal(a[0][0][0], a[0][0][1])  # two seeds, two different streams


def test_info_schema_is_fixed_and_typed_like_the_paper_tier():
    cfg = load_dual_config(None, **SMALL)
    fast, paper = parallel_env(cfg), parallel_env(cfg, **{"perception.tier": "paper"})
    assert isinstance(fast.scenario, BatchOfOne) and isinstance(fast.scenario.batched, FastDual)
    assert isinstance(paper.scenario, DualScenario)
    _, fi = fast.reset(seed=1)
    _, pi = paper.reset(seed=1)
    assert fi["robot_0"].keys() == pi["robot_0"].keys()
    for key, value in pi["robot_0"].items():
        assert type(fi["robot_0"][key]) is type(value), key
        assert np.shape(fi["robot_0"][key]) == np.shape(value), key
    assert fast.obs_layout == paper.obs_layout and fast.sample_spec == paper.sample_spec
    _, _, _, _, fi = fast.step({a: np.zeros(fast.n_samples) for a in fast.agents})
    assert fi["robot_0"].keys() == pi["robot_0"].keys()
    assert all(np.isfinite(np.asarray(v, dtype=float)).all() for v in fi["robot_0"].values())


def test_bad_actions_name_env_and_robot_and_change_nothing():
    batch = FastDual(load_dual_config(None, **SMALL), 2)
    batch.reset(np.array([0, 1]))
    before = batch.snapshot_state()
    actions = np.zeros((2, 3, batch.action_width))
    actions[1, 2, 4] = np.nan
    with pytest.raises(ValueError, match="env 1, robot_2: action contains NaN"):
        batch.step(actions)
    with pytest.raises(ValueError, match=r"actions must have shape \(num_envs, n_robots, obs_per_round\)"):
        batch.step(np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match="active must be a bool mask"):
        batch.step(np.zeros((2, 3, batch.action_width)), np.ones((3, 2), bool))
    after = batch.snapshot_state()
    assert np.array_equal(before["states"], after["states"]) and before["rngs"] == after["rngs"]
    assert all(np.array_equal(before["ledger"][k], after["ledger"][k]) for k in before["ledger"])


def test_failed_step_rolls_back_everything(monkeypatch):
    batch = FastDual(load_dual_config(None, **SMALL, labeler="random"), 2)
    batch.reset(np.array([0, 1]))
    before = batch.snapshot_state()
    monkeypatch.setattr(batch, "_fit", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        batch.step(np.random.default_rng(0).random((2, 3, batch.action_width)))
    monkeypatch.undo()
    after = batch.snapshot_state()
    for key in ("states", "labels_used", "cov_cloud", "cov_labeled", "stream_positions"):
        assert np.array_equal(before[key], after[key]), key
    assert before["rngs"] == after["rngs"] and after["round_index"] == 0
    assert all(np.array_equal(before["heads"][k], after["heads"][k]) for k in before["heads"])
    assert [len(h) for h in batch.histories] == [1, 1]


def test_snapshot_restore_replays_the_episode():
    batch = FastDual(load_dual_config(None, **SMALL, labeler="margin"), 2)
    batch.reset(np.array([8, 9]))
    rng = np.random.default_rng(1)
    batch.step(rng.random((2, 3, batch.action_width)))
    snap = batch.snapshot_state()
    batch.check_snapshot_state(snap)
    actions = [rng.random((2, 3, batch.action_width)) for _ in range(2)]
    first = [batch.step(a) for a in actions]
    batch.restore_state(snap)
    second = [batch.step(a) for a in actions]
    for x, y in zip(first, second):
        assert np.array_equal(x.observations, y.observations) and np.array_equal(x.rewards, y.rewards)
        assert all(np.array_equal(x.infos[k], y.infos[k]) for k in x.infos)
    bad = dict(snap, cov_cloud=snap["cov_cloud"][:, :3])
    from datagames_env.scenarios.base import SnapshotError

    with pytest.raises(SnapshotError, match="state.cov_cloud"):
        batch.check_snapshot_state(bad)


@pytest.mark.parametrize("labeler", ["submodular", "random", "entropy", "margin"])
@pytest.mark.parametrize("label_pool", ["all", "round"])
def test_labelers_label_unlabeled_uploads_under_the_budget(labeler, label_pool):
    cfg = load_dual_config(None, **SMALL, labeler=labeler, label_pool=label_pool)
    batch = FastDual(cfg, 2)
    trace = play(batch, [0, 1])
    for b in range(2):
        cloud = batch.cloud(b)
        uploads = cloud["robot"] >= 0
        assert (cloud["labeled_round"][~uploads] == -1).all() and cloud["labeled"][~uploads].all()
        for r in range(cfg.rounds):
            labeled_now = cloud["labeled_round"] == r
            assert labeled_now.sum() == cfg.label_budget  # enough candidates every round here
            if label_pool == "round":
                assert (cloud["round"][labeled_now] == r).all()
            else:
                assert (cloud["round"][labeled_now] <= r).all()
        assert batch.labels_used[b] == cfg.rounds * cfg.label_budget
        # the head was fitted on exactly the labeled multiset
        counts = np.bincount(cloud["true_label"][cloud["labeled"]], minlength=batch.n_classes)
        assert np.array_equal(batch.heads.counts[b, 0], counts)
    assert (trace[-1][2]["label_objective"] > 0).all()


def test_dense_batched_greedy_matches_lazy_greedy():
    """The batched dense greedy of stage 2 and the library's lazy greedy (forced by a tiny max_block_bytes) pick
    the same entries with the same objective value (1e-6: the dense path's similarities are float32 from one
    matmul, the lazy path's exact float32 distances)."""
    out = {}
    for bytes_ in (1 << 26, 1024):
        cfg = load_dual_config(None, **{**SMALL, "max_block_bytes": bytes_, "label_budget": 8})
        batch = FastDual(cfg, 2)
        trace = play(batch, [4, 6])
        out[bytes_] = ([batch.cloud(b)["labeled_round"] for b in range(2)],
                       np.stack([t[2]["label_objective"] for t in trace[1:]]))
    for x, y in zip(out[1 << 26][0], out[1024][0]):
        assert np.array_equal(x, y)
    np.testing.assert_allclose(out[1 << 26][1], out[1024][1], rtol=0, atol=1e-6)


def test_scenario_table_and_make_batched():
    native = make_batched("dual_default", 3, **SMALL)
    assert isinstance(native, FastDual) and native.num_envs == 3
    looped = make_batched("dual_default", 2, **SMALL, **{"perception.tier": "paper"})
    assert isinstance(looped, LoopedBatch)
    obs, infos = native.reset(np.arange(3))
    assert obs.shape == (3, 3, native.obs_dim) and native.state().shape == (3, native.state_dim)
    assert set(native.robot_info_keys) | set(native.env_info_keys) == set(infos)
    assert all(infos[k].shape[:2] == (3, 3) for k in native.robot_info_keys)
    assert all(infos[k].shape[0] == 3 for k in native.env_info_keys)
    view = native.privileged_view()
    assert view["true_feasible_matrices"].shape == (3, 3, native.n_classes, native.n_classes)
    assert "round 0/3" in native.render("ansi", 2)
    with pytest.raises(ConfigError, match="perception.tier"):
        FastDual(None, 1, **{"perception.tier": "paper"})


def test_public_split_is_disjoint_and_cached(tmp_path, monkeypatch):
    cfg = load_dual_config(None, **SMALL)
    world = FastDual(cfg, 1).world
    public = set(world.public_rows.tolist())
    assert public and not public & set(world.pool.tolist())
    assert not public & set(world.splits.validation.tolist()) and not public & set(world.splits.test.tolist())
    assert not world.private[world.public_rows].any()
    monkeypatch.setenv("DATAGAMES_CACHE_DIR", str(tmp_path))
    paths = warm_fast_perception(None, **SMALL)
    assert len(paths) == 1 and paths[0].is_file() and paths[0].is_relative_to(tmp_path)
    assert fast_features(cfg).built is False  # the second call loads the file
    assert warm_fast_perception(None, **SMALL, **{"perception.tier": "paper"}) == []


def test_inactive_robots_upload_nothing():
    batch = FastDual(load_dual_config(None, **SMALL), 2)
    active = np.ones((2, 3), bool)
    active[1, 0] = False
    trace = play(batch, [0, 1], active=active)
    infos = trace[1][2]
    assert infos["uploaded"][1, 0] == 0 and (infos["uploaded_sample_ids"][1, 0] == -1).all()
    assert (infos["uploaded"][0] == SMALL["n_cache"]).all()
    assert not (batch.cloud(1)["robot"] == 0).any()
