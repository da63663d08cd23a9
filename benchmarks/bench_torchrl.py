"""Collection and training throughput of the TorchRL face (figures printed, never asserted).

    python benchmarks/bench_torchrl.py                  # default config, torchrl_env(256), one torch thread
    python benchmarks/bench_torchrl.py --num-envs 1024 --train-iterations 5

1. ``torchrl_env(B)``: agent-steps/s of ``env.rollout`` with uniform-random actions (TorchRL's own loop: spec
   sampling, step_mdp, stacking), against TorchRL's ``PettingZooWrapper`` over ``parallel_env`` (one env, the
   same config), and the ratio. Also the batched core alone (``vector_env.step``) for reference.
2. BenchMARL MAPPO training on ``default``, end to end (``train_benchmarl``: experiment setup, collection, GAE,
   updates, the final checkpoint), at the throughput recipe (``--train-batch-size 32000 --minibatch-size 4000
   --num-epochs 2``: 320 batched envs, 16 updates per iteration, evaluation and logging off the hot path) and at
   the results recipe (``quality``: 4 epochs, 32 updates per iteration) and the CLI's defaults (2,000 / 250 /
   10), for the env's action and the gap-fraction action. The rate is a
   marginal one: a short and a longer run of the same recipe, ``(steps_long - steps_short) / (t_long - t_short)``,
   so start-up does not count; wall time and this process's CPU time both (on a shared machine the CPU-time rate
   is the steadier). Where the time goes: collection (env + policy) and training (GAE + updates) per iteration.

    python benchmarks/bench_torchrl.py --num-envs 256 --train-iterations 0          # collection only
    python benchmarks/bench_torchrl.py --skip-collection --short 3 --long 12         # training rates only
    python benchmarks/bench_torchrl.py --skip-collection --train-iterations 0 --map-rate 320   # gap-fraction collection

``--map-rate B``: robot-steps per CPU-second of ``torchrl_env(B, action="gap-fraction")`` stepped with random
fractions (the env, the gap-fraction map ``baselines.fraction.greedy_fraction_shares`` and TorchRL's bookkeeping,
no policy), best of 3 x 40 steps: the collection side of the gap-fraction recipes, steadier under load than a
training run.

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


RECIPES = {  # name -> (train batch, minibatch, epochs) in agent steps
    "throughput": (32000, 4000, 2),
    "quality": (32000, 4000, 4),  # the gap-fraction results recipe (docs/benchmarl.md)
    "cli-defaults": (2000, 250, 10),
}


def _train_once(config: str, iterations: int, recipe: str, model: str, threads: int = 1) -> dict:
    import tempfile

    from agents.benchmarl_train import train_mappo
    from agents.rllib_train import TrainSettings

    batch, minibatch, epochs = RECIPES[recipe]
    with tempfile.TemporaryDirectory() as out:
        settings = TrainSettings(config=config, iterations=iterations, out=out, run_name="bench", checkpoint_every=0,
                                 progress=False, train_batch_size=batch, minibatch_size=minibatch, num_epochs=epochs,
                                 model=model, lr=1e-3, torch_threads=threads)
        wall, cpu = time.perf_counter(), time.process_time()
        result = train_mappo(settings, log=lambda *a, **k: None)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    history = result["history"]
    rows = history[1:] or history  # per-iteration split, first iteration (warm-up) left out
    return {"agent_steps": history[-1]["agent_steps"], "wall_s": wall, "cpu_s": cpu,
            "collect_s": float(np.mean([r.get("collect_s", np.nan) for r in rows])),
            "train_s": float(np.mean([r.get("train_s", np.nan) for r in rows]))}


def bench_training(config: str, short: int, long: int, recipe: str = "throughput", model: str = "auto",
                   threads: int = 1) -> dict:
    """Marginal end-to-end MAPPO rate between a ``short``- and a ``long``-iteration run (module docstring)."""
    _train_once(config, 1, recipe, model, threads)  # imports and numba compilation: neither timed run pays them
    a = _train_once(config, short, recipe, model, threads)
    b = _train_once(config, long, recipe, model, threads)
    steps = b["agent_steps"] - a["agent_steps"]
    return {"wall_rate": steps / max(b["wall_s"] - a["wall_s"], 1e-9),
            "cpu_rate": steps / max(b["cpu_s"] - a["cpu_s"], 1e-9),
            "startup_s": a["wall_s"] - short * (b["wall_s"] - a["wall_s"]) / (long - short),
            "collect_s": b["collect_s"], "train_s": b["train_s"], "batch": RECIPES[recipe][0]}


def bench_map(num_envs: int, steps: int = 40, repeats: int = 3) -> float:
    """Robot-steps per CPU-second of ``torchrl_env(num_envs, action="gap-fraction")`` (module docstring)."""
    import datagames_env

    env = datagames_env.torchrl_env(num_envs, config="default", seed=0, action="gap-fraction")
    gen = torch.Generator().manual_seed(0)
    rounds = env.config.rounds

    def run(n: int) -> None:
        td = env.reset()
        for t in range(n):
            td.set(("robots", "action"), torch.rand(num_envs, env.n_robots, 1, generator=gen))
            out = env.step(td)
            td = env.reset() if (t + 1) % rounds == 0 else env.step_mdp(out)

    run(rounds)  # warm-up: numba, first allocations
    best = 0.0
    for _ in range(repeats):
        cpu = time.process_time()
        run(steps)
        best = max(best, steps * num_envs * env.n_robots / (time.process_time() - cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default")
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40, help="rollout steps per timing (episodes auto-reset)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-iterations", type=int, default=1, help="0: skip the MAPPO training rates")
    parser.add_argument("--short", type=int, default=3, help="iterations of the short MAPPO run")
    parser.add_argument("--long", type=int, default=12, help="iterations of the long MAPPO run")
    parser.add_argument("--recipes", default="throughput", help=f"comma list of {sorted(RECIPES)}")
    parser.add_argument("--models", default="auto,gap-fraction", help="comma list: auto (env action), gap-fraction")
    parser.add_argument("--skip-collection", action="store_true")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads of the MAPPO runs")
    parser.add_argument("--map-rate", type=int, default=0, metavar="B",
                        help="also the gap-fraction collection rate of torchrl_env(B) per CPU-second (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_collection:
        report_collection(args)
    if args.map_rate:
        print(f"torchrl_env({args.map_rate}, action='gap-fraction') with random fractions: "
              f"{bench_map(args.map_rate):,.0f} robot-steps per CPU-second (best of 3 x 40 steps)")
    if args.train_iterations:
        print(f"BenchMARL MAPPO on {args.config}, {args.torch_threads} torch thread(s), end to end, marginal rate between {args.short} and {args.long} "
              "iterations (goal: 50,000 agent-steps/s)")
        for recipe in args.recipes.split(","):
            for model in args.models.split(","):
                t = bench_training(args.config, args.short, args.long, recipe, model, args.torch_threads)
                print(f"  {recipe:>12} {model:>12} ({t['batch']:,} agent steps/iter): {t['wall_rate']:>9,.0f} "
                      f"agent-steps/s wall, {t['cpu_rate']:>9,.0f} per CPU-second ({t['cpu_rate'] / 50_000:.2f}x "
                      f"the goal); per iteration: collection {t['collect_s']:.2f} s, GAE + updates "
                      f"{t['train_s']:.2f} s; start-up {t['startup_s']:.1f} s")


def report_collection(args) -> None:
    c = bench_collection(args.config, args.num_envs, args.steps, args.repeats)
    print(f"config {args.config}, {c['n_robots']} robots, one torch thread")
    print(f"torchrl_env({args.num_envs}) rollout:        {c['batched']:>12,.0f} agent-steps/s")
    print(f"PettingZooWrapper(parallel_env) rollout: {c['wrapper']:>12,.0f} agent-steps/s")
    print(f"ratio:                                   {c['batched'] / c['wrapper']:>12,.1f}x  (goal >= 50x)")
    print(f"vector_env({args.num_envs}).step alone:      {c['core']:>12,.0f} agent-steps/s  "
          f"(TorchRL's share of a batched step: {1 - c['batched'] / c['core']:.0%})")


if __name__ == "__main__":
    main()
