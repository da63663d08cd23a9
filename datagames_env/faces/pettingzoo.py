"""One PettingZoo entry point for every scenario: ``parallel_env(config)`` and ``env(config)`` dispatch on the
config's ``scenario`` key.

=====================  ============================================================================
Scenarios              ``datagames`` (default, the cloud game), ``p2p``, ``dual`` (:mod:`datagames_env.scenarios`)
Agents                 ``robot_0 ... robot_{N-1}``, all acting every round, in every scenario
Observation / action   per scenario: a flat ``Box`` observation with a declared ``obs_layout`` and a ``Box``
                       action (see each scenario's module docstring)
Reward                 per scenario
Episode end            after ``rounds`` (``max_cycles``) steps every robot is terminated; ``agents`` empties
Arguments              ``config`` (a name in ``configs/``, a YAML path, a dict or a scenario's config object),
                       ``render_mode``, ``max_cycles``, and any config key of that scenario as a keyword
=====================  ============================================================================

``env(...)`` is the AEC face (robots act one after another; the round resolves when the last has acted), a
:class:`~datagames_env.faces.aec.FleetAECEnv` view of the parallel env (``parallel_to_aec`` that checks each
action at its own agent's turn). The PettingZoo registry ids
``datagames/DataGames-v0``, ``datagames/P2P-v0`` and ``datagames/Dual-v0`` name both faces of each scenario.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from ..scenarios import SCENARIOS, make_scenario, scenario_of
from .aec import FleetAECEnv
from .base import FleetParallelEnv

__all__ = ["DataGamesParallelEnv", "DualParallelEnv", "P2PParallelEnv", "PARALLEL_CLASSES", "REGISTRY_IDS", "aec_of",
           "env", "parallel_env", "raw_env"]

# registry id -> scenario name
REGISTRY_IDS = {info.registry_id: name for name, info in SCENARIOS.items()}


class _ScenarioOf:
    """The ``scenario_class`` of a named face: builds the scenario's B = 1 Scenario (its table row's
    ``scenario_factory``) when called, so naming a face imports no scenario module."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, config: Any = None, **overrides: Any):
        return make_scenario(config, scenario=self.name, **overrides)


class DataGamesParallelEnv(FleetParallelEnv):
    """The cloud game as a PettingZoo parallel environment (the one face over its scenario).
    ``DataGamesParallelEnv(config=None, render_mode=None, dataset=None, max_cycles=None, **overrides)``."""

    scenario_class = _ScenarioOf("datagames")


class P2PParallelEnv(FleetParallelEnv):
    """Peer-to-peer GU sharing as a PettingZoo parallel environment (the paper tier's ``P2PScenario`` or the fast
    tier's native batch at B = 1). ``P2PParallelEnv(config=None, render_mode=None, max_cycles=None, **overrides)``."""

    scenario_class = _ScenarioOf("p2p")


class DualParallelEnv(FleetParallelEnv):
    """DUAL as a PettingZoo parallel environment (the scenario of the config's perception tier).
    ``DualParallelEnv(config=None, render_mode=None, max_cycles=None, **overrides)``."""

    scenario_class = _ScenarioOf("dual")


def _face_classes() -> dict[str, type[FleetParallelEnv]]:
    """Scenario name -> parallel face class, for every row of the scenario table: the named class above where
    there is one (each names its scenario once, in its ``scenario_class``), else one made here."""
    named = {cls.scenario_class.name: cls for cls in (DataGamesParallelEnv, P2PParallelEnv, DualParallelEnv)}
    return {name: named.get(name) or type(f"{name}ParallelEnv", (FleetParallelEnv,),
                                          {"scenario_class": _ScenarioOf(name)})
            for name in SCENARIOS}


PARALLEL_CLASSES = _face_classes()


def parallel_env(config: Any = None, **kwargs: Any):
    """The parallel env of the config's scenario (``scenario`` key; default ``datagames``)."""
    name = scenario_of(config, **{k: v for k, v in kwargs.items() if k == "scenario"})
    kwargs.pop("scenario", None)  # the config object carries it
    return PARALLEL_CLASSES[name](config, **kwargs)


def aec_of(parallel) -> Any:
    """The AEC face of a parallel env (robots act in turn; the round resolves when the last has acted)."""
    return OrderEnforcingWrapper(FleetAECEnv(parallel))


def env(config: Any = None, **kwargs: Any):
    """The AEC env of the config's scenario: robots act one after another within a round; the round resolves when
    the last has acted (each action checked at its own turn, faces/aec.py)."""
    return aec_of(parallel_env(config, **kwargs))


raw_env = env  # PettingZoo's conventional name


def _registered(name: str, face):
    """The registry entry point of one scenario: its default config unless a config is given."""
    def build(config: Any = None, **kwargs: Any):
        return face(config if config is not None else SCENARIOS[name].default_config, **kwargs)

    build.__name__ = build.__qualname__ = f"{name}_{face.__name__}"
    return build


def register_all() -> None:
    """Register both faces of every scenario in PettingZoo's registry (PettingZoo >= 1.27)."""
    try:
        from pettingzoo import register
    except ImportError:  # PettingZoo < 1.27 has no registry
        return
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # re-imports re-register the same ids
        for env_id, name in REGISTRY_IDS.items():
            register("parallel", env_id, _registered(name, parallel_env))
            register("aec", env_id, _registered(name, env))
