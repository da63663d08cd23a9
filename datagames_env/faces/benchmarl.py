"""BenchMARL task family ``datagames``: every scenario (cloud game, p2p, dual) as BenchMARL tasks, over :func:`torchrl_env`.

``from datagames_env.benchmarl import DataGamesTask``; ``task = DataGamesTask.DEFAULT.get_from_yaml()`` and any
BenchMARL algorithm runs on it (``Experiment(task=task, algorithm_config=MappoConfig.get_from_yaml(), ...)``), or
``datagames train --algo benchmarl-mappo|benchmarl-ippo|benchmarl-masac --config default`` (``agents.benchmarl_train``).

=====================  =====================================================================================
Tasks                  ``DEFAULT`` (digits, 10 robots, 10 rounds), ``MNIST_DATAGAMES`` (the paper's MNIST
                       setting with retraining off: needs the MNIST files, ``$DATAGAMES_DATA_DIR``),
                       ``DIGITS_RARE`` (rare specialists, ``action_mode: selection``: a score per sample);
                       ``P2P_DEFAULT`` (peer-to-peer GU sharing, ``p2p_default``), ``DUAL_DEFAULT`` (two-stage
                       upload + labeling, ``dual_default``); ``DEFAULT_FRACTION`` (``default`` with the
                       gap-fraction action); YAML in ``configs/benchmarl/task/datagames/<task>.yaml``:
                       ``config`` (a config of any scenario) + ``overrides`` (+ ``action``)
Agents                 one group ``"robots"`` of N agents (``group_map``), parameter sharing by default
Observation            ``observation_spec``: ``("robots", "observation")`` unbatched ``(N, obs_dim)``;
                       ``state_spec``: ``"state"`` ``(state_dim,)`` (the scenario's ``state()``; cloud game
                       ``3C + 1 + 3NC``) for centralised critics (MAPPO, MASAC)
Action                 continuous only: ``("robots", "action")`` ``(N, A)`` in [0, 1]: shares per predicted class
                       or scores per sample (BenchMARL's TanhNormal maps to the bounds); ``action: gap-fraction``:
                       ``(N, 1)``, one fraction of the gap per robot, mapped to Greedy's shares towards it
                       (:func:`~datagames_env.faces.torchrl.torchrl_env`)
Reward                 ``("robots", "reward")`` ``(N, 1)``, the scenario's reward (cloud game: the shared
                       potential gain)
Episode end            ``max_steps = rounds``; the last round is a termination (never a truncation)
Arguments              a task's config dict: ``config`` (name, path or dict), ``overrides`` (dotted keys),
                       ``action`` (``env``, the default, or ``gap-fraction``)
=====================  =====================================================================================

The p2p and dual tasks run at the speed of their scenario's batched implementation (``make_batched``: native where
the scenario has one for its config's perception tier, else B scenarios stepped in a loop; see docs/batched.md).

BenchMARL reads task YAMLs from its own package (``benchmarl/conf/task``); this enum reads them from ours, so
``get_from_yaml()`` works without copying files into site-packages. BenchMARL's own hydra CLI works too:
``python -m benchmarl.run algorithm=mappo task=datagames/default``. Importing this module puts the family into
BenchMARL's ``task_config_registry`` (:func:`register`), and the hydra search path plugin
``hydra_plugins.datagames_benchmarl`` (installed with this package) adds :data:`HYDRA_CONFIG_DIR`, which holds
``task/datagames/<task>.yaml``, to the search path of any hydra app that has imported BenchMARL's registry.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from benchmarl.environments.common import Task, TaskClass
from benchmarl.utils import _read_yaml_config
from torchrl.data import Composite
from torchrl.envs import EnvBase

from ..config import CONFIG_DIR, resolve_config_path
from ..scenarios import load_scenario_config

from .torchrl import ACTIONS, GROUP, torchrl_env

__all__ = ["ACTIONS", "DataGamesClass", "DataGamesTask", "HYDRA_CONFIG_DIR", "make_task", "register",
           "task_config_path"]

TASK_KEYS = ("config", "overrides", "action")
ENV_NAME = "datagames"
# a hydra config root: task/datagames/<task>.yaml, the layout of BenchMARL's own benchmarl/conf
HYDRA_CONFIG_DIR = CONFIG_DIR / "benchmarl"


def task_config_path(name: str) -> Path:
    """``configs/benchmarl/task/datagames/<name>.yaml`` (shipped inside the package)."""
    return resolve_config_path(f"benchmarl/task/{ENV_NAME}/{name.lower()}")


def _base(env: EnvBase) -> EnvBase:
    """The :class:`DataGamesTorchRLEnv` under BenchMARL's transforms."""
    return getattr(env, "base_env", env)


class DataGamesClass(TaskClass):
    """A datagames task: ``config = {"config": <a config of any scenario>, "overrides": {...}, "action": "env"}``."""

    def __init__(self, name: str, config: dict[str, Any] | None) -> None:
        config = dict(config or {})
        unknown = sorted(set(config) - set(TASK_KEYS))
        if unknown:
            raise ValueError(f"datagames task {name}: unknown keys {unknown}; a task config has {list(TASK_KEYS)}")
        config.setdefault("config", "default")
        config["overrides"] = dict(config.get("overrides") or {})
        config["action"] = config.get("action") or "env"
        super().__init__(name, config)
        # validate now: a bad key fails when the task is built, not inside a collector
        self.env_config = load_scenario_config(config["config"], **config["overrides"])
        action = config["action"]
        if action not in ACTIONS:
            raise ValueError(f"datagames task {name}: action '{action}' is not one of {sorted(ACTIONS)}")
        mode = getattr(self.env_config, "action_mode", None)
        if action == "gap-fraction" and mode != "allocation":
            raise ValueError(f"datagames task {name}: action 'gap-fraction' needs the cloud game in allocation mode "
                             f"(this config's action_mode is {mode!r})")
        self.action = action

    def get_env_fun(self, num_envs: int, continuous_actions: bool, seed: int | None, device):
        if not continuous_actions:
            raise ValueError("datagames tasks have continuous actions only (shares or scores in [0, 1])")
        env_config = self.env_config
        action = self.action
        return lambda: torchrl_env(num_envs, config=env_config, device=device, seed=seed, action=action)

    def supports_continuous_actions(self) -> bool:
        return True

    def supports_discrete_actions(self) -> bool:
        return False

    def has_render(self, env: EnvBase) -> bool:
        return False

    def max_steps(self, env: EnvBase) -> int:
        return int(self.env_config.rounds)

    def group_map(self, env: EnvBase) -> dict[str, list[str]]:
        return copy.deepcopy(_base(env).group_map)

    def observation_spec(self, env: EnvBase) -> Composite:
        spec = env.full_observation_spec_unbatched
        return Composite({GROUP: spec[GROUP].clone()})

    def info_spec(self, env: EnvBase) -> Composite | None:
        return None

    def state_spec(self, env: EnvBase) -> Composite | None:
        return Composite({"state": env.full_observation_spec_unbatched["state"].clone()})

    def action_spec(self, env: EnvBase) -> Composite:
        return env.full_action_spec_unbatched.clone()

    def action_mask_spec(self, env: EnvBase) -> Composite | None:
        return None

    @staticmethod
    def env_name() -> str:
        return ENV_NAME

    @staticmethod
    def log_info(batch) -> dict[str, float]:
        """The cloud's final distance to the target over the episodes that ended in this batch (cloud game)."""
        done = batch.get(("next", "done")).squeeze(-1)
        if not done.any() or ("next", "distance") not in batch.keys(True):
            return {}
        return {"collection/final_distance": float(batch.get(("next", "distance")).squeeze(-1)[done].mean())}


class DataGamesTask(Task):
    """The datagames task family (module table)."""

    DEFAULT = None
    MNIST_DATAGAMES = None
    DIGITS_RARE = None
    P2P_DEFAULT = None
    DUAL_DEFAULT = None
    DEFAULT_FRACTION = None

    @staticmethod
    def associated_class():
        return DataGamesClass

    def get_from_yaml(self, path: str | None = None) -> TaskClass:
        config = _read_yaml_config(str(path or task_config_path(self.name)))
        return self.get_task(config=config)


def make_task(config="default", name: str | None = None, action: str = "env", **overrides) -> DataGamesClass:
    """A task from any datagames config and overrides (what ``datagames train --algo benchmarl-*`` trains on);
    ``name`` defaults to the config's stem in capitals; ``action``: ``env`` or ``gap-fraction`` (module table)."""
    name = name or (Path(str(config)).stem.upper() if isinstance(config, (str, Path)) else "CUSTOM")
    return DataGamesClass(name, {"config": config, "overrides": overrides, "action": action})


def register() -> None:
    """Put every task of the family into BenchMARL's ``task_config_registry`` as ``datagames/<task>``, where
    BenchMARL's hydra loader (``benchmarl.run``, ``load_experiment_from_hydra``) looks tasks up. Idempotent."""
    from benchmarl.environments import task_config_registry

    for task in DataGamesTask:
        task_config_registry[f"{ENV_NAME}/{task.name.lower()}"] = task


register()
