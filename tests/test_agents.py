"""Learned policies: the RLlib adapter (RLlib's own env checker), the scoring modules, a real RLlib and SB3
training loop with checkpoint, resume and evaluation in the harness, and the SB3 VecEnv's contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")
pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")

from datagames_env.faces.rllib import RLlibMultiAgentEnv
from datagames_env.faces.sb3 import DataGamesSB3VecEnv
from datagames_env.harness import Job, evaluate, run_job
from datagames_env.faces.vector import DataGamesVectorEnv

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
SELECTION = dict(SMALL, action_mode="selection")

# Every test that starts Ray runs in one xdist worker (`--dist loadgroup`): one Ray runtime, not two on 2 cores.
ray_group = pytest.mark.xdist_group("ray")


@pytest.fixture
def fresh_ray():
    """Each Ray test starts and ends without a Ray runtime, so no test inherits another's (or its failures)."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


# -- the RLlib environment ------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [SMALL, SELECTION], ids=["allocation", "selection"])
def test_rllib_env_checker_passes(overrides):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    env = RLlibMultiAgentEnv({"config": "default", "overrides": overrides})
    check_multiagent_environments(env)
    assert env.possible_agents == [f"robot_{i}" for i in range(3)]
    assert env.get_observation_space("robot_1") is env.get_observation_space("robot_1")


def test_rllib_env_episode_end_fresh_dicts_and_render():
    env = RLlibMultiAgentEnv({"config": "default", "overrides": SMALL, "render_mode": "ansi"})
    obs, infos = env.reset(seed=3)
    assert list(obs) == env.possible_agents and all(obs[a] in env.observation_spaces[a] for a in obs)
    assert all(isinstance(v, (int, float)) for info in infos.values() for v in info.values())  # scalars only
    actions = {a: env.action_spaces[a].sample() for a in obs}
    for round_ in range(SMALL["rounds"]):
        obs, rewards, terminateds, truncateds, infos = env.step(actions)
        last = round_ == SMALL["rounds"] - 1
        assert terminateds["__all__"] is last and truncateds["__all__"] is False
        assert all(terminateds[a] is last and truncateds[a] is False for a in env.possible_agents)
        assert len(set(rewards.values())) == 1  # the shared potential
        obs.clear()  # RLlib may mutate what it gets: the env must not care
    assert env.agents == []
    assert "round" in env.render()
    # a second episode from the same seed replays the first
    first, _ = env.reset(seed=3)
    again = RLlibMultiAgentEnv({"config": "default", "overrides": SMALL}).reset(seed=3)[0]
    assert all(np.array_equal(first[a], again[a]) for a in first)


def test_rllib_env_rejects_unknown_env_config_keys():
    with pytest.raises(ValueError, match="unknown keys.*'confg'"):
        RLlibMultiAgentEnv({"confg": "default"})


# -- the scoring modules ----------------------------------------------------------------------------------------
def _module(overrides):
    import datagames_env
    from agents.rllib_train import TrainSettings, module_spec

    par = datagames_env.parallel_env(**overrides)
    spec = module_spec(par, TrainSettings(hidden=(16,)))
    spec.observation_space = par.observation_space(par.possible_agents[0])
    spec.action_space = par.action_space(par.possible_agents[0])
    return par, spec.build()


def test_sample_scoring_module_is_permutation_equivariant_over_samples():
    """The GU module scores each sample with one shared network: permuting the samples permutes the scores."""
    from ray.rllib.core.columns import Columns

    par, module = _module(SELECTION)
    obs, _ = par.reset(seed=0)
    x = torch.as_tensor(np.stack(list(obs.values())))
    layout = par.obs_layout
    n = SELECTION["obs_per_round"]
    perm = np.random.default_rng(0).permutation(n)
    samples = x[:, layout["samples"]].reshape(len(x), n, -1)
    x_perm = torch.cat([x[:, :layout["samples"].start], samples[:, perm].reshape(len(x), -1)], dim=1)
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS]
        out_perm = module.forward_inference({Columns.OBS: x_perm})[Columns.ACTION_DIST_INPUTS]
        values = module.compute_values({Columns.OBS: x})
        values_perm = module.compute_values({Columns.OBS: x_perm})
    assert out.shape == (len(x), n)  # one logit per sample: Plackett-Luce over the n_cache picks
    torch.testing.assert_close(out_perm[:, :n], out[:, :n][:, perm])
    torch.testing.assert_close(values_perm, values, rtol=1e-5, atol=1e-6)  # mean pooling: order-free


def test_class_scoring_module_is_equivariant_to_relabelling_classes():
    from ray.rllib.core.columns import Columns

    par, module = _module(SMALL)
    obs, _ = par.reset(seed=0)
    x = torch.as_tensor(np.stack(list(obs.values())))
    c = par.n_classes
    perm = np.random.default_rng(1).permutation(c)
    from agents.modules import CLASS_BLOCKS

    k = len(CLASS_BLOCKS)
    blocks = x[:, :k * c].reshape(len(x), k, c)[:, :, perm].reshape(len(x), -1)
    x_perm = torch.cat([blocks, x[:, k * c:]], dim=1)
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS][:, :c]
        out_perm = module.forward_inference({Columns.OBS: x_perm})[Columns.ACTION_DIST_INPUTS][:, :c]
    torch.testing.assert_close(out_perm, out[:, perm])


def test_module_spec_rejects_a_layout_mismatch():
    import datagames_env
    from agents.rllib_train import TrainSettings, module_spec

    with pytest.raises(ValueError, match="--model"):
        module_spec(datagames_env.parallel_env(**SMALL), TrainSettings(model="transformer"))


def test_top_k_plackett_luce_is_a_distribution_over_ordered_picks():
    """logp sums to 1 over all ordered k-picks; Gumbel top-k sampling hits the Plackett-Luce probabilities;
    the encoded action makes the environment's top-k return the picks; deterministic = the top-k logits."""
    import itertools

    from agents.distributions import top_k_distribution

    dist_cls = top_k_distribution(2)
    logits = torch.tensor([[0.5, -1.0, 2.0, 0.0, 0.3]])
    dist = dist_cls.from_logits(logits)
    probs = {}
    for pair in itertools.permutations(range(5), 2):
        probs[pair] = float(torch.exp(dist.logp(dist._encode(torch.tensor([list(pair)])))))
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    many = dist_cls.from_logits(logits.expand(40000, 5)).sample()
    picks = torch.topk(many, 2, dim=-1).indices
    assert ((many > 0).sum(-1) == 2).all()  # exactly k samples carry a score
    for pair in [(2, 0), (2, 4), (0, 2)]:
        freq = float(((picks[:, 0] == pair[0]) & (picks[:, 1] == pair[1])).float().mean())
        assert freq == pytest.approx(probs[pair], abs=4 * (probs[pair] / 40000) ** 0.5 + 1e-3)
    det = dist.to_deterministic().sample()
    assert torch.topk(det, 2).indices.tolist() == [[2, 0]]


def test_counts_multinomial_is_a_distribution_over_allocations():
    """The n_cache uploads as multinomial draws: exact probabilities sum to 1 over all allocations, sampled counts
    average n * softmax(logits), the encoded action maps back to shares counts / n, and the mode spends n."""
    import itertools

    from agents.distributions import counts_distribution

    dist_cls = counts_distribution(3)
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    dist = dist_cls.from_logits(logits)
    total = sum(float(torch.exp(dist.logp(dist._encode(torch.tensor([list(c)])))))
                for c in itertools.product(range(4), repeat=3) if sum(c) == 3)
    assert total == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    actions = dist_cls.from_logits(logits.expand(20000, 3)).sample()
    shares = (actions + 1.0) / 2.0  # what RLlib's action normalisation hands the environment
    torch.testing.assert_close(shares.sum(-1), torch.ones(20000))
    torch.testing.assert_close((shares * 3).mean(0), 3 * torch.softmax(logits, -1)[0], atol=0.03, rtol=0)
    mode = dist._decode(dist.to_deterministic().sample())
    assert mode.sum() == 3 and mode.tolist() == [[1.0, 0.0, 2.0]]


# -- a real RLlib training loop ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rllib_run(tmp_path_factory):
    import ray

    from agents.rllib_train import TrainSettings, train

    ray.shutdown()
    out = tmp_path_factory.mktemp("rllib")
    settings = TrainSettings(config="default", overrides=dict(SMALL), iterations=2, train_batch_size=180,
                             minibatch_size=60, num_epochs=2, out=str(out), run_name="run", progress=False,
                             checkpoint_every=1)
    try:
        result = train(settings, log=lambda *a: None)
        yield settings, result
    finally:
        ray.shutdown()


def test_masked_standardize_ignores_the_artificial_rows():
    from agents.ppo_learner import masked_explained_variance, masked_standardize

    values = torch.tensor([0.1, -0.2, 0.3, 2.0, 0.0, 0.4, 2.4])  # rows 3 and 6: large bootstrap-row advantages
    mask = torch.tensor([True, True, True, False, True, True, False])
    out = masked_standardize(values, mask)
    assert abs(out[mask].mean().item()) < 1e-6 and abs(out[mask].std(unbiased=False).item() - 1.0) < 1e-6
    plain = (values - values.mean()) / values.std(unbiased=False)
    assert plain[mask].mean().item() < -0.3  # what RLlib's unmasked standardisation does to the real rows
    # a perfect prediction on the real rows explains all their variance, whatever the artificial rows hold
    targets = values.clone()
    predictions = torch.where(mask, values, torch.tensor(-5.0))
    assert masked_explained_variance(targets, predictions, mask).item() == pytest.approx(1.0)


@ray_group
def test_rllib_learner_standardises_advantages_over_real_rows_of_short_episodes(fresh_ray):
    """The learner pipeline of every training: on a batch of 3-round episodes (1 artificial row in 4), the real
    rows' advantages have mean 0 and std 1."""
    import ray
    from ray.rllib.core.columns import Columns
    from ray.rllib.evaluation.postprocessing import Postprocessing

    from agents.ppo_learner import MaskedGeneralAdvantageEstimation
    from agents.rllib_train import TrainSettings, build_ppo_config, init_ray

    init_ray(None, 1)
    settings = TrainSettings(config="default", overrides=dict(SMALL), train_batch_size=90, minibatch_size=45,
                             num_epochs=1, progress=False, num_envs_per_env_runner=1)  # 60 steps: 6 whole episodes
    algo = build_ppo_config(settings).build_algo()
    try:
        learner = algo.learner_group._learner
        pieces = [type(c) for c in learner._learner_connector.connectors]
        assert MaskedGeneralAdvantageEstimation in pieces
        episodes = algo.env_runner.sample(num_timesteps=60, random_actions=False)
        batch = learner._learner_connector(rl_module=learner.module, episodes=episodes, batch={},
                                           metrics=learner.metrics)["shared"]
        advantages, mask = batch[Postprocessing.ADVANTAGES], batch[Columns.LOSS_MASK].bool()
        assert 0 < (~mask).sum() < mask.sum()  # artificial rows are there
        assert abs(advantages[mask].mean().item()) < 1e-5
        assert advantages[mask].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
        # the last real row of each episode is a termination: nothing is bootstrapped past the task's end
        assert batch[Columns.TERMINATEDS].sum() > 0
    finally:
        algo.stop()
        ray.shutdown()


@ray_group
def test_rllib_training_episodes_are_fresh_draws_not_one_replayed_seed(fresh_ray):
    """RLlib 2.60 with batch_mode complete_episodes re-seeds the env with the same seed at every sample() call, so
    every training episode replayed one seed; the training config must sample new episodes (new class mixes)."""
    import ray

    from agents.rllib_train import TrainSettings, build_ppo_config, init_ray

    init_ray(None, 1)
    algo = build_ppo_config(TrainSettings(config="default", overrides=dict(SMALL), train_batch_size=90,
                                          minibatch_size=45, num_epochs=1, progress=False)).build_algo()
    try:
        episodes = [e for _ in range(3) for e in algo.env_runner.sample()]
        assert all(e.is_done and len(e) == SMALL["rounds"] for e in episodes)  # fragments are whole episodes
        firsts = {np.asarray(e.agent_episodes["robot_0"].get_observations(0)).tobytes() for e in episodes}
        assert len(firsts) == len(episodes) == 3 * 90 // (SMALL["rounds"] * SMALL["n_robots"])
    finally:
        algo.stop()
        ray.shutdown()


@ray_group
def test_rllib_training_writes_checkpoint_history_and_tensorboard(rllib_run):
    _settings, result = rllib_run
    history = result["history"]
    assert [h["iteration"] for h in history] == [1, 2]
    assert history[-1]["agent_steps"] >= 2 * 180 and np.isfinite(history[-1]["episode_return_mean"])
    checkpoint = result["checkpoint"]
    meta = json.loads((Path(checkpoint) / "datagames_meta.json").read_text())
    assert meta["framework"] == "rllib" and meta["iteration"] == 2
    tensorboard = list((Path(result["run_dir"]) / "tensorboard").glob("events.*"))
    assert tensorboard, "no TensorBoard event file written"


@ray_group
def test_rllib_checkpoint_resumes_and_evaluates_in_the_harness(rllib_run, tmp_path):
    from dataclasses import replace

    from agents.rllib_train import train
    from datagames_env.config import load_config

    settings, result = rllib_run
    resumed = train(replace(settings, iterations=1, resume=result["checkpoint"], run_name="resumed",
                            checkpoint_every=0), log=lambda *a: None)
    meta = json.loads((Path(resumed["checkpoint"]) / "datagames_meta.json").read_text())
    assert meta["iteration"] == 3  # continued from iteration 2
    spec = f"rllib:{result['checkpoint']}"
    cfg = load_config("default", **SMALL).model_dump()
    one = run_job(Job(cfg, spec, 5))
    two = run_job(Job(cfg, spec, 5))
    assert one["final_distance"] == two["final_distance"]  # deterministic actions, same seed
    sampled = [run_job(Job(cfg, f"rllib-sample:{result['checkpoint']}", seed)) for seed in (5, 5, 6)]
    counts = [[r["cloud_counts"] for r in episode["rounds"]] for episode in sampled]
    assert counts[0] == counts[1]  # the sampled policy is seeded by reset(seed)
    assert counts[0] != counts[2]
    payload = evaluate("default", ["greedy", spec], [0, 1], tmp_path, workers=1, progress=False, **SMALL)
    assert {e["policy"] for e in payload["episodes"]} == {"greedy", spec}


@ray_group
def test_rllib_trains_the_gu_module_in_selection_mode(tmp_path, fresh_ray):
    import ray

    import datagames_env
    from agents.modules import SampleScoringModule
    from agents.policies import RLlibCheckpointPolicy
    from agents.rllib_train import TrainSettings, train

    settings = TrainSettings(config="default", overrides=dict(SELECTION), iterations=1, train_batch_size=90,
                             minibatch_size=45, num_epochs=1, out=str(tmp_path), run_name="gu", progress=False,
                             per_robot=True)
    try:
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    env = datagames_env.parallel_env(**SELECTION)
    policy = RLlibCheckpointPolicy(env, result["checkpoint"])
    assert set(policy.modules) == set(env.possible_agents)  # --per-robot: one module each
    assert all(isinstance(m, SampleScoringModule) for m in policy.modules.values())
    obs, infos = env.reset(seed=0)
    actions = policy.act(obs, infos)
    assert all(actions[a].shape == (SELECTION["obs_per_round"],) and env.action_space(a).contains(actions[a])
               for a in env.possible_agents)


def test_checkpoint_policies_give_clear_errors(tmp_path):
    import datagames_env
    from datagames_env.policy import make_policy

    env = datagames_env.parallel_env(**SMALL)
    with pytest.raises(ValueError, match="does not exist"):
        make_policy(f"rllib:{tmp_path / 'nope'}", env)
    with pytest.raises(ValueError, match="learner_group"):
        make_policy(f"rllib:{tmp_path}", env)
    with pytest.raises(ValueError, match="model.zip"):
        make_policy(f"sb3:{tmp_path}", env)
    with pytest.raises(ValueError, match="checkpoints not found"):
        evaluate("default", ["greedy", f"sb3:{tmp_path / 'nope'}"], [0], tmp_path / "ev", progress=False, **SMALL)


# -- Stable-Baselines3 -------------------------------------------------------------------------------------------
def test_sb3_vecenv_rows_are_the_vector_env_and_episodes_end_terminated():
    venv = DataGamesSB3VecEnv(num_envs=2, config="default", **SMALL)
    assert venv.num_envs == 2 * SMALL["n_robots"]
    venv.seed(11)
    obs = venv.reset()
    reference = DataGamesVectorEnv(num_envs=2, config="default", **SMALL)
    ref_obs, _ = reference.reset(seed=11)
    np.testing.assert_array_equal(obs, ref_obs.reshape(venv.num_envs, -1))
    rng = np.random.default_rng(0)
    for round_ in range(SMALL["rounds"]):
        actions = rng.random((venv.num_envs, venv.action_space.shape[0])).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        ref_obs, ref_rewards, _, _ref_trunc, _ = reference.step(actions.reshape(2, SMALL["n_robots"], -1))
        np.testing.assert_array_equal(rewards, ref_rewards.reshape(-1))
        assert obs.shape == (venv.num_envs, venv.observation_space.shape[0]) and obs.dtype == np.float32
        last = round_ == SMALL["rounds"] - 1
        assert dones.all() == last and (not dones.any() or last)
        if last:
            for row, info in enumerate(infos):
                np.testing.assert_array_equal(info["terminal_observation"], ref_obs.reshape(venv.num_envs, -1)[row])
                assert info["TimeLimit.truncated"] is False  # a termination: SB3 must not bootstrap
            assert venv.observation_space.contains(obs[0])  # auto-reset: a fresh first observation
    with pytest.raises(ValueError, match=r"expected \(6, 10\)"):
        venv.step(np.zeros((5, 10), dtype=np.float32))


def test_sb3_vecenv_seeding_replays_whole_runs():
    def rollout(seed):
        venv = DataGamesSB3VecEnv(num_envs=2, config="default", **SMALL)
        venv.seed(seed)
        frames = [venv.reset()]
        rng = np.random.default_rng(1)
        for _ in range(2 * SMALL["rounds"] + 1):  # crosses an auto-reset
            frames.append(venv.step(rng.random((venv.num_envs, 10)).astype(np.float32))[0])
        return np.stack(frames)

    np.testing.assert_array_equal(rollout(4), rollout(4))
    assert not np.array_equal(rollout(4), rollout(5))


def test_sb3_vecenv_passes_sb3_checks():
    """SB3's own checks that apply to a VecEnv: its VecEnv wrappers run over it, and PPO accepts its spaces."""
    from stable_baselines3.common.env_checker import _check_box_obs, _check_unsupported_spaces
    from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor

    venv = DataGamesSB3VecEnv(num_envs=1, config="default", **SMALL)
    single = venv.observation_space
    _check_box_obs(single)
    _check_unsupported_spaces(venv, single, venv.action_space)
    wrapped = VecCheckNan(VecMonitor(venv), raise_exception=True)
    wrapped.seed(0)
    wrapped.reset()
    for _ in range(SMALL["rounds"]):
        _, _, dones, infos = wrapped.step(np.full((venv.num_envs, 10), 0.5, dtype=np.float32))
    assert dones.all() and all("episode" in info for info in infos)  # VecMonitor saw whole episodes


def test_sb3_training_saves_resumes_and_evaluates(tmp_path):
    from dataclasses import replace

    from agents.rllib_train import TrainSettings
    from agents.sb3_train import train_sb3

    settings = TrainSettings(config="default", overrides=dict(SMALL), iterations=2, train_batch_size=90,
                             minibatch_size=45, num_epochs=2, out=str(tmp_path), run_name="sb3", progress=False,
                             num_envs_per_env_runner=2)
    result = train_sb3(settings, log=lambda *a: None)
    assert len(result["history"]) == 2 and result["history"][-1]["agent_steps"] >= 2 * 90
    resumed = train_sb3(replace(settings, iterations=1, resume=result["checkpoint"], run_name="sb3b"),
                        log=lambda *a: None)
    assert resumed["history"][-1]["agent_steps"] > result["history"][-1]["agent_steps"]
    assert list((tmp_path / "sb3" / "tensorboard").rglob("events.*"))
    payload = evaluate("default", ["uniform", f"sb3:{result['checkpoint']}"], [0, 1], tmp_path / "ev", workers=1,
                       progress=False, **SMALL)
    finals = {e["policy"]: e["final_distance"] for e in payload["episodes"] if e["seed"] == 0}
    assert all(np.isfinite(v) for v in finals.values())


def test_cli_train_rejects_sb3_on_other_options(tmp_path, capsys):
    from datagames_env.harness.cli import main

    code = main(["train", "--algo", "sb3-ppo", "--per-robot", "--iterations", "1", "--out", str(tmp_path)])
    assert code == 2 and "--per-robot is RLlib only" in capsys.readouterr().err


@ray_group
def test_tune_sweep_picks_a_learning_rate_and_its_checkpoint_evaluates(tmp_path, fresh_ray):
    import ray

    import datagames_env
    from agents.policies import RLlibCheckpointPolicy
    from agents.rllib_train import TrainSettings, train

    settings = TrainSettings(config="default", overrides=dict(SMALL), iterations=1, train_batch_size=90,
                             minibatch_size=45, num_epochs=1, out=str(tmp_path), run_name="tune", tune=True,
                             tune_lrs=(1e-3,), progress=False)  # one trial: the Tune path, at CI cost
    try:
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    assert result["best_lr"] == 1e-3
    trials = list((tmp_path / "tune" / "tune").glob("PPO_*"))
    assert len(trials) == 1 and (trials[0] / "progress.csv").is_file()  # Tune's own trial logs
    env = datagames_env.parallel_env(**SMALL)
    obs, infos = env.reset(seed=0)
    actions = RLlibCheckpointPolicy(env, result["checkpoint"]).act(obs, infos)
    assert all(env.action_space(a).contains(actions[a]) for a in env.possible_agents)


@pytest.mark.parametrize("config", ["p2p_default", "dual_default"])
def test_rllib_env_checker_passes_on_the_other_scenarios(config):
    from ray.rllib.utils.pre_checks.env import check_multiagent_environments

    from agents.rllib_train import env_layout

    env = RLlibMultiAgentEnv({"config": config, "overrides": {"rounds": 2}})
    check_multiagent_environments(env)
    layout = env_layout(env.par_env)
    assert layout["kind"] == "samples"  # the GU module reads context + per-sample features
    assert layout["context_dim"] + layout["n_samples"] * layout["sample_dim"] == env.observation_space.shape[0]


def _train_one_small_iteration(config: str, overrides: dict, tmp_path) -> dict:
    """One RLlib iteration of one episode's agent steps (3 robots x 2 rounds): a checkpoint to evaluate."""
    import ray

    from agents.rllib_train import TrainSettings, train

    settings = TrainSettings(config=config, overrides=overrides, iterations=1, train_batch_size=6, minibatch_size=6,
                             num_epochs=1, out=str(tmp_path), run_name=config, progress=False)
    try:
        return train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()


@ray_group
def test_rllib_trains_on_p2p_and_the_p2p_harness_evaluates_the_checkpoint(tmp_path, fresh_ray):
    overrides = {"rounds": 2, "obs_per_round": 50}
    result = _train_one_small_iteration("p2p_default", overrides, tmp_path)
    assert result["history"][-1]["agent_steps"] >= 6
    payload = evaluate("p2p_default", ["random", f"rllib:{result['checkpoint']}"], [0], tmp_path / "ev",
                           progress=False, **overrides)
    assert len(payload["episodes"]) == 2


def test_training_warns_about_configs_that_train_classifiers_every_episode():
    from agents.rllib_train import TrainSettings, slow_training_hints

    assert slow_training_hints(TrainSettings(config="default")) == []
    hints = slow_training_hints(TrainSettings(config="default", overrides={"final_accuracy": True,
                                                                           "perception.retrain_every": 2}))
    assert any("final_accuracy=false" in h for h in hints) and any("retrain_every=0" in h for h in hints)


# -- centralised critic and imitation warm start ----------------------------------------------------------------
def _central_module():
    from agents.rllib_train import TrainSettings, probe_spec

    face, spec = probe_spec(TrainSettings(config="default", overrides=dict(SMALL), hidden=(16,), critic="central"))
    return face, spec.build()


def test_central_critic_reads_the_global_state_and_the_actor_does_not():
    from ray.rllib.core.columns import Columns

    face, module = _central_module()
    obs, _ = face.reset(seed=0)
    own_dim = face.par_env.observation_space("robot_0").shape[0]
    state = face.par_env.state()
    assert face.observation_spaces["robot_0"].shape == (own_dim + len(state),)
    x = torch.as_tensor(np.stack(list(obs.values())))
    np.testing.assert_array_equal(x[:, own_dim:].numpy(), np.broadcast_to(state, (len(x), len(state))))
    assert all(face.observation_spaces[a].contains(obs[a]) for a in obs)
    blank = x.clone()
    blank[:, own_dim:] = 0.0
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS]
        logits_blank = module.forward_inference({Columns.OBS: blank})[Columns.ACTION_DIST_INPUTS]
        values, values_blank = module.compute_values({Columns.OBS: x}), module.compute_values({Columns.OBS: blank})
    torch.testing.assert_close(logits, logits_blank)  # the actor is decentralised
    assert not torch.allclose(values, values_blank)  # the critic sees the fleet


def test_central_critic_needs_a_scenario_with_a_state_and_the_scoring_module():
    from agents.rllib_train import TrainSettings, module_spec

    import datagames_env

    with pytest.raises(ValueError, match="--critic central needs"):
        module_spec(datagames_env.parallel_env(**SMALL), TrainSettings(critic="central", model="mlp"))
    with pytest.raises(ValueError, match="--critic: 'global'"):
        module_spec(datagames_env.parallel_env(**SMALL), TrainSettings(critic="global"))


def test_behaviour_cloning_fits_the_expert_counts():
    from agents.imitation import behaviour_clone, collect_expert_data, multinomial_nll
    from agents.rllib_train import TrainSettings, probe_spec
    from ray.rllib.core.columns import Columns

    data = collect_expert_data("default", dict(SMALL), "oracle", episodes=4, gamma=0.99)
    n_steps = 4 * SMALL["rounds"] * SMALL["n_robots"]
    assert data["obs"].shape[0] == data["counts"].shape[0] == data["returns"].shape[0] == n_steps
    assert (data["counts"].sum(axis=1) <= SMALL["n_cache"]).all() and data["counts"].sum() > 0
    module = probe_spec(TrainSettings(config="default", overrides=dict(SMALL), hidden=(16,)))[1].build()
    obs, counts = torch.as_tensor(data["obs"]), torch.as_tensor(data["counts"])
    with torch.no_grad():
        before = multinomial_nll(module._forward({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS], counts).item()
    fit = behaviour_clone(module, data, epochs=60, lr=3e-3, batch_size=32)
    assert fit["nll"] < 0.8 * before
    with pytest.raises(ValueError, match="--imitate: 'expert'"):
        collect_expert_data("default", dict(SMALL), "expert", episodes=1, gamma=0.99)


@ray_group
def test_central_critic_with_imitation_warm_start_trains_and_evaluates(tmp_path, fresh_ray):
    """The warm-started module is what PPO starts from (rllib_train.load_module_state), and a centralised-critic
    checkpoint evaluates in the harness from the robots' own observations."""
    import ray
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule

    from agents.rllib_train import TrainSettings, train

    settings = TrainSettings(config="default", overrides=dict(SMALL), iterations=1, train_batch_size=90,
                             minibatch_size=45, num_epochs=1, out=str(tmp_path), run_name="cc", progress=False,
                             critic="central", imitate="oracle", imitation_episodes=3, imitation_epochs=2, lr=1e-12)
    try:
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    run_dir = Path(result["run_dir"])
    meta = json.loads((Path(result["checkpoint"]) / "datagames_meta.json").read_text())
    assert meta["imitation"]["expert"] == "oracle" and meta["settings"]["critic"] == "central"
    assert meta["ray_version"] == ray.__version__
    cloned = RLModule.from_checkpoint(str(run_dir / "imitation_module"))
    trained = RLModule.from_checkpoint(str(Path(result["checkpoint"]) / "learner_group" / "learner" / "rl_module"
                                           / "shared"))
    x = torch.rand(5, cloned.observation_space.shape[0])
    with torch.no_grad():  # lr 1e-12: one PPO update cannot move the weights visibly
        torch.testing.assert_close(trained.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS],
                                   cloned.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS],
                                   atol=1e-5, rtol=1e-4)
    payload = evaluate("default", ["greedy", f"rllib:{result['checkpoint']}"], [0], tmp_path / "ev", workers=1,
                       progress=False, **SMALL)
    assert all(np.isfinite(e["final_distance"]) for e in payload["episodes"])


# -- learned communication ---------------------------------------------------------------------------------------
def test_message_sweeps_announce_intents_and_execute_once_per_round():
    from datagames_env.faces.comm import message_blocks, upload_counts

    env = RLlibMultiAgentEnv({"config": "default", "overrides": dict(SMALL), "message_sweeps": 2})
    par = env.par_env
    c = par.n_classes
    obs, _ = env.reset(seed=4)
    own_dim = par.observation_space("robot_0").shape[0]
    assert env.observation_spaces["robot_0"].shape == (own_dim + 2 * c + 1,)
    first = np.stack([obs[a] for a in env.possible_agents])
    np.testing.assert_array_equal(first[:, 8 * c:10 * c], 0.0)  # no messages before the first sweep
    assert (first[:, -1] == 1.0).all()  # sweeps left
    # what the robots would read after announcing these shares: the others' summed intents, from their own infos
    infos = dict(zip(env.possible_agents, par._infos()))
    shares = np.random.default_rng(0).random((SMALL["n_robots"], c))
    counts = upload_counts(shares, np.stack([infos[a]["available"] for a in env.possible_agents]), SMALL["n_cache"])
    feasible = np.stack([infos[a]["feasible_matrix"] for a in env.possible_agents])
    expected = message_blocks(first[0, par.obs_layout["gap"]], feasible, counts, float(par.core.target_counts.sum()))
    intents = np.einsum("nyj,nj->ny", feasible, counts) / par.core.target_counts.sum()
    np.testing.assert_allclose(expected[1, :c], intents[0] + intents[2])  # robot_1 reads robots 0 and 2
    cloud_before = par.core.cloud_counts.copy()
    obs, rewards, terms, _, _ = env.step({a: shares[k] for k, a in enumerate(env.possible_agents)})
    np.testing.assert_array_equal(par.core.cloud_counts, cloud_before)  # an announcement uploads nothing
    assert set(rewards.values()) == {0.0} and not terms["__all__"]
    second = np.stack([obs[a] for a in env.possible_agents])
    np.testing.assert_allclose(second[:, 8 * c:10 * c], expected, rtol=1e-5, atol=1e-6)
    assert (second[:, -1] == 0.5).all()
    decisions = 1
    while True:
        obs, rewards, terms, _, _ = env.step({a: env.action_spaces[a].sample() for a in obs})
        decisions += 1
        if terms["__all__"]:
            break
    assert decisions == 3 * SMALL["rounds"] and not env.agents
    with pytest.raises(ValueError, match="message_sweeps must be in 0..3"):
        RLlibMultiAgentEnv({"config": "default", "overrides": dict(SMALL), "message_sweeps": 5})


@ray_group
def test_learned_communication_trains_and_reports_messages_in_the_harness(tmp_path, fresh_ray):
    import ray

    from agents.rllib_train import TrainSettings, train

    settings = TrainSettings(config="default", overrides=dict(SMALL), iterations=1, train_batch_size=90,
                             minibatch_size=45, num_epochs=1, out=str(tmp_path), run_name="comm", progress=False,
                             message_sweeps=1)
    try:
        result = train(settings, log=lambda *a: None)
    finally:
        ray.shutdown()
    payload = evaluate("default", ["interactive-sum", f"rllib:{result['checkpoint']}"], [0], tmp_path / "ev",
                       workers=1, progress=False, **SMALL)
    learned = next(e for e in payload["episodes"] if e["policy"].startswith("rllib:"))
    assert np.isfinite(learned["final_distance"])
    assert learned["messages"] == 2 * SMALL["n_robots"] * 1 * SMALL["rounds"]  # 2N per sweep, one sweep a round


def test_imitation_data_with_message_sweeps_teacher_forces_the_announcements():
    from agents.imitation import collect_expert_data

    plain = collect_expert_data("default", dict(SMALL), "interactive", episodes=1, gamma=0.99)
    sweeps = collect_expert_data("default", dict(SMALL), "interactive", episodes=1, gamma=0.99, message_sweeps=2)
    n, c = SMALL["n_robots"], 10
    assert len(sweeps["obs"]) == 3 * len(plain["obs"]) == len(sweeps["counts"]) == len(sweeps["returns"])
    rows = sweeps["obs"].reshape(SMALL["rounds"], 3, n, -1)
    np.testing.assert_array_equal(rows[:, 0, :, 8 * c:10 * c], 0.0)  # the first decision reads no messages
    assert np.abs(rows[:, 1:, :, 8 * c:9 * c]).sum() > 0  # later ones read the others' announced counts
    np.testing.assert_array_equal(rows[:, :, :, :8 * c], plain["obs"].reshape(SMALL["rounds"], 1, n, -1)[..., :8 * c]
                                  .repeat(3, axis=1))
    np.testing.assert_array_equal(sweeps["counts"].reshape(SMALL["rounds"], 3, n, c),
                                  plain["counts"].reshape(SMALL["rounds"], 1, n, c).repeat(3, axis=1))
    # DAgger on the messages: the announcements come from the policy being cloned (here: one that announces nothing)
    seen = []
    silent = collect_expert_data("default", dict(SMALL), "interactive", episodes=1, gamma=0.99, message_sweeps=2,
                                 announcer=lambda rows: seen.append(rows.shape) or np.zeros((len(rows), c)))
    assert seen == [(n, 10 * c + 2)] * (2 * SMALL["rounds"])
    np.testing.assert_array_equal(silent["obs"].reshape(SMALL["rounds"], 3, n, -1)[:, :, :, 8 * c:9 * c], 0.0)
    np.testing.assert_array_equal(silent["counts"], sweeps["counts"])  # labels: the expert's counts all the same


@ray_group
def test_rllib_trains_on_dual_and_datagames_eval_evaluates_the_checkpoint(tmp_path, fresh_ray, capsys):
    from datagames_env.harness.cli import main

    overrides = {"n_robots": 3, "rounds": 2, "obs_per_round": 30, "n_cache": 4, "label_budget": 6,
                 "initial_cloud_size": 40, "perception.train_steps": 60}
    result = _train_one_small_iteration("dual_default", overrides, tmp_path)
    spec = f"rllib:{result['checkpoint']}"
    out = tmp_path / "ev"
    argv = ["eval", "--config", "dual_default", "--policies", f"random/random,{spec},{spec}/random", "--seeds", "1",
            "--workers", "1", "--no-progress", "--out", str(out)] + [f"--set={k}={v}" for k, v in overrides.items()]
    assert main(argv) == 0, capsys.readouterr().err
    payload = json.loads((out / "results.json").read_text())
    assert payload["policies"] == ["random/random", spec, f"{spec}/random"]
    labelers = {e["policy"]: e["labeler"] for e in payload["episodes"]}
    assert labelers[f"{spec}/random"] == "random" and labelers[spec] == "submodular"  # the config's labeler
    assert all(0.0 <= e["final_test_accuracy"] <= 1.0 for e in payload["episodes"])


# -- shipped checkpoints -----------------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.iterdir() if p.is_dir()) if SHIPPED.is_dir() else [])
def test_shipped_checkpoints_load_and_act_on_their_config(name, monkeypatch):
    """Every folder in checkpoints/ is an RLlib checkpoint with its datagames_meta.json, evaluable by
    `datagames eval --policies rllib:checkpoints/<name>` on the config it was trained on."""
    from datagames_env.data.datasets import DATA_DIR_ENV_VAR
    from datagames_env.policy import make_policy
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

    from conftest import SHARED_DATASETS

    path = SHIPPED / name
    meta = json.loads((path / "datagames_meta.json").read_text())
    assert {"iteration", "agent_steps", "train_time_s", "ray_version", "settings"} <= set(meta)
    assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 4 * 2**20  # a few MB at most
    settings = meta["settings"]
    overrides = dict(settings["overrides"])
    overrides.pop("reward", None)  # a difference-reward training is evaluated on the shared potential all the same
    if "mnist" in str(settings["config"]):
        if not (SHARED_DATASETS / "MNIST").is_dir():
            pytest.skip("MNIST files not found")
        monkeypatch.setenv(DATA_DIR_ENV_VAR, str(SHARED_DATASETS))
    env = make_parallel_env(settings["config"], **overrides)
    policy = make_policy(f"rllib:{path}", env)
    obs, infos = env.reset(seed=100)
    policy.reset(100)
    actions = policy.act(obs, infos)
    assert set(actions) == set(env.agents) and all(env.action_space(a).contains(actions[a]) for a in actions)
