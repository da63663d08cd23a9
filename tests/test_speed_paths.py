"""The speed paths of issue 17's last round: each equals the path it replaces (datagames_env/perception/fast.py
``BatchedHeads.probabilities``, selection/kernels.py ``first_argmax_columns``, dual_fast.py's grouped greedy
labeler, p2p_fast.py's feedback-memory width). Small random instances and small digits configs only."""

from __future__ import annotations

import numpy as np
import pytest

from datagames_env.perception.fast import BatchedHeads
from datagames_env.scenarios import dual_fast
from datagames_env.scenarios.dual_fast import FastDual
from datagames_env.scenarios.p2p_fast import P2PFastBatched
from datagames_env.selection.kernels import first_argmax_columns


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _heads(seed: int = 0) -> tuple[BatchedHeads, np.ndarray]:
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(120, 5)).astype(np.float32)
    labels = rng.integers(0, 4, 120)
    heads = BatchedHeads(table, labels, 4, 3, 2)
    heads.add(rng.integers(0, 120, (3, 2, 30)), rng.random((3, 2, 30)) < 0.8)
    heads.fit()
    return heads, rng.integers(0, 120, (3, 2, 17))


@pytest.mark.parametrize("head", ["student", "lda", "ridge"])
def test_probabilities_are_predicts_without_the_scores(head):
    heads, ids = _heads()
    heads.head = head
    heads.fit()
    valid = np.random.default_rng(1).random(ids.shape) < 0.7
    # the same arithmetic (the distance path), only the discarded minimum is skipped: equal bit for bit
    assert np.array_equal(heads.probabilities(ids, valid), heads.predict(ids, valid).probs)
    assert np.array_equal(heads.novelty(ids, valid, "entropy"), heads.predict(ids, valid).novelty("entropy"))
    with pytest.raises(ValueError, match="ids"):
        heads.probabilities(ids[..., None])


@pytest.mark.parametrize("seed", range(4))
def test_first_argmax_columns_is_numpys_argmax(seed):
    rng = np.random.default_rng(seed)
    dots = rng.integers(0, 4, (5, 7, 9)).astype(np.float32)  # many ties: the first maximum must win
    dots[1, :, 2] = -np.inf  # a fully masked column: index 0, as numpy
    env = np.sort(rng.integers(0, 5, 30))
    column = rng.integers(0, 9, 30)
    assert np.array_equal(first_argmax_columns(dots, env, column), dots[env, :, column].argmax(axis=1))


def test_grouped_greedy_labeler_picks_as_one_group(monkeypatch):
    """Groups of envs (cache-sized similarity blocks) pick what one block of every env picks."""
    cfg = {"n_robots": 4, "rounds": 3, "obs_per_round": 20, "n_cache": 4, "label_budget": 3,
           "initial_cloud_size": 20}

    calls = []
    kernel = dual_fast.dense_greedy_picks
    monkeypatch.setattr(dual_fast, "dense_greedy_picks", lambda *args: (calls.append(1), kernel(*args)))
    monkeypatch.setattr(dual_fast, "_SQRT_ALIGN", 1)  # groups of one env (whatever the padded width)

    def episode(block_bytes: int) -> list:
        monkeypatch.setattr(dual_fast, "_CACHE_BLOCK_BYTES", block_bytes)
        batch = FastDual(None, 6, **cfg)
        batch.reset(np.arange(6))
        rng = np.random.default_rng(3)
        out = []
        for _ in range(cfg["rounds"]):
            t = batch.step(rng.random((6, cfg["n_robots"], batch.action_width)))
            out.append((t.infos["labeled_from_robot"], t.infos["label_objective"], batch.ledger["labeled"].copy()))
        return out

    one = episode(1 << 30)
    n_one = len(calls)
    grouped = episode(1)  # 1 byte: one env per group
    assert len(calls) - n_one > n_one  # the grouped episode did run several groups per step
    for (a_from, a_value, a_led), (b_from, b_value, b_led) in zip(one, grouped):
        assert np.array_equal(a_from, b_from) and np.array_equal(a_led, b_led)
        np.testing.assert_allclose(a_value, b_value, rtol=1e-6)


def test_feedback_memory_infos_are_as_wide_as_an_episode_can_fill():
    scenario = P2PFastBatched(None, 2, rounds=3)
    obs, infos = scenario.reset(np.array([0, 1]))
    width = min(scenario.config.feedback_memory, 3 * scenario.n_share)
    assert infos["feedback_memory_features"].shape == (2, scenario.n_robots, width, scenario.sample_feature_dim)
    assert infos["feedback_memory_utilities"].shape == (2, scenario.n_robots, width)
    rng = np.random.default_rng(0)
    for _ in range(3):
        t = scenario.step(rng.random((2, scenario.n_robots, scenario.action_width)))
    size = t.infos["feedback_memory_size"]
    assert size.max() <= width and (size > 0).any()
    full = t.infos["feedback_memory_utilities"]
    for b in range(2):
        for i in range(scenario.n_robots):
            assert not t.infos["feedback_memory_features"][b, i, size[b, i]:].any() and not full[b, i, size[b, i]:].any()
