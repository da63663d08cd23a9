"""Issue 19's GU ablation: the gu rule's feedback targets and the ablation mode of benchmarks/sweep_p2p.py."""

from __future__ import annotations

import numpy as np
import pytest

from baselines.p2p_policies import FEEDBACK_TARGETS, BatchedGUPolicy, GUPolicy, feedback_targets
from benchmarks.sweep_p2p import ABLATE_ENV, ABLATE_GU, _paired, ablation_table
from datagames_env.scenarios import make_batched

U = np.array([[0.0, 0.5, 1.0, 0.5, 0.0, 1.0], [1.0, 0.0, 0.5, 9.0, 9.0, 9.0]])  # robot 1: 3 real rows + padding
SIZE = np.array([6, 3])


def test_fraction_is_the_utility_and_padding_is_zero():
    out = feedback_targets(U, SIZE, None, "fraction")
    np.testing.assert_array_equal(out[0], U[0])
    np.testing.assert_array_equal(out[1], [1.0, 0.0, 0.5, 0.0, 0.0, 0.0])


def test_binary_marks_any_vote():
    out = feedback_targets(U, SIZE, None, "binary")
    np.testing.assert_array_equal(out[0], [0, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(out[1], [1, 0, 1, 0, 0, 0])


def test_rank_is_monotone_in_unit_interval_with_equal_ties():
    out = feedback_targets(U, SIZE, None, "rank")
    real = out[0]
    assert ((real >= 0) & (real <= 1)).all() and real[0] + real[2] == pytest.approx(1.0)  # symmetric mid-ranks
    assert real[1] == real[3] and real[0] == real[4] and real[2] == real[5]  # ties share their mid-rank
    assert real[0] < real[1] < real[2]
    np.testing.assert_allclose(out[1, :3], [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(out[1, 3:], 0.0)


def test_zscore_standardises_within_each_round():
    rounds = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
    u = np.array([[0.0, 0.5, 1.0, 0.5, 0.5, 0.5], [0.0, 1.0, 0.3, 0.0, 0.0, 0.0]])
    out = feedback_targets(u, SIZE, rounds, "zscore")
    assert out[0, 0] < 0.5 < out[0, 2] and out[0, 1] == pytest.approx(0.5)  # round 0: symmetric about its mean
    np.testing.assert_allclose(out[0, 3:], 0.5)  # a round without spread carries no information
    assert out[0, 0] + out[0, 2] == pytest.approx(1.0)
    np.testing.assert_allclose(out[1, :3], [1 - out[1, 1], out[1, 1], 0.5])
    assert ((out >= 0) & (out <= 1)).all()


def test_bad_feedback_is_named():
    with pytest.raises(ValueError, match="feedback must be one of"):
        feedback_targets(U, SIZE, None, "votes")
    with pytest.raises(ValueError, match="zscore"):
        feedback_targets(U, SIZE, None, "zscore")
    batch = make_batched("p2p_default", 1, rounds=2)
    with pytest.raises(ValueError, match="feedback must be one of"):
        BatchedGUPolicy(batch, feedback="raw")


def _episode(batch, policy, seeds):
    obs, infos = batch.reset(np.asarray(seeds))
    policy.reset(7)
    actions = []
    for _ in range(batch.config.rounds):
        act = policy.act(obs, infos)
        actions.append(act)
        step = batch.step(act)
        obs, infos = step.observations, step.infos
    return np.stack(actions), infos


@pytest.mark.parametrize("feedback", FEEDBACK_TARGETS)
def test_batched_gu_runs_every_feedback_deterministically(feedback):
    batch = make_batched("p2p_default", 2, rounds=3, obs_per_round=40, **{"perception.novelty": "entropy"})
    policy = BatchedGUPolicy(batch, hidden=16, train_steps=20, feedback=feedback)
    first, infos = _episode(batch, policy, [5, 6])
    again, _ = _episode(batch, policy, [5, 6])
    np.testing.assert_array_equal(first, again)
    assert first.shape == (3, 2, batch.n_robots, batch.n_samples)
    # the round bookkeeping counts exactly what the env remembered
    np.testing.assert_array_equal(policy.core.sent_total,
                                  np.asarray(infos["feedback_memory_size"]).reshape(-1)
                                  - (np.asarray(infos["sent_mask"]).sum(axis=-1).reshape(-1)))
    assert len(policy.core.round_ends) == 3


def test_gu_policy_accepts_feedback():
    from benchmarks.sweep_p2p import EnvView

    batch = make_batched("p2p_default", 1, rounds=2, obs_per_round=40)
    view = EnvView(batch, 0)
    assert GUPolicy(view, feedback="rank").feedback == "rank"
    with pytest.raises(ValueError, match="feedback"):
        GUPolicy(view, feedback="ranks")


def test_ablation_pairs_gu_variants_with_the_default_env():
    rows = []
    for seed, (r, o, g, g2) in enumerate([(0.5, 0.7, 0.6, 0.65), (0.4, 0.8, 0.5, 0.45)]):
        rows += [{"variant": "default", "policy": "random", "seed": seed, "peer_rare_acc": r},
                 {"variant": "default", "policy": "oracle", "seed": seed, "peer_rare_acc": o},
                 {"variant": "default", "policy": "gu", "seed": seed, "peer_rare_acc": g},
                 {"variant": "hidden=16", "policy": "gu", "seed": seed, "peer_rare_acc": g2}]
    np.testing.assert_allclose(_paired(rows, "hidden=16", "gu", "random"), [15.0, 5.0])
    np.testing.assert_allclose(_paired(rows, "default", "oracle", "gu"), [10.0, 30.0])
    for r in rows:
        r.update(rare_share_after_first=0.5, rare_share_last=0.6)
    table = ablation_table(rows)
    assert "hidden=16 | 2 |" in table and "+10.0 ± 7.1 (2/2)" in table
    names = [k for k, _, _ in ABLATE_ENV] + [k for k, _, _ in ABLATE_GU]
    assert {"vote", "rounds", "hidden", "train_steps", "feedback", "explore"} <= set(names)
