"""The three systems of the papers behind one factory: ``make_parallel_env(config)``.

=============  ==========================================  =========================================
scenario       module                                      system
=============  ==========================================  =========================================
``datagames``  :mod:`datagames_env.scenarios.datagames`                    cloud potential game (Data Games)
``p2p``        :mod:`datagames_env.scenarios.p2p`                    peer-to-peer GU sharing, OoD feedback, privacy
``dual``       :mod:`datagames_env.scenarios.dual`                   two-stage upload + labeling (DUAL / Fleet-AL)
=============  ==========================================  =========================================

A config names its scenario with the top-level key ``scenario`` (default ``datagames``). Every scenario's
``parallel_env(config, **overrides)`` returns a PettingZoo ``ParallelEnv`` with flat ``Box`` observations and
``Box`` actions, so the learned policies in ``agents/`` train on all of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from ..config import ConfigError, EnvConfig, resolve_config_path

SCENARIOS = {"datagames": "datagames_env.scenarios.datagames", "p2p": "datagames_env.scenarios.p2p", "dual": "datagames_env.scenarios.dual"}


def scenario_of(config: Any = None, **overrides: Any) -> str:
    """The scenario a config (name, YAML path, dict, or a scenario's config object) belongs to."""
    if "scenario" in overrides:
        name = overrides["scenario"]
    elif config is None:
        name = "datagames"
    elif isinstance(config, dict):
        name = config.get("scenario", "datagames")
    elif isinstance(config, (str, Path)):
        path = resolve_config_path(config)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        name = data.get("scenario", "datagames") if isinstance(data, dict) else "datagames"
    elif isinstance(config, EnvConfig):
        name = "datagames"
    else:
        name = getattr(config, "scenario", "datagames")
    if name not in SCENARIOS:
        raise ConfigError(f"scenario: '{name}' is not one of {sorted(SCENARIOS)}")
    return name


def scenario_module(name: str):
    if name not in SCENARIOS:
        raise ConfigError(f"scenario: '{name}' is not one of {sorted(SCENARIOS)}")
    return importlib.import_module(SCENARIOS[name])


def load_scenario_config(config: Any = None, **overrides: Any):
    """The validated config object of the config's scenario (``EnvConfig`` for ``datagames``)."""
    name = scenario_of(config, **overrides)
    if name == "datagames":
        from ..config import load_config

        return load_config(config, **overrides)
    return getattr(scenario_module(name), f"load_{name}_config")(config, **overrides)


def make_parallel_env(config: Any = None, **overrides: Any):
    """``parallel_env`` of the config's scenario (``scenario`` key), with keyword overrides."""
    return scenario_module(scenario_of(config, **overrides)).parallel_env(config, **overrides)
