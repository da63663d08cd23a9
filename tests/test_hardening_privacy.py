"""Issue 16 (hardening), privacy filter and DUAL: the configured ``min_change`` reaches the interned blurred
copies, the blur guarantee holds wherever the private region lies (edges and corners included), and a long DUAL
episode with ``label_pool: all`` does per-step work bounded by the number of distinct rows, not by the round."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datagames_env.data.privacy import PrivacyConfig, PrivacyFilter
from datagames_env.scenarios import dual as dual_module
from datagames_env.faces.pettingzoo import DualParallelEnv as parallel_env  # dual unless the config says otherwise
from datagames_env.selection.submodular import FacilityLocation, lazy_greedy, max_similarity
from datagames_env.perception import limited_torch_threads, uncertainty


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


# ------------------------------------------------------------- finding 1: min_change reaches the interned copies


def _bright_npz(tmp_path) -> str:
    """8x8 images with values in [0.93, 0.99]: a white 1-pixel patch changes them by little, so a blur changes the
    region by less than the default min_change (0.05) but more than 0.001."""
    rng = np.random.default_rng(0)
    labels = np.arange(360) % 4
    features = (0.93 + 0.06 * rng.random((360, 8, 8))).astype(np.float32)
    features[np.arange(360), labels, :] -= 0.02  # a faint class signal
    path = tmp_path / "bright.npz"
    np.savez(path, features=features, labels=labels)
    return str(path)


def test_dual_uses_the_configured_min_change_for_interned_copies(tmp_path):
    privacy = {"mode": "blur", "private_fraction": 0.5, "patch_size": 1, "blur_sigma": 0.6, "min_change": 0.001}
    env = parallel_env(None, dataset=_bright_npz(tmp_path), n_robots=3, rounds=3, obs_per_round=20, n_cache=6,
                       label_budget=4, initial_cloud_size=20, privacy=privacy,
                       **{"perception.train_steps": 30, "perception.retrain_every": 0})
    world = env.world
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    while env.agents:  # upload private samples first: every round sends blurred copies
        actions = {}
        for i, agent in enumerate(env.agents):
            actions[agent] = rng.random(env.n_samples) + world.private[world.pool[env.stream_positions.reshape(-1, env.n_samples)[i]]]
        env.step(actions)
    cloud = env.cloud()
    blurred = cloud["blurred"]
    assert blurred.sum() > 0 and (blurred == cloud["private"]).all()  # the margin 0.001 lets every blur through
    configured = PrivacyFilter("blur", 0.6, 0.001)
    ids = cloud["sample_id"][blurred]
    expected = configured.apply(world.as_images(world.robot_features[ids]), np.ones(len(ids), bool),
                                world.regions[ids])
    assert expected.blurred.all()
    np.testing.assert_array_equal(cloud["features"][blurred].reshape((len(ids), -1)),
                                  expected.features.reshape((len(ids), -1)))


# ----------------------------------------------------------- finding 2: the blur guarantee at edges and corners

_SIZES = st.sampled_from([1, 2, 3, 5, 8])


@st.composite
def _placements(draw):
    """A patch size, an image shape a bit larger, and a region anywhere in it (edges and corners weighted up)."""
    patch = draw(_SIZES)
    height = draw(st.integers(patch + 1, patch + 14))
    width = draw(st.integers(patch + 1, patch + 14))
    def position(limit):
        return draw(st.one_of(st.sampled_from([0, limit]), st.integers(0, limit)))
    top, left = position(height - patch), position(width - patch)
    channels = draw(st.sampled_from([1, 3]))
    return patch, channels, height, width, (top, left, top + patch, left + patch)


@settings(max_examples=150, deadline=None)
@given(placement=_placements(), background=st.floats(0.0, 0.9))
def test_blur_hides_a_unit_patch_wherever_it_lies(placement, background):
    """A patch one unit above a flat background keeps at most MAX_PATCH_RESIDUAL of its contrast at the minimum
    sigma, at the centre, along an edge and in a corner."""
    patch, channels, height, width, region = placement
    sigma = PrivacyConfig.minimum_blur_sigma(patch)
    top, left, bottom, right = region
    image = np.full((1, channels, height, width), background, np.float32)
    image[..., top:bottom, left:right] += 0.1  # a unit patch of contrast 0.1 (stays inside [0, 1])
    result = PrivacyFilter("blur", sigma, 1e-6).apply(image, np.array([True]), np.array([region]))
    kept = (result.features[0, :, top:bottom, left:right] - background).max() / 0.1
    assert kept <= 0.5 + 1e-4, f"region {region} in {height}x{width}: the blur keeps {kept:.3f} of the contrast"
    assert result.blurred.all()


@settings(max_examples=100, deadline=None)
@given(placement=_placements(), seed=st.integers(0, 2**32 - 1))
def test_blur_hides_a_stamped_patch_in_any_image(placement, seed):
    """On a random image, what the stamped patch adds to the filtered region is at most half of what it added to
    the image (the filter is linear in the region's content, with weights >= 0)."""
    from datagames_env.data.privacy import blur_region
    patch, channels, height, width, region = placement
    sigma = PrivacyConfig.minimum_blur_sigma(patch)
    top, left, bottom, right = region
    rng = np.random.default_rng(seed)
    image = (0.5 * rng.random((channels, height, width))).astype(np.float32)
    stamped = image.copy()
    stamped[:, top:bottom, left:right] = 1.0
    delta_in = (stamped - image)[:, top:bottom, left:right].max()
    delta_out = np.abs(blur_region(stamped, region, sigma) - blur_region(image, region, sigma))
    assert delta_out[:, top:bottom, left:right].max() <= 0.5 * delta_in + 1e-5
    outside = np.ones(image.shape, bool)
    outside[:, top:bottom, left:right] = False
    np.testing.assert_array_equal(blur_region(stamped, region, sigma)[outside], stamped[outside])


# -------------------------------------------------- finding 3: per-step work of a long episode with label_pool all

# a small stream pool (about 200 samples) so that uploads repeat within a few rounds
TINY_POOL = {"dataset": {"name": "digits", "validation_fraction": 0.45, "test_fraction": 0.44},
             "n_robots": 4, "obs_per_round": 30, "n_cache": 5, "label_budget": 2, "initial_cloud_size": 20,
             "label_pool": "all", "perception.train_steps": 40, "perception.retrain_every": 0,
             "perception.tier": "paper"}  # these tests patch and read DualScenario's stage 2


def _run(env, rounds: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    for _ in range(rounds):
        env.step({a: rng.random(env.n_samples).astype(np.float32) for a in env.agents})


def test_long_episode_work_is_bounded_by_distinct_rows(monkeypatch):
    """Every similarity problem of a step (stage-2 facility location, coverage by the cloud and labeled sets) is
    at most (distinct uploadable rows) wide, however many unlabeled uploads the ledger holds."""
    env = parallel_env(None, **TINY_POOL, rounds=30, **{"privacy.private_fraction": 0.2})
    world = env.world
    distinct = len(world.pool) + int((world.blurred_row >= 0).sum())
    widths: list[int] = []
    original_fl, original_max = dual_module.FacilityLocation, dual_module.max_similarity

    def recording_fl(ground, candidates=None, *args, **kwargs):
        widths.extend([len(ground), len(ground) if candidates is None else len(candidates)])
        return original_fl(ground, candidates, *args, **kwargs)

    def recording_max(ground, reference, *args, **kwargs):
        widths.extend([len(ground), len(reference)])
        return original_max(ground, reference, *args, **kwargs)

    monkeypatch.setattr(dual_module, "FacilityLocation", recording_fl)
    monkeypatch.setattr(dual_module, "max_similarity", recording_max)
    _run(env, 29)
    cloud = env.cloud()
    assert (~cloud["labeled"]).sum() > 1.2 * distinct  # the ledger outgrew the distinct rows: duplicates abound
    assert max(widths) <= max(distinct, TINY_POOL["n_robots"] * TINY_POOL["obs_per_round"])


def _slow_label(scenario, candidates):
    """Stage 2 as it was on 0dbebaf: one ground point and one candidate per ledger entry (the reference)."""
    cfg = scenario.config
    budget = min(cfg.label_budget, len(candidates))
    probs, emb = scenario._cloud_view(scenario._cloud["row"][candidates])
    _, labeled_emb = scenario._cloud_view(scenario._labeled_rows())
    kwargs = scenario._similarity_kwargs()
    covered = max_similarity(emb, labeled_emb, **kwargs)
    if cfg.labeler == "submodular":
        fl = FacilityLocation(emb, None, covered, cfg.kernel, cfg.kernel_scale, cfg.max_block_bytes)
        result = lazy_greedy(fl, budget)
        return candidates[result.indices], float(result.value / len(candidates))
    picks = np.argsort(-uncertainty(probs, cfg.labeler), kind="stable")[:budget]
    after = np.maximum(covered, max_similarity(emb, emb[picks], **kwargs)) if budget else covered
    return candidates[picks], float(after.mean())


@pytest.mark.parametrize("labeler, budget", [("submodular", 2), ("submodular", 400), ("entropy", 5),
                                             ("margin", 5)])
def test_stage_two_matches_the_per_entry_reference(labeler, budget):
    """Deduplicated stage 2 picks the same ledger entries as the per-entry computation, with the same objective
    (to float rounding); a budget beyond the distinct rows also labels repeated uploads, in ledger order."""
    env = parallel_env(None, **{**TINY_POOL, "labeler": labeler}, rounds=20, **{"privacy.private_fraction": 0.2})
    _run(env, 15, seed=3)
    scenario = env.scenario
    scenario.config = scenario.config.model_copy(update={"label_budget": budget})
    candidates = np.flatnonzero(~scenario._cloud["labeled"])
    assert len(np.unique(scenario._cloud["row"][candidates])) < len(candidates)  # duplicates present
    with limited_torch_threads(1):
        fast, fast_value = scenario._label(candidates)
        slow, slow_value = _slow_label(scenario, candidates)
    np.testing.assert_array_equal(fast, slow)
    assert fast_value == pytest.approx(slow_value, rel=1e-9)


def test_weighted_ground_equals_the_repeated_ground():
    """A ground point of weight w is w copies of it: same greedy picks and objective (to rounding); bad weights
    are refused naming the shape."""
    rng = np.random.default_rng(4)
    points = rng.normal(size=(40, 8)).astype(np.float32)
    copies = rng.integers(1, 5, size=40)
    repeated = np.repeat(points, copies, axis=0)
    cov0 = 0.3 * rng.random(40)
    weighted = FacilityLocation(points, None, cov0, weights=copies.astype(float))
    plain = FacilityLocation(repeated, points, np.repeat(cov0, copies))
    a, b = lazy_greedy(weighted, 7), lazy_greedy(plain, 7)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.value == pytest.approx(b.value, rel=1e-12) and a.gain == pytest.approx(b.gain, rel=1e-12)
    np.testing.assert_allclose(a.gains, b.gains, rtol=1e-12)
    with pytest.raises(ValueError, match=r"weights must be \(40,\)"):
        FacilityLocation(points, weights=np.ones(39))
