"""Privacy filter: unit tests of :mod:`datagames_env.data.privacy`, and the p2p half of the property test that no
private-flagged sample ever leaves a robot unfiltered (the DUAL half lives with the DUAL scenario)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagames_env.faces.pettingzoo import P2PParallelEnv
from datagames_env.data.privacy import PrivacyConfig, PrivacyFilter, stamp_private_patches

# ------------------------------------------------------------------------------------------------ unit tests


def _images(n=6, size=8, seed=0):
    return np.random.default_rng(seed).random((n, 1, size, size)).astype(np.float32)


def test_stamp_private_patches_marks_and_stamps():
    x = _images(400)
    out, private, regions = stamp_private_patches(x, 0.25, np.random.default_rng(0), patch_size=3)
    assert 60 < private.sum() < 140 and out.shape == x.shape
    assert (regions[~private] == 0).all()
    for i in np.flatnonzero(private):
        top, left, bottom, right = regions[i]
        assert bottom - top == 3 and right - left == 3
        assert (out[i, :, top:bottom, left:right] == 1.0).all()
        outside = np.ones(x.shape[1:], bool)
        outside[:, top:bottom, left:right] = False
        np.testing.assert_array_equal(out[i][outside], x[i][outside])  # only the patch changes
    np.testing.assert_array_equal(out[~private], x[~private])
    with pytest.raises(ValueError, match="images"):
        stamp_private_patches(x.reshape(400, -1), 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="patch_size"):
        stamp_private_patches(x, 0.1, np.random.default_rng(0), patch_size=9)


def test_blur_changes_only_the_private_region():
    x, private, regions = stamp_private_patches(_images(50), 0.5, np.random.default_rng(1), patch_size=3)
    result = PrivacyFilter("blur", 2.0).apply(x, private, regions)
    assert result.kept.all() and result.n_blurred == private.sum() == result.n_private
    assert result.n_filtered == result.n_blurred and result.n_dropped == 0
    np.testing.assert_array_equal(result.blurred, private)
    np.testing.assert_array_equal(result.features[~private], x[~private])
    for i in np.flatnonzero(private):
        top, left, bottom, right = regions[i]
        patch = result.features[i, :, top:bottom, left:right]
        assert patch.max() < 1.0  # the stamped all-white patch does not survive
        mask = np.ones(x.shape[1:], bool)
        mask[:, top:bottom, left:right] = False
        np.testing.assert_array_equal(result.features[i][mask], x[i][mask])
    assert x[private][:, :, :, :].max() == 1.0  # the input was not modified in place


def test_drop_and_pass():
    x, private, regions = stamp_private_patches(_images(40), 0.5, np.random.default_rng(2))
    dropped = PrivacyFilter("drop").apply(x, private, regions)
    np.testing.assert_array_equal(dropped.kept, ~private)
    np.testing.assert_array_equal(dropped.features, x[~private])
    assert dropped.n_dropped == private.sum() and dropped.n_passed_private == 0
    passed = PrivacyFilter("pass").apply(x, private, regions)
    assert passed.kept.all() and passed.n_passed_private == private.sum() and passed.n_filtered == 0
    np.testing.assert_array_equal(passed.features, x)
    nothing = PrivacyFilter("blur").apply(x, np.zeros(len(x), bool), regions)
    assert nothing.n_private == 0 and nothing.features is x


def test_vectors_whole_sample_blur_and_errors():
    v = np.random.default_rng(0).random((5, 16)).astype(np.float32)
    private = np.array([True, False, True, False, False])
    out = PrivacyFilter("blur").apply(v, private).features
    np.testing.assert_allclose(out[0], v[0].mean())
    np.testing.assert_array_equal(out[1], v[1])
    with pytest.raises(ValueError, match="privacy.mode"):
        PrivacyFilter("hide")
    with pytest.raises(ValueError, match="blur_sigma"):
        PrivacyFilter("blur", 0.0)
    with pytest.raises(ValueError, match=r"shape \(4,\), expected \(5,\)"):
        PrivacyFilter("blur").apply(v, private[:4])
    with pytest.raises(ValueError, match=r"regions have shape"):
        PrivacyFilter("blur").apply(_images(5), private, np.zeros((5, 3), int))
    assert PrivacyFilter.from_config(PrivacyConfig(mode="drop")).mode == "drop"
    with pytest.raises(ValueError):
        PrivacyConfig(mode="blur", extra_key=1)


# --------------------------------------------------------------------------------- p2p property: nothing leaks

_ENVS: dict[str, P2PParallelEnv] = {}


def _privacy_env(mode: str) -> P2PParallelEnv:
    """One env per filter mode (building one trains the first models); models stay fixed, so episodes are fast."""
    if mode not in _ENVS:
        _ENVS[mode] = P2PParallelEnv("p2p_default", rounds=3, obs_per_round=30, receiver_keeps="all",
                                     privacy={"mode": mode, "private_fraction": 0.4, "patch_size": 3},
                                     **{"perception.retrain_every": 0, "perception.train_steps": 60,
                                        "perception.tier": "paper"})
    return _ENVS[mode]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["blur", "drop", "pass"]), seed=st.integers(0, 2**31 - 1),
       oracle_like=st.booleans())
def test_no_private_sample_leaves_a_robot_unfiltered(mode, seed, oracle_like):
    env = _privacy_env(mode)
    world = env.world
    _, infos = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    counted = {"blurred": 0, "dropped": 0, "passed": 0}
    while env.agents:
        if oracle_like:  # prefer private samples: the worst case for the filter
            private_now = world.private[env._round_ids]
            actions = {a: (0.5 * private_now[k] + 0.5 * rng.random(env.n_samples)).astype(np.float32)
                       for k, a in enumerate(env.agents)}
        else:
            actions = {a: rng.random(env.n_samples).astype(np.float32) for a in env.agents}
        _obs, _, _, _, infos = env.step(actions)
        for tx in env.last_transmissions:
            info = infos[f"robot_{tx['sender']}"]
            cached_private = world.private[tx["cached_ids"]]
            sent_private = world.private[tx["sent_ids"]]
            assert info["n_private_cached"] == cached_private.sum()
            if mode == "drop":
                assert not sent_private.any()  # a private sample never leaves
                assert info["n_dropped"] == cached_private.sum()
                assert len(tx["sent_ids"]) == env.n_share - cached_private.sum()
            elif mode == "blur":
                np.testing.assert_array_equal(tx["blurred"], sent_private)
                for k in np.flatnonzero(sent_private):
                    top, left, bottom, right = world.regions[tx["sent_ids"][k]]
                    raw = world.features[tx["sent_ids"][k]]
                    sent = tx["sent_features"][k]
                    # the stamped region is not what left; everything outside it is untouched
                    assert not np.array_equal(sent[:, top:bottom, left:right], raw[:, top:bottom, left:right])
                    assert sent[:, top:bottom, left:right].max() < 1.0
                    mask = np.ones(raw.shape, bool)
                    mask[:, top:bottom, left:right] = False
                    np.testing.assert_array_equal(sent[mask], raw[mask])
                assert info["n_blurred"] == sent_private.sum()
            else:  # pass: private samples leave unfiltered, and every one of them is counted
                np.testing.assert_array_equal(tx["sent_features"], world.features[tx["sent_ids"]])
                assert info["n_passed_private"] == sent_private.sum() == cached_private.sum()
            public = ~sent_private
            np.testing.assert_array_equal(tx["sent_features"][public], world.features[tx["sent_ids"][public]])
            counted["blurred"] += info["n_blurred"]
            counted["dropped"] += info["n_dropped"]
            counted["passed"] += info["n_passed_private"]
    final = infos["robot_0"]
    # cumulative counters agree with the per-round ones
    assert sum(infos[a]["total_blurred"] for a in infos) == counted["blurred"]
    assert sum(infos[a]["total_dropped"] for a in infos) == counted["dropped"]
    assert sum(infos[a]["total_passed_private"] for a in infos) == counted["passed"]
    assert final["round"] == env.config.rounds
    if mode != "pass":
        # nothing raw and private sits in any peer's labeled set: every received private sample is blurred
        for j, robot in enumerate(env._robots):
            received = np.concatenate(robot.labeled_features[1:]) if len(robot.labeled_features) > 1 else None
            if received is None:
                continue
            stamped_private = world.features[world.private]
            assert not any((received == raw).all(axis=(1, 2, 3)).any() for raw in stamped_private[:, None])
