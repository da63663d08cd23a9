"""Every batched face on every scenario (issue 17): ``vector_env``, ``torchrl_env``, the BenchMARL tasks and the SB3
VecEnv over ``make_batched``, with env b of a batch equal to ``parallel_env`` reset with ``seeds[b]``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import datagames_env
from datagames_env.config import ConfigError
from datagames_env.faces.vector import DataGamesVectorEnv, VectorEnv
from datagames_env.scenarios import make_batched
from datagames_env.scenarios.base import BatchedScenario, SnapshotError
from datagames_env.scenarios.datagames import DataGamesBatched

# tiny configs: few rounds, few observations, little training
TINY = {
    "default": {"n_robots": 3, "rounds": 3, "obs_per_round": 40, "n_cache": 2},
    "p2p_default": {"rounds": 2, "obs_per_round": 30, "perception.train_steps": 10},
    "dual_default": {"rounds": 2, "n_robots": 3, "obs_per_round": 30},
}
CONFIGS = list(TINY)


def _compare(vector_value, parallel_value, what: str) -> None:
    """Integers (draws, counts, labels) exactly, floats of two batch sizes within a tolerance."""
    a, b = np.asarray(vector_value), np.asarray(parallel_value)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    if a.dtype.kind in "iub" and b.dtype.kind in "iub":
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-5, atol=1e-6, err_msg=what)


@pytest.fixture(scope="module", params=CONFIGS)
def config(request):
    return request.param


@pytest.mark.parametrize("name", CONFIGS)
def test_vector_env_b_equals_parallel_env_with_seed_b_over_an_episode(name):
    seeds = [5, 17]
    vec = datagames_env.vector_env(2, config=name, **TINY[name])
    assert isinstance(vec, VectorEnv) and isinstance(vec.batched, BatchedScenario)
    pars = [datagames_env.parallel_env(name, **TINY[name]) for _ in seeds]
    agents = vec.possible_agents
    vobs, vinfos = vec.reset(seed=seeds)
    outs = [(obs, None, None, infos) for obs, infos in (p.reset(seed=s) for p, s in zip(pars, seeds))]
    rng = np.random.default_rng(1)
    batched = vec.batched
    robot_keys = set(batched.robot_info_keys)
    for step in range(vec.config.rounds + 1):
        assert vec.observation_space.contains(vobs)
        for b, (obs, rewards, terms, infos) in enumerate(outs):
            _compare(vobs[b], np.stack([obs[a] for a in agents]), f"step {step} env {b} observations")
            _compare(vec.state()[b], pars[b].state(), f"step {step} env {b} state")
            common = [k for k in vinfos if k in infos[agents[0]]]
            assert common, "the vector env's infos share no key with parallel_env's"
            for key in common:
                if key in robot_keys:
                    _compare(vinfos[key][b], np.stack([np.asarray(infos[a][key]) for a in agents]), f"info {key}")
                else:
                    _compare(vinfos[key][b], infos[agents[0]][key], f"info {key}")
            if rewards is not None:
                _compare(vrew[b], np.array([rewards[a] for a in agents], dtype=np.float32), f"env {b} rewards")
                assert (vterm[b] == np.array([terms[a] for a in agents])).all()
        if step == vec.config.rounds:
            assert vterm.all() and not vtrunc.any() and all(not p.agents for p in pars)
            break
        actions = rng.random((2, vec.n_robots) + vec.single_action_space.shape).astype(np.float32)
        vobs, vrew, vterm, vtrunc, vinfos = vec.step(actions)
        assert vrew.shape == vterm.shape == vtrunc.shape == (2, vec.n_robots) and vrew.dtype == np.float32
        if step < vec.config.rounds - 1:
            assert not vterm.any()
        outs = []
        for b, p in enumerate(pars):
            obs, rewards, terms, _truncs, infos = p.step({a: actions[b, i] for i, a in enumerate(agents)})
            outs.append((obs, rewards, terms, infos))


def test_the_cloud_game_is_native_and_keeps_its_read_outs():
    vec = datagames_env.vector_env(2, **TINY["default"])
    assert isinstance(vec.batched, DataGamesBatched) and isinstance(vec, DataGamesVectorEnv)
    assert isinstance(make_batched("default", 3, **TINY["default"]), DataGamesBatched)
    vec.reset(seed=3)
    assert vec.core.num_envs == 2  # other code reads venv.core
    assert vec.estimated_feasible_matrices().shape[:2] == (2, 3)
    view = vec.privileged_view()
    assert all(np.shape(v)[0] == 2 for v in view.values())  # every value leads with B
    assert vec.state().shape == (2, vec.state_dim) and vec.state().dtype == np.float32


def test_int_seeds_are_seed_plus_b_and_unseeded_resets_follow_the_seed(config):
    vec = datagames_env.vector_env(2, config=config, **TINY[config])
    first, _ = vec.reset(seed=9)
    again, _ = vec.reset(seed=[9, 10])
    np.testing.assert_array_equal(first, again)
    vec.reset(seed=9)
    later, _ = vec.reset()
    other = datagames_env.vector_env(2, config=config, **TINY[config])
    other.reset(seed=9)
    np.testing.assert_array_equal(later, other.reset()[0])  # the seed sequence is reproducible
    with pytest.raises(ValueError, match="2 seeds"):
        vec.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative"):
        vec.reset(seed=-1)


def test_bad_actions_and_masks_are_named_before_anything_changes(config):
    vec = datagames_env.vector_env(2, config=config, **TINY[config])
    obs, _ = vec.reset(seed=0)
    width = vec.single_action_space.shape[0]
    before = vec.snapshot()
    with pytest.raises(ValueError, match=rf"\(num_envs, n_robots, {width}\) = \(2, {vec.n_robots}, {width}\)"):
        vec.step(np.zeros((2, vec.n_robots, width + 1)))
    with pytest.raises(ValueError, match=r"\(num_envs, n_robots\)"):
        vec.step(np.zeros((2, vec.n_robots, width)), active=np.ones((2, vec.n_robots + 1), bool))
    actions = np.zeros((2, vec.n_robots, width))
    actions[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"env 1.*robot_1"):
        vec.step(actions)
    after = vec.snapshot()
    assert pickle.dumps(before.state) == pickle.dumps(after.state)  # nothing moved
    with pytest.raises(ValueError, match="num_envs"):
        VectorEnv(0, config, **TINY[config])


@pytest.mark.parametrize("name", ["p2p_default", "dual_default"])
def test_dropout_is_refused_by_the_vector_env(name):
    with pytest.raises(ConfigError, match="faults.dropout"):
        datagames_env.vector_env(2, config=name, **TINY[name], **{"faults.dropout": 0.2})


@pytest.mark.parametrize("name", ["p2p_default", "dual_default"])
def test_vector_snapshot_round_trip_continues_bit_exactly(name):
    vec = datagames_env.vector_env(2, config=name, **TINY[name])
    vec.reset(seed=[3, 8])
    rng = np.random.default_rng(4)
    actions = [rng.random((2, vec.n_robots) + vec.single_action_space.shape) for _ in range(vec.config.rounds)]
    vec.step(actions[0])
    snapshot = pickle.loads(pickle.dumps(vec.snapshot()))
    first = [vec.step(a) for a in actions[1:]]
    later = vec.reset()[0]
    vec.restore(snapshot)
    second = [vec.step(a) for a in actions[1:]]
    for one, two in zip(first, second):
        for x, y in zip(one[:4], two[:4]):
            np.testing.assert_array_equal(x, y)
        assert set(one[4]) == set(two[4])
        for key in one[4]:
            np.testing.assert_array_equal(one[4][key], two[4][key])
    np.testing.assert_array_equal(vec.reset()[0], later)  # the seed sequence came back too
    other = datagames_env.vector_env(3, config=name, **TINY[name])
    with pytest.raises(SnapshotError, match="3"):
        other.restore(snapshot)


@pytest.mark.parametrize("name", CONFIGS)
def test_torchrl_check_env_specs_on_every_scenario(name):
    pytest.importorskip("torchrl")
    from torchrl.envs.utils import check_env_specs

    env = datagames_env.torchrl_env(2, config=name, seed=1, **TINY[name])
    check_env_specs(env)
    env.set_seed(1)
    td = env.reset()
    vec = datagames_env.vector_env(2, config=name, **TINY[name])
    obs, _ = vec.reset(seed=1)
    np.testing.assert_allclose(td["robots", "observation"].numpy(), obs, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(td["state"].numpy(), vec.state(), rtol=1e-6, atol=1e-6)
    assert ("distance" in td.keys()) == (name == "default")


def test_torchrl_partial_reset_on_a_looped_scenario():
    pytest.importorskip("torchrl")
    import torch

    name = "dual_default"
    env = datagames_env.torchrl_env(3, config=name, seed=2, **TINY[name])
    td = env.reset()
    td = env.rand_step(td)
    mask = torch.tensor([[False], [True], [False]])
    out = env.reset(td.set("_reset", mask))
    assert env.cohorts == 2
    fresh = datagames_env.vector_env(3, config=name, **TINY[name])
    first, _ = fresh.reset(seed=[2, 3, 4])
    assert not np.allclose(out["robots", "observation"][1].numpy(), first[1])  # env 1 started over, new seed
    step = env.rand_step(out)
    assert not step["next", "done"][1].item() and step["next", "done"][0].item()  # envs 0, 2 reached round 2
    env.reset()
    assert env.cohorts == 1


@pytest.mark.parametrize("task_name", ["P2P_DEFAULT", "DUAL_DEFAULT"])
def test_benchmarl_tasks_of_p2p_and_dual(task_name):
    pytest.importorskip("benchmarl")
    from torchrl.envs.utils import check_env_specs

    from datagames_env.faces.benchmarl import DataGamesTask

    task = getattr(DataGamesTask, task_name)
    task_class = task.get_from_yaml()
    config = dict(task_class.config)
    config["overrides"] = {**config["overrides"], **TINY[config["config"]]}
    task_class = type(task_class)(task_class.name, config)
    assert task_class.env_config.scenario == task_name.split("_")[0].lower()
    env = task_class.get_env_fun(num_envs=2, continuous_actions=True, seed=0, device="cpu")()
    check_env_specs(env)
    assert task_class.max_steps(env) == task_class.env_config.rounds
    assert task_class.observation_spec(env)["robots", "observation"].shape[0] == task_class.env_config.n_robots
    assert task_class.state_spec(env)["state"].shape == (env.state_dim,)
    assert task_class.log_info(env.rollout(2)) == {}  # no cloud distance to log outside the cloud game


@pytest.mark.parametrize("name", ["p2p_default", "dual_default"])
def test_benchmarl_mappo_runs_on_p2p_and_dual(name, tmp_path):
    pytest.importorskip("benchmarl")
    import torch
    from benchmarl.algorithms import MappoConfig
    from benchmarl.experiment import Experiment, ExperimentConfig
    from benchmarl.models.mlp import MlpConfig

    from datagames_env.faces.benchmarl import make_task

    torch.set_num_threads(1)
    task = make_task(name, **TINY[name])
    frames = 2 * task.env_config.rounds  # one episode of two envs per iteration
    cfg = ExperimentConfig.get_from_yaml()
    cfg.max_n_frames, cfg.max_n_iters, cfg.on_policy_collected_frames_per_batch, cfg.on_policy_n_envs_per_worker = None, 1, frames, 2
    cfg.on_policy_n_minibatch_iters, cfg.on_policy_minibatch_size = 1, frames
    cfg.evaluation, cfg.render, cfg.loggers, cfg.create_json = False, False, [], False
    cfg.save_folder, cfg.checkpoint_at_end, cfg.sampling_device, cfg.train_device = str(tmp_path), False, "cpu", "cpu"
    experiment = Experiment(task=task, algorithm_config=MappoConfig.get_from_yaml(), model_config=MlpConfig.get_from_yaml(),
                            critic_model_config=MlpConfig.get_from_yaml(), seed=0, config=cfg)
    experiment.run()
    assert experiment.n_iters_performed == 1 and experiment.total_frames == frames


@pytest.mark.parametrize("name", ["p2p_default", "dual_default"])
def test_sb3_vecenv_on_p2p_and_dual(name):
    pytest.importorskip("stable_baselines3")
    from datagames_env.faces.sb3 import DataGamesSB3VecEnv

    venv = DataGamesSB3VecEnv(2, name, **TINY[name])
    venv.seed(6)
    obs = venv.reset()
    rows = 2 * venv.n_robots
    assert obs.shape == (rows, venv.observation_space.shape[0])
    reference = datagames_env.vector_env(2, config=name, **TINY[name])
    np.testing.assert_array_equal(obs, reference.reset(seed=6)[0].reshape(rows, -1))
    for step in range(venv.vector.config.rounds):
        obs, rewards, dones, infos = venv.step(np.full((rows, venv.action_space.shape[0]), 0.5, np.float32))
        assert rewards.shape == dones.shape == (rows,)
    assert dones.all() and all(not info["TimeLimit.truncated"] and "terminal_observation" in info for info in infos)


def test_sb3_ppo_trains_on_p2p(tmp_path):
    """``datagames train --algo sb3-ppo`` no longer refuses p2p and dual: one tiny PPO rollout and update."""
    pytest.importorskip("stable_baselines3")
    from agents.rllib_train import TrainSettings
    from agents.sb3_train import train_sb3

    settings = TrainSettings(config="p2p_default", overrides=dict(TINY["p2p_default"]), iterations=1,
                             train_batch_size=12, minibatch_size=6, num_epochs=1, out=str(tmp_path), run_name="p2p",
                             progress=False)
    result = train_sb3(settings, log=lambda *a: None)
    assert result["history"][-1]["agent_steps"] == 12
    assert (tmp_path / "p2p" / "checkpoint" / "model.zip").is_file()
