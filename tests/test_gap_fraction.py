"""The gap-fraction action (issue 18): Greedy towards ``cloud + f (target - cloud)`` as a baseline
(``greedy-fraction:<f>``) and as the action map of ``--model gap-fraction`` in training and ``rllib:`` evaluation."""

from __future__ import annotations

import numpy as np
import pytest

import datagames_env
from baselines.fraction import greedy_fraction_shares, solve_greedy_fraction
from datagames_env.policy import make_policy

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
ray_group = pytest.mark.xdist_group("ray")


def _play(env, policies, seed, rounds):
    """Step ``env`` with the first policy; every policy acts on the same observations each round."""
    observations, infos = env.reset(seed=seed)
    for policy in policies:
        policy.reset(seed)
    out = []
    for _ in range(rounds):
        actions = [p.act(observations, infos) for p in policies]
        out.append((actions, infos))
        observations, _, _, _, infos = env.step(actions[0])
    return out


def test_fraction_one_is_greedy_and_fraction_zero_uploads_nothing():
    env = datagames_env.parallel_env("default", rounds=3)
    for seed in (100, 101):
        greedy, one, zero = make_policy("greedy", env), make_policy("greedy-fraction:1", env), \
            make_policy("greedy-fraction:0", env)
        for (g, f1, f0), infos in _play(env, [greedy, one, zero], seed, 3):
            for agent in g:  # the same compiled solver on the same numbers
                np.testing.assert_allclose(f1[agent], g[agent], rtol=0, atol=1e-12)
                assert not np.any(f0[agent])
    # the documented limit: all-zero shares upload nothing
    observations, infos = env.reset(seed=100)
    zero = make_policy("greedy-fraction:0", env)
    _, _, _, _, infos = env.step(zero.act(observations, infos))
    assert all(infos[a]["n_uploaded"] == 0 for a in env.possible_agents)


def test_each_robot_aims_at_its_fraction_of_the_gap_and_the_rule_names_bad_fractions():
    """With a budget that does not bind and perfect feasible matrices, robot i uploads exactly f_i (target - cloud)
    where the gap is positive (nothing where the cloud is already above the target)."""
    perfect = np.stack([np.eye(3)] * 3)
    cloud, target = np.array([4.0, 1.0, 9.0]), np.array([8.0, 3.0, 5.0])
    counts = solve_greedy_fraction(perfect, cloud, target, 100, [0.0, 0.25, 1.0])
    np.testing.assert_allclose(counts, [[0, 0, 0], [1.0, 0.5, 0], [4.0, 2.0, 0]], atol=1e-9)
    env = datagames_env.parallel_env("default", rounds=2)
    assert make_policy("greedy-fraction", env).fraction == pytest.approx(0.35)
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(ValueError, match="greedy-fraction"):
            make_policy(f"greedy-fraction:{bad}", env)
    with pytest.raises(ValueError, match="fraction must be finite and in \\[0, 1\\]; at index \\(0, 1\\)"):
        greedy_fraction_shares(np.ones((1, 2, 3, 3)) / 3, np.ones((1, 3)), np.ones(3), [[0.2, 1.2]], 2)


def test_batched_map_equals_one_env_at_a_time():
    """The vector runner's map over B envs is the per-env solve, row for row (the same arithmetic)."""
    venv = datagames_env.vector_env(3, "default", **SMALL)
    _, infos = venv.reset(seed=5)
    feasible = venv.batched.estimated_feasible_matrices()
    target = venv.batched.core.target_counts
    f = np.random.default_rng(0).random((3, SMALL["n_robots"]))
    shares = greedy_fraction_shares(feasible, infos["cloud_counts"], target, f, SMALL["n_cache"], infos["available"])
    for e in range(3):
        counts = solve_greedy_fraction(feasible[e], infos["cloud_counts"][e], target, SMALL["n_cache"], f[e],
                                       infos["available"][e])
        np.testing.assert_array_equal(shares[e], counts / SMALL["n_cache"])


def test_fraction_beta_is_a_distribution_on_the_encoded_fraction():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ray.rllib")
    from agents.modules import FractionBeta

    inputs = torch.tensor([[0.0, 0.0], [2.0, 1.0], [-3.0, -1.0]])
    dist = FractionBeta.from_logits(inputs)
    torch.manual_seed(0)
    action = dist.sample()
    assert action.shape == (3, 1) and bool(((action > -1) & (action < 1)).all())
    f = (action[:, 0] + 1) / 2
    np.testing.assert_allclose(dist.logp(action).numpy(), dist.beta.log_prob(f).numpy(), rtol=1e-6)
    mode = dist.to_deterministic().sample()
    np.testing.assert_allclose(((mode[:, 0] + 1) / 2).numpy(), torch.sigmoid(inputs[:, 0]).numpy(), rtol=1e-6)
    assert torch.isfinite(dist.entropy()).all() and float(dist.kl(dist).abs().max()) < 1e-6


def test_gap_fraction_needs_the_vector_runner():
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, build_ppo_config

    with pytest.raises(ValueError, match="--vector-runner"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction"))


@ray_group
def test_gap_fraction_trains_and_its_checkpoint_evaluates_through_rllib(tmp_path, monkeypatch, one_torch_thread,
                                                                        play_moved_checkpoint):
    """Two PPO updates; the checkpoint names no folder of this machine, and ``rllib:`` plays it through the same
    map (its actions are Greedy towards the module's fraction)."""
    pytest.importorskip("ray.rllib")
    import ray

    from agents.rllib_train import TrainSettings, init_ray, train

    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    init_ray(None, 1)
    try:
        result = train(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction", vector_runner=True,
                                     train_batch_size=36, minibatch_size=18, num_epochs=1, iterations=2,
                                     progress=False, checkpoint_every=0, out="runs", lr=1e-3, lr_final=1e-4,
                                     fraction_concentration=40.0, initial_fraction=0.3))
    finally:
        ray.shutdown()
    assert [h["agent_steps"] for h in result["history"]] == [36, 72]
    # the learning rate decays linearly over the run (logged after each update: 1e-3 -> 5.5e-4 -> 1e-4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / result["run_dir"] / "tensorboard"))
    events.Reload()
    lrs = [e.value for e in events.Scalars("learners/shared/default_optimizer_learning_rate")]
    np.testing.assert_allclose(lrs, [5.5e-4, 1e-4], rtol=1e-5)
    env, policy, record = play_moved_checkpoint(result, "gap-fraction", "default", SMALL)
    observations, infos = env.reset(seed=301)
    actions = policy.act(observations, infos)
    fractions = policy._decide(observations)
    assert all(0.0 <= fractions[a][0] <= 1.0 for a in fractions)
    # two small updates leave the policy near its configured start (--initial-fraction 0.3)
    assert all(abs(fractions[a][0] - 0.3) < 0.05 for a in fractions)
    expected = {a: solve_greedy_fraction(infos[a]["feasible_matrix"][None], infos[a]["cloud_counts"],
                                         infos[a]["target_counts"], SMALL["n_cache"], fractions[a][0],
                                         infos[a]["available"][None])[0] / SMALL["n_cache"] for a in actions}
    for agent in actions:
        assert env.action_space(agent).contains(actions[agent])
        np.testing.assert_allclose(actions[agent], expected[agent], rtol=0, atol=1e-6)


def _gap_fraction_module(**settings):
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, probe_spec

    face, spec = probe_spec(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction",
                                          vector_runner=True, **settings))
    face.close()
    return spec.build(), face


def _starting_beta(module, face):
    import torch
    from ray.rllib.core.columns import Columns

    observations, _ = face.par_env.reset(seed=100)
    obs = torch.as_tensor(np.stack([observations[a] for a in face.par_env.possible_agents]), dtype=torch.float32)
    with torch.no_grad():
        dist = module.action_dist_cls.from_logits(module.forward_inference({Columns.OBS: obs})[
            Columns.ACTION_DIST_INPUTS])
    return dist.mean.numpy(), (dist.beta.concentration0 + dist.beta.concentration1).numpy()


def test_initial_fraction_and_concentration_set_the_starting_beta_and_the_defaults_are_unchanged():
    """``--initial-fraction`` / ``--fraction-concentration`` start the Beta there (the head's outputs are small,
    gain 0.01, so the start is within a few percent); the defaults leave the old start (mean 0.5, k = 8) and the
    old module config, so old checkpoints and commands mean the same."""
    module, face = _gap_fraction_module(fraction_concentration=40.0, initial_fraction=0.3)
    mean, k = _starting_beta(module, face)
    np.testing.assert_allclose(mean, 0.3, atol=0.02)
    np.testing.assert_allclose(k, 40.0, rtol=0.05)
    default, face = _gap_fraction_module()
    assert "initial_concentration" not in default.model_config and "initial_fraction" not in default.model_config
    assert not default.head[-1].bias.detach().numpy().any()
    mean, k = _starting_beta(default, face)
    np.testing.assert_allclose(mean, 0.5, atol=0.02)
    np.testing.assert_allclose(k, 8.0, rtol=0.05)


def test_fraction_options_name_bad_values_and_need_the_gap_fraction_model():
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, build_ppo_config, lr_schedule

    with pytest.raises(ValueError, match="initial_concentration must be in \\[2, 1000\\]"):
        _gap_fraction_module(fraction_concentration=1.0)
    with pytest.raises(ValueError, match="initial_fraction must be in \\(0, 1\\)"):
        _gap_fraction_module(initial_fraction=1.0)
    with pytest.raises(ValueError, match="--fraction-concentration and --initial-fraction need --model gap-fraction"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), fraction_concentration=40.0))
    # the learning-rate schedule: RLlib's learner reads it at the lifetime env steps (agent steps / robots)
    assert lr_schedule(TrainSettings(lr=1e-3), 3) == 1e-3
    settings = TrainSettings(lr=1e-3, lr_final=1e-4, iterations=10, train_batch_size=300)
    assert lr_schedule(settings, 3) == [[0, 1e-3], [1000, 1e-4]]
    with pytest.raises(ValueError, match="--lr-final"):
        lr_schedule(TrainSettings(lr_final=-1.0), 3)


def test_train_cli_takes_the_schedule_and_fraction_options():
    from datagames_env.harness.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--lr-final", "1e-4", "--fraction-concentration", "40",
                              "--initial-fraction", "0.4"])
    assert (args.lr_final, args.fraction_concentration, args.initial_fraction) == (1e-4, 40.0, 0.4)
    defaults = parser.parse_args(["train"])
    assert (defaults.lr_final, defaults.fraction_concentration, defaults.initial_fraction) == (None, 8.0, 0.5)
    for bad in (["--fraction-concentration", "1"], ["--initial-fraction", "1"], ["--lr-final", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", *bad])
    help_text = parser._subparsers._group_actions[0].choices["train"].format_help()
    assert "--lr-final" in help_text and "--fraction-concentration" in help_text and "--initial-fraction" in help_text


# --fraction-concentration-final: an annealed floor on the Beta's concentration (exploration noise schedule)


def test_concentration_floor_bounds_the_beta_below_and_leaves_its_mean():
    """The floor lifts the module's concentration output (k ~ 8 at the start) to at least the floor, where the
    learned one is below it; the mean is unchanged; None (the default) lifts the bound; bad floors are named."""
    module, face = _gap_fraction_module()
    assert module.concentration_floor is None
    mean, k = _starting_beta(module, face)
    module.set_concentration_floor(100.0)
    floored_mean, floored_k = _starting_beta(module, face)
    np.testing.assert_allclose(floored_mean, mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(floored_k, 100.0, rtol=1e-4)
    module.set_concentration_floor(4.0)  # below the learned concentration: no effect
    np.testing.assert_allclose(_starting_beta(module, face)[1], k, rtol=1e-5)
    module.set_concentration_floor(4.0, pinned=True)  # pinned: the floor is also a ceiling
    np.testing.assert_allclose(_starting_beta(module, face), (mean, np.full_like(k, 4.0)), rtol=1e-4, atol=1e-6)
    module.set_concentration_floor(None)
    assert not module.concentration_pinned
    np.testing.assert_allclose(_starting_beta(module, face)[1], k, rtol=1e-5)
    for bad in (1.0, 2000.0, float("nan")):
        with pytest.raises(ValueError, match="concentration floor must be in \\[2, 1000\\]"):
            module.set_concentration_floor(bad)
    assert module.concentration_floor is None
    # not part of the module's state: checkpoints with and without the schedule hold the same keys
    module.set_concentration_floor(50.0)
    assert set(module.state_dict()) == set(_gap_fraction_module()[0].state_dict())


def test_concentration_schedule_rises_from_two_to_the_final_floor_and_is_off_by_default():
    pytest.importorskip("ray.rllib")
    from agents.rllib_train import TrainSettings, build_ppo_config, concentration_floor

    assert TrainSettings().fraction_concentration_final is None
    assert all(concentration_floor(TrainSettings(iterations=5), i) is None for i in range(5))
    linear = TrainSettings(iterations=5, fraction_concentration_final=202.0)
    np.testing.assert_allclose([concentration_floor(linear, i) for i in range(7)], [2, 52, 102, 152, 202, 202, 202])
    geometric = TrainSettings(iterations=3, fraction_concentration_final=200.0,
                              fraction_concentration_schedule="geometric")
    np.testing.assert_allclose([concentration_floor(geometric, i) for i in range(3)], [2, 20, 200])
    pinned = TrainSettings(iterations=3, fraction_concentration_final=200.0, fraction_concentration=8.0,
                           fraction_concentration_schedule="geometric", fraction_concentration_pinned=True)
    np.testing.assert_allclose([concentration_floor(pinned, i) for i in range(3)], [8, 40, 200])
    with pytest.raises(ValueError, match="--fraction-concentration-pinned needs --fraction-concentration-final"):
        concentration_floor(TrainSettings(fraction_concentration_pinned=True), 0)
    with pytest.raises(ValueError, match="--fraction-concentration-final must be in \\[2, 1000\\]"):
        concentration_floor(TrainSettings(fraction_concentration_final=1e4), 0)
    with pytest.raises(ValueError, match="--fraction-concentration-schedule: 'cosine'"):
        concentration_floor(TrainSettings(fraction_concentration_schedule="cosine"), 0)
    with pytest.raises(ValueError, match="--fraction-concentration-final and --fraction-concentration-pinned need"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), fraction_concentration_final=100.0))
    with pytest.raises(ValueError, match="not by a Ray Tune sweep"):
        build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), model="gap-fraction",
                                       vector_runner=True, tune=True, fraction_concentration_final=100.0))


def test_train_cli_takes_the_concentration_schedule():
    from datagames_env.harness.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--fraction-concentration-final", "200",
                              "--fraction-concentration-schedule", "geometric"])
    assert (args.fraction_concentration_final, args.fraction_concentration_schedule) == (200.0, "geometric")
    defaults = parser.parse_args(["train"])
    assert (defaults.fraction_concentration_final, defaults.fraction_concentration_schedule) == (None, "linear")
    assert not defaults.fraction_concentration_pinned and parser.parse_args(
        ["train", "--fraction-concentration-pinned"]).fraction_concentration_pinned
    for bad in (["--fraction-concentration-final", "1"], ["--fraction-concentration-schedule", "cosine"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", *bad])


@ray_group
def test_training_applies_the_floor_to_the_learner_and_the_sampling_runner(tmp_path, monkeypatch, one_torch_thread):
    """Each iteration sets the schedule's floor on the learner's module and the env runner's before sampling, so
    the sampled Beta (its stored ``action_dist_inputs``) and the learner's forward pass use the same floor."""
    pytest.importorskip("ray.rllib")
    import ray
    import torch
    from ray.rllib.core.columns import Columns

    import agents.rllib_train as rllib_train
    from agents.modules import FractionBeta

    seen = []
    real = rllib_train.set_concentration_floor

    def spy(algo, floor, pinned=False):
        assert not pinned
        real(algo, floor, pinned)
        learner_floors = [r.get() for r in algo.learner_group.foreach_learner(
            lambda learner: learner.module["shared"].unwrapped().concentration_floor)]
        runner = algo.env_runner_group.local_env_runner
        episodes = runner.sample(explore=True)
        inputs = torch.as_tensor(np.concatenate([e.dist_inputs.reshape(-1, 2) for e in episodes]))
        beta = FractionBeta.from_logits(inputs).beta
        obs = torch.as_tensor(np.concatenate([e.obs[:, :-1].reshape(-1, e.obs.shape[-1]) for e in episodes]))
        with torch.no_grad():
            learner_inputs = [r.get() for r in algo.learner_group.foreach_learner(
                lambda learner: learner.module["shared"].unwrapped().forward_train({Columns.OBS: obs})[
                    Columns.ACTION_DIST_INPUTS].numpy())]
        seen.append((floor, learner_floors, (beta.concentration0 + beta.concentration1).min().item()))
        np.testing.assert_allclose(learner_inputs[0], inputs.numpy(), rtol=0, atol=1e-5)

    monkeypatch.setattr(rllib_train, "set_concentration_floor", spy)
    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    rllib_train.init_ray(None, 1)
    try:
        result = rllib_train.train(rllib_train.TrainSettings(
            config="default", overrides=dict(SMALL), model="gap-fraction", vector_runner=True, train_batch_size=36,
            minibatch_size=18, num_epochs=1, iterations=2, progress=False, checkpoint_every=0, out="runs",
            fraction_concentration_final=100.0))
    finally:
        ray.shutdown()
    assert [h["concentration_floor"] for h in result["history"]] == [2.0, 100.0]
    assert [(floor, learners) for floor, learners, _ in seen] == [(2.0, [2.0]), (100.0, [100.0])]
    assert seen[1][2] >= 100.0 * (1 - 1e-4)  # every sampled Beta at least as concentrated as the floor
    assert seen[0][2] < 20.0  # the floor of 2 leaves the learned concentration (about 8)
