"""Step throughput of the environment (GUIDE: speed goals are printed, never asserted in tests).

    python benchmarks/bench_env.py                 # MNIST setting if ../shared/datasets exists, else digits
    python benchmarks/bench_env.py --config default --num-envs 1024

Prints single parallel_env steps/s with the split of a step between the core and PettingZoo dict
building, and vector_env robot-steps/s at B = num_envs. Retraining and the final-accuracy training are off,
as the targets are stated for the step itself; the first episode is a warm-up (numba, torch).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _time_parallel(env, episodes: int) -> tuple[float, float, float]:
    """(steps/s, core seconds per step, total seconds per step)."""
    rng = np.random.default_rng(0)
    width = env.action_space(env.possible_agents[0]).shape[0]
    steps, total, core_time = 0, 0.0, 0.0
    original_step = env.core.step
    original_obs = env.core.observations

    def timed(fn):
        def wrapper(*a, **k):
            nonlocal core_time
            t = time.perf_counter()
            out = fn(*a, **k)
            core_time += time.perf_counter() - t
            return out
        return wrapper

    env.core.step, env.core.observations = timed(original_step), timed(original_obs)
    for ep in range(episodes):
        env.reset(seed=ep)
        actions = [{a: rng.random(width) for a in env.agents} for _ in range(env.config.rounds)]
        t = time.perf_counter()
        for act in actions:
            env.step(act)
        total += time.perf_counter() - t
        steps += env.config.rounds
    env.core.step, env.core.observations = original_step, original_obs
    return steps / total, core_time / steps, total / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="config name/path (default: mnist_datagames if data is present)")
    parser.add_argument("--num-envs", type=int, default=1024)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--vector-episodes", type=int, default=5)
    args = parser.parse_args()
    if SHARED.is_dir():
        os.environ.setdefault("DATAGAMES_DATA_DIR", str(SHARED))
    config = args.config or ("mnist_datagames" if os.environ.get("DATAGAMES_DATA_DIR") else "default")

    import datagames_env

    overrides = {"perception.retrain_every": 0, "final_accuracy": False}  # the step itself, no training
    env = datagames_env.parallel_env(config, **overrides)
    cfg = env.config
    print(f"config {config}: {cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round, "
          f"n_cache {cfg.n_cache}, dataset {cfg.dataset.name}, mode {cfg.action_mode}")
    _time_parallel(env, 2)  # warm-up: numba kernels, torch, the model version
    rate, core_s, total_s = _time_parallel(env, args.episodes)
    print(f"parallel_env: {rate:,.0f} steps/s  ({total_s * 1e6:.0f} us/step: core {core_s * 1e6:.0f} us "
          f"= {core_s / total_s:.0%}, PettingZoo dicts + infos {(total_s - core_s) * 1e6:.0f} us)  target >= 5,000")

    venv = datagames_env.vector_env(args.num_envs, config, **overrides)
    rng = np.random.default_rng(0)
    venv.reset(seed=0)
    venv.step(rng.random(venv.action_space.shape))  # warm-up
    steps, elapsed = 0, 0.0
    for ep in range(args.vector_episodes):
        venv.reset(seed=1000 * ep)
        actions = rng.random((cfg.rounds,) + venv.action_space.shape)
        t = time.perf_counter()
        for r in range(cfg.rounds):
            venv.step(actions[r])
        elapsed += time.perf_counter() - t
        steps += cfg.rounds
    robot_steps = steps * args.num_envs * cfg.n_robots / elapsed
    print(f"vector_env B={args.num_envs}: {robot_steps:,.0f} robot-steps/s ({steps / elapsed:.1f} batched steps/s, "
          f"{elapsed / steps * 1e3:.1f} ms/step)  target >= 1,000,000")


if __name__ == "__main__":
    main()
