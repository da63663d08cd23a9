"""RLlib PPO training of learned sharing policies, laptop CPU to GPU Ray cluster with the same command.

``datagames train --config default --algo ppo --iterations 50`` builds :func:`build_ppo_config`, trains with a
progress bar, writes TensorBoard scalars to ``<run>/tensorboard``, checkpoints to ``<run>/checkpoint`` (every
``--checkpoint-every`` iterations and at the end) and resumes from ``--resume <checkpoint>``. Scaling is only
flags: ``--num-env-runners`` (sampling actors), ``--num-envs-per-env-runner``, ``--num-learners`` and
``--num-gpus-per-learner`` (learner actors, GPUs), ``--ray-address`` (an existing cluster), ``--tune`` (a Ray
Tune sweep over the learning rate).

Robots share one module (``shared``) by default; ``--per-robot`` gives each robot its own. The module is
:class:`agents.modules.ClassScoringModule` (allocation) or :class:`agents.modules.SampleScoringModule`
(selection, the GU model) unless ``--model mlp`` asks for RLlib's default PPO MLP.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SHARED_MODULE = "shared"
META_FILE = "datagames_meta.json"


@dataclass
class TrainSettings:
    config: Any = "default"
    overrides: dict = field(default_factory=dict)
    iterations: int = 20
    model: str = "auto"                  # auto | scoring | mlp | gap-fraction | sweep-fraction | gap-share (vector runner)
    selection_dist: str = "plackett-luce"  # selection mode: plackett-luce (top-k picks) | gaussian (scores)
    allocation_dist: str = "multinomial"   # allocation mode: multinomial (n_cache draws) | gaussian (shares)
    per_robot: bool = False
    num_env_runners: int = 0
    num_envs_per_env_runner: int = 0     # 0: auto (auto_num_envs)
    num_learners: int = 0
    num_gpus_per_learner: float = 0.0
    num_cpus_per_env_runner: float = 1.0
    ray_address: str | None = None
    tune: bool = False
    tune_lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    seed: int = 0
    lr: float = 3e-4
    gamma: float = 0.99
    lambda_: float = 0.95
    entropy_coeff: float = 0.0
    train_batch_size: int = 2000         # agent steps per iteration
    minibatch_size: int = 250
    num_epochs: int = 10
    hidden: tuple[int, ...] = (64, 64)
    initial_log_std: float = -1.0
    out: str = "runs/train"
    run_name: str | None = None
    resume: str | None = None
    checkpoint_every: int = 10
    torch_threads: int | None = 1        # tiny networks: one thread is fastest, and never spins on busy cores
    progress: bool = True
    critic: str = "local"                # local: the value head reads the robot's observation | central: + state()
    imitate: str | None = None           # behaviour-clone this analytic policy before PPO (agents.imitation)
    imitation_episodes: int = 100
    imitation_epochs: int = 30
    message_sweeps: int = 0              # learned communication: K announcement sweeps per round (datagames_env.faces.comm)
    imitation_dagger_rounds: int = 1     # with message sweeps: DAgger rounds on the clone's own announcements
    env_runner_resources: dict = field(default_factory=dict)  # custom Ray resources per env runner: node placement
    vector_runner: bool = False          # sample vector_env in bulk (agents/rllib_vector_runner.py)
    lr_final: float | None = None        # linear decay from lr to lr_final over the run's iterations (None: constant)
    fraction_concentration: float = 8.0  # gap-fraction: the starting Beta's concentration (FractionBeta)
    initial_fraction: float = 0.5        # gap-fraction: the starting Beta's mean
    fraction_concentration_final: float | None = None  # gap-fraction: the Beta's concentration floor rises to this
    fraction_concentration_schedule: str = "linear"     # ... linearly or geometrically from 2 over the iterations
    fraction_concentration_pinned: bool = False         # ... and is also a ceiling, from fraction_concentration

    @classmethod
    def from_preset(cls, preset: str | None, **fields) -> TrainSettings:
        """The settings of ``TRAIN_PRESETS[preset]`` (none: the defaults), then ``fields`` on top: explicit values
        win over the preset's."""
        if preset is None:
            return cls(**fields)
        if preset not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset '{preset}' (known: {', '.join(TRAIN_PRESETS)})")
        return cls(**{**TRAIN_PRESETS[preset], **fields})


# `datagames train --preset NAME` (RLlib PPO): named TrainSettings values; explicit flags win (docs/rllib_speed.md)
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # the vector runner with throughput-sized updates: about 15x 0dbebaf's agent-steps/s on `default` on an idle
    # 2-CPU machine (median of 6 alternated repeats), about 11x on a busy one (docs/rllib_speed.md)
    "throughput": {"vector_runner": True, "train_batch_size": 32000, "minibatch_size": 4000, "num_epochs": 2},
}


def env_layout(par_env) -> dict:
    """What the modules need to read a scenario's flat observation (its declared ``obs_layout`` and
    ``sample_spec``, :mod:`datagames_env.scenarios.base`): the ``model_config`` of the module."""
    layout = par_env.obs_layout
    samples = par_env.scenario.sample_spec
    if samples is not None:
        context_dim, n_samples, sample_dim = samples.context_dim, samples.n_samples, samples.sample_dim
        if context_dim + n_samples * sample_dim != layout["samples"].stop:
            raise ValueError(f"observation layout: context {context_dim} + {n_samples} x {sample_dim} does not end at "
                             f"{layout['samples'].stop}")
        layout_out = {"kind": "samples", "context_dim": context_dim, "n_samples": n_samples, "sample_dim": sample_dim,
                      "select_k": samples.select_k}
        if samples.rescale:  # unit-norm embeddings and per-class distributions: scale features to O(1)
            from .modules import DISTRIBUTION_BLOCKS

            c, e = par_env.n_classes, samples.embedding_dim
            context_scale = np.ones(context_dim)
            for name in DISTRIBUTION_BLOCKS:
                if name in layout:  # the message blocks exist only with learned communication
                    context_scale[layout[name]] = c
            layout_out["context_scale"] = context_scale.tolist()
            layout_out["sample_scale"] = [float(np.sqrt(e))] * e + [1.0] * (sample_dim - e)
        return layout_out
    from .modules import CLASS_BLOCKS

    n_classes = int(getattr(par_env, "n_classes", 0))
    blocks = [k for k in layout if k != "rounds_left"]
    if tuple(blocks) == CLASS_BLOCKS and "rounds_left" in layout:
        return {"kind": "classes", "n_classes": n_classes, "allocate_n": int(par_env.config.n_cache)}
    return {"kind": "flat"}


def module_spec(par_env, settings: TrainSettings):
    """One ``RLModuleSpec`` for a robot of ``par_env``, per ``settings.model``."""
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from .modules import ClassScoringModule, SampleScoringModule

    layout = env_layout(par_env)
    model = settings.model
    if model == "auto":
        model = "mlp" if layout["kind"] == "flat" else "scoring"
    if settings.critic not in ("local", "central"):
        raise ValueError(f"--critic: '{settings.critic}' is not one of local, central")
    if settings.critic == "central" and (model != "scoring" or not hasattr(par_env, "state_space")):
        raise ValueError("--critic central needs the scoring modules (--model scoring) and a scenario with a global "
                         f"state (state_space); got model {model}, scenario {type(par_env).__name__}")
    if model in ("gap-fraction", "sweep-fraction", "gap-share"):
        return _gap_fraction_spec(layout, settings)
    if (settings.fraction_concentration, settings.initial_fraction) != (8.0, 0.5):
        raise ValueError("--fraction-concentration and --initial-fraction need --model gap-fraction; got --model "
                         f"{settings.model}")
    if settings.fraction_concentration_final is not None or settings.fraction_concentration_pinned:
        raise ValueError("--fraction-concentration-final and --fraction-concentration-pinned need --model "
                         f"gap-fraction; got --model {settings.model}")
    if model == "mlp":
        return RLModuleSpec(model_config=DefaultModelConfig(fcnet_hiddens=list(settings.hidden),
                                                            fcnet_activation="tanh", vf_share_layers=False))
    if model != "scoring":
        raise ValueError(f"--model: '{settings.model}' is not one of auto, scoring, mlp, gap-fraction, sweep-fraction")
    if layout["kind"] == "flat":
        raise ValueError("--model scoring needs an observation layout with per-class blocks or per-sample features; "
                         "this scenario has neither: use --model mlp")
    config = {k: v for k, v in layout.items() if k != "kind"}
    config.update(hidden=list(settings.hidden), initial_log_std=settings.initial_log_std)
    if settings.critic == "central":
        config["state_dim"] = int(par_env.state_space.shape[0])
    if settings.message_sweeps:
        if layout["kind"] != "classes":
            raise ValueError("--message-sweeps needs the class-scoring module (datagames, action_mode allocation)")
        from datagames_env.faces.comm import MESSAGE_BLOCKS
        from .modules import CLASS_BLOCKS

        config.update(class_blocks=list(CLASS_BLOCKS + MESSAGE_BLOCKS), n_scalars=2)
    if settings.selection_dist == "gaussian":
        config.pop("select_k", None)
    if settings.allocation_dist == "gaussian":
        config.pop("allocate_n", None)
    elif settings.allocation_dist != "multinomial":
        raise ValueError(f"--allocation-dist: '{settings.allocation_dist}' is not one of multinomial, gaussian")
    elif settings.selection_dist != "plackett-luce":
        raise ValueError(f"--selection-dist: '{settings.selection_dist}' is not one of plackett-luce, gaussian")
    module_class = SampleScoringModule if layout["kind"] == "samples" else ClassScoringModule
    return RLModuleSpec(module_class=module_class, model_config=config)


def _gap_fraction_spec(layout: dict, settings: TrainSettings):
    """``--model gap-fraction``: one fraction per robot (:class:`agents.modules.GapFractionModule`), which the
    vector runner and ``rllib:`` evaluation turn into Greedy towards that fraction of the gap."""
    import gymnasium as gym
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from .modules import GapFractionModule

    if layout["kind"] != "classes":
        raise ValueError("--model gap-fraction needs the cloud game in allocation mode (per-class observation blocks)")
    if not settings.vector_runner:
        raise ValueError("--model gap-fraction needs --vector-runner (it applies Greedy's map from the fraction to "
                         "the environment's action)")
    config = {"n_classes": layout["n_classes"], "hidden": list(settings.hidden)}
    module_class = GapFractionModule
    if settings.model == "sweep-fraction":  # learned communication, structured: f per robot, then solver sweeps
        from .modules import SweepFractionModule

        if not 1 <= settings.message_sweeps <= 3:
            raise ValueError(f"--model sweep-fraction needs --message-sweeps 1..3 (the solver's Gauss-Seidel sweeps), "
                             f"got {settings.message_sweeps}")
        if settings.critic != "local" or settings.imitate:
            raise ValueError("--model sweep-fraction supports none of --critic central, --imitate")
        module_class, config["sweeps"] = SweepFractionModule, int(settings.message_sweeps)
    elif settings.model == "gap-share" and settings.critic == "local" and not (settings.message_sweeps or
                                                                            settings.imitate):
        from .share_module import GapShareModule  # greedy-share's floor per robot (baselines.fraction)

        module_class = GapShareModule
    elif settings.critic != "local" or settings.message_sweeps or settings.imitate:
        raise ValueError("--model gap-fraction supports none of --critic central, --message-sweeps, --imitate")
    concentration_floor(settings, 0)  # checks the schedule's settings before anything is built
    if (settings.fraction_concentration, settings.initial_fraction) != (8.0, 0.5):  # old runs' config unchanged
        config.update(initial_concentration=float(settings.fraction_concentration),
                      initial_fraction=float(settings.initial_fraction))
    return RLModuleSpec(module_class=module_class, model_config=config,
                        action_space=gym.spaces.Box(0.0, 1.0, (1,), dtype=np.float32))


CONCENTRATION_FLOOR_START = 2.0  # the Beta's own clamp (FractionBeta): no floor beyond it at the start


def concentration_floor(settings: TrainSettings, iteration: int) -> float | None:
    """``--fraction-concentration-final``: the floor on the Beta's concentration at 0-based ``iteration`` (None
    without the option). It rises from 2 at iteration 0 to the final value at the last of ``iterations``
    (``linear``, or ``geometric``: equal ratios per iteration), and stays there after, so exploration noise is
    annealed as TD3/DDPG anneal theirs; the learned concentration is used wherever it is above the floor."""
    final, schedule = settings.fraction_concentration_final, settings.fraction_concentration_schedule
    if schedule not in ("linear", "geometric"):
        raise ValueError(f"--fraction-concentration-schedule: '{schedule}' is not one of linear, geometric")
    if final is None:
        if settings.fraction_concentration_pinned:
            raise ValueError("--fraction-concentration-pinned needs --fraction-concentration-final")
        return None
    final = float(final)
    if not (math.isfinite(final) and CONCENTRATION_FLOOR_START <= final <= 1000.0):
        raise ValueError(f"--fraction-concentration-final must be in [2, 1000] (the Beta's clamp), got {final}")
    if settings.tune:
        raise ValueError("--fraction-concentration-final is applied by `datagames train`'s own loop, not by a Ray "
                         "Tune sweep (--tune)")
    progress = min(1.0, max(0, iteration) / max(1, settings.iterations - 1))
    # pinned: the concentration is the schedule's, from the starting one (2 would be a uniform Beta at f = 0.5)
    start = CONCENTRATION_FLOOR_START
    if settings.fraction_concentration_pinned:
        start = float(settings.fraction_concentration)
    if schedule == "geometric":
        return start * (final / start) ** progress
    return start + (final - start) * progress


def set_concentration_floor(algo, floor: float | None, pinned: bool = False) -> None:
    """Set the floor (``pinned``: the concentration) on the modules that have one (gap-fraction) in the learner(s)
    and in every env runner, local and remote, so that the sampled Beta and the one PPO's loss evaluates are the
    same."""
    def apply(multi_module) -> None:
        for module_id in multi_module.keys():
            module = multi_module[module_id].unwrapped()
            if hasattr(module, "set_concentration_floor"):
                module.set_concentration_floor(floor, pinned)

    algo.learner_group.foreach_learner(lambda learner: apply(learner.module))
    algo.env_runner_group.foreach_env_runner(lambda runner: apply(runner.module), local_env_runner=True)


def _shared_policy(agent_id, episode=None, **kwargs) -> str:
    return SHARED_MODULE


def _own_policy(agent_id, episode=None, **kwargs) -> str:
    return str(agent_id)


def auto_num_envs(batch_of, cap: int = 10) -> int:
    """The most environments per runner, up to ``cap``, whose update batch ``batch_of(n)`` equals one
    environment's: more environments step together and share each call of the module and of RLlib's connectors
    (SB3: of the policy and the vector core), about 1.3x the agent steps per CPU second on `default` for both
    (benchmarks/bench_training.py --compare), with the same batch and so the same updates."""
    return max(n for n in range(1, cap + 1) if batch_of(n) == batch_of(1))


def probe_spec(settings: TrainSettings):
    """One environment of the run's face (in the driver) and its module spec with the face's spaces."""
    from datagames_env.faces.rllib import RLlibMultiAgentEnv

    face = RLlibMultiAgentEnv(env_config_of(settings))
    spec = module_spec(face.par_env, settings)
    first = face.possible_agents[0]
    spec.observation_space = face.observation_spaces[first]
    if spec.action_space is None:  # a structured action (gap-fraction) brings its own
        spec.action_space = face.action_spaces[first]
    return face, spec


def env_config_of(settings: TrainSettings) -> dict:
    config_ref = settings.config if isinstance(settings.config, (str, dict)) else settings.config.model_dump()
    return {"config": config_ref, "overrides": dict(settings.overrides), "global_state": settings.critic == "central",
            "message_sweeps": face_sweeps(settings)}


def face_sweeps(settings: TrainSettings) -> int:
    """Announcement sub-steps the RLlib face plays per round: ``--message-sweeps`` for the learned announcements;
    0 for ``--model sweep-fraction``, whose sweeps run inside the action map (faces.comm)."""
    return 0 if settings.model == "sweep-fraction" else settings.message_sweeps


def lr_schedule(settings: TrainSettings, n_agents: int) -> float | list[list[float]]:
    """``settings.lr``, or with ``lr_final`` RLlib's piecewise-linear schedule from ``lr`` to ``lr_final`` over
    ``iterations`` iterations. RLlib's learner reads the schedule at the lifetime count of *environment* steps
    sampled (every robot acts once per environment step), so the run's agent steps are divided by the robots."""
    if settings.lr_final is None:
        return settings.lr
    if not (math.isfinite(settings.lr_final) and settings.lr_final > 0):
        raise ValueError(f"--lr-final must be a positive number, got {settings.lr_final}")
    end = max(1, settings.iterations * settings.train_batch_size // max(1, n_agents))
    return [[0, settings.lr], [end, settings.lr_final]]


def build_ppo_config(settings: TrainSettings):
    """The ``PPOConfig`` of a run (new API stack). Builds one environment in the driver to read spaces. Nothing
    machine-specific goes in: the config is pickled into every checkpoint (a warm start is loaded into the built
    algorithm, :func:`load_module_state`, not named here by path)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec

    from .ppo_learner import MaskedPPOTorchLearner
    from datagames_env.faces.rllib import register_rllib_env

    env_name = register_rllib_env()
    face, spec = probe_spec(settings)
    agents = list(face.possible_agents)
    # an episode is `rounds` decisions per robot, (K + 1) per round with K message sweeps
    episode_len = int(getattr(getattr(face.par_env, "config", None), "rounds", 0) or 10) * (1 + face_sweeps(settings))
    face.close()
    module_ids = agents if settings.per_robot else [SHARED_MODULE]
    env_config = env_config_of(settings)
    # Fragments of whole episodes (in agent steps: every robot acts every step), so GAE sees true episode ends.
    # Not batch_mode="complete_episodes": RLlib 2.60's env runner then re-seeds the env with the same seed at every
    # sample() call, so every training episode replays one seed (one class-mix draw) and the policy overfits it.
    episode_agent_steps = episode_len * len(agents)
    runners = max(1, settings.num_env_runners)

    def per_env_agent_steps(n_envs: int) -> int:
        return episode_agent_steps * max(1, math.ceil(settings.train_batch_size / (runners * n_envs * episode_agent_steps)))

    num_envs = settings.num_envs_per_env_runner or auto_num_envs(lambda n: per_env_agent_steps(n) * runners * n,
                                                                 cap=4096 if settings.vector_runner else 10)
    config = (
        PPOConfig()
        .environment(env_name, env_config=env_config, disable_env_checking=False)
        .multi_agent(policies=set(module_ids), policy_mapping_fn=_own_policy if settings.per_robot else _shared_policy,
                     count_steps_by="agent_steps")
        .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={m: spec for m in module_ids}))
        .env_runners(num_env_runners=settings.num_env_runners,
                     num_envs_per_env_runner=num_envs,
                     num_cpus_per_env_runner=settings.num_cpus_per_env_runner,
                     custom_resources_per_env_runner=dict(settings.env_runner_resources),
                     rollout_fragment_length=per_env_agent_steps(num_envs), batch_mode="truncate_episodes")
        .learners(num_learners=settings.num_learners, num_gpus_per_learner=settings.num_gpus_per_learner,
                  learner_class=MaskedPPOTorchLearner)  # advantages standardised over real rows (ppo_learner.py)
        .training(lr=lr_schedule(settings, len(agents)), gamma=settings.gamma, lambda_=settings.lambda_, entropy_coeff=settings.entropy_coeff,
                  train_batch_size_per_learner=settings.train_batch_size // max(1, settings.num_learners),
                  minibatch_size=settings.minibatch_size, num_epochs=settings.num_epochs)
        .debugging(seed=settings.seed, log_level="ERROR")
        .reporting(metrics_num_episodes_for_smoothing=20)
    )
    if settings.vector_runner:  # bulk sampling of vector_env, array learner pipeline (agents/rllib_vector_runner.py)
        from .rllib_vector_runner import use_vector_runner

        config = use_vector_runner(config)
    return config


def _flat_scalars(result: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat_scalars(value, name + "/"))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                out[name] = float(value)
    return out


def iteration_summary(result: dict) -> dict[str, float]:
    """The few numbers a person watches: mean episode return (summed over robots), agent steps so far."""
    env = result.get("env_runners", {})
    agent_steps = env.get("num_agent_steps_sampled_lifetime", 0) or 0
    if isinstance(agent_steps, dict):  # per robot
        agent_steps = sum(agent_steps.values())
    return {"iteration": int(result.get("training_iteration", 0)),
            "episode_return_mean": float(env.get("episode_return_mean", float("nan"))),
            "agent_steps": int(agent_steps),
            "env_steps": int(env.get("num_env_steps_sampled_lifetime", 0) or 0)}


def set_torch_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def init_ray(address: str | None, torch_threads: int | None = None) -> None:
    """A local Ray runtime (``None`` / ``"local"``) or an existing cluster (``"auto"``, ``"ray://host:10001"``)."""
    import ray

    if ray.is_initialized():
        return
    import os

    from datagames_env.data.datasets import DATA_DIR_ENV_VAR
    from datagames_env.harness.ray_runtime import start_ray

    if address in (None, "local"):
        env_vars = {"OMP_NUM_THREADS": str(torch_threads)} if torch_threads else {}
        if os.environ.get(DATA_DIR_ENV_VAR):
            env_vars[DATA_DIR_ENV_VAR] = os.environ[DATA_DIR_ENV_VAR]
        start_ray(None, include_dashboard=False, log_to_driver=False, configure_logging=False,
                  runtime_env={"env_vars": env_vars})
    else:  # a cluster: its nodes read the data folder given to `datagames train --data-dir`
        data_dir = os.environ.get(DATA_DIR_ENV_VAR)
        start_ray(address, log_to_driver=False,
                  runtime_env={"env_vars": {DATA_DIR_ENV_VAR: data_dir}} if data_dir else None)


def ray_version() -> str:
    import ray

    return ray.__version__


def _is_data_dir_key(key: str) -> bool:
    return key == "data_dir" or key.endswith(".data_dir")


def portable_settings(settings: TrainSettings) -> dict:
    """``settings`` as a checkpoint records them, with nothing of the machine that trained: no output folder
    (``out``), a resumed checkpoint by its folder name only, no data folder (that is ``$DATAGAMES_DATA_DIR`` /
    ``--data-dir`` on the machine that loads it)."""
    out = {k: v for k, v in asdict(settings).items() if k not in ("progress",)}
    out["out"] = None if Path(str(settings.out)).is_absolute() else settings.out
    if settings.resume:
        out["resume"] = Path(settings.resume).name
    out["overrides"] = {k: v for k, v in settings.overrides.items() if not _is_data_dir_key(k)}
    if isinstance(settings.config, str) and Path(settings.config).is_absolute():
        out["config"] = Path(settings.config).name
    return out


def move_data_dir_to_env(settings: TrainSettings) -> TrainSettings:
    """A data-folder override (``--data-dir`` puts the absolute path there) goes to ``$DATAGAMES_DATA_DIR``
    instead, which the driver and every Ray worker read (:func:`init_ray`): the algorithm config, pickled into
    every checkpoint, then names no folder of this machine. Call before :func:`init_ray`."""
    import dataclasses
    import os

    from datagames_env.data.datasets import DATA_DIR_ENV_VAR

    data_dirs = {k: v for k, v in settings.overrides.items() if _is_data_dir_key(k) and v}
    if not data_dirs:
        return settings
    if len(set(map(str, data_dirs.values()))) > 1:
        raise ValueError(f"overrides: several data folders {data_dirs}; give one (--data-dir)")
    os.environ[DATA_DIR_ENV_VAR] = str(Path(str(next(iter(data_dirs.values())))).expanduser().resolve())
    return dataclasses.replace(settings, overrides={k: v for k, v in settings.overrides.items() if k not in data_dirs})


def load_module_state(algo, module_path: str | Path, module_ids: list[str] | None = None) -> None:
    """Load a saved RLModule (``RLModule.save_to_path``: the imitation warm start) into every module of ``algo``:
    every learner's copy, then the env runners' (RLlib's ``restore_from_path`` with a component syncs them)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE

    for module_id in module_ids or list(algo.config.policies):
        algo.restore_from_path(str(Path(module_path).resolve()),
                               component=f"{COMPONENT_LEARNER_GROUP}/{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}/"
                                         f"{module_id}")


def save_checkpoint(algo, checkpoint: Path, settings: TrainSettings, extra: dict,
                    imitation_module: Path | None = None) -> None:
    """``algo``'s checkpoint, its ``datagames_meta.json`` and a copy of the imitation clone it started from."""
    import shutil

    algo.save_to_path(str(checkpoint.resolve()))
    if imitation_module is not None and imitation_module.is_dir():
        from .imitation import IMITATION_MODULE

        shutil.copytree(imitation_module, checkpoint / IMITATION_MODULE, dirs_exist_ok=True)
    write_meta(checkpoint, settings, extra)


def write_meta(checkpoint: Path, settings: TrainSettings, extra: dict) -> None:
    meta = {"framework": "rllib", "algo": "ppo", "settings": portable_settings(settings)}
    meta.update(extra)
    (checkpoint / META_FILE).write_text(json.dumps(meta, indent=2, default=str))


def run_dir_for(settings: TrainSettings, algo: str) -> Path:
    name = settings.run_name or f"{Path(str(settings.config)).stem if isinstance(settings.config, str) else 'custom'}-" \
                                f"{algo}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(settings.out) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def slow_training_hints(settings: TrainSettings) -> list[str]:
    """Config keys that make every training episode train classifiers (correct, but minutes per iteration)."""
    from datagames_env.scenarios import load_scenario_config, scenario_of

    if scenario_of(settings.config, **settings.overrides) != "datagames":
        return []
    cfg = load_scenario_config(settings.config, **settings.overrides)
    hints = []
    if cfg.final_accuracy:
        hints.append("final_accuracy=true trains a classifier at the end of every episode: --set final_accuracy=false")
    if cfg.perception.retrain_every:
        hints.append(f"perception.retrain_every={cfg.perception.retrain_every} retrains the cloud model during every "
                     "episode: --set perception.retrain_every=0 trains much faster (evaluate with the paper's setting)")
    return hints


def resumed_counts(checkpoint: str | None) -> dict[str, int]:
    """Iterations and agent steps a checkpoint had trained (its ``datagames_meta.json``; zeros without one)."""
    meta_path = Path(checkpoint) / META_FILE if checkpoint else None
    meta = json.loads(meta_path.read_text()) if meta_path is not None and meta_path.is_file() else {}
    return {"iterations": int(meta.get("iteration", meta.get("iterations", 0)) or 0),
            "agent_steps": int(meta.get("agent_steps", 0) or 0)}


def run_and_total(history: list[dict], before: dict[str, int]) -> dict[str, dict[str, int]]:
    """What every trainer returns about its counts: ``this_run`` (iterations and agent steps of this call) and
    ``total`` (since the first run: with ``--resume``, the resumed checkpoint's counts included). History rows
    are cumulative in both (``iteration``, ``agent_steps``)."""
    total_steps = history[-1]["agent_steps"] if history else before["agent_steps"]
    return {"this_run": {"iterations": len(history), "agent_steps": total_steps - before["agent_steps"]},
            "total": {"iterations": before["iterations"] + len(history), "agent_steps": total_steps}}


def train(settings: TrainSettings, log=print) -> dict:
    """Train PPO; returns ``{"checkpoint", "run_dir", "history", "elapsed_s", "this_run", "total", ...}``."""
    for hint in slow_training_hints(settings):
        log(f"note: {hint}")
    if settings.tune:
        return tune_sweep(settings, log)
    settings = move_data_dir_to_env(settings)
    set_torch_threads(settings.torch_threads)
    init_ray(settings.ray_address, settings.torch_threads)
    run_dir = run_dir_for(settings, "ppo")
    checkpoint = run_dir / "checkpoint"
    imitation_module, imitation = None, None
    wall_start = time.perf_counter()
    if settings.imitate and not settings.resume:
        from .imitation import warm_start

        face, spec = probe_spec(settings)
        face.close()
        imitation_module, imitation = warm_start(spec, settings, run_dir, log)
    config = build_ppo_config(settings)
    algo = config.build_algo()
    if imitation_module is not None:
        load_module_state(algo, imitation_module)
    if settings.resume:
        resume = Path(settings.resume)
        if not resume.is_dir():
            raise ValueError(f"--resume: {resume} is not a checkpoint folder")
        algo.restore_from_path(str(resume.resolve()))
        log(f"resumed from {resume} at iteration {algo.iteration}")
    before = {"iterations": int(algo.iteration or 0), "agent_steps": resumed_counts(settings.resume)["agent_steps"]}

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    history = []
    started = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"), disable=not settings.progress)
    try:
        with bar:
            task = bar.add_task("PPO", total=settings.iterations, status="")
            for i in range(settings.iterations):
                floor = concentration_floor(settings, int(algo.iteration or 0))
                if floor is not None:  # the same floor for this iteration's sampling and its updates
                    set_concentration_floor(algo, floor, settings.fraction_concentration_pinned)
                result = algo.train()
                summary = iteration_summary(result)
                summary["elapsed_s"] = time.perf_counter() - started
                if floor is not None:
                    summary["concentration_floor"] = floor
                history.append(summary)
                step = summary["agent_steps"]
                for name, value in _flat_scalars(result).items():
                    writer.add_scalar(name, value, step)
                status = f"return {summary['episode_return_mean']:.3f}  agent steps {step:,}"
                bar.update(task, advance=1, status=status)
                if settings.progress and not bar.console.is_terminal and (i + 1) % 10 == 0:
                    log(f"iteration {i + 1}/{settings.iterations}: {status}  ({summary['elapsed_s']:.0f} s)")
                if settings.checkpoint_every and (i + 1) % settings.checkpoint_every == 0:
                    save_checkpoint(algo, checkpoint, settings, {"iteration": algo.iteration, "agent_steps": step},
                                    imitation_module)
        elapsed = time.perf_counter() - started
        if imitation is not None:
            imitation = {**imitation, "module": "imitation_module"}  # relative to the checkpoint
        save_checkpoint(algo, checkpoint, settings,
                        {"iteration": algo.iteration, "agent_steps": history[-1]["agent_steps"] if history else 0,
                         "train_time_s": elapsed, "imitation": imitation,
                         "total_time_s": time.perf_counter() - wall_start, "ray_version": ray_version()},
                        imitation_module)
    finally:
        writer.close()
        algo.stop()
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    return {"checkpoint": str(checkpoint), "run_dir": str(run_dir), "history": history, "elapsed_s": elapsed,
            **run_and_total(history, before)}


def tune_sweep(settings: TrainSettings, log=print) -> dict:
    """A Ray Tune grid over the learning rate; each trial checkpoints at the end; returns the best trial."""
    from ray import tune

    settings = move_data_dir_to_env(settings)
    set_torch_threads(settings.torch_threads)
    init_ray(settings.ray_address, settings.torch_threads)
    config = build_ppo_config(settings).training(lr=tune.grid_search(list(settings.tune_lrs)))
    run_dir = run_dir_for(settings, "ppo-tune")
    tuner = tune.Tuner(
        "PPO", param_space=config,
        run_config=tune.RunConfig(name="tune", storage_path=str(run_dir.resolve()),
                                  stop={"training_iteration": settings.iterations},
                                  checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=True),
                                  verbose=1 if settings.progress else 0),
        tune_config=tune.TuneConfig(metric="env_runners/episode_return_mean", mode="max"),
    )
    started = time.perf_counter()
    results = tuner.fit()
    best = results.get_best_result()
    checkpoint = Path(best.checkpoint.path)
    write_meta(checkpoint, settings, {"iteration": settings.iterations, "tune_best_lr": best.config.get("lr")})
    log(f"best lr {best.config.get('lr')}: return {best.metrics.get('env_runners', {}).get('episode_return_mean')}")
    return {"checkpoint": str(checkpoint), "run_dir": str(run_dir), "elapsed_s": time.perf_counter() - started,
            "history": [], "best_lr": best.config.get("lr")}
