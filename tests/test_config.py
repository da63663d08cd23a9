"""Tests of datagames_env.config: YAML configs, keyword overrides, and errors that name the offending key."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import ValidationError

import datagames_env
from datagames_env.config import (
    CONFIG_DIR,
    ConfigError,
    EnvConfig,
    PerceptionConfig,
    load_config,
)

SMALL_KWARGS = {"n_robots": 4, "rounds": 3, "obs_per_round": 50, "n_cache": 2}  # as conftest.small_kwargs

YAML_FILES = sorted(CONFIG_DIR.glob("*.yaml"))


# ------------------------------------------------------------------------------------------- the files
def test_config_dir_holds_the_documented_configs():
    names = {p.stem for p in YAML_FILES}
    assert {"default", "digits_rare", "mnist_datagames", "mnist_nonuniform"} <= names


def test_default_yaml_equals_envconfig_defaults():
    raw = yaml.safe_load((CONFIG_DIR / "default.yaml").read_text())
    # every key is listed in default.yaml, with its default value
    assert raw == EnvConfig().model_dump()
    assert load_config("default") == EnvConfig()
    assert load_config(CONFIG_DIR / "default.yaml") == EnvConfig()
    assert load_config(str(CONFIG_DIR / "default.yaml")) == EnvConfig()
    assert load_config(None) == EnvConfig()
    assert load_config({}) == EnvConfig()


@pytest.mark.parametrize("path", YAML_FILES, ids=[p.stem for p in YAML_FILES])
def test_every_yaml_in_configs_loads(path):
    from datagames_env.scenarios import load_scenario_config, scenario_of

    if scenario_of(path.stem) != "datagames":  # the other scenarios' configs: their own loader
        cfg = load_scenario_config(path.stem)
        assert load_scenario_config(path) == cfg and cfg.scenario == scenario_of(path)
        return
    cfg = load_config(path.stem)
    assert isinstance(cfg, EnvConfig)
    assert load_config(path) == cfg
    # the keys the file sets survive into the typed config
    raw = yaml.safe_load(path.read_text()) or {}

    def check(node, model):
        for key, value in node.items():
            got = getattr(model, key)
            if isinstance(value, dict):
                check(value, got)
            else:
                assert got == value, (path.name, key)

    check(raw, cfg)


def test_paper_mnist_config_values():
    cfg = load_config("mnist_datagames")
    assert cfg.dataset.name == "mnist"
    assert (cfg.n_robots, cfg.rounds, cfg.obs_per_round, cfg.n_cache, cfg.initial_cloud_size) == (20, 7, 2000, 2, 200)
    assert cfg.perception.retrain_every == 1
    # keys not in the file keep their defaults
    assert cfg.stream.drift == EnvConfig().stream.drift
    assert cfg.perception.hidden == EnvConfig().perception.hidden


def test_envconfig_is_frozen():
    cfg = EnvConfig()
    with pytest.raises(ValidationError):
        cfg.n_robots = 3  # type: ignore[misc]


# ------------------------------------------------------------------------------------------- overrides
def test_keyword_overrides_on_top_of_a_named_config():
    cfg = load_config("mnist_datagames", n_robots=3, rounds=2)
    assert (cfg.n_robots, cfg.rounds) == (3, 2)
    assert cfg.obs_per_round == 2000  # from the file
    assert cfg.dataset.name == "mnist"


def test_dotted_keys():
    cfg = load_config(**{"stream.alpha": 0.1, "perception.retrain_every": 2, "dataset.split_seed": 7})
    assert cfg.stream.alpha == 0.1
    assert cfg.perception.retrain_every == 2
    assert cfg.dataset.split_seed == 7
    # the siblings keep their defaults
    assert cfg.stream.kind == "dirichlet"
    assert cfg.perception.hidden == 128


def test_dotted_keys_on_top_of_a_file_keep_the_files_siblings():
    cfg = load_config("digits_rare", **{"stream.specialist_rare_share": 0.9})
    assert cfg.stream.specialist_rare_share == 0.9
    assert cfg.stream.kind == "rare_specialists"
    assert cfg.stream.rare_classes == [8, 9]
    assert cfg.target.kind == "proportions"


def test_nested_dict_override_merges_into_the_file():
    cfg = load_config("digits_rare", stream={"alpha": 0.2})
    assert cfg.stream.alpha == 0.2
    assert cfg.stream.kind == "rare_specialists"  # merged, not replaced
    assert cfg.stream.n_specialists == 2
    cfg = load_config({"stream": {"kind": "uniform"}}, stream={"alpha": 3.0})
    assert (cfg.stream.kind, cfg.stream.alpha) == ("uniform", 3.0)


def test_dotted_and_nested_overrides_combine():
    cfg = load_config(**{"perception.seed": 3}, perception={"hidden": 16})
    assert (cfg.perception.seed, cfg.perception.hidden) == (3, 16)
    cfg = load_config(perception={"hidden": 16}, **{"perception.seed": 3})
    assert (cfg.perception.seed, cfg.perception.hidden) == (3, 16)


def test_overrides_do_not_mutate_the_callers_dicts():
    base = {"stream": {"kind": "uniform"}, "n_robots": 3}
    nested = {"alpha": 2.0}
    load_config(base, stream=nested, n_robots=5)
    assert base == {"stream": {"kind": "uniform"}, "n_robots": 3}
    assert nested == {"alpha": 2.0}


def test_dotted_key_does_not_mutate_the_callers_nested_override():
    nested = {"hidden": 16}
    cfg = load_config(perception=nested, **{"perception.seed": 3})
    assert (cfg.perception.seed, cfg.perception.hidden) == (3, 16)
    assert nested == {"hidden": 16}


def test_dotted_key_on_top_of_a_typed_sub_config():
    cfg = load_config(perception=PerceptionConfig(hidden=8), **{"perception.seed": 3})
    assert (cfg.perception.hidden, cfg.perception.seed) == (8, 3)


def test_override_with_a_typed_sub_config():
    cfg = load_config(perception=PerceptionConfig(hidden=8, train_steps=5))
    assert (cfg.perception.hidden, cfg.perception.train_steps) == (8, 5)


def test_config_object_and_dataset_shorthand():
    base = load_config(n_robots=7)
    cfg = load_config(base, rounds=4)
    assert (cfg.n_robots, cfg.rounds) == (7, 4)
    assert base.rounds == 10  # the input object is unchanged
    assert load_config(dataset="kmnist").dataset.name == "kmnist"


def test_upload_budget():
    assert load_config(n_robots=6, n_cache=3).upload_budget == 18


# ------------------------------------------------------------------------------------------- errors
def _raises_naming(key: str, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    assert key in str(info.value), str(info.value)
    return info.value


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_top_level_key():
    err = _raises_naming("n_robotz", n_robotz=3)
    assert "n_robots" in str(err)  # the suggestion


def test_unknown_nested_key_dotted_and_dict():
    err = _raises_naming("stream.alhpa", **{"stream.alhpa": 0.1})
    assert "alpha" in str(err)
    _raises_naming("perception.hiden", perception={"hiden": 3})
    _raises_naming("dataset.nmae", {"dataset": {"nmae": "digits"}})


def test_unknown_key_in_a_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_robots: 3\ntarget:\n  kindd: uniform\n")
    _raises_naming("target.kindd", path)


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("n_cache", {"n_cache": -1}),
        ("n_cache", {"n_cache": 0}),
        ("n_cache", {"n_cache": 51, "obs_per_round": 50}),
        ("n_robots", {"n_robots": 0}),
        ("rounds", {"rounds": 0}),
        ("obs_per_round", {"obs_per_round": -5}),
        ("action_mode", {"action_mode": "pick"}),
        ("loss", {"loss": "l1"}),
        ("mix_estimator", {"mix_estimator": "magic"}),
        ("stream.alpha", {"stream.alpha": 0.0}),
        ("stream.kind", {"stream.kind": "nope"}),
        ("stream.drift", {"stream.drift": 1.5}),
        ("perception.retrain_every", {"perception.retrain_every": -1}),
        ("perception.lr", {"perception": {"lr": 0.0}}),
        ("dataset.validation_fraction", {"dataset.validation_fraction": 1.5}),
        ("dataset.validation_fraction", {"dataset.validation_fraction": 0.5, "dataset.test_fraction": 0.45}),
        ("target.proportions", {"target": {"kind": "proportions"}}),
        ("target.proportions", {"target": {"kind": "proportions", "proportions": [-1.0, 2.0]}}),
        ("target.total", {"target.total": -3.0}),
        ("initial_cloud_size", {"initial_cloud_size": -1}),
        ("stream.mixes", {"stream": {"kind": "matrix", "mixes": [[1.0, 0.0]]}, "n_robots": 2}),
        ("stream.n_specialists", {"stream": {"kind": "rare_specialists", "n_specialists": 5}, "n_robots": 3}),
    ],
)
def test_invalid_values_name_the_key(key, overrides):
    _raises_naming(key, **overrides)


def test_target_proportions_longer_than_the_classes_fails_when_the_env_is_built():
    # valid as data (the config does not know the dataset) ...
    cfg = load_config(target={"kind": "proportions", "proportions": [0.1] * 11}, **SMALL_KWARGS)
    assert len(cfg.target.proportions) == 11
    # ... rejected when the dataset (10 digit classes) is known
    with pytest.raises(ConfigError, match=re.escape("target.proportions")):
        datagames_env.parallel_env(cfg)
    with pytest.raises(ConfigError, match=re.escape("target.proportions")):
        datagames_env.vector_env(2, cfg)


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("target.counts", {"target": {"kind": "counts", "counts": [5.0] * 9}}),
        ("initial_cloud_proportions", {"initial_cloud_proportions": [1.0] * 3}),
        ("stream.rare_classes", {"stream": {"kind": "rare_specialists", "rare_classes": [10, 11]}}),
        ("stream.mixes", {"stream": {"kind": "matrix", "mixes": [[1.0, 1.0]] * 4}}),
    ],
)
def test_dataset_dependent_checks_name_the_key(key, overrides):
    with pytest.raises(ConfigError, match=re.escape(key)):
        datagames_env.parallel_env(**{**SMALL_KWARGS, **overrides})


def test_all_zero_target_counts_name_the_key():
    with pytest.raises(ConfigError, match=re.escape("target.counts")):
        env = datagames_env.parallel_env(target={"kind": "counts", "counts": [0.0] * 10}, **SMALL_KWARGS)
        env.reset(seed=0)


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="no_such_config"):
        load_config("no_such_config")
    with pytest.raises(ConfigError, match="no_such_config"):
        datagames_env.parallel_env("no_such_config")


def test_invalid_yaml_and_non_mapping_yaml(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("n_robots: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(broken)
    listed = tmp_path / "listed.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == EnvConfig()
