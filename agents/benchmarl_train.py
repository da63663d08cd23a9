"""BenchMARL training on the datagames task family: ``datagames train --algo benchmarl-mappo|benchmarl-ippo|benchmarl-masac``.

One BenchMARL ``Experiment`` on :func:`datagames_env.benchmarl.make_task` (the config and ``--set`` overrides),
BenchMARL's own MLP actor (and critic) with parameter sharing over the robots, the batched ``torchrl_env`` for
collection. The project's flags map onto BenchMARL's experiment config as follows (agent steps = frames x N,
since one BenchMARL frame is one step of all N robots of one environment):

=================================  ==================================================================
flag                               BenchMARL
=================================  ==================================================================
``--iterations``                   ``max_n_iters``
``--train-batch-size`` (agent st.)  ``on/off_policy_collected_frames_per_batch`` = it / N
``--num-envs-per-env-runner``      batched environments (0: frames per batch / rounds, whole episodes)
``--minibatch-size`` (agent steps)  ``on_policy_minibatch_size`` / ``off_policy_train_batch_size`` = it / N
``--num-epochs``                   ``on_policy_n_minibatch_iters``; MASAC: optimizer steps per iteration =
                                   epochs x frames per batch / minibatch frames
``--lr``, ``--seed``               ``lr``, the experiment seed (environment seeds follow it)
``--checkpoint-every``             BenchMARL checkpoint and evaluation (10 episodes) every k iterations
``--model gap-fraction``           the task's ``action: gap-fraction`` (one fraction of the gap per robot,
                                   mapped to Greedy's shares towards it); ``auto`` / ``mlp``: the env's action
``--model sample-scoring``         the actor is ``agents.benchmarl_models.SampleScoring`` (one MLP of
                                   ``TrainSettings.hidden`` shared across the samples of a selection layout: p2p, dual);
                                   the critic stays BenchMARL's MLP
``--initial-log-std``              gap-fraction, sample-scoring: ``scale_mapping`` = ``biased_softplus_<exp(it)>`` (the
                                   TanhNormal's initial scale; BenchMARL's YAML otherwise)
``--entropy-coeff``, ``--lambda``  gap-fraction, sample-scoring: ``entropy_coef``, GAE ``lmbda``
=================================  ==================================================================

Writes ``<out>/<run>/``: BenchMARL's experiment folder (``benchmarl/<exp>/``: csv logs, its marl-eval JSON of
the evaluations, ``checkpoints/`` to resume with BenchMARL's tools), ``history.json`` and ``checkpoint/``:
``policy.pt`` (the actor as a pickled TensorDict module: reads ``("robots", "observation")``, writes
``("robots", "action")``) with ``datagames_meta.json``. ``datagames eval --policies benchmarl:<run>/checkpoint``
plays it (``agents.torchrl_policy``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from .rllib_train import META_FILE, TrainSettings, portable_settings, run_dir_for, set_torch_threads, slow_training_hints

POLICY_FILE = "policy.pt"
ALGORITHMS = {"benchmarl-mappo": "MappoConfig", "benchmarl-ippo": "IppoConfig", "benchmarl-masac": "MasacConfig"}


def experiment_config(settings: TrainSettings, n_robots: int, rounds: int, run_dir: Path, on_policy: bool):
    """BenchMARL's ``ExperimentConfig`` (its YAML defaults) with the project's flags (module table)."""
    from benchmarl.experiment import ExperimentConfig

    cfg = ExperimentConfig.get_from_yaml()
    frames = max(rounds, settings.train_batch_size // n_robots)
    n_envs = settings.num_envs_per_env_runner or max(1, frames // rounds)
    minibatch = max(1, min(frames, settings.minibatch_size // n_robots))
    cfg.sampling_device = cfg.train_device = cfg.buffer_device = "cpu"
    cfg.max_n_iters, cfg.max_n_frames = settings.iterations, None
    cfg.lr = settings.lr
    cfg.gamma = settings.gamma
    if on_policy:
        cfg.on_policy_collected_frames_per_batch = frames
        cfg.on_policy_n_envs_per_worker = n_envs
        cfg.on_policy_minibatch_size = minibatch
        cfg.on_policy_n_minibatch_iters = settings.num_epochs
    else:
        cfg.off_policy_collected_frames_per_batch = frames
        cfg.off_policy_n_envs_per_worker = n_envs
        cfg.off_policy_train_batch_size = minibatch
        cfg.off_policy_n_optimizer_steps = max(1, settings.num_epochs * frames // minibatch)
        # LazyTensorStorage allocates its whole capacity at the first write: no more than the run will collect
        cfg.off_policy_memory_size = max(frames, min(1_000_000, frames * settings.iterations))
    every = settings.checkpoint_every
    cfg.evaluation = bool(every)
    cfg.evaluation_interval = frames * (every or 1)
    cfg.evaluation_episodes = 10
    cfg.evaluation_deterministic_actions = True
    cfg.render = False
    cfg.checkpoint_interval = frames * every if every else 0
    cfg.checkpoint_at_end = True
    cfg.keep_checkpoints_num = 2
    cfg.exclude_buffer_from_checkpoint = True
    cfg.loggers = ["csv"]
    cfg.create_json = True
    cfg.save_folder = str(run_dir / "benchmarl")
    return cfg


def _history_callback(n_robots: int, log=None):
    """A BenchMARL callback recording one row per iteration: frames, agent steps, and over the episodes that ended in
    the batch the mean return per robot (``episode_return_per_robot``: BenchMARL's own logs are per robot too) and
    the final distance. BenchMARL pickles its callbacks
    into the experiment's ``config.pkl``: the class is built here (benchmarl is imported lazily) and ``log`` is
    left out of the pickle."""
    from benchmarl.experiment.callback import Callback

    global _HistoryCallback
    if "_HistoryCallback" not in globals():
        class _HistoryCallback(Callback):
            def __init__(self, n_robots: int, log=None) -> None:
                super().__init__()
                self.n_robots, self.log, self.history = n_robots, log, []
                self.started = self.last_end = time.perf_counter()

            def __getstate__(self):
                return {k: v for k, v in self.__dict__.items() if k not in ("log", "experiment")}

            def on_batch_collected(self, batch) -> None:
                exp = self.experiment
                frames = exp.total_frames  # already counts this batch
                now = time.perf_counter()
                row = {"iteration": exp.n_iters_performed + 1, "frames": frames, "agent_steps": frames * self.n_robots,
                       "elapsed_s": now - self.started,
                       "collect_s": now - self.last_end}  # collector (env + policy) since the last update ended
                done = batch.get(("next", "done")).squeeze(-1)
                if done.any():
                    rewards = batch.get(("next", "robots", "episode_reward"))  # RewardSum: per robot, over rounds
                    row["episode_return_per_robot"] = float(rewards[done].mean())  # over episodes and robots
                    distance = ""
                    if ("next", "distance") in batch.keys(True):  # the cloud game's; p2p and dual have none
                        row["final_distance"] = float(batch.get(("next", "distance")).squeeze(-1)[done].mean())
                        distance = f", final distance {row['final_distance']:.2f}"
                    if self.log is not None:
                        self.log(f"iteration {row['iteration']}: return per robot "
                                 f"{row['episode_return_per_robot']:.3f}{distance}, "
                                 f"{row['agent_steps']:,} agent steps, {row['elapsed_s']:.0f} s")
                self.history.append(row)
                self.collected = now

            def on_train_end(self, training_td, group: str) -> None:
                # GAE (process_batch), buffer and the minibatch updates of this iteration
                self.last_end = time.perf_counter()
                if self.history:
                    self.history[-1]["train_s"] = self.last_end - self.collected

        _HistoryCallback.__qualname__ = "_HistoryCallback"
    return _HistoryCallback(n_robots, log)


def train_benchmarl(settings: TrainSettings, algo: str, log=print) -> dict:
    """Train one BenchMARL algorithm (``ALGORITHMS``); returns ``{"checkpoint", "run_dir", "history", "elapsed_s"}``."""
    import torch
    import benchmarl.algorithms as algorithms
    from benchmarl.experiment import Experiment
    from benchmarl.models.mlp import MlpConfig

    from datagames_env.benchmarl import make_task

    if algo not in ALGORITHMS:
        raise ValueError(f"--algo {algo}: not one of {sorted(ALGORITHMS)}")
    unsupported = {"--critic central": settings.critic != "local", "--imitate": settings.imitate,
                   "--message-sweeps": settings.message_sweeps, "--per-robot": settings.per_robot,
                   "--resume": settings.resume, "--ray-address": settings.ray_address, "--tune": settings.tune}
    if any(unsupported.values()):
        raise ValueError(f"{', '.join(k for k, v in unsupported.items() if v)}: RLlib only (--algo ppo); BenchMARL's "
                         "MAPPO and MASAC critics read the global state already")
    for hint in slow_training_hints(settings):
        log(f"note: {hint}")
    set_torch_threads(settings.torch_threads)
    if settings.model not in ("auto", "mlp", "gap-fraction", "sample-scoring"):
        raise ValueError(f"--model {settings.model}: BenchMARL trains its MLP on the env's action (auto, mlp) or on "
                         "the gap-fraction action (gap-fraction), or a per-sample scorer (sample-scoring)")
    action = "gap-fraction" if settings.model == "gap-fraction" else "env"
    task = make_task(settings.config, action=action, **settings.overrides)
    env_cfg = task.env_config
    algorithm_config = getattr(algorithms, ALGORITHMS[algo]).get_from_yaml()
    if action == "gap-fraction" or settings.model == "sample-scoring":
        # one number per robot (per sample): start from the TanhNormal scale exp(--initial-log-std) (BenchMARL's default is 1.0,
        # which spreads f over most of [0, 1] and drowns each robot's share of the common reward in noise)
        algorithm_config.scale_mapping = f"biased_softplus_{math.exp(settings.initial_log_std):.4g}"
        if hasattr(algorithm_config, "entropy_coef"):
            algorithm_config.entropy_coef = settings.entropy_coeff
        if hasattr(algorithm_config, "lmbda"):
            algorithm_config.lmbda = settings.lambda_
    if settings.model == "sample-scoring":  # refuses layouts without sample rows, before any experiment is built
        from .benchmarl_models import SampleScoringConfig

        model_config = SampleScoringConfig.from_config(env_cfg, settings.hidden)
    else:
        model_config = MlpConfig.get_from_yaml()
        model_config.num_cells = list(settings.hidden)
    run_dir = run_dir_for(settings, algo)
    (run_dir / "benchmarl").mkdir(parents=True, exist_ok=True)
    cfg = experiment_config(settings, env_cfg.n_robots, env_cfg.rounds, run_dir, algorithm_config.on_policy())
    critic_config = MlpConfig.get_from_yaml()
    critic_config.num_cells = list(settings.hidden)

    recorder = _history_callback(env_cfg.n_robots, log if settings.progress else None)
    experiment = Experiment(task=task, algorithm_config=algorithm_config, model_config=model_config,
                            critic_model_config=critic_config, seed=settings.seed, config=cfg, callbacks=[recorder])
    experiment.run()
    elapsed = time.perf_counter() - recorder.started
    history = recorder.history
    checkpoint = run_dir / "checkpoint"
    checkpoint.mkdir(exist_ok=True)
    # the actor alone (no collector, no critic): what evaluation needs, loadable without rebuilding the experiment
    actor = experiment.policy.select_subsequence(out_keys=[("robots", "action")])
    torch.save(actor, checkpoint / POLICY_FILE)
    agent_steps = history[-1]["agent_steps"] if history else 0
    # relative to the run folder and without this machine's folders, as RLlib's metadata (agents/portable.py)
    experiment_folder = Path(str(experiment.folder_name))
    if experiment_folder.is_absolute() and experiment_folder.is_relative_to(run_dir.resolve()):
        experiment_folder = experiment_folder.relative_to(run_dir.resolve())
    meta = {"framework": "benchmarl", "algo": algo,
            "benchmarl_experiment": experiment_folder.as_posix() if not experiment_folder.is_absolute() else None,
            "action": action,  # gap-fraction: the actor emits f, evaluation maps it as the env did
            "model": settings.model,
            "iterations": len(history), "agent_steps": agent_steps, "training_time_s": elapsed,
            "observation_shape": [env_cfg.n_robots, int(task.observation_spec(experiment.test_env)[
                "robots", "observation"].shape[-1])],
            "task": task.config, "settings": portable_settings(settings)}
    (checkpoint / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    (run_dir / "history.json").write_text(json.dumps(history, indent=1))
    counts = {"iterations": len(history), "agent_steps": agent_steps}  # no --resume: this run is every run
    return {"checkpoint": str(checkpoint), "run_dir": str(run_dir), "history": history, "elapsed_s": elapsed,
            "this_run": counts, "total": dict(counts)}


def train_mappo(settings: TrainSettings, log=print) -> dict:
    return train_benchmarl(settings, "benchmarl-mappo", log)


def train_ippo(settings: TrainSettings, log=print) -> dict:
    return train_benchmarl(settings, "benchmarl-ippo", log)


def train_masac(settings: TrainSettings, log=print) -> dict:
    return train_benchmarl(settings, "benchmarl-masac", log)
