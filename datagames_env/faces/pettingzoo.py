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

import importlib
from typing import Any

from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from ..scenarios import SCENARIOS, scenario_of
from .aec import FleetAECEnv

__all__ = ["REGISTRY_IDS", "aec_of", "env", "parallel_env"]

# registry id -> scenario name
REGISTRY_IDS = {info.registry_id: name for name, info in SCENARIOS.items()}


def parallel_env(config: Any = None, **kwargs: Any):
    """The parallel env of the config's scenario (``scenario`` key; default ``datagames``)."""
    name = scenario_of(config, **{k: v for k, v in kwargs.items() if k == "scenario"})
    kwargs.pop("scenario", None)  # the config object carries it
    return importlib.import_module(SCENARIOS[name].module).parallel_env(config, **kwargs)


def aec_of(parallel) -> Any:
    """The AEC face of a parallel env (robots act in turn; the round resolves when the last has acted)."""
    return OrderEnforcingWrapper(FleetAECEnv(parallel))


def env(config: Any = None, **kwargs: Any):
    """The AEC env of the config's scenario."""
    return aec_of(parallel_env(config, **kwargs))


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
            register("parallel", env_id, f"{SCENARIOS[name].module}:parallel_env")
            register("aec", env_id, f"{SCENARIOS[name].module}:env")
