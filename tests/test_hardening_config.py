"""Issue 16, configs and unbounded inputs: finite values that used to give NaN or raw errors, hostile YAML, and
sizes that used to allocate gigabytes now fail fast with an error naming the key (or file, array) and the size.

The memory tests never allocate what they refuse: the checks run before any array of that size exists, and the
tests that lower the limit (``DATAGAMES_MAX_BYTES``) use configs small enough to run even without the check."""

from __future__ import annotations

import gzip
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from datagames_env.config import ConfigError, load_config
from datagames_env.data.datasets import DatasetError, load_dataset, load_npz, read_idx

SMALL = {"n_robots": 4, "rounds": 3, "obs_per_round": 50, "n_cache": 2}  # as conftest.SMALL_KWARGS
HUGE = 1e308


def _p2p(**overrides):
    from datagames_env.scenarios.p2p import load_p2p_config

    return load_p2p_config(None, **overrides)


def _dual(**overrides):
    from datagames_env.scenarios.dual import load_dual_config

    return load_dual_config(None, **overrides)


def _play(env, steps: int = 2) -> tuple[list[float], list[np.ndarray]]:
    obs, _ = env.reset(seed=0)
    rewards, observations = [], list(obs.values())
    for _ in range(steps):
        actions = {a: np.full(env.action_space(a).shape, 0.5, np.float32) for a in env.agents}
        obs, rew, *_ = env.step(actions)
        rewards += list(rew.values())
        observations += list(obs.values())
    return rewards, observations


# ------------------------------------------------------------------ 1. finite values that gave NaN / raw errors
@pytest.mark.parametrize("load, key, overrides", [
    (load_config, "target.total", {"target.total": 1e200}),
    (load_config, "target.counts", {"target.kind": "counts", "target.counts": [HUGE] * 10}),
    (load_config, "target.proportions", {"target.kind": "proportions", "target.proportions": [HUGE] * 10}),
    (load_config, "initial_cloud_proportions", {"initial_cloud_proportions": [HUGE] * 10}),
    (load_config, "stream.mixes", {"stream.kind": "matrix", "stream.mixes": [[HUGE] * 10] * 10}),
    (load_config, "perception.lr", {"perception.lr": 1e30}),
    (load_config, "obs_per_round", {"obs_per_round": 2**64}),
    (load_config, "n_robots", {"n_robots": 2**63}),
    (load_config, "stream.rare_classes", {"stream.kind": "rare_specialists", "stream.rare_classes": [2**64]}),
    (load_config, "faults.lie_scale", {"faults.lie_scale": HUGE}),
    (_p2p, "perception.lr", {"perception.lr": 1e30}),
    (_p2p, "robots.0.stream", {"robots": [{"stream": {"digits": HUGE, "fog": HUGE}, "initial_labeled": {"digits": 5}},
                                          {"stream": {"digits": 1.0}, "initial_labeled": {"digits": 5}}]}),
    (_p2p, "obs_per_round", {"obs_per_round": 2**64}),
    (_dual, "perception.lr", {"perception.lr": 1e30}),
    (_dual, "kernel_scale", {"kernel_scale": HUGE}),
    (_dual, "obs_per_round", {"obs_per_round": 2**64}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_finite_values_beyond_their_bound_name_the_key(load, key, overrides):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load(**overrides)


def test_target_at_its_bound_gives_finite_rewards_and_observations():
    """The documented bound itself is safe: the reward (a difference of L2 distances of counts) stays finite."""
    import datagames_env

    for overrides in ({"target.total": 1e12}, {"target.kind": "counts", "target.counts": [1e12] * 10},
                      {"target.kind": "proportions", "target.proportions": [1e12] * 10}):
        env = datagames_env.parallel_env(**SMALL, **overrides)
        rewards, observations = _play(env)
        assert np.isfinite(rewards).all(), overrides
        assert all(env.observation_space("robot_0").contains(o) for o in observations), overrides


# ------------------------------------------------------------------------------------------------ 2. YAML files
def _laughs(levels: int) -> str:
    """A YAML 'billion laughs': each level lists the previous one ten times (10**levels values in 300 bytes)."""
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nn_robots: *l{levels - 1}\n"


def test_yaml_alias_bomb_is_refused_fast_with_a_short_message(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(6))  # 10**6 values: the old message echoed them all (3 MB, 0.7 s)
    with pytest.raises(ConfigError, match="alias") as info:
        load_config(path)
    assert str(path) in str(info.value) and len(str(info.value)) < 1000


def test_yaml_alias_bomb_one_level_deeper_than_ever_finished(tmp_path):
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env

    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(12))  # 10**12 values
    start = time.process_time()
    for build in (load_config, make_parallel_env):
        with pytest.raises(ConfigError, match="alias"):
            build(path)
    assert time.process_time() - start < 5.0  # a count over shared nodes, not an expansion


def test_recursive_yaml_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("stream: &s {mixes: [*s]}\n")
    with pytest.raises(ConfigError, match="alias"):
        load_config(path)


def test_long_values_and_many_errors_are_cut_in_error_messages():
    with pytest.raises(ConfigError, match="n_robots") as info:
        load_config(n_robots="x" * 100_000)
    assert len(str(info.value)) < 1000
    with pytest.raises(ConfigError, match="stream.rare_classes.0") as info:  # one error per entry
        load_config(**{"stream.rare_classes": ["x" * 50] * 10_000})
    assert len(str(info.value)) < 3000 and "more" in str(info.value)


@pytest.mark.parametrize("text, key", [
    ("n_robots: 3\nrounds: 2\nn_robots: 4\n", "n_robots"),
    ("stream:\n  alpha: 0.1\n  alpha: 0.2\n", "alpha"),
])
def test_duplicate_yaml_keys_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="duplicate") as info:
        load_config(path)
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)


def test_yaml_merge_keys_may_still_override_merged_values(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("stream:\n  <<: {alpha: 0.3, drift: 0.1}\n  alpha: 0.2\n")
    cfg = load_config(path)
    assert cfg.stream.alpha == 0.2 and cfg.stream.drift == 0.1


def test_binary_yaml_names_the_file(tmp_path):
    from datagames_env.faces.pettingzoo import parallel_env as make_parallel_env
    from datagames_env.scenarios import scenario_of

    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01n_robots: \x89PNG\r\n")
    for build in (load_config, scenario_of, make_parallel_env):
        with pytest.raises(ConfigError, match="binary.yaml"):
            build(path)


# ------------------------------------------------------------------------------------------ 3. unbounded inputs
def _npy_header(shape: tuple, dtype: str) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # magic, length and header


def test_npz_declaring_gigabytes_is_refused_before_loading(tmp_path):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:  # headers only: the payload the header announces is absent
        archive.writestr("features.npy", _npy_header((3 << 28, 3), "<f4"))  # 9 GiB declared
        archive.writestr("labels.npy", _npy_header((3 << 28,), "<i8"))
    with pytest.raises(DatasetError, match=r"'features' declares shape \(805306368, 3\)") as info:
        load_npz(path)
    assert "limit" in str(info.value) and str(path) in str(info.value)


def test_compressed_npz_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, features=np.zeros((4096, 1024), np.float32), labels=np.zeros(4096, np.int64))
    assert path.stat().st_size < 100_000  # 16 MiB declared, a few kB on disk
    with pytest.raises(DatasetError, match="features"):
        load_npz(path, max_bytes=1 << 20)
    assert load_npz(path, max_bytes=1 << 30).n_samples == 4096  # within the limit it loads


def test_npz_object_array_is_refused_by_its_header(tmp_path):
    path = tmp_path / "objects.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("features.npy", _npy_header((2, 2), "|O"))
        archive.writestr("labels.npy", _npy_header((2,), "<i8") + np.zeros(2, np.int64).tobytes())
    with pytest.raises(DatasetError, match="features.*object"):
        load_npz(path)


def test_p2p_rounds_that_need_gigabytes_of_streams_fail_at_config_time():
    with pytest.raises(ConfigError, match="rounds") as info:
        _p2p(rounds=10**6)  # 3.3 GB at reset before
    assert "GiB" in str(info.value)
    with pytest.raises(ConfigError, match="obs_per_round"):
        _p2p(obs_per_round=10**9)


def test_memory_limit_applies_to_p2p_streams(monkeypatch):
    cfg = _p2p(rounds=200)
    streams = cfg.n_robots * 200 * cfg.obs_per_round * 8  # int64 ids, and the observations come on top
    monkeypatch.setenv("DATAGAMES_MAX_BYTES", str(streams))
    with pytest.raises(ConfigError, match="rounds"):
        _p2p(rounds=200)
    monkeypatch.setenv("DATAGAMES_MAX_BYTES", str(2 * streams))
    assert _p2p(rounds=200).rounds == 200


@pytest.mark.parametrize("key, value", [("n_robots", 10**7), ("initial_cloud_size", 10**9)])
def test_cloud_game_sizes_that_need_gigabytes_fail_before_allocating(key, value):
    import datagames_env

    with pytest.raises(ConfigError, match=key) as info:
        datagames_env.parallel_env(**{**SMALL, key: value})
    assert "GiB" in str(info.value)


@pytest.mark.parametrize("key, value", [("n_robots", 3000), ("initial_cloud_size", 20_000),
                                        ("obs_per_round", 5000)])
def test_memory_limit_applies_to_the_cloud_game(monkeypatch, key, value):
    import datagames_env

    monkeypatch.setenv("DATAGAMES_MAX_BYTES", str(1 << 20))  # 1 MiB: these small configs need more
    overrides = {**SMALL, key: value, "action_mode": "selection"}
    with pytest.raises(ConfigError, match=key):
        datagames_env.parallel_env(**overrides)
    with pytest.raises(ConfigError, match=key):
        datagames_env.vector_env(num_envs=2, **overrides)


@pytest.mark.parametrize("key, value", [("n_robots", 10**7), ("initial_cloud_size", 10**9),
                                        ("obs_per_round", 10**9)])
def test_dual_sizes_that_need_gigabytes_fail_at_config_time(key, value):
    with pytest.raises(ConfigError, match=key):
        _dual(**{key: value})


def test_bad_memory_limit_setting_is_named(monkeypatch):
    monkeypatch.setenv("DATAGAMES_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="DATAGAMES_MAX_BYTES"):
        _p2p()


# ------------------------------------------------------------------------------------------ 4. smaller gaps
def test_dotted_override_below_a_scalar_names_the_key():
    from datagames_env.config import load_config as load

    with pytest.raises(ConfigError, match="n_robots.x"):
        load(**{"n_robots": 5, "n_robots.x": 1})
    with pytest.raises(ConfigError, match="stream.alpha.x"):
        load(**{"stream.alpha": 0.1, "stream.alpha.x": 1})


def test_idx_with_more_dimensions_than_numpy_holds_is_a_dataset_error(tmp_path):
    path = tmp_path / "dims.idx"
    path.write_bytes(bytes([0, 0, 0x08, 255]) + (1).to_bytes(4, "big") * 255 + b"\x00")
    with pytest.raises(DatasetError, match="255 dimensions"):
        read_idx(path)


def test_idx_images_of_height_zero_are_a_dataset_error(tmp_path):
    folder = tmp_path / "MNIST"
    folder.mkdir()

    def write(name, header_dims, payload=b""):
        header = bytes([0, 0, 0x08, len(header_dims)]) + b"".join(d.to_bytes(4, "big") for d in header_dims)
        (folder / name).write_bytes(gzip.compress(header + payload))

    write("t10k-images-idx3-ubyte.gz", (5, 0, 28))
    write("t10k-labels-idx1-ubyte.gz", (5,), bytes(5))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", data_dir=tmp_path)
