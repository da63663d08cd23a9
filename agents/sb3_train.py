"""Stable-Baselines3 PPO on :class:`datagames_env.faces.sb3.DataGamesSB3VecEnv` (``datagames train --algo sb3-ppo``).

One ``MlpPolicy`` shared by every robot (rows of the VecEnv). ``iterations`` counts PPO rollouts of
``n_steps`` steps of all ``B * N`` rows; ``--num-envs-per-env-runner`` sets B. TensorBoard logs go to
``<run>/tensorboard``, the model to ``<run>/checkpoint/model.zip`` (with ``datagames_meta.json``);
``--resume <checkpoint>`` continues a run. Every scenario (``datagames``, ``p2p``, ``dual``): the rows come from
``vector_env``, as fast as the scenario's batched implementation.

Checkpoints are portable (issue 18): ``model.zip`` is saved without the TensorBoard folder (a resumed run names its
own), ``datagames_meta.json`` records the settings as :func:`agents.rllib_train.portable_settings` does (no
output folder, no data folder: a ``--data-dir`` override goes to ``$DATAGAMES_DATA_DIR``), so a checkpoint copied
to another folder or machine loads and resumes there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .rllib_train import (META_FILE, TrainSettings, auto_num_envs, move_data_dir_to_env, portable_settings,
                          resumed_counts, run_and_total, run_dir_for, set_torch_threads, slow_training_hints)

MODEL_FILE = "model.zip"
# attributes of an SB3 model that name folders of the training machine: left out of model.zip
MACHINE_ATTRIBUTES = ("tensorboard_log",)


def save_model(model, path: Path) -> None:
    """``model.save`` without the attributes that name folders of this machine (:data:`MACHINE_ATTRIBUTES`);
    ``PPO.load`` then takes SB3's defaults for them, or what the caller passes (a resumed run's own folder)."""
    model.save(str(path), exclude=list(MACHINE_ATTRIBUTES))


def _load_model_file(checkpoint: Path) -> Path:
    path = checkpoint / MODEL_FILE if checkpoint.is_dir() else checkpoint
    if not path.is_file():
        raise ValueError(f"SB3 checkpoint: {path} not found (expected a folder with {MODEL_FILE} or a .zip)")
    return path


def _rollout_steps(train_batch_size: int, rows: int, rounds: int) -> int:
    """A rollout holds whole episodes of every row, about train_batch_size agent steps."""
    return max(rounds, (train_batch_size // rows) // rounds * rounds)


def sb3_num_envs(settings: TrainSettings) -> int:
    """B, the environments of the vector core: ``num_envs_per_env_runner``, or for 0 the most (up to 10) that
    keep one environment's rollout size (:func:`agents.rllib_train.auto_num_envs`)."""
    if settings.num_envs_per_env_runner:
        return settings.num_envs_per_env_runner
    from datagames_env.scenarios import load_scenario_config

    cfg = load_scenario_config(settings.config, **settings.overrides)
    return auto_num_envs(lambda n: _rollout_steps(settings.train_batch_size, n * cfg.n_robots, cfg.rounds)
                         * n * cfg.n_robots)


def train_sb3(settings: TrainSettings, log=print) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from datagames_env.faces.sb3 import DataGamesSB3VecEnv

    if settings.per_robot:
        raise ValueError("--per-robot is RLlib only: SB3 shares one policy across the robot rows")
    rllib_only = {"--critic central": settings.critic != "local", "--imitate": settings.imitate,
                  "--message-sweeps": settings.message_sweeps}
    if any(rllib_only.values()):
        raise ValueError(f"{', '.join(k for k, v in rllib_only.items() if v)}: RLlib only (--algo ppo)")
    for hint in slow_training_hints(settings):
        log(f"note: {hint}")
    settings = move_data_dir_to_env(settings)  # the data folder is the loading machine's, not a recorded setting
    set_torch_threads(settings.torch_threads)
    venv = DataGamesSB3VecEnv(num_envs=sb3_num_envs(settings), config=settings.config, **settings.overrides)
    venv.seed(settings.seed)
    env = VecMonitor(venv)
    rounds = venv.vector.config.rounds
    n_steps = _rollout_steps(settings.train_batch_size, venv.num_envs, rounds)
    run_dir = run_dir_for(settings, "sb3-ppo")
    checkpoint = run_dir / "checkpoint"
    checkpoint.mkdir(parents=True, exist_ok=True)
    batch = n_steps * venv.num_envs
    minibatch = min(settings.minibatch_size, batch)
    if settings.resume:
        model = PPO.load(str(_load_model_file(Path(settings.resume))), env=env, device="cpu",
                         tensorboard_log=str(run_dir / "tensorboard"))
        log(f"resumed from {settings.resume} at {model.num_timesteps:,} steps")
    else:
        model = PPO("MlpPolicy", env, learning_rate=settings.lr, n_steps=n_steps, batch_size=minibatch,
                    n_epochs=settings.num_epochs, gamma=settings.gamma, gae_lambda=settings.lambda_,
                    ent_coef=settings.entropy_coeff, seed=settings.seed, device="cpu", verbose=0,
                    tensorboard_log=str(run_dir / "tensorboard"),
                    policy_kwargs={"net_arch": list(settings.hidden),
                                   "log_std_init": settings.initial_log_std})
    # history rows count from the first run (as RLlib's): iterations and agent steps both cumulative
    before = {"iterations": resumed_counts(settings.resume)["iterations"] if settings.resume else 0,
              "agent_steps": int(model.num_timesteps)}

    history: list[dict] = []
    started = time.perf_counter()

    class _History(BaseCallback):
        def _on_rollout_end(self) -> None:
            buffer = self.model.ep_info_buffer
            mean_return = float(sum(e["r"] for e in buffer) / len(buffer)) if buffer else float("nan")
            # VecMonitor returns are per row (robot); x N gives the fleet return RLlib reports
            history.append({"iteration": before["iterations"] + len(history) + 1,
                            "episode_return_mean": mean_return * venv.n_robots,
                            "agent_steps": int(self.model.num_timesteps),
                            "elapsed_s": time.perf_counter() - started})
            if settings.checkpoint_every and len(history) % settings.checkpoint_every == 0:
                save_model(self.model, checkpoint / MODEL_FILE)

        def _on_step(self) -> bool:
            return True

    model.learn(total_timesteps=settings.iterations * batch, callback=_History(), progress_bar=settings.progress,
                reset_num_timesteps=not settings.resume, tb_log_name="ppo")
    save_model(model, checkpoint / MODEL_FILE)
    elapsed = time.perf_counter() - started
    meta = {"framework": "sb3", "algo": "ppo", "iteration": before["iterations"] + len(history),
            "agent_steps": int(model.num_timesteps),
            "train_time_s": elapsed, "settings": portable_settings(settings)}
    (checkpoint / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    (run_dir / "history.json").write_text(json.dumps(history, indent=2))
    return {"checkpoint": str(checkpoint), "run_dir": str(run_dir), "history": history, "elapsed_s": elapsed,
            **run_and_total(history, before)}
