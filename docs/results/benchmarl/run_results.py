"""BenchMARL MAPPO / IPPO / MASAC on ``default`` beside the analytic baselines and the shipped RLlib checkpoints.

    python docs/results/benchmarl/run_results.py [--seeds 0 1 2] [--iterations mappo=60 ippo=60 masac=30]

Trains every (algorithm, training seed) with ``datagames train --algo benchmarl-*`` (each in its own process, one
torch thread) into ``docs/results/benchmarl/runs/default-<algo>-seed<k>/``, then evaluates all of them with the
baselines on seeds 100-119 (never used in training: BenchMARL's environments are seeded from the training seed,
0-2) into ``docs/results/benchmarl/eval-default/`` (results.json, marl_eval.json, summary.md, plots), and draws
the comparison figure (``plot_comparison.py``). A finished run is not trained again.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", nargs="+", default=["mappo=60", "ippo=60", "masac=30"],
                        help="ALGO=ITERATIONS (2,000 agent steps each)")
    parser.add_argument("--eval-seeds", type=int, default=20)
    parser.add_argument("--first-eval-seed", type=int, default=100)
    parser.add_argument("--baselines", default="uniform,greedy,interactive,oracle")
    parser.add_argument("--rllib", default="checkpoints/default-bc,checkpoints/default-ppo",
                        help="shipped RLlib checkpoints to evaluate beside them (comma-separated; '' for none)")
    args = parser.parse_args()
    python = sys.executable
    specs = []
    for item in args.iterations:
        algo, _, iterations = item.partition("=")
        for seed in args.seeds:
            run = HERE / "runs" / f"default-{algo}-seed{seed}"
            if not (run / "checkpoint" / "policy.pt").is_file():
                subprocess.run([python, "-m", "datagames_env.harness.cli", "train", "--algo", f"benchmarl-{algo}",
                                "--config", "default", "--iterations", iterations, "--seed", str(seed),
                                "--checkpoint-every", "10", "--out", str(HERE / "runs"), "--name", run.name,
                                "--no-progress"], check=True, cwd=ROOT)
            specs.append(f"benchmarl:{(run / 'checkpoint').relative_to(ROOT)}")
    rllib = [f"rllib:{p}" for p in args.rllib.split(",") if p and (ROOT / p).is_dir()]
    policies = ",".join([args.baselines, *rllib, *specs])
    out = HERE / "eval-default"
    subprocess.run([python, "-m", "datagames_env.harness.cli", "eval", "--config", "default", "--policies", policies,
                    "--seeds", str(args.eval_seeds), "--first-seed", str(args.first_eval_seed), "--out", str(out),
                    "--no-progress"], check=True, cwd=ROOT)
    subprocess.run([python, str(HERE / "plot_comparison.py"), str(out / "marl_eval.json"), "--out", str(HERE)],
                   check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
