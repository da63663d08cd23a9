"""Issue 17's speed goals as ratios, every scenario batched (prints a table with a pass/fail per row; asserts nothing).

    python benchmarks/bench_batched.py --baseline /path/to/0dbebaf-tree             # the goals as stated
    python benchmarks/bench_batched.py --baseline ../base --p2p-envs 8 --dual-envs 4 --torchrl-envs 16 --seconds 2

=========================================  =====================================================  ======
row (numerator)                            denominator                                            goal
=========================================  =====================================================  ======
p2p ``vector_env(64, "p2p_default")``      one ``parallel_env("p2p_default")`` of the baseline     300x
dual ``vector_env(16, "dual_default")``    one ``parallel_env("dual_default")`` of the baseline    250x
p2p ``torchrl_env(256, "p2p_default")``    TorchRL's ``PettingZooWrapper`` over this tree's        50x
                                           ``parallel_env("p2p_default")`` (as bench_torchrl.py)
dual ``torchrl_env(256, "dual_default")``  the same for ``dual_default``                           50x
p2p ``torchrl_env(256)`` (row "... b")     the wrapper over the BASELINE's ``parallel_env``        50x
dual ``torchrl_env(256)`` (row "... b")    the same for ``dual_default``                           50x
cloud ``vector_env(256, "default")``       the same call on the baseline                          0.95x
cloud ``parallel_env("default")``          the same call on the baseline                          0.95x
=========================================  =====================================================  ======

Figures are robot-steps/s (agent steps: one robot acting one round) over whole episodes with seeded uniform random
actions, resets included (they train the episode's first models in p2p and dual), after one warm-up episode; env
construction is not timed. Each (tree, case) runs in its own process with one torch thread; with ``--repeat k``
the two sides of a row run alternately k times and the ratio of the medians is printed (on a shared machine the
absolute figures move with the load, the ratio much less); a side that an earlier row measured (the ``torchrl_env``
numerators of the rows ending in " b") is not run again. Without ``--baseline`` the rows against the baseline
use this tree's own figures and say so. ``--p2p-envs`` / ``--dual-envs`` / ``--torchrl-envs`` / ``--cloud-envs``
change B (short runs); the table names the B that ran. ``--clock cpu`` divides by each process's CPU time instead
of wall time (every case runs one torch thread, so this is the figure of one busy core; use it when the machine is
shared and wall time moves with the others' load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _episodes(run_episode, robot_steps_per_episode: int, seconds: float) -> dict:
    """Robot-steps/s of ``run_episode()`` (one whole episode, reset included) after one warm-up episode."""
    run_episode()
    episodes, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while True:
        run_episode()
        episodes += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    cpu = time.process_time() - cpu_started  # one torch thread: steadier than wall time on a shared machine
    return {"robot_steps_per_s": episodes * robot_steps_per_episode / elapsed,
            "robot_steps_per_cpu_s": episodes * robot_steps_per_episode / cpu, "episodes": episodes,
            "seconds": elapsed, "cpu_seconds": cpu}


def _parallel_case(config: str, seconds: float) -> dict:
    import numpy as np

    import datagames_env

    env = datagames_env.parallel_env(config)
    rng = np.random.default_rng(0)
    state = {"seed": 0}

    def episode():
        env.reset(seed=state["seed"])
        state["seed"] += 1
        while env.agents:
            env.step({a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents})

    n, rounds = len(env.possible_agents), env.config.rounds
    return {**_episodes(episode, n * rounds, seconds), "num_envs": 1}


def _vector_case(config: str, num_envs: int, seconds: float) -> dict:
    import numpy as np

    import datagames_env

    venv = datagames_env.vector_env(num_envs, config)
    rng = np.random.default_rng(0)
    shape = (num_envs, venv.n_robots) + venv.single_action_space.shape
    state = {"seed": 0}

    def episode():
        venv.reset(seed=state["seed"])
        state["seed"] += num_envs
        for _ in range(venv.config.rounds):
            venv.step(rng.random(shape, dtype=np.float32))

    return {**_episodes(episode, num_envs * venv.n_robots * venv.config.rounds, seconds), "num_envs": num_envs}


def _torchrl_case(config: str, num_envs: int, seconds: float, wrapper: bool) -> dict:
    import datagames_env

    if wrapper:
        from torchrl.envs import PettingZooWrapper

        env = PettingZooWrapper(datagames_env.parallel_env(config), use_mask=False, categorical_actions=False,
                                seed=0, done_on_any=False)
        par = env._env
        n, rounds, num_envs = len(par.possible_agents), par.config.rounds, 1
    else:
        env = datagames_env.torchrl_env(num_envs, config=config, seed=0)
        n, rounds = env.n_robots, env.config.rounds

    def episode():  # TorchRL's own loop: spec sampling, step_mdp, stacking; the rollout resets first
        env.rollout(rounds, break_when_any_done=False)

    return {**_episodes(episode, num_envs * n * rounds, seconds), "num_envs": num_envs}


def run_case(case: str, num_envs: int, seconds: float) -> dict:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    scenario, kind = case.split(":")
    config = {"p2p": "p2p_default", "dual": "dual_default", "cloud": "default"}[scenario]
    if kind == "parallel":
        return _parallel_case(config, seconds)
    if kind == "vector":
        return _vector_case(config, num_envs, seconds)
    return _torchrl_case(config, num_envs, seconds, wrapper=kind == "wrapper")


def _in_process(tree: Path, case: str, num_envs: int, seconds: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--run", case, "--num-envs", str(num_envs),
                          "--seconds", str(seconds)], env=env, cwd=tree, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{case} on {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="the 0dbebaf source tree (ratios against it)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per side of a row (medians)")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per run (whole episodes)")
    parser.add_argument("--p2p-envs", type=int, default=64)
    parser.add_argument("--dual-envs", type=int, default=16)
    parser.add_argument("--torchrl-envs", type=int, default=256)
    parser.add_argument("--cloud-envs", type=int, default=256)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="robot-steps per wall second, or per CPU second of the process (a loaded machine)")
    parser.add_argument("--row", action="append", help="run only rows whose name starts with this (repeatable)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one case in this process
    parser.add_argument("--num-envs", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_case(args.run, args.num_envs, args.seconds)))
        return
    base = args.baseline if args.baseline is not None else ROOT
    tag = "baseline" if args.baseline is not None else "this tree (no --baseline)"
    # name, (tree, case, B) over (tree, case, B), goal
    rows = [
        (f"p2p vector_env({args.p2p_envs})", (ROOT, "p2p:vector", args.p2p_envs), (base, "p2p:parallel", 1),
         f"parallel_env, {tag}", 300.0),
        (f"dual vector_env({args.dual_envs})", (ROOT, "dual:vector", args.dual_envs), (base, "dual:parallel", 1),
         f"parallel_env, {tag}", 250.0),
        (f"p2p torchrl_env({args.torchrl_envs})", (ROOT, "p2p:torchrl", args.torchrl_envs), (ROOT, "p2p:wrapper", 1),
         "PettingZooWrapper(parallel_env)", 50.0),
        (f"dual torchrl_env({args.torchrl_envs})", (ROOT, "dual:torchrl", args.torchrl_envs),
         (ROOT, "dual:wrapper", 1), "PettingZooWrapper(parallel_env)", 50.0),
        (f"p2p torchrl_env({args.torchrl_envs}) b", (ROOT, "p2p:torchrl", args.torchrl_envs),
         (base, "p2p:wrapper", 1), f"PettingZooWrapper(parallel_env), {tag}", 50.0),
        (f"dual torchrl_env({args.torchrl_envs}) b", (ROOT, "dual:torchrl", args.torchrl_envs),
         (base, "dual:wrapper", 1), f"PettingZooWrapper(parallel_env), {tag}", 50.0),
        (f"cloud vector_env({args.cloud_envs})", (ROOT, "cloud:vector", args.cloud_envs),
         (base, "cloud:vector", args.cloud_envs), f"vector_env({args.cloud_envs}), {tag}", 0.95),
        ("cloud parallel_env", (ROOT, "cloud:parallel", 1), (base, "cloud:parallel", 1), f"parallel_env, {tag}", 0.95),
    ]
    if args.row:
        rows = [r for r in rows if any(r[0].startswith(p) for p in args.row)]
    print(f"baseline: {base}")
    unit = "robot-steps/s" if args.clock == "wall" else "robot-steps per CPU second"
    key = "robot_steps_per_s" if args.clock == "wall" else "robot_steps_per_cpu_s"
    print(f"{unit}, whole episodes with resets, random actions, one torch thread, {args.seconds:g} s per run, "
          f"median of {args.repeat}; rows ending in ' b' divide by the baseline's wrapper")
    header = f"{'row':<28} {'per s' if args.clock == 'wall' else 'per CPU s':>14} {'against':<40} {'per s' if args.clock == 'wall' else 'per CPU s':>14} {'ratio':>9} {'goal':>7}  pass"
    print(header)
    print("-" * len(header))
    results = []
    measured: dict[tuple, list[float]] = {}  # a side measured in an earlier row (the ' b' rows' numerators) is reused
    for name, (tree, case, b), (base_tree, base_case, base_b), against, goal in rows:
        ours, theirs = [], []
        reuse = measured.get((tree, case, b))
        for k in range(args.repeat):  # alternating, and which side goes first too, so both see the same load
            sides = [(ours, (tree, case, b)), (theirs, (base_tree, base_case, base_b))]
            for out, call in (sides if k % 2 == 0 else sides[::-1]):
                if out is ours and reuse is not None:
                    continue
                out.append(_in_process(*call, args.seconds)[key])
        if reuse is not None:
            ours = reuse
        measured[(tree, case, b)], measured[(base_tree, base_case, base_b)] = ours, theirs
        num, den = statistics.median(ours), statistics.median(theirs)
        ratio = num / den
        ok = ratio >= goal
        results.append({"row": name, "clock": args.clock, "robot_steps_per_s": num, "against": against, "against_robot_steps_per_s": den,
                        "ratio": ratio, "goal": goal, "pass": ok})
        print(f"{name:<28} {num:>14,.0f} {against:<40} {den:>14,.1f} {ratio:>8.2f}x {goal:>6g}x  "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
