"""Per-round time of the p2p and dual scenarios at fleet sizes of issue 9 (prints figures, asserts nothing).

    python benchmarks/bench_scenarios.py                              # this tree
    python benchmarks/bench_scenarios.py --baseline /tmp/base-tree    # and another source tree, as ratios

=============  ==============================================================================================
case           setting
=============  ==============================================================================================
``p2p_3``      ``p2p_toy`` (3 robots, MNIST CNNs, MC dropout) when ../shared/datasets has MNIST, else
               ``p2p_default`` (digits MLPs)
``p2p_40``     ``p2p_default`` with 40 robots (its three robot kinds in turn, a tenth of their initial labels)
``dual_500``   ``dual_default`` with 500 robots, 3 rounds
``p2p_b64``    ``p2p_default`` as a batch of 64 envs (``make_batched``: the fast tier) where the tree has
               ``make_batched``, else (an older tree such as 0dbebaf) one ``parallel_env("p2p_default")``; whole
               episodes including reset, figure in robot-steps/s (``--episodes`` timed episodes after one warm-up),
               per wall second and per CPU second of the process (less sensitive to other jobs on a shared machine)
=============  ==============================================================================================

Each case runs in its own process (one torch thread): one reset (not timed: it trains the first models), then
every step of the episode with seeded random actions; the figure is seconds per step (= per round; PettingZoo's
``performance_benchmark`` counts one AEC cycle per round, so cycles/s = 1 / that). With ``--baseline`` the two
trees run alternately ``--repeat`` times and the ratio of their medians is printed: on a shared machine the
absolute figures move with the load, the ratio much less.
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
SHARED = ROOT.parent / "shared" / "datasets"
CASES = ("p2p_3", "p2p_40", "dual_500", "p2p_b64")
BATCH_ENVS = 64


def _p2p_module():
    try:  # this layout; a baseline tree may predate datagames_env/scenarios/
        from datagames_env.scenarios import p2p
    except ImportError:
        from datagames_env import p2p
    return p2p


def _make(case: str):
    if case.startswith("p2p"):
        p2p = _p2p_module()
        if case == "p2p_3":
            mnist = (SHARED / "MNIST" / "t10k-images-idx3-ubyte.gz").is_file()
            return p2p.parallel_env("p2p_toy", data_dir=str(SHARED)) if mnist else p2p.parallel_env("p2p_default")
        kinds = [r.model_dump() for r in p2p.load_p2p_config("p2p_default").robots]
        robots = [dict(kinds[i % 3]) for i in range(40)]
        for robot in robots:
            robot["initial_labeled"] = {k: max(1, v // 10) for k, v in robot["initial_labeled"].items()}
        return p2p.parallel_env("p2p_default", robots=robots, **{"ood.calibration_size": 10})
    try:
        from datagames_env.scenarios import dual
    except ImportError:
        from datagames_env import dual

    return dual.parallel_env("dual_default", n_robots=500, rounds=3)


def run_batched(episodes: int) -> dict:
    """Whole episodes (reset included) with seeded random actions: a batch of BATCH_ENVS envs where the tree has
    ``make_batched``, else one ``parallel_env`` (the B = 1 paper tier of an older tree)."""
    import numpy as np

    rng = np.random.default_rng(0)
    try:
        from datagames_env.scenarios import make_batched
    except ImportError:
        make_batched = None
    if make_batched is not None:
        batch = make_batched("p2p_default", BATCH_ENVS)
        b_, n = batch.num_envs, batch.n_robots

        def episode(e: int) -> int:
            batch.reset(np.arange(e * b_, (e + 1) * b_))
            for _ in range(batch.config.rounds):
                batch.step(rng.random((b_, n, batch.action_width)))
            return batch.config.rounds * b_ * n
        kind = f"make_batched x{b_} ({type(batch).__name__})"
    else:
        env = _p2p_module().parallel_env("p2p_default")

        def episode(e: int) -> int:
            env.reset(seed=e)
            steps = 0
            while env.agents:
                env.step({a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents})
                steps += len(env.possible_agents)
            return steps
        kind = "parallel_env"
    episode(0)  # warm-up: builds the world (and, for a fast config, finds the extractor's cache)
    start, cpu_start = time.perf_counter(), time.process_time()
    steps = sum(episode(e) for e in range(1, episodes + 1))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"case": "p2p_b64", "kind": kind, "robot_steps": steps, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "robot_steps_per_s": steps / seconds, "robot_steps_per_cpu_s": steps / cpu_seconds}


def run_case(case: str, episodes: int = 3) -> dict:
    import warnings

    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if case == "p2p_b64":
        return run_batched(episodes)
    env = _make(case)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    times = []
    while env.agents:
        actions = {a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents}
        start = time.perf_counter()
        env.step(actions)
        times.append(time.perf_counter() - start)
    return {"case": case, "config": env.config.model_dump().get("scenario"), "robots": len(env.possible_agents),
            "seconds_per_step": float(np.mean(times)), "steps": len(times)}


def _in_process(tree: Path, case: str, episodes: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--case", case, "--json", "--episodes",
                          str(episodes)], env=env,
                         cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, action="append", help="run only these cases (repeatable)")
    parser.add_argument("--baseline", type=Path, help="another source tree to compare with (ratios)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per tree (medians)")
    parser.add_argument("--episodes", type=int, default=3, help="timed episodes of p2p_b64 (after one warm-up)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one case, in this process
    args = parser.parse_args()
    cases = args.case or list(CASES)
    if args.json:
        print(json.dumps(run_case(cases[0], args.episodes)))
        return
    for case in cases:
        if case == "p2p_b64":
            _report_batched(args)
            continue
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours.append(_in_process(ROOT, case, args.episodes)["seconds_per_step"])
            if args.baseline is not None:
                theirs.append(_in_process(args.baseline, case, args.episodes)["seconds_per_step"])
        line = f"{case:<9} {statistics.median(ours):8.3f} s/step ({1 / statistics.median(ours):6.2f} cycles/s)"
        if theirs:
            line += (f"   baseline {statistics.median(theirs):8.3f} s/step   "
                     f"speed-up {statistics.median(theirs) / statistics.median(ours):5.1f}x")
        print(line, flush=True)


def _report_batched(args: argparse.Namespace) -> None:
    """p2p_b64: robot-steps/s of each run, alternating trees, and the ratio of the medians."""
    ours, theirs = [], []
    for _ in range(args.repeat):
        if args.baseline is not None:
            theirs.append(_in_process(args.baseline, "p2p_b64", args.episodes))
        ours.append(_in_process(ROOT, "p2p_b64", args.episodes))
    for key, unit in (("robot_steps_per_s", "robot-steps/s (wall)"), ("robot_steps_per_cpu_s", "robot-steps/CPU-s")):
        mine = statistics.median(r[key] for r in ours)
        line = (f"p2p_b64   {mine:9.1f} {unit} ({ours[0]['kind']}; runs: "
                + ", ".join(f"{r[key]:.0f}" for r in ours) + ")")
        if theirs:
            base = statistics.median(r[key] for r in theirs)
            line += (f"\n          baseline {base:7.2f} {unit} ({theirs[0]['kind']}; runs: "
                     + ", ".join(f"{r[key]:.2f}" for r in theirs) + f")   speed-up {mine / base:6.1f}x")
        print(line, flush=True)


if __name__ == "__main__":
    main()
