"""Collection and training throughput of the TorchRL face (figures printed, never asserted).

    python benchmarks/bench_torchrl.py                  # default config, torchrl_env(256), one torch thread
    python benchmarks/bench_torchrl.py --num-envs 1024 --train-iterations 5

1. ``torchrl_env(B)``: agent-steps/s of ``env.rollout`` with uniform-random actions (TorchRL's own loop: spec
   sampling, step_mdp, stacking), against TorchRL's ``PettingZooWrapper`` over ``parallel_env`` (one env, the
   same config), and the ratio. Also the batched core alone (``vector_env.step``) for reference.
2. BenchMARL MAPPO training on ``default`` (``datagames train --algo benchmarl-mappo`` settings: 2,000 agent steps
   per iteration, minibatch 250, 10 epochs): agent-steps/s over the iterations after the first (setup excluded).

Everything runs in this process on one torch thread; on a shared machine prefer the ratio (both sides see the
same load) and run it twice.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package and agents/


def time_rollout(env, steps: int, repeats: int) -> float:
    """Seconds per env.step of TorchRL's rollout loop (random actions), best of ``repeats``."""
    env.rollout(2, break_when_any_done=False)  # warm up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        env.rollout(steps, break_when_any_done=False)
        best = min(best, (time.perf_counter() - started) / steps)
    return best


def bench_collection(config: str, num_envs: int, steps: int, repeats: int) -> dict:
    import datagames_env
    from torchrl.envs import PettingZooWrapper

    batched = datagames_env.torchrl_env(num_envs, config=config, seed=0)
    n = batched.n_robots
    t_batched = time_rollout(batched, steps, repeats)
    wrapped = PettingZooWrapper(datagames_env.parallel_env(config), use_mask=False, categorical_actions=False,
                                seed=0, done_on_any=False)
    t_wrapped = time_rollout(wrapped, steps, repeats)
    venv = datagames_env.vector_env(num_envs, config)
    venv.reset(seed=0)
    actions = np.random.default_rng(0).random((steps, num_envs, n, batched.action_dim), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        venv.reset(seed=1)
        started = time.perf_counter()
        for t in range(steps):
            if t and t % venv.config.rounds == 0:
                venv.reset()
            venv.step(actions[t])
        best = min(best, (time.perf_counter() - started) / steps)
    return {"batched": num_envs * n / t_batched, "wrapper": n / t_wrapped, "core": num_envs * n / best,
            "n_robots": n}


def bench_training(config: str, iterations: int) -> dict:
    import tempfile

    from agents.benchmarl_train import train_mappo
    from agents.rllib_train import TrainSettings

    with tempfile.TemporaryDirectory() as out:
        settings = TrainSettings(config=config, iterations=iterations, out=out, run_name="bench", checkpoint_every=0,
                                 progress=False)
        result = train_mappo(settings, log=lambda *a, **k: None)
    history = result["history"]
    first, last = history[0], history[-1]
    rate = (last["agent_steps"] - first["agent_steps"]) / (last["elapsed_s"] - first["elapsed_s"])
    return {"agent_steps_per_s": rate, "iterations": len(history), "elapsed_s": result["elapsed_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40, help="rollout steps per timing (episodes auto-reset)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-iterations", type=int, default=6, help="BenchMARL MAPPO iterations (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    c = bench_collection(args.config, args.num_envs, args.steps, args.repeats)
    print(f"config {args.config}, {c['n_robots']} robots, one torch thread")
    print(f"torchrl_env({args.num_envs}) rollout:        {c['batched']:>12,.0f} agent-steps/s")
    print(f"PettingZooWrapper(parallel_env) rollout: {c['wrapper']:>12,.0f} agent-steps/s")
    print(f"ratio:                                   {c['batched'] / c['wrapper']:>12,.1f}x  (goal >= 50x)")
    print(f"vector_env({args.num_envs}).step alone:      {c['core']:>12,.0f} agent-steps/s  "
          f"(TorchRL's share of a batched step: {1 - c['batched'] / c['core']:.0%})")
    if args.train_iterations > 1:
        t = bench_training(args.config, args.train_iterations)
        print(f"BenchMARL MAPPO training:                {t['agent_steps_per_s']:>12,.0f} agent-steps/s "
              f"({t['iterations']} iterations of 2,000 agent steps, {t['elapsed_s']:.1f} s with setup)")


if __name__ == "__main__":
    main()
