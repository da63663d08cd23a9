"""Portable checkpoints: the shipped ones load and play from a copy in another folder, and the checkpoints that
training writes name no folder of the machine that wrote them (issue 18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

from agents.portable import absolute_paths_in  # noqa: E402
from datagames_env.harness.episode import run_episode  # noqa: E402
from datagames_env.policy import make_policy  # noqa: E402
from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
NAMES = sorted(p.name for p in SHIPPED.iterdir() if (p / "datagames_meta.json").is_file())
ray_group = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """The repository's checkpoints/, copied into a temp folder outside the repository."""
    folder = tmp_path_factory.mktemp("elsewhere") / "checkpoints"
    shutil.copytree(SHIPPED, folder)
    return folder


def test_shipped_checkpoints_are_there():
    assert {"default-bc", "default-ppo", "default-ppo-comm"} <= set(NAMES)


def test_shipped_checkpoints_name_no_folder_of_any_machine(copied):
    repo_bytes = str(REPO).encode()
    for name in NAMES:
        assert absolute_paths_in(copied / name) == {}, name
        for path in (copied / name).rglob("*"):
            assert not path.is_file() or repo_bytes not in path.read_bytes(), path


@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_loads_and_plays_one_episode_from_a_copy(name, copied, monkeypatch, request):
    """Through the policy registry (``rllib:PATH``), from the copy, with the working directory outside the repo."""
    meta = json.loads((copied / name / "datagames_meta.json").read_text())
    settings = meta["settings"]
    overrides = dict(settings["overrides"], rounds=2)
    if settings["config"] not in ("default", "p2p_default", "dual_default"):  # MNIST: the loading machine's data folder
        from datagames_env.data.datasets import DATA_DIR_ENV_VAR

        monkeypatch.setenv(DATA_DIR_ENV_VAR, str(request.getfixturevalue("shared_datasets")))
        overrides["world_seed"] = 0
    monkeypatch.chdir(copied.parent)
    env = make_parallel_env(settings["config"], **overrides)
    policy = make_policy(f"rllib:checkpoints/{name}", env)
    record = run_episode(env, policy, seed=300)
    assert len(record["rounds"]) == 3  # the reset and 2 rounds
    assert np.isfinite(record.get("final_distance", 0.0))  # the cloud game's distance; p2p records none
    if settings["message_sweeps"]:
        assert policy.last_stats["sweeps"] == settings["message_sweeps"] and policy.last_stats["messages"] > 0
    env.close()


@ray_group
def test_training_with_imitation_writes_a_portable_checkpoint(tmp_path, monkeypatch):
    """The clone is copied into the checkpoint and named nowhere by path; a data-folder override goes to
    $DATAGAMES_DATA_DIR; the checkpoint, moved to another folder with its run folder gone, rebuilds the algorithm."""
    import ray
    from ray.rllib.algorithms.algorithm import Algorithm

    from agents.rllib_train import TrainSettings, train
    from datagames_env.data.datasets import DATA_DIR_ENV_VAR

    monkeypatch.setenv(DATA_DIR_ENV_VAR, "unused")  # restored after the test; train() sets it from the override
    monkeypatch.chdir(tmp_path)
    small = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
    settings = TrainSettings(config="default", overrides=dict(small, **{"dataset.data_dir": str(tmp_path / "data")}),
                             iterations=1, train_batch_size=90, minibatch_size=45, num_epochs=1,
                             out=str(tmp_path / "runs"), run_name="bc", progress=False, imitate="greedy",
                             imitation_episodes=2, imitation_epochs=1)
    if ray.is_initialized():
        ray.shutdown()
    try:
        result = train(settings, log=lambda *a: None)
        import os

        assert os.environ[DATA_DIR_ENV_VAR] == str(tmp_path / "data")
        moved = tmp_path / "elsewhere" / "checkpoint"
        shutil.copytree(result["checkpoint"], moved)
        shutil.rmtree(result["run_dir"])
        assert absolute_paths_in(moved) == {}
        for path in moved.rglob("*"):
            assert not path.is_file() or str(tmp_path).encode() not in path.read_bytes(), path
        meta = json.loads((moved / "datagames_meta.json").read_text())
        assert meta["imitation"]["module"] == "imitation_module" and (moved / "imitation_module").is_dir()
        assert meta["settings"]["out"] is None and "dataset.data_dir" not in meta["settings"]["overrides"]
        algo = Algorithm.from_checkpoint(str(moved))
        try:
            assert algo.iteration == 1
        finally:
            algo.stop()
    finally:
        ray.shutdown()


def test_sb3_training_writes_a_portable_checkpoint_that_loads_and_resumes_from_another_folder(tmp_path, monkeypatch):
    """SB3's model.zip names no TensorBoard folder and its metadata no output or data folder; moved to another
    folder with its run folder gone, it plays as an `sb3:` policy and resumes training there."""
    pytest.importorskip("stable_baselines3")
    import os
    import zipfile

    from agents.rllib_train import TrainSettings
    from agents.sb3_train import MODEL_FILE, train_sb3
    from datagames_env.data.datasets import DATA_DIR_ENV_VAR

    monkeypatch.setenv(DATA_DIR_ENV_VAR, "unused")  # restored after the test; train_sb3 sets it from the override
    monkeypatch.chdir(tmp_path)
    small = {"n_robots": 3, "rounds": 3, "obs_per_round": 30, "n_cache": 2}
    settings = TrainSettings(config="default", overrides=dict(small, **{"dataset.data_dir": str(tmp_path / "data")}),
                             iterations=1, train_batch_size=36, minibatch_size=18, num_epochs=1,
                             out=str(tmp_path / "runs"), run_name="sb3", progress=False, checkpoint_every=1)
    result = train_sb3(settings, log=lambda *a: None)
    assert os.environ[DATA_DIR_ENV_VAR] == str(tmp_path / "data")
    assert (Path(result["run_dir"]) / "tensorboard").is_dir()  # the run still logs to TensorBoard
    moved = tmp_path / "elsewhere" / "checkpoint"
    shutil.copytree(result["checkpoint"], moved)
    shutil.rmtree(result["run_dir"])
    assert absolute_paths_in(moved) == {}
    with zipfile.ZipFile(moved / MODEL_FILE) as archive:  # the compressed members too, byte for byte
        assert all(str(tmp_path).encode() not in archive.read(name) for name in archive.namelist())
    meta = json.loads((moved / "datagames_meta.json").read_text())
    assert meta["framework"] == "sb3" and meta["agent_steps"] == 36
    assert meta["settings"]["out"] is None and "dataset.data_dir" not in meta["settings"]["overrides"]

    monkeypatch.chdir(moved.parent)
    env = make_parallel_env("default", **small)
    record = run_episode(env, make_policy("sb3:checkpoint", env), seed=300)
    assert np.isfinite(record["final_distance"]) and len(record["rounds"]) == small["rounds"] + 1
    env.close()
    resumed = train_sb3(TrainSettings(**{**vars(settings), "resume": "checkpoint", "out": "runs2"}),
                        log=lambda *a: None)
    assert resumed["total"] == {"iterations": 2, "agent_steps": 72}
    assert json.loads((Path(resumed["checkpoint"]) / "datagames_meta.json").read_text())["settings"]["resume"] == \
        "checkpoint"
