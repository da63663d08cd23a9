"""The speed paths of the fast dual (issue 17, 250x): the compiled stage-2 kernels against the torch chain they
replace, the coverage argmax on a few columns against ``max(dim=1)``, the privacy filter memo, and whole seeded
episodes: deterministic, and env b of a batch equal to the batch of one with seeds[b]. Small instances only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datagames_env.data.privacy import PrivacyFilter
from datagames_env.scenarios.dual import load_dual_config
from datagames_env.scenarios.dual_fast import FastDual, _argmax_is_itself
from datagames_env.selection.kernels import dense_greedy_picks, squared_unit_distances, unit_similarities

SMALL = {"n_robots": 4, "rounds": 3, "obs_per_round": 30, "n_cache": 5, "label_budget": 5,
         "initial_cloud_size": 30, "perception.train_steps": 60}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _unit_rows(rng, e, m, d=16):
    x = rng.normal(size=(e, m, d)).astype(np.float32)
    x[:, 3] = x[:, 4]  # a duplicate row: exact ties
    return x / np.linalg.norm(x, axis=2, keepdims=True)


def _torch_similarities(x: torch.Tensor, kernel: str, scale: float) -> torch.Tensor:
    """The torch chain main's dense greedy ran (padded block)."""
    dist = (x @ x.transpose(1, 2)).mul_(-2.0).add_(2.0).clamp_(min=0.0)
    dist.diagonal(dim1=1, dim2=2).zero_()
    dist.sqrt_()
    sims = dist.square_().mul_(-0.5).add_(1.0) if kernel == "cosine" else dist.mul_(scale).add_(1.0).reciprocal_()
    return sims.clamp_(min=0.0)


def _torch_greedy(sims, covered, weights, sizes, steps):
    """Main's padded torch greedy loop (every gain every step)."""
    e, m = covered.shape
    cov = torch.from_numpy(covered.copy())
    w = torch.from_numpy(weights)[:, :, None]
    blocked = torch.from_numpy(np.arange(m)[None, :] >= sizes[:, None])
    picks = np.full((e, int(steps.max())), -1)
    for t in range(int(steps.max())):
        gains = torch.bmm((sims - cov[:, None, :]).clamp_(min=0.0), w)[:, :, 0].masked_fill_(blocked, -1.0)
        best_gain, best = gains.max(dim=1)
        active = (t < torch.from_numpy(steps)) & (best_gain > 0)
        picks[:, t] = torch.where(active, best, -1).numpy()
        cov = torch.where(active[:, None], torch.maximum(cov, sims[torch.arange(e), best]), cov)
        blocked[torch.arange(e), best] |= active
    return picks, cov.numpy()


@pytest.mark.parametrize("kernel", ["inverse_distance", "cosine"])
def test_compiled_similarities_and_greedy_match_the_torch_chain(kernel):
    """Kernel transform and lazy greedy on each env's own block against the padded torch chain: the same picks,
    similarities and coverage within 1e-6 (bit for bit where the arithmetic is the same; not asserted)."""
    rng = np.random.default_rng(3)
    e, m = 5, 40
    sizes = np.array([40, 33, 1, 17, 40])
    x = torch.from_numpy(_unit_rows(rng, e, m))
    scale = 0.3
    expected = _torch_similarities(x, kernel, scale)
    dots = x @ x.transpose(1, 2)
    squared_unit_distances(dots.numpy(), sizes)
    sims = dots.sqrt_().numpy()
    unit_similarities(sims, sizes, kernel == "cosine", np.float32(scale))
    for b, size in enumerate(sizes):
        np.testing.assert_allclose(sims[b, :size, :size], expected[b, :size, :size].numpy(), rtol=0, atol=1e-6)
        assert (sims[b, size:] == 0).all() and (sims[b, :, size:] == 0).all()
    covered = (rng.random((e, m)) * 0.5).astype(np.float32)
    weights = rng.integers(1, 4, (e, m)).astype(np.float32)
    for b, size in enumerate(sizes):
        covered[b, size:], weights[b, size:] = 0.0, 0.0
    steps = np.minimum(np.array([6, 6, 6, 3, 40]), sizes)
    want_picks, want_cov = _torch_greedy(expected, covered, weights, sizes, steps)
    picks = np.full((e, int(steps.max())), -1, dtype=np.int64)
    cov = covered.copy()
    dense_greedy_picks(sims, cov, weights, sizes, steps, picks)
    assert np.array_equal(picks, want_picks)
    for b, size in enumerate(sizes):
        np.testing.assert_allclose(cov[b, :size], want_cov[b, :size], rtol=0, atol=1e-6)
    assert (picks[2] >= 0).sum() == 1 and (picks[4] >= 0).sum() > 6  # a block of one; a long greedy


def test_lazy_greedy_stops_when_nothing_gains():
    """Everything covered: no pick at all; one uncovered entry: one pick, the lowest index that covers it."""
    sims = np.ones((1, 4, 4), dtype=np.float32)
    weights = np.ones((1, 4), dtype=np.float32)
    picks = np.full((1, 3), -1, dtype=np.int64)
    dense_greedy_picks(sims, np.ones((1, 4), dtype=np.float32), weights, np.array([4]), np.array([3]), picks)
    assert (picks == -1).all()
    covered = np.ones((1, 4), dtype=np.float32)
    covered[0, 2] = 0.0
    dense_greedy_picks(sims, covered, weights, np.array([4]), np.array([3]), picks)
    assert picks.tolist() == [[0, -1, -1]] and (covered == 1).all()


def test_argmax_itself_matches_max_with_indices():
    """The itself mask from a few columns equals ``ref.gather(max(dim=1).indices) == ground``, with duplicate
    references, masked (invalid) references, and an env without any valid reference."""
    rng = np.random.default_rng(0)
    n_rows, b_n, k = 60, 4, 7
    unit = torch.from_numpy(_unit_rows(rng, 1, n_rows)[0])
    unit[10] = unit[11]  # two rows, the same features
    ground = rng.permutation(n_rows)[:45]
    refs = rng.choice(ground, (b_n, k))
    refs[0, :3] = [10, 11, 10]
    refs[1, 0] = 0
    valid = rng.random((b_n, k)) < 0.7
    valid[2] = False
    ref_np = np.where(valid, refs, 0)
    dots = unit[torch.from_numpy(ref_np)] @ unit[torch.from_numpy(ground)].T
    dots.masked_fill_(torch.from_numpy(~valid)[:, :, None], -float("inf"))
    want = torch.gather(torch.from_numpy(ref_np), 1, dots.max(dim=1).indices) == torch.from_numpy(ground)[None]
    position = np.full(n_rows, -1)
    position[ground] = np.arange(len(ground))
    got = _argmax_is_itself(dots, ref_np, position[ref_np], ground)
    assert torch.equal(got, want) and want.any()


def test_privacy_filter_runs_once_per_sample(monkeypatch):
    """A private sample is filtered the first time it is uploaded; later uploads reuse the verdict, and the
    episode is the same as filtering every upload."""
    overrides = {**SMALL, "privacy.private_fraction": 0.4}
    calls: list[int] = []
    apply = PrivacyFilter.apply

    def counting(self, features, private, regions=None):
        calls.append(len(features))
        return apply(self, features, private, regions)

    monkeypatch.setattr(PrivacyFilter, "apply", counting)
    batch = FastDual(load_dual_config(None, **overrides), 2)
    fresh = FastDual(load_dual_config(None, **overrides), 2)
    calls.clear()  # the world interns every blurred copy when it is built: only the episodes' calls count
    traces = []
    for scenario, forget in ((batch, False), (fresh, True)):
        rng = np.random.default_rng(1)
        scenario.reset(np.array([3, 9]))
        trace = []
        for _ in range(scenario.config.rounds):
            if forget:
                scenario._filtered[:] = -1
            out = scenario.step(rng.random((2, scenario.n_robots, scenario.action_width)))
            trace.append((out.infos["privacy_blurred"], out.infos["privacy_dropped"], scenario.cloud(0)["row"]))
        traces.append(trace)
        if not forget:
            filtered = sum(calls)
            assert filtered == (batch._filtered >= 0).sum() > 0  # each private id once
    for (a, b, c), (x, y, z) in zip(*traces):
        assert np.array_equal(a, x) and np.array_equal(b, y) and np.array_equal(c, z)


def _episode(batch: FastDual, seeds: list[int], actions: list[np.ndarray]) -> list:
    obs, infos = batch.reset(np.array(seeds))
    out = [(obs, None, infos)]
    for step_actions in actions:
        step = batch.step(step_actions)
        out.append((step.observations, step.rewards, step.infos))
    return out


@pytest.mark.parametrize("kernel", ["inverse_distance", "cosine"])
def test_seeded_episode_is_deterministic_and_env_b_is_its_batch_of_one(kernel):
    """A whole submodular-labeled episode twice: bit for bit; each env against the batch of one with its seed
    and its actions: the same labels and uploads (integers), floats within 1e-4 (the batched head)."""
    cfg = load_dual_config(None, **SMALL, kernel=kernel)
    seeds = [2, 7, 11]
    width = FastDual(cfg, 1).action_width
    rng = np.random.default_rng(5)
    actions = [rng.random((3, cfg.n_robots, width)) for _ in range(cfg.rounds)]
    first, second = _episode(FastDual(cfg, 3), seeds, actions), _episode(FastDual(cfg, 3), seeds, actions)
    for (o1, r1, i1), (o2, r2, i2) in zip(first, second):
        assert np.array_equal(o1, o2) and (r1 is None or np.array_equal(r1, r2))
        assert all(np.array_equal(i1[key], i2[key]) for key in i1)
    assert (first[-1][2]["labels_used"] > 0).all()
    for b, seed in enumerate(seeds):
        single = _episode(FastDual(cfg, 1), [seed], [a[b:b + 1] for a in actions])
        for (obs, _, infos), (batch_obs, _, batch_infos) in zip(single, first):
            for key in ("labeled_from_robot", "uploaded", "uploaded_sample_ids", "labels_used", "cloud_counts"):
                assert np.array_equal(infos[key][0], batch_infos[key][b]), key
            for key in ("label_objective", "coverage_gain", "upload_objective", "validation_accuracy"):
                np.testing.assert_allclose(infos[key][0], batch_infos[key][b], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(obs[0], batch_obs[b], rtol=1e-4, atol=1e-5)
