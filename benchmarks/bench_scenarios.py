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
``dual_b16``   ``dual_default`` as 16 envs of the native batched dual (``make_batched``), whole episodes
               including reset, in robot-steps/s; a tree without ``make_batched`` (0dbebaf) runs one
               ``parallel_env("dual_default")`` instead (the issue-17 baseline)
``p2p_b64``    ``p2p_default`` as 64 envs of the native batched p2p (``make_batched``: the fast tier), the same way;
               a tree without ``make_batched`` runs one ``parallel_env("p2p_default")``
=============  ==============================================================================================

Each case runs in its own process (one torch thread): one reset (not timed: it trains the first models), then
every step of the episode with seeded random actions; the figure is seconds per step (wall, and CPU seconds of the
process: the steadier figure on a shared machine; = per round; PettingZoo's
``performance_benchmark`` counts one AEC cycle per round, so cycles/s = 1 / that). With ``--baseline`` the two
trees run alternately ``--repeat`` times and the ratio of their medians is printed: on a shared machine the
absolute figures move with the load, the ratio much less. The batched cases (``dual_b16``, ``p2p_b64``) time whole
episodes after one warm-up episode (``--episodes``; default 6 for dual, or $BENCH_DUAL_EPISODES, 3 for p2p) and
print robot-steps per wall second and per CPU second of the process (the steadier figure on a shared machine).
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
CASES = ("p2p_3", "p2p_40", "dual_500", "dual_b16", "p2p_b64")
BATCHED = {  # case -> (config, envs, timed episodes by default)
    "dual_b16": ("dual_default", 16, int(os.environ.get("BENCH_DUAL_EPISODES", "6"))),
    "p2p_b64": ("p2p_default", 64, 3),
}


def _p2p_module():
    try:  # this layout; a baseline tree may predate datagames_env/scenarios/
        from datagames_env.scenarios import p2p
    except ImportError:
        from datagames_env import p2p
    return p2p


def _parallel_env(module, config: str, **overrides):
    """``module.parallel_env`` where a (baseline) tree has one, else the package's ``parallel_env`` (this layout:
    the scenario modules hold no face)."""
    if hasattr(module, "parallel_env"):
        return module.parallel_env(config, **overrides)
    import datagames_env

    return datagames_env.parallel_env(config, **overrides)


def _make(case: str):
    if case.startswith("p2p"):
        p2p = _p2p_module()
        if case == "p2p_3":
            mnist = (SHARED / "MNIST" / "t10k-images-idx3-ubyte.gz").is_file()
            return (_parallel_env(p2p, "p2p_toy", data_dir=str(SHARED)) if mnist
                    else _parallel_env(p2p, "p2p_default"))
        kinds = [r.model_dump() for r in p2p.load_p2p_config("p2p_default").robots]
        robots = [dict(kinds[i % 3]) for i in range(40)]
        for robot in robots:
            robot["initial_labeled"] = {k: max(1, v // 10) for k, v in robot["initial_labeled"].items()}
        return _parallel_env(p2p, "p2p_default", robots=robots, **{"ood.calibration_size": 10})
    try:
        from datagames_env.scenarios import dual
    except ImportError:
        from datagames_env import dual

    return _parallel_env(dual, "dual_default", n_robots=500, rounds=3)


def _robot_steps(case: str, episodes: int) -> dict:
    """Whole episodes (reset included) of random actions: the case's native batched envs, or one parallel env in a
    tree without ``make_batched``. One warm-up episode first (numba, the cached extractor)."""
    import numpy as np

    config, num_envs, _ = BATCHED[case]

    rng = np.random.default_rng(0)
    try:
        from datagames_env.scenarios import make_batched
    except ImportError:
        make_batched = None
    if make_batched is not None:
        batch = make_batched(config, num_envs)
        shape = (batch.num_envs, batch.n_robots, batch.action_width)

        def episode(seed: int) -> int:
            batch.reset(np.arange(seed * num_envs, (seed + 1) * num_envs))
            for _ in range(batch.config.rounds):
                batch.step(rng.random(shape))
            return batch.num_envs * batch.n_robots * batch.config.rounds
        kind = f"{type(batch).__name__} x{num_envs}"
    else:
        if case == "p2p_b64":
            env = _parallel_env(_p2p_module(), config)
        else:
            try:
                from datagames_env.scenarios import dual
            except ImportError:
                from datagames_env import dual
            env = _parallel_env(dual, config)

        def episode(seed: int) -> int:
            env.reset(seed=seed)
            steps = 0
            while env.agents:
                env.step({a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents})
                steps += len(env.possible_agents)
            return steps
        kind = "parallel_env"
    episode(10_000)
    start, cpu_start, steps = time.perf_counter(), time.process_time(), 0
    for seed in range(episodes):
        steps += episode(seed)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"case": case, "kind": kind, "robot_steps_per_s": steps / seconds, "seconds_per_step": seconds / steps,
            "robot_steps_per_cpu_s": steps / cpu_seconds}


def run_case(case: str, episodes: int | None = None) -> dict:
    import warnings

    import numpy as np
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    if case in BATCHED:
        return _robot_steps(case, episodes or BATCHED[case][2])
    env = _make(case)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    times, cpu_times = [], []
    while env.agents:
        actions = {a: rng.random(env.action_space(a).shape).astype(np.float32) for a in env.agents}
        start, cpu_start = time.perf_counter(), time.process_time()
        env.step(actions)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {"case": case, "config": env.config.model_dump().get("scenario"), "robots": len(env.possible_agents),
            "seconds_per_step": float(np.mean(times)), "cpu_seconds_per_step": float(np.mean(cpu_times)),
            "steps": len(times)}


def _in_process(tree: Path, case: str, episodes: int | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    more = ["--episodes", str(episodes)] if episodes else []
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--case", case, "--json", *more], env=env,
                         cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, action="append", help="run only these cases (repeatable)")
    parser.add_argument("--baseline", type=Path, help="another source tree to compare with (ratios)")
    parser.add_argument("--repeat", type=int, default=1, help="alternating runs per tree (medians)")
    parser.add_argument("--episodes", type=int, help="timed episodes of a batched case (after one warm-up)")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # one case, in this process
    args = parser.parse_args()
    cases = args.case or list(CASES)
    if args.json:
        print(json.dumps(run_case(cases[0], args.episodes)))
        return
    for case in cases:
        if case in BATCHED:
            _report_batched(case, args)
            continue
        runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
        for _ in range(args.repeat):
            runs["ours"].append(_in_process(ROOT, case))
            if args.baseline is not None:
                runs["theirs"].append(_in_process(args.baseline, case))
        for key, unit in (("seconds_per_step", "s/step"), ("cpu_seconds_per_step", "CPU s/step")):
            ours = [r[key] for r in runs["ours"] if key in r]
            theirs = [r[key] for r in runs["theirs"] if key in r]
            if not ours:
                continue
            line = f"{case:<9} {statistics.median(ours):8.3f} {unit} ({1 / statistics.median(ours):6.2f} cycles/s)"
            if theirs:
                line += (f"   baseline {statistics.median(theirs):8.3f} {unit}   "
                         f"speed-up {statistics.median(theirs) / statistics.median(ours):5.1f}x")
            print(line, flush=True)


def _report_batched(case: str, args: argparse.Namespace) -> None:
    """Robot-steps per wall and per CPU second of a batched case, the trees alternating, ratio of the medians."""
    ours, theirs = [], []
    for k in range(args.repeat):  # which tree goes first alternates too, so both see the same load
        sides = [(ours, ROOT)] + ([(theirs, args.baseline)] if args.baseline is not None else [])
        for out, tree in (sides if k % 2 == 0 else sides[::-1]):
            out.append(_in_process(tree, case, args.episodes))
    for key, unit in (("robot_steps_per_s", "robot-steps/s (wall)"), ("robot_steps_per_cpu_s", "robot-steps/CPU-s")):
        mine = statistics.median(r[key] for r in ours)
        line = f"{case:<9} {mine:10.1f} {unit} ({ours[0]['kind']}; runs " + ", ".join(f"{r[key]:.0f}" for r in ours)
        if theirs:
            base = statistics.median(r[key] for r in theirs)
            line += (f")   baseline {base:8.1f} ({theirs[0]['kind']}; runs "
                     + ", ".join(f"{r[key]:.1f}" for r in theirs) + f")   speed-up {mine / base:6.1f}x")
        else:
            line += ")"
        print(line, flush=True)


if __name__ == "__main__":
    main()
