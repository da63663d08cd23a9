"""Per-step time of a long DUAL episode with ``label_pool: all`` (every unlabeled upload stays a label candidate).
Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_dual_long.py                 # rounds 100 and 800 (a few minutes)
    .venv/bin/python benchmarks/bench_dual_long.py --at 50 200     # other rounds
    .venv/bin/python benchmarks/bench_dual_long.py --tier paper    # the paper tier (default: fast)
    .venv/bin/python benchmarks/bench_dual_long.py --save-dir /tmp/snaps      # also pickle env.snapshot() there
    .venv/bin/python benchmarks/bench_dual_long.py --load /tmp/snaps/round_800.pkl   # time from a snapshot

``--load`` times ``--window`` steps from a snapshot taken by ``--save-dir`` (pass the same ``--at`` and
``--window``: they set ``rounds``, part of the config), so a slow code path can be timed at round 800 without
playing the 800 slow rounds first.

The model is fixed (``perception.retrain_every: 0``) so that the figures show the scenario's own work, not
training; random scores stand in for a policy. Each figure is the median step time (wall and this process's CPU,
torch on one thread) over ``--window`` steps starting at that round, with the number of label candidates
(unlabeled uploads) and distinct rows among them.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagames_env.perception import limited_torch_threads  # noqa: E402
from datagames_env.faces.pettingzoo import DualParallelEnv as parallel_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--at", type=int, nargs="+", default=[100, 800], help="rounds to time")
    parser.add_argument("--window", type=int, default=10, help="steps timed per figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retrain-every", type=int, default=0)
    parser.add_argument("--tier", choices=["fast", "paper"], default="fast", help="perception tier (issue 17)")
    parser.add_argument("--save-dir", type=Path, default=None, help="pickle a snapshot at each timed round here")
    parser.add_argument("--load", type=Path, default=None, help="restore this snapshot and time --window steps")
    args = parser.parse_args()
    rounds = max(args.at) + args.window + 1
    env = parallel_env("dual_default", rounds=rounds, label_pool="all",
                       **{"perception.retrain_every": args.retrain_every, "perception.tier": args.tier})
    rng = np.random.default_rng(args.seed)
    env.reset(seed=args.seed)
    scenario = env.scenario
    first = 0
    if args.load is not None:
        env.restore(pickle.loads(args.load.read_bytes()))
        first = scenario.round_index
        args.at = [first]
    if args.save_dir is not None:
        args.save_dir.mkdir(parents=True, exist_ok=True)
    times: dict[int, float] = {}
    cpu: dict[int, float] = {}  # this process's CPU time: robust to other load on a shared machine
    with limited_torch_threads(1):
        for r in range(first, min(rounds - 1, first + args.window) if args.load else rounds - 1):
            if args.save_dir is not None and r in args.at:
                (args.save_dir / f"round_{r}.pkl").write_bytes(pickle.dumps(env.snapshot()))
            actions = {a: rng.random(env.n_samples).astype(np.float32) for a in env.agents}
            start, start_cpu = time.perf_counter(), time.process_time()
            env.step(actions)
            times[r], cpu[r] = time.perf_counter() - start, time.process_time() - start_cpu
            if r + 1 in [a + args.window for a in args.at]:
                at = r + 1 - args.window
                ledger = scenario.cloud()
                unlabeled = ~ledger["labeled"]
                step_ms = 1e3 * float(np.median([times[k] for k in range(at, at + args.window)]))
                cpu_ms = 1e3 * float(np.median([cpu[k] for k in range(at, at + args.window)]))
                print(f"round {at:5d}: {step_ms:8.1f} ms/step (cpu {cpu_ms:8.1f} ms)  "
                      f"label candidates {int(unlabeled.sum()):6d}  "
                      f"distinct rows {len(np.unique(ledger['row'][unlabeled])):5d}  cloud {len(unlabeled):6d}",
                      flush=True)


if __name__ == "__main__":
    main()
