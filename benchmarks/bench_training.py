"""Training throughput (agent steps per second) of RLlib PPO and SB3 PPO (GUIDE: printed, never asserted).

    python benchmarks/bench_training.py                       # both, config default, project defaults
    python benchmarks/bench_training.py --algo ppo --iterations 12 --set num_envs_per_env_runner=4

Each run trains with the project's defaults (``TrainSettings()``: 2,000 agent steps per update, minibatch 250,
10 epochs, one torch thread) for ``--iterations`` updates; the first ``--warmup`` updates (module build, numba,
first episodes) are left out of the rate. ``--set FIELD=VALUE`` changes one ``TrainSettings`` field (repeatable).
Rates are per wall second and per CPU second of the process (sampling and learning both run in it by default);
for RLlib the sampling / learning split is RLlib's own (smoothed) timers.

    python benchmarks/bench_training.py --vector               # RLlib: RLlib's runner vs the vector runner

``--vector`` (agents/rllib_vector_runner.py, docs/rllib_speed.md) trains each variant twice end to end through
``agents.rllib_train.train`` (the code of ``datagames train --algo ppo``), a short and a longer run, and prints the
marginal rate (extra agent steps / extra seconds, so start-up does not count), the sampling and the learning time
per agent step (summed exactly around PPO's sample and learner-update calls, wall and CPU of this thread, not
RLlib's smoothed timers), and the ratio to RLlib's own runner with the project defaults measured in the same
invocation.

    python benchmarks/bench_training.py --vector --baseline /path/to/0dbebaf-tree --repeat 3

``--baseline TREE`` (with ``--vector``) measures issue 18's goal against another source tree: its side is that
tree's ``datagames train --algo ppo`` (``agents.rllib_train.train`` with its own defaults), this side the same call
of this checkout with ``--preset throughput``. Every run is a fresh subprocess (``PYTHONPATH`` = its tree only), a
short and a longer one per side for the marginal rate; the sides alternate ``--repeat`` times (the order flips each
repeat), and the script prints the medians over repeats of agent steps per wall second and per CPU second of the
training process (Ray's helper processes not counted; 0 remote runners and learners, so sampling and learning run
in it), and their ratios. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's agents/, not an installed copy


def _fields(items: list[str]) -> dict:
    fields = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            fields[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            fields[key] = value
    return fields


def _settings(args, out: str, extra: list[str] = ()):
    from agents.rllib_train import TrainSettings

    return TrainSettings(config=args.config, iterations=args.iterations, progress=False, checkpoint_every=0,
                         out=out, run_name=f"bench-{os.getpid()}-{time.time_ns()}",
                         **_fields([*args.set, *extra]))


def _marks_rate(marks: list[tuple[int, float, float]], warmup: int) -> str:
    """Rates between the end of update ``warmup`` and the last: per wall second and per CPU second of this
    process (on a shared, busy machine the CPU figure is the steadier one; everything here runs in-process)."""
    start = marks[warmup - 1] if warmup else (0, 0.0, 0.0)
    steps, wall, cpu = (marks[-1][k] - start[k] for k in range(3))
    return (f"{steps / wall:,.0f} agent-steps/s wall, {steps / cpu:,.0f} per CPU-s "
            f"({steps:,} steps, {wall:.1f} s wall, {cpu:.1f} s CPU)")


def bench_rllib(args, out: str) -> None:
    import ray

    from agents import rllib_train

    marks: list[tuple[int, float, float]] = []
    timers: list[dict] = []
    original = rllib_train.iteration_summary

    def summary_with_clocks(result):  # called once per update, right after algo.train()
        summary = original(result)
        marks.append((summary["agent_steps"], time.perf_counter(), time.process_time()))
        timers.append(dict(result.get("timers", {})))
        return summary

    rllib_train.iteration_summary = summary_with_clocks
    try:
        rllib_train.train(_settings(args, out), log=lambda *a: None)
    finally:
        rllib_train.iteration_summary = original
        ray.shutdown()
    last = timers[-1]
    split = ""
    if "env_runner_sampling_timer" in last and "learner_update_timer" in last:
        split = (f"; RLlib timers (smoothed): sampling {last['env_runner_sampling_timer']:.2f} s, learning "
                 f"{last['learner_update_timer']:.2f} s per update")
    print(f"rllib ppo  {args.config} {' '.join(args.set)}: {_marks_rate(marks, args.warmup)}{split}", flush=True)


def bench_sb3(args, out: str) -> None:
    from stable_baselines3 import PPO

    from agents.sb3_train import train_sb3

    marks: list[tuple[int, float, float]] = []
    original = PPO.train

    def train_with_clocks(model):  # called once per update, after each rollout
        original(model)
        marks.append((int(model.num_timesteps), time.perf_counter(), time.process_time()))

    PPO.train = train_with_clocks
    try:
        train_sb3(_settings(args, out), log=lambda *a: None)
    finally:
        PPO.train = original
    print(f"sb3 ppo    {args.config} {' '.join(args.set)}: {_marks_rate(marks, args.warmup)}", flush=True)


def compare_rllib(args, out: str) -> None:
    """A/B on the same machine state: both algorithms live in this process and their updates alternate, so a
    load change on the shared machine hits both alike."""
    import ray

    from agents.rllib_train import build_ppo_config, init_ray, iteration_summary, set_torch_threads

    variants = {"base": _settings(args, out), "new": _settings(args, out, args.compare)}
    set_torch_threads(variants["base"].torch_threads)
    init_ray(None, variants["base"].torch_threads)
    algos = {name: build_ppo_config(s).build_algo() for name, s in variants.items()}
    totals = {name: [0, 0.0, 0.0] for name in algos}
    steps = {name: 0 for name in algos}
    try:
        for i in range(args.iterations):
            for name, algo in (list(algos.items())[::1 if i % 2 else -1]):
                wall, cpu = time.perf_counter(), time.process_time()
                result = algo.train()
                now = iteration_summary(result)["agent_steps"]
                new_steps, steps[name] = now - steps[name], now
                if i >= args.warmup:
                    total = totals[name]
                    total[0] += new_steps
                    total[1] += time.perf_counter() - wall
                    total[2] += time.process_time() - cpu
    finally:
        for algo in algos.values():
            algo.stop()
        ray.shutdown()
    _print_compare("rllib ppo", args, totals)


def compare_sb3(args, out: str) -> None:
    """A/B for SB3: short runs of each variant, alternating, rates from the updates after the warm-up."""
    from stable_baselines3 import PPO

    from agents.sb3_train import train_sb3

    totals = {name: [0, 0.0, 0.0] for name in ("base", "new")}
    original = PPO.train
    for rep in range(args.repeats):
        for name in (("base", "new") if rep % 2 else ("new", "base")):
            marks = []

            def train_with_clocks(model):
                original(model)
                marks.append((int(model.num_timesteps), time.perf_counter(), time.process_time()))

            PPO.train = train_with_clocks
            try:
                train_sb3(_settings(args, out, args.compare if name == "new" else ()), log=lambda *a: None)
            finally:
                PPO.train = original
            start = marks[args.warmup - 1]
            for k in range(3):
                totals[name][k] += marks[-1][k] - start[k]
    _print_compare("sb3 ppo  ", args, totals)


def _print_compare(label: str, args, totals: dict) -> None:
    rates = {name: (t[0] / t[1], t[0] / t[2]) for name, t in totals.items()}
    for name, (wall, cpu) in rates.items():
        extra = " ".join(args.set + (args.compare if name == "new" else []))
        print(f"{label} {args.config} {extra or '(defaults)'}: {wall:,.0f} agent-steps/s wall, {cpu:,.0f} per "
              f"CPU-s ({totals[name][0]:,} steps)", flush=True)
    print(f"{label} ratio new/base: {rates['new'][0] / rates['base'][0]:.2f}x wall, "
          f"{rates['new'][1] / rates['base'][1]:.2f}x CPU", flush=True)


# the variants of --vector: RLlib's runner with the defaults (the 0dbebaf path), the vector runner with the same
# learner settings, then with throughput-sized updates (larger batches and minibatches, fewer passes over them)
VECTOR_VARIANTS = {
    "rllib-runner": [],
    "vector": ["vector_runner=True"],
    "vector-32k-e2": ["vector_runner=True", "train_batch_size=32000", "minibatch_size=4000", "num_epochs=2"],
    "vector-32k-e1": ["vector_runner=True", "train_batch_size=32000", "minibatch_size=4000", "num_epochs=1"],
}


def _timed_train(settings) -> dict:
    """One end-to-end ``train()``: wall and CPU seconds of the whole call, agent steps, and the seconds inside
    PPO's sampling call and inside its learner update (both in this process with 0 remote runners / learners)."""
    import ray
    import ray.rllib.algorithms.ppo.ppo as ppo_module
    from ray.rllib.core.learner.learner_group import LearnerGroup

    from agents import rllib_train

    clocks = {"sample": 0.0, "learn": 0.0, "sample_cpu": 0.0, "learn_cpu": 0.0}
    sample, update = ppo_module.synchronous_parallel_sample, LearnerGroup.update

    def timed(name, call, *a, **k):  # wall and this thread's CPU (local runner and learner run in this thread)
        start, start_cpu = time.perf_counter(), time.thread_time()
        try:
            return call(*a, **k)
        finally:
            clocks[name] += time.perf_counter() - start
            clocks[name + "_cpu"] += time.thread_time() - start_cpu

    def timed_sample(*a, **k):
        return timed("sample", sample, *a, **k)

    def timed_update(self, *a, **k):
        return timed("learn", update, self, *a, **k)

    ppo_module.synchronous_parallel_sample, LearnerGroup.update = timed_sample, timed_update
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = rllib_train.train(settings, log=lambda *a: None)
    finally:
        ppo_module.synchronous_parallel_sample, LearnerGroup.update = sample, update
        ray.shutdown()
    return {"steps": result["history"][-1]["agent_steps"], "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu, **clocks}


def bench_vector(args, out: str) -> None:
    """Marginal agent-steps/s of each ``VECTOR_VARIANTS`` entry between a short and a longer end-to-end run."""
    import math

    rates = {}
    # one throwaway update first: the process's one-time imports and compiles would otherwise fall into the first
    # variant's short run only and inflate its marginal rate
    warm = _settings(args, out, ["train_batch_size=1000", "minibatch_size=250", "num_epochs=1"])
    warm.iterations = 1
    _timed_train(warm)
    for name, fields in VECTOR_VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        probe = _settings(args, out, fields)
        short = max(args.short_updates, math.ceil(args.short_steps / probe.train_batch_size))
        long = max(short + args.extra_updates, math.ceil(args.long_steps / probe.train_batch_size))
        runs = []
        for iterations in (short, long):
            settings = _settings(args, out, fields)
            settings.iterations = iterations
            runs.append(_timed_train(settings))
        d = {k: runs[1][k] - runs[0][k] for k in runs[0]}
        rates[name] = (d["steps"] / d["wall"], d["steps"] / d["cpu"])
        print(f"{name:14s} {' '.join(args.set + fields) or '(defaults)'}: {rates[name][0]:,.0f} agent-steps/s wall, "
              f"{rates[name][1]:,.0f} per CPU-s; per agent step sampling {d['sample'] / d['steps'] * 1e6:,.1f} us wall "
              f"({d['sample_cpu'] / d['steps'] * 1e6:,.1f} CPU), learning {d['learn'] / d['steps'] * 1e6:,.1f} us wall "
              f"({d['learn_cpu'] / d['steps'] * 1e6:,.1f} CPU) ({short} vs {long} updates: {d['steps']:,} steps, "
              f"{d['wall']:.1f} s wall; start-up {runs[0]['wall'] - runs[0]['steps'] * d['wall'] / d['steps']:.1f} s)",
              flush=True)
    base = rates.get("rllib-runner")
    if base:
        for name, (wall, cpu) in rates.items():
            print(f"ratio {name} / rllib-runner: {wall / base[0]:.2f}x wall, {cpu / base[1]:.2f}x CPU", flush=True)


# ---- --baseline: this checkout against another source tree, alternated, one subprocess per run
# (a standalone script: importing this file would put this checkout first on the path of the other tree's side)
WORKER = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
import agents
from pathlib import Path
assert Path(agents.__file__).resolve().is_relative_to(Path(spec["tree"]).resolve()), agents.__file__
import ray
import ray.rllib.algorithms.ppo.ppo as ppo_module
from ray.rllib.core.learner.learner_group import LearnerGroup
from agents import rllib_train
fields = dict(spec["fields"])
if spec["preset"]:
    settings = rllib_train.TrainSettings.from_preset(spec["preset"], **fields)
else:
    settings = rllib_train.TrainSettings(**fields)
clocks = {"sample": 0.0, "learn": 0.0}
sample, update = ppo_module.synchronous_parallel_sample, LearnerGroup.update
def timed(name, call, *a, **k):
    start = time.thread_time()
    try:
        return call(*a, **k)
    finally:
        clocks[name] += time.thread_time() - start
ppo_module.synchronous_parallel_sample = lambda *a, **k: timed("sample", sample, *a, **k)
LearnerGroup.update = lambda self, *a, **k: timed("learn", update, self, *a, **k)
wall, cpu = time.perf_counter(), time.process_time()
result = rllib_train.train(settings, log=lambda *a: None)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
ray.shutdown()
print("RESULT " + json.dumps({"steps": result["history"][-1]["agent_steps"], "wall": wall, "cpu": cpu, **clocks}))
"""


def _tree_run(tree: Path, preset: str | None, fields: dict, out: str) -> dict:
    """One ``train()`` of ``tree``'s code in a fresh process: agent steps, wall and CPU seconds of the call."""
    import json
    import subprocess

    fields = {"progress": False, "checkpoint_every": 0, "out": out, "run_name": f"bench-{time.time_ns()}", **fields}
    spec = json.dumps({"tree": str(tree), "preset": preset, "fields": fields})
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", WORKER, spec], cwd=out, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"training run of {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def bench_baseline(args, out: str) -> None:
    """Issue 18's ratio: this checkout's ``--preset throughput`` against ``--baseline``'s ``datagames train --algo
    ppo`` defaults, marginal rates, the sides alternated ``--repeat`` times; medians and their ratios."""
    import math
    import statistics

    this = Path(__file__).resolve().parents[1]
    sides = {"baseline": (Path(args.baseline).resolve(), None, 2000),  # its TrainSettings defaults: 2,000 per update
             "this": (this, "throughput", 32000)}                       # the preset's train_batch_size
    if not (sides["baseline"][0] / "agents" / "rllib_train.py").is_file():
        raise SystemExit(f"--baseline {args.baseline}: no agents/rllib_train.py there")
    base_fields = {"config": args.config, **_fields(args.set)}
    plan = {}
    for name, (_tree, _preset, batch) in sides.items():
        batch = base_fields.get("train_batch_size", batch)
        short = max(args.short_updates, math.ceil(args.short_steps / batch))
        plan[name] = (short, max(short + args.extra_updates, math.ceil(args.long_steps / batch)))
    for name, (tree, preset, _batch) in sides.items():  # first runs compile numba caches and warm the disk
        _tree_run(tree, preset, {**base_fields, "iterations": 1}, out)
    rates = {name: [] for name in sides}
    for rep in range(args.repeat):
        for name in (("baseline", "this") if rep % 2 == 0 else ("this", "baseline")):
            tree, preset, _batch = sides[name]
            short, long = (_tree_run(tree, preset, {**base_fields, "iterations": n}, out) for n in plan[name])
            d = {k: long[k] - short[k] for k in long}
            rates[name].append((d["steps"] / d["wall"], d["steps"] / d["cpu"]))
            print(f"repeat {rep + 1} {name:8s} ({plan[name][0]} vs {plan[name][1]} updates, {d['steps']:,} steps, "
                  f"{d['wall']:.1f} s wall): {rates[name][-1][0]:,.0f} agent-steps/s wall, {rates[name][-1][1]:,.0f} "
                  f"per CPU-s; CPU us per agent step: sampling {d['sample'] / d['steps'] * 1e6:,.1f}, learning "
                  f"{d['learn'] / d['steps'] * 1e6:,.1f}", flush=True)
    os.system("uptime")
    medians = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for name, rs in rates.items()}
    per_repeat = [(t[0] / b[0], t[1] / b[1]) for t, b in zip(rates["this"], rates["baseline"])]
    print(f"baseline {sides['baseline'][0]} (its TrainSettings defaults): median {medians['baseline'][0]:,.0f} "
          f"agent-steps/s wall, {medians['baseline'][1]:,.0f} per CPU-s", flush=True)
    print(f"this     --preset throughput: median {medians['this'][0]:,.0f} agent-steps/s wall, "
          f"{medians['this'][1]:,.0f} per CPU-s", flush=True)
    print(f"ratio of medians this / baseline: {medians['this'][0] / medians['baseline'][0]:.1f}x wall, "
          f"{medians['this'][1] / medians['baseline'][1]:.1f}x CPU; per repeat: "
          + ", ".join(f"{w:.1f}x / {c:.1f}x" for w, c in per_repeat), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["ppo", "sb3-ppo", "both"], default="both")
    parser.add_argument("--config", default="default")
    parser.add_argument("--iterations", type=int, default=12, help="PPO updates (2,000 agent steps each)")
    parser.add_argument("--warmup", type=int, default=2, help="first updates left out of the rate")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainSettings field, e.g. num_envs_per_env_runner=4 (repeatable)")
    parser.add_argument("--compare", action="append", default=[], metavar="FIELD=VALUE",
                        help="A/B: the defaults (+ --set) against the same with these fields, updates alternating")
    parser.add_argument("--repeats", type=int, default=4, help="SB3 A/B: runs of each variant, alternating")
    parser.add_argument("--vector", action="store_true", help="RLlib's runner vs the vector runner (marginal rates)")
    parser.add_argument("--variants", nargs="*", default=[], help=f"--vector: a subset of {', '.join(VECTOR_VARIANTS)}")
    parser.add_argument("--short-steps", type=int, default=8000, help="--vector: agent steps of the short run")
    parser.add_argument("--long-steps", type=int, default=64000, help="--vector: agent steps of the longer run")
    parser.add_argument("--short-updates", type=int, default=2, help="--vector: at least this many updates (short)")
    parser.add_argument("--extra-updates", type=int, default=4, help="--vector: at least this many more (longer)")
    parser.add_argument("--baseline", metavar="TREE", help="--vector: against this source tree's `datagames train "
                        "--algo ppo` (e.g. /path/to/0dbebaf-tree), subprocesses, alternated")
    parser.add_argument("--repeat", type=int, default=3, help="--baseline: alternations of the two sides")
    args = parser.parse_args()
    if args.warmup >= args.iterations:
        parser.error("--warmup must be below --iterations")
    if args.baseline and not args.vector:
        parser.error("--baseline needs --vector")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    os.system("uptime")
    with tempfile.TemporaryDirectory() as out:
        if args.vector:
            (bench_baseline if args.baseline else bench_vector)(args, out)
            return
        if args.algo in ("ppo", "both"):
            (compare_rllib if args.compare else bench_rllib)(args, out)
        if args.algo in ("sb3-ppo", "both"):
            (compare_sb3 if args.compare else bench_sb3)(args, out)


if __name__ == "__main__":
    main()
