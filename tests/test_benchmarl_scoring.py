"""BenchMARL's per-sample scorer (``--model sample-scoring``, ``agents.benchmarl_models``): it builds on p2p's
layout, trains one short MAPPO iteration, scores each sample with one shared network, and refuses layouts
without sample rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("benchmarl")

TINY_P2P = {"rounds": 2, "obs_per_round": 30, "perception.train_steps": 10}


def _settings(tmp_path, config, overrides, **kw):
    from agents.rllib_train import TrainSettings

    return TrainSettings(config=config, overrides=dict(overrides), iterations=1, train_batch_size=12,
                         minibatch_size=6, num_epochs=1, out=str(tmp_path), run_name="run", progress=False,
                         checkpoint_every=0, model="sample-scoring", gamma=0.0, **kw)


def test_sample_scoring_trains_on_p2p_and_shares_one_network_across_samples(tmp_path):
    import torch
    from tensordict import TensorDict

    from agents.benchmarl_models import SampleScoring, sample_layout
    from agents.benchmarl_train import POLICY_FILE, train_mappo

    torch.set_num_threads(1)
    result = train_mappo(_settings(tmp_path, "p2p_default", TINY_P2P), log=lambda *a: None)
    assert result["history"][-1]["agent_steps"] > 0
    checkpoint = tmp_path / "run" / "checkpoint"
    meta = json.loads((checkpoint / "datagames_meta.json").read_text())
    assert meta["model"] == "sample-scoring" and meta["action"] == "env"
    actor = torch.load(checkpoint / POLICY_FILE, weights_only=False)
    models = [m for m in actor.modules() if isinstance(m, SampleScoring)]
    assert len(models) == 1
    model = models[0]

    import datagames_env

    layout = sample_layout(datagames_env.vector_env(1, "p2p_default", **TINY_P2P).config)
    n_ctx, n_s, d = layout["context_dim"], layout["n_samples"], layout["sample_dim"]
    assert (model.context_dim, model.n_samples, model.sample_dim) == (n_ctx, n_s, d)
    n_robots, obs_dim = meta["observation_shape"]
    obs = torch.rand(4, n_robots, obs_dim) * 2 - 1
    td = TensorDict({("robots", "observation"): obs}, batch_size=[4])
    out = model(td.clone()).get(model.out_key)
    assert out.shape[-1] % n_s == 0 and out.shape[:-1] == (4, n_robots)
    # permuting the samples permutes every per-sample output block the same way (one network per sample)
    perm = torch.randperm(n_s)
    samples = obs[..., n_ctx:n_ctx + n_s * d].reshape(4, n_robots, n_s, d)[..., perm, :]
    permuted = torch.cat([obs[..., :n_ctx], samples.reshape(4, n_robots, n_s * d), obs[..., n_ctx + n_s * d:]], -1)
    out_p = model(TensorDict({("robots", "observation"): permuted}, batch_size=[4])).get(model.out_key)
    k = out.shape[-1] // n_s
    torch.testing.assert_close(out_p.reshape(4, n_robots, k, n_s), out.reshape(4, n_robots, k, n_s)[..., perm],
                               rtol=1e-5, atol=1e-6)
    # the actor writes one action (a score in [0, 1]) per sample
    action = actor(TensorDict({("robots", "observation"): obs}, batch_size=[4])).get(("robots", "action"))
    assert action.shape == (4, n_robots, n_s) and bool(((action >= 0) & (action <= 1)).all())


def test_sample_scoring_refuses_the_allocation_layout_before_any_run_folder(tmp_path):
    from agents.benchmarl_train import train_mappo

    settings = _settings(tmp_path, "default", {"n_robots": 3, "rounds": 2, "obs_per_round": 30})
    with pytest.raises(ValueError, match="sample-scoring.*'datagames' scenario.*allocation.*no per-sample rows"):
        train_mappo(settings, log=lambda *a: None)
    assert not (tmp_path / "run").exists()


def test_sample_scoring_config_names_bad_scales():
    from agents.benchmarl_models import SampleScoringConfig

    with pytest.raises(ValueError, match="sample_scale must have 3 entries, got 2"):
        SampleScoringConfig(context_dim=2, n_samples=4, sample_dim=3, context_scale=[1.0, 1.0], sample_scale=[1.0, 1.0])
