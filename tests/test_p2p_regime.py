"""p2p_default's regime (issue 19): private samples in the default, and the batched gu rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from baselines.p2p_policies import BatchedGUPolicy, _StackedUtilityNets
from datagames_env.scenarios import make_batched
from datagames_env.scenarios.p2p import load_p2p_config

SMALL = {"rounds": 2, "obs_per_round": 40}


def test_the_default_has_private_samples_and_keeps_what_it_receives():
    cfg = load_p2p_config("p2p_default")
    assert cfg.privacy.private_fraction > 0 and cfg.privacy.mode == "blur"
    assert cfg.receiver_keeps == "all"


@pytest.mark.parametrize("mode, counter", [("blur", "total_blurred"), ("drop", "total_dropped")])
def test_the_privacy_filter_acts_in_the_default(mode, counter):
    batch = make_batched("p2p_default", 3, **SMALL, **{"privacy.mode": mode})
    batch.reset(np.arange(3))
    rng = np.random.default_rng(0)
    for _ in range(SMALL["rounds"]):
        step = batch.step(rng.random((3, batch.n_robots, batch.action_width)))
    assert step.infos[counter].sum() > 0
    other = "total_dropped" if mode == "blur" else "total_blurred"
    assert step.infos[other].sum() == 0


def test_stacked_nets_leave_robots_outside_the_mask_untouched():
    nets = _StackedUtilityNets([1, 2, 3], in_dim=4, hidden=8, lr=1e-2)
    before = [p.detach().clone() for p in nets.params]
    x, u = torch.randn(3, 20, 4), torch.rand(3, 20)
    nets.train(x, u, torch.tensor([20.0, 20.0, 20.0]), torch.tensor([True, False, True]), 5,
               torch.Generator().manual_seed(0))
    for p, q in zip(nets.params, before):
        assert torch.equal(p[1], q[1])
        assert not torch.equal(p[0], q[0]) and not torch.equal(p[2], q[2])
    assert nets.t.tolist() == [5.0, 0.0, 5.0]


def _stub_batch(num_envs: int, n_robots: int, n_samples: int = 40, dim: int = 6, memory: int = 200):
    return SimpleNamespace(num_envs=num_envs, n_robots=n_robots, n_samples=n_samples, n_share=8,
                           sample_feature_dim=dim, config=SimpleNamespace(feedback_memory=memory),
                           obs_layout={"samples": slice(2, 2 + n_samples * dim)})


def test_batched_gu_learns_each_robots_own_feedback():
    # Robot 0 of every env is rewarded for a positive first feature, robot 1 for a negative one.
    batch, rng = _stub_batch(2, 2), np.random.default_rng(0)
    gu = BatchedGUPolicy(batch, explore=0.0)
    gu.reset(0)
    size = 160
    features = rng.normal(size=(2, 2, 200, 6)).astype(np.float32)
    features[:, :, size:] = 0.0
    sign = np.array([1.0, -1.0])[None, :, None]
    utilities = ((features[..., 0] * sign) > 0).astype(np.float32)
    utilities[:, :, size:] = 0.0
    infos = {"feedback_memory_features": features, "feedback_memory_utilities": utilities,
             "feedback_memory_size": np.full((2, 2), size)}
    obs = rng.normal(size=(2, 2, 2 + 40 * 6)).astype(np.float32)
    scores = gu.act(obs, infos)
    assert scores.shape == (2, 2, 40)
    samples = obs[..., 2:].reshape(2, 2, 40, 6)
    top = np.argsort(-scores, axis=2)[..., :8]
    first = np.take_along_axis(samples[..., 0], top, axis=2)
    assert ((first[:, 0] > 0).mean() >= 0.85) and ((first[:, 1] < 0).mean() >= 0.85)


def test_batched_gu_runs_on_the_default():
    batch = make_batched("p2p_default", 2, **SMALL)
    gu = BatchedGUPolicy(batch, train_steps=5)
    gu.reset(0)
    obs, infos = batch.reset(np.arange(2))
    for _ in range(SMALL["rounds"]):
        scores = gu.act(obs, infos)
        assert scores.shape == (2, batch.n_robots, batch.action_width) and np.isfinite(scores).all()
        step = batch.step(scores)
        obs, infos = step.observations, step.infos
    assert gu.core.trained.all()


def test_batched_gu_needs_the_feedback_memory():
    with pytest.raises(ValueError, match="feedback_memory"):
        BatchedGUPolicy(_stub_batch(1, 2, memory=0))
