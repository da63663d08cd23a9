"""The scenarios: the three systems of the papers, each a :class:`~datagames_env.scenarios.base.Scenario` on the
shared core behind the one parallel face, and the one table that names them.

=============  =============================================  =====================  ==============================
scenario       scenario class                                 PettingZoo id          system
=============  =============================================  =====================  ==============================
``datagames``  :class:`~.datagames.DataGamesScenario`         ``datagames/DataGames-v0``  cloud potential game (Data Games)
``p2p``        :class:`~.p2p.P2PScenario`                     ``datagames/P2P-v0``   peer-to-peer GU sharing, OoD feedback, privacy
``dual``       :class:`~.dual.DualScenario`                   ``datagames/Dual-v0``  two-stage upload + labeling (DUAL / Fleet-AL)
=============  =============================================  =====================  ==============================

A config names its scenario with the top-level key ``scenario`` (default ``DEFAULT_SCENARIO``, ``datagames``). The
faces are built from this table (scenarios import no face): ``datagames_env.parallel_env(config, **overrides)`` is
the face :class:`~datagames_env.faces.base.FleetParallelEnv` over the scenario's B = 1 :func:`make_scenario`,
with flat ``Box`` observations (a declared ``obs_layout``) and ``Box`` actions, so the learned policies in
``agents/`` train on all of them. A new scenario is a :class:`Scenario` subclass plus one row of ``SCENARIOS``, which
names its config loader, default config, results writer, built-in policies and (optionally) its native batched
implementation, its warm-up and its global state's bounds.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, EnvConfig, read_config_file, resolve_config_path


@dataclass(frozen=True)
class ScenarioInfo:
    """One row of the scenario table: everything the package needs to know about a scenario, by name (entry points
    are ``"module:attr"`` strings, imported on first use, so the table itself imports nothing)."""

    module: str          # holds the Scenario class
    scenario_class: str  # the B = 1 Scenario of the paper path (what a LoopedBatch steps)
    scenario_factory: str  # "module:function" or a name in ``module``: (config, **overrides) -> the B = 1 Scenario
    #                        that ``parallel_env`` steps
    config_loader: str   # "module:function": (config, **overrides) -> the scenario's validated config object
    registry_id: str     # PettingZoo registry id of its parallel and AEC faces
    default_config: str  # the config of ``datagames <scenario> ...`` and of a bare ``parallel_env()`` of it
    reporter: str        # "module:Class" of its results writer (datagames_env.harness.reports)
    policies: tuple[tuple[str, str], ...]  # (name, "module:Class") of its built-in policies, in listing order
    labelers: str | None = None  # "module:NAMES": second-stage names a policy spec may give after '/'
    # "module:function" or a name in ``module``: (validated config, num_envs) -> a native BatchedScenario, or None when this
    # config (e.g. its perception tier) has none; None here: the scenario has no native batched implementation
    batched: str | None = None
    # "module:function" (config) -> list of cache files: builds what a first episode of the config would otherwise
    # build (the fast tier's pretrained extractor); ``datagames warmup`` runs it on ``default_config``
    warm: str | None = None
    # bounds of every entry of its global state (``state()``; TorchRL's state spec), or None: declared unbounded
    state_bounds: tuple[float, float] | None = None


# the scenario of a config that names none (and of a bare ``parallel_env()``)
DEFAULT_SCENARIO = "datagames"
_REPORTS = "datagames_env.harness.reports"
SCENARIOS: dict[str, ScenarioInfo] = {
    "datagames": ScenarioInfo(
        "datagames_env.scenarios.datagames", "DataGamesScenario", "DataGamesScenario", "datagames_env.config:load_config",
        "datagames/DataGames-v0", "default", f"{_REPORTS}.datagames:DataGamesReporter",
        (("random", "datagames_env.policy:RandomPolicy"), ("uniform", "datagames_env.policy:UniformPolicy"),
         ("greedy", "baselines.policies:GreedyPolicy"), ("interactive", "baselines.policies:InteractivePolicy"),
         ("interactive-sum", "baselines.policies:InteractiveSumPolicy"), ("oracle", "baselines.policies:OraclePolicy"),
         ("greedy-fraction", "baselines.fraction:GreedyFractionPolicy"),
         ("greedy-share", "baselines.fraction:GreedySharePolicy")),
        batched="batched", state_bounds=(-1.0, 1.0)),
    "p2p": ScenarioInfo(
        "datagames_env.scenarios.p2p", "P2PScenario", "datagames_env.scenarios.p2p_fast:make_scenario", "datagames_env.scenarios.p2p:load_p2p_config",
        "datagames/P2P-v0", "p2p_default", f"{_REPORTS}.p2p:P2PReporter",
        (("random", "baselines.p2p_policies:RandomSharePolicy"), ("oracle", "baselines.p2p_policies:OraclePolicy"),
         ("gu", "baselines.p2p_policies:GUPolicy")),
        batched="datagames_env.scenarios.p2p_fast:batched_scenario",
        warm="datagames_env.scenarios.p2p_fast:warm_fast_perception"),
    "dual": ScenarioInfo(
        "datagames_env.scenarios.dual", "DualScenario", "datagames_env.scenarios.dual_fast:dual_scenario", "datagames_env.scenarios.dual:load_dual_config",
        "datagames/Dual-v0", "dual_default", f"{_REPORTS}.dual:DualReporter",
        tuple((name, f"baselines.dual_policies:{cls}") for name, cls in (
            ("random", "RandomDualPolicy"), ("entropy", "EntropyDualPolicy"), ("margin", "MarginDualPolicy"),
            ("submodular-independent", "SubmodularIndependentPolicy"),
            ("submodular-interactive", "SubmodularInteractivePolicy"),
            ("submodular-centralized", "SubmodularCentralizedPolicy"), ("greedy", "GreedyDualPolicy"),
            ("interactive", "InteractiveDualPolicy"), ("oracle", "OracleDualPolicy"))),
        labelers="datagames_env.scenarios.dual:LABELERS", batched="datagames_env.scenarios.dual_fast:batched_scenario",
        warm="datagames_env.scenarios.dual_fast:warm_fast_perception"),
}


def entry_point(text: str, module: str | None = None) -> Any:
    """``"module:attr"`` -> the attribute (imported now); a bare ``attr`` is looked up in ``module``."""
    name, sep, attr = text.partition(":")
    return getattr(importlib.import_module(name if sep else module), attr if sep else name)


def scenario_of(config: Any = None, **overrides: Any) -> str:
    """The scenario a config (name, YAML path, dict, or a scenario's config object) belongs to."""
    if "scenario" in overrides:
        name = overrides["scenario"]
    elif config is None:
        name = DEFAULT_SCENARIO
    elif isinstance(config, dict):
        name = config.get("scenario", DEFAULT_SCENARIO)
    elif isinstance(config, (str, Path)):
        data = read_config_file(resolve_config_path(config)) or {}
        name = data.get("scenario", DEFAULT_SCENARIO) if isinstance(data, dict) else DEFAULT_SCENARIO
    elif isinstance(config, EnvConfig):  # the cloud game's config class
        name = "datagames"
    else:
        name = getattr(config, "scenario", DEFAULT_SCENARIO)
    if name not in SCENARIOS:
        raise ConfigError(f"scenario: '{name}' is not one of {sorted(SCENARIOS)}")
    return name


def scenario_module(name: str):
    if name not in SCENARIOS:
        raise ConfigError(f"scenario: '{name}' is not one of {sorted(SCENARIOS)}")
    return importlib.import_module(SCENARIOS[name].module)


def load_scenario_config(config: Any = None, **overrides: Any):
    """The validated config object of the config's scenario (``EnvConfig`` for ``datagames``)."""
    return entry_point(SCENARIOS[scenario_of(config, **overrides)].config_loader)(config, **overrides)


def make_scenario(config: Any = None, **overrides: Any):
    """The B = 1 :class:`~.base.Scenario` of the config's scenario (its table row's ``scenario_factory``: the native
    batched implementation seen at B = 1 where the config has one): what the parallel face steps."""
    name = scenario_of(config, **overrides)
    overrides.pop("scenario", None)  # the config object carries it
    return entry_point(SCENARIOS[name].scenario_factory, SCENARIOS[name].module)(config, **overrides)


def make_batched(config: Any = None, num_envs: int = 1, **overrides: Any):
    """The :class:`~.base.BatchedScenario` of ``num_envs`` envs of the config's scenario: its native batched
    implementation when it has one for this config, else B scenarios stepped in a loop (:class:`~.batching.LoopedBatch`)."""
    from .batching import LoopedBatch

    name = scenario_of(config, **overrides)
    cfg = load_scenario_config(config, **overrides)
    info, module = SCENARIOS[name], scenario_module(name)
    if info.batched is not None:
        native = entry_point(info.batched, info.module)(cfg, num_envs)
        if native is not None:
            return native
    scenario_class = getattr(module, info.scenario_class)
    return LoopedBatch(lambda: scenario_class(cfg), num_envs)
