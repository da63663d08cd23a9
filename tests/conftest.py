"""Shared fixtures of the datagames_env test suite.

Nothing here is autouse: every fixture is opt-in, so collecting the suite costs nothing extra.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# <repo>/tests/conftest.py -> <repo>/.. /shared/datasets (the official MNIST / KMNIST t10k files)
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"

# A fast environment: 4 robots, 3 rounds, 50 observations per robot per round, 2 uploads each. Every env built
# from these keys (with the default dataset and perception) shares one cached world and one trained model.
SMALL_KWARGS: dict = {"n_robots": 4, "rounds": 3, "obs_per_round": 50, "n_cache": 2}


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The shared datasets folder; skips the test when the MNIST files are not there."""
    mnist = SHARED_DATASETS / "MNIST"
    needed = [mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz"]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"shared MNIST files not found under {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture
def small_kwargs() -> dict:
    """Keyword overrides for a small, fast environment (a fresh dict per test: mutate freely)."""
    return dict(SMALL_KWARGS)


@pytest.fixture
def one_torch_thread():
    """Train models single-threaded inside the test (on 2 cores under pytest-xdist, torch's default thread count
    oversubscribes the CPU and tiny trainings become many times slower). Restores the caller's setting."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def play_moved_checkpoint(tmp_path):
    """``play(result, model, config, overrides) -> (env, policy, record)`` for a ``train()`` run under ``tmp_path``:
    moves its checkpoint to another folder, checks that it names no folder of this machine and records ``model``,
    loads it as an ``rllib:`` policy and plays one episode (seed 300) with a finite final distance."""

    def play(result: dict, model: str, config, overrides: dict):
        import json

        import numpy as np

        import datagames_env
        from agents.portable import absolute_paths_in
        from datagames_env.harness.episode import run_episode
        from datagames_env.policy import make_policy

        checkpoint = tmp_path / "moved"
        (tmp_path / result["checkpoint"]).rename(checkpoint)
        assert absolute_paths_in(checkpoint) == {}
        assert json.loads((checkpoint / "datagames_meta.json").read_text())["settings"]["model"] == model
        env = datagames_env.parallel_env(config, **overrides)
        policy = make_policy(f"rllib:{checkpoint}", env)
        record = run_episode(env, policy, seed=300)
        assert np.isfinite(record["final_distance"])
        return env, policy, record

    return play


# the resource that only the second node of `two_node_cluster` holds (env runners are placed by it)
RUNNER_RESOURCE = "datagames_runner"


def _start_two_node_cluster(cluster_class, attempts: int = 2):
    """Ray gives each raylet a fixed 30 s to register (see datagames_env/harness/ray_runtime.py); on a loaded
    two-core machine that can run out although nothing is wrong, so a cluster that times out is started again."""
    from datagames_env.harness.ray_runtime import STARTUP_TIMEOUT_TEXT

    for attempt in range(1, attempts + 1):
        cluster = cluster_class(initialize_head=False)
        try:
            cluster.add_node(num_cpus=1, include_dashboard=False)  # the head
            worker = cluster.add_node(num_cpus=1, resources={RUNNER_RESOURCE: 1})
            cluster.wait_for_nodes()
            return cluster, worker
        except Exception as exc:
            cluster.shutdown()
            if STARTUP_TIMEOUT_TEXT not in str(exc) or attempt == attempts:
                raise


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head node (driver, learner) and a second node that alone holds the env-runner resource. Both are
    stopped at the end, and the driver disconnected, so no Ray runtime outlives the test."""
    import shutil
    import tempfile

    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    # Cluster() writes its address to <ray temp>/ray_current_cluster, where any plain ray.init() on this machine
    # (another test, another user) would find and join it: keep the cluster's files in a temp dir of its own
    # (short: Unix socket paths are limited to 107 characters).
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp_dir)
    cluster, worker = _start_two_node_cluster(Cluster)
    try:
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
