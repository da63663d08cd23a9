"""The TorchRL face, the BenchMARL task family, BenchMARL training + evaluation, and the marl-eval JSON.

Needs the ``benchmarl`` extra (``make test`` installs it); without it these tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchrl")
benchmarl = pytest.importorskip("benchmarl")

from torchrl.envs.utils import check_env_specs  # noqa: E402

import datagames_env  # noqa: E402
from datagames_env.benchmarl import DataGamesTask, make_task  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {"n_robots": 3, "rounds": 3, "obs_per_round": 40, "n_cache": 2}


def _actions(rng, env, steps):
    shape = (env.num_envs, env.n_robots, env.action_dim)
    return [rng.random(shape).astype(np.float32) for _ in range(steps)]


def _step(env, td, action):
    td = td.clone()
    td.set(("robots", "action"), torch.as_tensor(action))
    out = env.step(td)
    return out, out.get("next")


def test_import_datagames_env_does_not_import_torchrl():
    code = "import sys, datagames_env; assert 'torchrl' not in sys.modules and 'benchmarl' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lazy_top_level_name():
    assert datagames_env.torchrl_env is datagames_env.faces.torchrl.torchrl_env
    with pytest.raises(AttributeError):
        datagames_env.no_such_face  # noqa: B018


@pytest.mark.parametrize("overrides", [{}, {"action_mode": "selection"}])
def test_check_env_specs_and_shapes(overrides):
    env = datagames_env.torchrl_env(4, seed=1, **SMALL, **overrides)
    check_env_specs(env)
    td = env.rollout(SMALL["rounds"])
    n, c = SMALL["n_robots"], env.n_classes
    assert td.batch_size == (4, SMALL["rounds"])
    assert td["next", "robots", "reward"].shape == (4, SMALL["rounds"], n, 1)
    assert td["next", "state"].shape == (4, SMALL["rounds"], 3 * c + 1 + 3 * n * c)
    # the last round is a termination, never a truncation, at the root and per robot
    assert td["next", "terminated"][:, -1].all() and not td["next", "terminated"][:, :-1].any()
    assert td["next", "robots", "terminated"][:, -1].all()
    assert not td["next", "truncated"].any() and not td["next", "robots", "truncated"].any()


def test_rollouts_equal_vector_env_draw_for_draw():
    """Two whole episodes (the second reset draws its seeds as vector_env does) with the same actions."""
    rng = np.random.default_rng(3)
    env = datagames_env.torchrl_env(5, **SMALL)
    venv = datagames_env.vector_env(5, **SMALL)
    env.set_seed(7)
    for episode in range(2):
        td = env.reset()
        obs, _ = venv.reset(seed=7 if episode == 0 else None)
        np.testing.assert_array_equal(td["robots", "observation"].numpy(), obs)
        for action in _actions(rng, env, SMALL["rounds"]):
            _, nxt = _step(env, td, action)
            obs, rew, term, trunc, infos = venv.step(action)
            np.testing.assert_array_equal(nxt["robots", "observation"].numpy(), obs)
            np.testing.assert_array_equal(nxt["robots", "reward"].numpy()[..., 0], rew)
            np.testing.assert_array_equal(nxt["robots", "terminated"].numpy()[..., 0], term)
            np.testing.assert_array_equal(nxt["distance"].numpy()[:, 0], infos["distance"].astype(np.float32))
            td = nxt


def test_state_matches_parallel_env_state():
    env = datagames_env.torchrl_env(2, seed=11, **SMALL)
    td = env.reset()
    for b in range(2):
        par = datagames_env.parallel_env(**SMALL)
        par.reset(seed=11 + b)
        np.testing.assert_allclose(td["state"][b].numpy(), par.state(), rtol=0, atol=1e-7)


def test_partial_reset_mask():
    """Reset env 1 of 3 mid-episode: envs 0 and 2 go on as an unsplit run would; env 1 starts over at round 0 and
    then plays its own episode, which ends a round after the others'."""
    rng = np.random.default_rng(5)
    env = datagames_env.torchrl_env(3, seed=20, **SMALL)
    reference = datagames_env.torchrl_env(3, seed=20, **SMALL)
    actions = _actions(rng, env, SMALL["rounds"] + 1)
    td, ref = env.reset(), reference.reset()
    td = _step(env, td, actions[0])[1]
    ref = _step(reference, ref, actions[0])[1]
    mask = torch.tensor([[False], [True], [False]])
    td.set("_reset", mask)
    before = td["robots", "observation"].clone()
    td = env.reset(td)
    assert env.cohorts == 2
    np.testing.assert_array_equal(td["robots", "observation"][[0, 2]].numpy(), before[[0, 2]].numpy())
    rounds_left = env.obs_layout["rounds_left"]
    assert td["robots", "observation"][1, :, rounds_left].eq(1.0).all()  # env 1 is at round 0 again
    assert not td["done"].any()
    for t in range(1, SMALL["rounds"]):
        td = _step(env, td, actions[t])[1]
        ref = _step(reference, ref, actions[t])[1]
        for key in (("robots", "observation"), ("robots", "reward"), "distance", "done"):
            np.testing.assert_array_equal(td[key][[0, 2]].numpy(), ref[key][[0, 2]].numpy())
    assert td["done"][[0, 2]].all() and not td["done"][1].any()
    # envs 0 and 2 have ended and stay done (reward 0) while env 1 plays its last round
    td = _step(env, td, actions[-1])[1]
    assert td["done"].all()
    assert td["robots", "reward"][[0, 2]].eq(0).all()
    td = env.reset()  # a full reset: one cohort again
    assert env.cohorts == 1 and not td["done"].any()


def test_device_and_seed_arguments():
    env = datagames_env.torchrl_env(2, device="cpu", seed=4, **SMALL)
    td = env.reset()
    assert td.device == torch.device("cpu") and td["robots", "observation"].device == torch.device("cpu")
    again = datagames_env.torchrl_env(2, device="cpu", seed=4, **SMALL).reset()
    assert (td["robots", "observation"] == again["robots", "observation"]).all()
    with pytest.raises(ValueError, match="num_envs"):  # checked before torchrl builds anything
        datagames_env.torchrl_env(0, **SMALL)


# the p2p and dual tasks: tests/test_batched_faces.py (with tiny overrides)
@pytest.mark.parametrize("task", [t for t in DataGamesTask if t.name not in ("P2P_DEFAULT", "DUAL_DEFAULT")])
def test_task_family_check_env_specs(task, request):
    if task is DataGamesTask.MNIST_DATAGAMES:
        data_dir = request.getfixturevalue("shared_datasets")  # skips without the MNIST files
        task_class = task.get_from_yaml()
        task_class.config["overrides"]["dataset.data_dir"] = str(data_dir)
        task_class = type(task_class)(task_class.name, task_class.config)
    else:
        task_class = task.get_from_yaml()
    env = task_class.get_env_fun(num_envs=2, continuous_actions=True, seed=0, device="cpu")()
    check_env_specs(env)
    cfg = task_class.env_config
    assert task_class.max_steps(env) == cfg.rounds
    assert task_class.group_map(env) == {"robots": [f"robot_{i}" for i in range(cfg.n_robots)]}
    # BenchMARL's convention: unbatched full specs
    assert task_class.observation_spec(env)["robots", "observation"].shape[0] == cfg.n_robots
    assert task_class.action_spec(env)["robots", "action"].shape[0] == cfg.n_robots
    assert task_class.state_spec(env)["state"].shape == env.full_observation_spec_unbatched["state"].shape
    if task is DataGamesTask.DIGITS_RARE:
        assert cfg.action_mode == "selection"


def test_task_config_errors():
    with pytest.raises(ValueError, match="unknown keys"):
        DataGamesTask.DEFAULT.get_task({"config": "default", "n_robots": 3})
    with pytest.raises(datagames_env.ConfigError):
        make_task("default", no_such_key=1)


def test_benchmarl_mappo_trains_and_evaluates(tmp_path):
    """Two BenchMARL MAPPO iterations on `default` through the CLI, then the checkpoint beside the baselines in
    `datagames eval`, which also writes the marl-eval JSON; torchvision is never imported."""
    from datagames_env.harness.cli import main

    code = main(["train", "--algo", "benchmarl-mappo", "--config", "default", "--iterations", "2",
                 "--train-batch-size", "600", "--minibatch-size", "300", "--num-epochs", "2", "--checkpoint-every", "1",
                 "--out", str(tmp_path / "runs"), "--name", "mappo-seed3", "--seed", "3", "--no-progress"])
    assert code == 0
    run = tmp_path / "runs" / "mappo-seed3"
    history = json.loads((run / "history.json").read_text())
    assert [row["iteration"] for row in history] == [1, 2] and history[-1]["agent_steps"] == 1200
    meta = json.loads((run / "checkpoint" / "datagames_meta.json").read_text())
    assert meta["algo"] == "benchmarl-mappo" and meta["observation_shape"] == [10, 81]
    from agents.portable import absolute_paths_in

    assert not absolute_paths_in(run / "checkpoint"), "the metadata names a folder of this machine"
    assert (run / meta["benchmarl_experiment"]).is_dir() and meta["settings"]["out"] is None
    assert list(run.glob("benchmarl/*/checkpoints/*.pt"))  # BenchMARL's own checkpoint, to resume with its tools
    spec = f"benchmarl:{run / 'checkpoint'}"
    out = tmp_path / "eval"
    code = main(["eval", "--config", "default", "--policies", f"uniform,greedy,{spec}", "--seeds", "2",
                 "--first-seed", "100", "--workers", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    episodes = [e for e in results["episodes"] if e["policy"] == spec]
    assert [e["seed"] for e in episodes] == [100, 101] and all(np.isfinite(e["final_distance"]) for e in episodes)
    marl = json.loads((out / "marl_eval.json").read_text())
    algorithms = marl["datagames"]["default"]
    assert set(algorithms) == {"uniform", "greedy", "benchmarl:mappo"}
    run_data = algorithms["benchmarl:mappo"]["seed_3"]
    assert run_data["step_0"]["step_count"] == 1200
    assert run_data["absolute_metrics"]["final_distance"] == [e["final_distance"] for e in episodes]
    assert len(algorithms["greedy"]["seed_0"]["absolute_metrics"]["return"]) == 2
    assert "torchvision" not in sys.modules


def test_checkpoint_policy_acts_deterministically(tmp_path):
    """A saved TorchRL module (torchrl:PATH) acts through the policy protocol; the sampled kind is seeded."""
    from benchmarl.models.mlp import MlpConfig  # noqa: F401  (BenchMARL's model stack is importable)
    from tensordict.nn import TensorDictModule

    from datagames_env.policy import make_policy

    env = datagames_env.parallel_env(**SMALL)
    obs_dim = env.observation_space(env.possible_agents[0]).shape[0]
    net = torch.nn.Sequential(torch.nn.Linear(obs_dim, env.n_classes), torch.nn.Sigmoid())
    torch.save(TensorDictModule(net, in_keys=[("robots", "observation")], out_keys=[("robots", "action")]),
               tmp_path / "policy.pt")
    policy = make_policy(f"torchrl:{tmp_path}", env)
    observations, infos = env.reset(seed=0)
    policy.reset(0)
    first = policy.act(observations, infos)
    again = policy.act(observations, infos)
    assert set(first) == set(env.agents)
    for agent in env.agents:
        assert first[agent].shape == (env.n_classes,) and (first[agent] == again[agent]).all()
        assert ((first[agent] >= 0) & (first[agent] <= 1)).all()


def test_marl_eval_statistics():
    from datagames_env.harness import marl_eval

    rng = np.random.default_rng(0)
    data = {"datagames": {"default": {
        "flat": {"seed_0": {"absolute_metrics": {"final_distance": [5.0] * 20}}},
        "spread": {f"seed_{k}": {"absolute_metrics": {"final_distance": list(rng.normal(10 + 5 * k, 1.0, 20))}}
                   for k in range(3)}}}}
    stats = marl_eval.aggregate(data, resamples=300)
    assert stats["flat"]["point"] == stats["flat"]["low"] == stats["flat"]["high"] == 5.0
    spread = stats["spread"]
    assert spread["runs"] == 3 and spread["episodes"] == 60
    assert spread["low"] < spread["point"] < spread["high"]
    assert spread["high"] - spread["low"] > 2.0  # the training-seed spread is in the interval
    assert marl_eval.iqm([1, 2, 3, 4, 100, 200, 300, 400]) == pytest.approx(np.mean([3, 4, 100, 200]))
    assert marl_eval.algorithm_and_run("benchmarl:runs/train/default-mappo-seed2/checkpoint")[:2] == \
        ("benchmarl:default-mappo", 2)
    assert marl_eval.algorithm_and_run("greedy") == ("greedy", 0, 0)


def test_benchmarl_own_cli_runs_the_task_family(tmp_path):
    """BenchMARL's own hydra route, as its docs show it: ``python -m benchmarl.run algorithm=mappo
    task=datagames/default`` finds the task YAML (hydra search path plugin) and the task (BenchMARL's registry),
    trains two tiny iterations and writes BenchMARL's csv logs; command-line task overrides reach the env."""
    repo = Path(__file__).resolve().parents[1]
    # this checkout first (its hydra_plugins portion and package), whatever the venv's editable install points at
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": ""}
    frames = 2 * 3  # two envs x 3 rounds per iteration
    cmd = [sys.executable, "-m", "benchmarl.run", "algorithm=mappo", "task=datagames/default",
           "+task.overrides.n_robots=3", "+task.overrides.rounds=3", "+task.overrides.obs_per_round=40",
           "experiment.max_n_iters=2", f"experiment.on_policy_collected_frames_per_batch={frames}",
           "experiment.on_policy_n_envs_per_worker=2", "experiment.on_policy_n_minibatch_iters=1",
           f"experiment.on_policy_minibatch_size={frames}", "experiment.evaluation=false", "experiment.render=false",
           "experiment.loggers=[csv]", "experiment.create_json=false", f"experiment.save_folder={tmp_path}",
           f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Task: datagames/default" in proc.stdout
    # the datagames task's own log (DataGamesClass.log_info): one csv row per iteration, both ran
    logs = list(tmp_path.glob("*/*/scalars/collection_final_distance.csv"))
    assert logs, sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))[:40]
    rows = [line.split(",") for line in logs[0].read_text().strip().splitlines()]
    assert len(rows) == 2 and all(np.isfinite(float(value)) for _, value in rows)
    # overrides on the command line reach the datagames config: 3 robots
    config = (tmp_path / "hydra" / ".hydra" / "config.yaml").read_text()
    assert "n_robots: 3" in config


def test_hydra_discovers_the_plugin_in_the_installed_package(tmp_path):
    """The install (``make install``: an editable install in setuptools' ``compat`` mode, or a wheel) exposes
    ``hydra_plugins.datagames_benchmarl`` where hydra's plugin scan sees it. setuptools' default editable finder
    hides namespace portions from that scan (hydra issue 2359), so a plain ``pip install -e .`` would not."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("import datagames_env, pathlib; print(pathlib.Path(datagames_env.__file__).resolve().parents[1]); "
            "from hydra.core.plugins import Plugins; from hydra.plugins.search_path_plugin import SearchPathPlugin; "
            "print([c.__module__ for c in Plugins.instance().discover(SearchPathPlugin)])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    installed, plugins = proc.stdout.strip().splitlines()[-2:]
    if Path(installed) != repo:
        pytest.skip(f"this venv's datagames_env is another checkout ({installed})")
    assert "hydra_plugins.datagames_benchmarl" in plugins, (
        f"hydra does not see the plugin ({plugins}): install with "
        "`pip install -e . --config-settings editable_mode=compat` (make install does)")


def test_benchmarl_hydra_overrides_reach_the_config_and_bad_keys_are_named(tmp_path):
    """Composed as ``benchmarl.run`` composes it: ``+task.overrides.<key>`` (nested keys too) reaches the
    datagames config the env is built from, and an unknown key is a ConfigError naming it."""
    repo = Path(__file__).resolve().parents[1]
    script = """
import os, benchmarl, benchmarl.hydra_config as hc
from hydra import compose, initialize_config_dir
from datagames_env import ConfigError
base = ["algorithm=mappo", "task=datagames/digits_rare"]
with initialize_config_dir(config_dir=os.path.join(os.path.dirname(benchmarl.__file__), "conf"), version_base=None):
    cfg = compose(config_name="config", overrides=base + ["+task.overrides.stream.alpha=0.1", "+task.overrides.n_robots=4"])
    task = hc.load_task_config_from_hydra(cfg.task, "datagames/digits_rare")
    print(task.env_config.stream.alpha, task.env_config.n_robots, task.env_config.action_mode)
    cfg = compose(config_name="config", overrides=base + ["+task.overrides.no_such_key=1"])
    try:
        hc.load_task_config_from_hydra(cfg.task, "datagames/digits_rare")
    except ConfigError as error:
        print("ConfigError:", error)
"""
    env = {**os.environ, "PYTHONPATH": str(repo), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values, error = proc.stdout.strip().splitlines()[-2:]
    assert values.split() == ["0.1", "4", "selection"]  # the task YAML's own override stays
    assert error.startswith("ConfigError:") and "no_such_key" in error
