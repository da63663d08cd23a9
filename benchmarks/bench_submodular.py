"""Speed and memory of the facility-location solvers (datagames_env/selection/submodular.py). Prints figures, asserts nothing.

    .venv/bin/python benchmarks/bench_submodular.py            # default sizes (about a minute on one core)
    .venv/bin/python benchmarks/bench_submodular.py --quick    # smaller

1. plain vs lazy greedy on one robot's round (same picks, fewer gain evaluations);
2. the centralized Fleet-AL variant over a whole fleet's round with blocked similarities: wall time and the
   peak resident memory added by the run (measured in a fresh subprocess per memory bound, ru_maxrss), next to
   what a dense float32 / float64 similarity matrix of the same fleet would take.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from baselines.submodular import FacilityLocation, fleet_centralized, greedy, lazy_greedy


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # clustered like class embeddings: 10 centres plus noise, L2-normalised like the perception's embeddings
    centres = rng.normal(size=(10, dim))
    x = centres[rng.integers(0, 10, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_greedy(n: int, k: int, dim: int) -> None:
    x = unit_rows(n, dim, 0)
    cov0 = np.full(n, 0.0)
    rows = []
    for name, fn in (("plain", greedy), ("lazy", lazy_greedy)):
        fl = FacilityLocation(x, None, cov0)
        start = time.perf_counter()
        result = fn(fl, k)
        rows.append((name, time.perf_counter() - start, result.evaluations, result.indices))
    same = np.array_equal(rows[0][3], rows[1][3])
    print(f"  n={n:6d} k={k:3d}: plain {rows[0][1]:7.3f} s ({rows[0][2]:8d} gains) | lazy {rows[1][1]:7.3f} s "
          f"({rows[1][2]:7d} gains) | speed-up {rows[0][1] / rows[1][1]:5.1f}x | same picks: {same}")


def centralized_child(n_robots: int, per_robot: int, dim: int, k: int, max_block_bytes: int) -> dict:
    torch.set_num_threads(1)
    robots = [unit_rows(per_robot, dim, seed) for seed in range(n_robots)]
    covs = [np.zeros(per_robot) for _ in robots]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = fleet_centralized(robots, k, covs, max_block_bytes=max_block_bytes)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wall_s": wall, "peak_added_mib": (peak - base) / 1024, "evaluations": result.evaluations,
            "picked": int(sum(len(s) for s in result.selected))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(centralized_child(**json.loads(args.child))))
        return
    torch.set_num_threads(1)
    dim = 32
    print(f"torch {torch.__version__}, 1 thread, embeddings E={dim} (unit rows), kernel 1/(1 + 0.01 d)")
    print("1. plain vs lazy greedy, one robot's round (ground = candidates)")
    for n, k in ([(1000, 20), (2000, 50)] if args.quick else [(1000, 20), (2000, 50), (4000, 100)]):
        bench_greedy(n, k, dim)
    print("2. centralized over the fleet's round, blocked similarities (fresh process per memory bound)")
    n_robots, per_robot, k = (10, 1000, 2) if args.quick else (20, 1000, 10)
    n = n_robots * per_robot
    print(f"  fleet: {n_robots} robots x {per_robot} samples = {n} points, {k} picks per robot; a dense similarity "
          f"matrix would take {n * n * 4 / 2**30:.2f} GiB (float32) / {n * n * 8 / 2**30:.2f} GiB (float64, Fleet-AL)")
    for max_block_bytes in (4 * 2**20, 64 * 2**20, 256 * 2**20):
        spec = json.dumps({"n_robots": n_robots, "per_robot": per_robot, "dim": dim, "k": k,
                           "max_block_bytes": max_block_bytes})
        out = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows_per_block = max(1, max_block_bytes // (12 * n))
        print(f"  max_block_bytes {max_block_bytes / 2**20:5.0f} MiB ({rows_per_block:4d} rows/block): "
              f"{r['wall_s']:6.2f} s, {r['evaluations']:6d} gain evaluations, peak memory added "
              f"{r['peak_added_mib']:7.1f} MiB (bound {max_block_bytes / 2**20:.0f} MiB + O(n) vectors)")


if __name__ == "__main__":
    main()
