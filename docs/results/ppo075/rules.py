"""Hand rules of the gap-fraction family on the vector env (scratch script, not part of the package).

Each rule maps what a robot sees (round, its observation and infos) to a fraction f per robot; the robot then
runs Greedy towards ``cloud + f (target - cloud)`` (``baselines.fraction.greedy_fraction_shares``).
Score: final L2 distance, mean over the seeds (env b of ``reset(seed=first)`` equals ``parallel_env`` seed
``first + b``, so this matches ``datagames eval --first-seed first --seeds B``).

    python docs/results/ppo075/rules.py --family linear --first-seed 100 --seeds 20
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np

from baselines.fraction import _greedy_rows_native, _row_problems, greedy_fraction_shares
from baselines.solvers import _columns, _max_iter
from datagames_env import vector_env


def per_class_shares(vector, aim, infos):
    """Greedy towards ``cloud + aim`` per robot, ``aim`` (B, N, C) (a per-class fraction of the gap)."""
    b, n = vector.num_envs, vector.n_robots
    feasible = vector.batched.estimated_feasible_matrices()
    target = np.broadcast_to(vector.batched.core.target_counts, infos["cloud_counts"].shape)
    P, caps, budgets, _ = _row_problems(feasible, infos["cloud_counts"], target, vector.config.n_cache,
                                        infos["available"], "l2")
    counts = _greedy_rows_native(P, _columns(P), caps, budgets, aim.reshape(b * n, -1).astype(np.float64),
                                 _max_iter(P.shape[-1]))
    return np.clip(counts.reshape(b, n, -1) / vector.config.n_cache, 0.0, 1.0)


def run(vector, rule, first_seed: int) -> float:
    obs, infos = vector.reset(seed=first_seed)
    rounds = vector.config.rounds
    lay = vector.batched.core.obs_layout
    memory = {}
    for t in range(rounds):
        infos = dict(infos, memory=memory)
        f = rule(t, rounds, obs, infos, lay, vector)
        if isinstance(f, tuple):  # ("aim", (B, N, C)): a per-class aim, not one fraction
            shares = per_class_shares(vector, f[1], infos)
        else:
            f = np.broadcast_to(np.clip(f, 0.0, 1.0), (vector.num_envs, vector.n_robots))
            shares = greedy_fraction_shares(vector.batched.estimated_feasible_matrices(), infos["cloud_counts"],
                                            vector.batched.core.target_counts, f, vector.config.n_cache,
                                            infos["available"], vector.config.loss)
        memory["cloud"] = infos["cloud_counts"].copy()
        obs, _, _, _, infos = vector.step(shares.astype(np.float32))
    return float(np.mean(infos["distance"]))


def constant(f):
    return lambda t, R, obs, infos, lay, v: f


def linear(f0, f1):
    return lambda t, R, obs, infos, lay, v: f0 + (f1 - f0) * t / max(R - 1, 1)


def last(f, f_last):  # constant f, another fraction in the last round (nothing corrects an overshoot after it)
    return lambda t, R, obs, infos, lay, v: f_last if t == R - 1 else f


def reach(f, p):
    """f scaled by how much of the gap the robot can fill: its gap_fill (positive part) summed over the classes
    it has samples of, relative to the whole positive gap; f * share**p (p = 0: constant)."""
    def rule(t, R, obs, infos, lay, v):
        gap = np.clip(obs[..., lay["gap"]], 0, None)                     # (B, N, C)
        avail = infos["available"] > 0                                    # (B, N, C)
        fill = np.clip(obs[..., lay["gap_fill"]], 0, None) * avail
        share = fill.max(-1) / np.maximum(gap.max(-1), 1e-9)
        return f * np.clip(share, 1e-3, 1.0) ** p
    return rule


def fleet(c):
    """f = c / sqrt(N) style: depends on the fleet size only (constant on one config)."""
    return lambda t, R, obs, infos, lay, v: min(1.0, c / np.sqrt(v.n_robots))


def spread(f, d):
    """Diagnostic, not learnable by a shared module (it reads the robot's index): f_i spread evenly over f +- d."""
    def rule(t, R, obs, infos, lay, v):
        return f + d * (np.linspace(-1.0, 1.0, v.n_robots)[None, :])
    return rule


def echo(f, g, f0=0.35):
    """Per class, no messages: the public cloud's change last round minus the robot's own uploads is what the
    others uploaded; assume they repeat it. Aim f * max(gap - g * others_last, 0) per class (round 0: f0 * gap)."""
    def rule(t, R, obs, infos, lay, v):
        cloud = infos["cloud_counts"]                                   # (B, C)
        target = np.broadcast_to(v.batched.core.target_counts, cloud.shape)
        gap = (target - cloud)[:, None, :]                               # (B, 1, C)
        if t == 0 or "cloud" not in infos["memory"]:
            return ("aim", np.broadcast_to(f0 * gap, infos["available"].shape))
        fleet = cloud - infos["memory"]["cloud"]                         # (B, C) everyone's uploads last round
        labels = infos["uploaded_labels"]                                # (B, N, k), -1 unused
        c = cloud.shape[-1]
        own = np.stack([(labels == j).sum(-1) for j in range(c)], -1)    # (B, N, C)
        others = fleet[:, None, :] - own
        aim = f * np.maximum(gap - g * others, 0.0)
        return ("aim", np.where(gap > 0, aim, gap))
    return rule


def pace(f, g):
    """Per class, no messages: the fleet should close gap / rounds_left this round; the others delivered
    ``others_last`` (public cloud change minus own uploads) last round; aim f * max(need - g * others_last, 0)
    (round 0: f * need). Negative gaps are aimed at as they are (Greedy's own behaviour)."""
    def rule(t, R, obs, infos, lay, v):
        cloud = infos["cloud_counts"]
        target = np.broadcast_to(v.batched.core.target_counts, cloud.shape)
        gap = (target - cloud)[:, None, :]
        need = gap / (R - t)
        if t == 0 or "cloud" not in infos["memory"]:
            others = 0.0
        else:
            fleet = cloud - infos["memory"]["cloud"]
            labels = infos["uploaded_labels"]
            own = np.stack([(labels == j).sum(-1) for j in range(cloud.shape[-1])], -1)
            others = fleet[:, None, :] - own
        aim = f * np.maximum(need - g * others, 0.0)
        return ("aim", np.broadcast_to(np.where(gap > 0, aim, gap), infos["available"].shape))
    return rule


def share(a, fmin, f0=0.35):
    """Per class, no messages: f_c from the robot's share of last round's public uploads of class c
    (own_c / fleet_c, from the cloud's change): f_c = clip(max(fmin, a * share_c), 0, 1); a class nobody
    uploaded gets f0 (round 0: f0 everywhere)."""
    def rule(t, R, obs, infos, lay, v):
        cloud = infos["cloud_counts"]
        target = np.broadcast_to(v.batched.core.target_counts, cloud.shape)
        gap = np.broadcast_to((target - cloud)[:, None, :], infos["available"].shape)
        if t == 0 or "cloud" not in infos["memory"]:
            return ("aim", f0 * gap)
        fleet = (cloud - infos["memory"]["cloud"])[:, None, :]
        labels = infos["uploaded_labels"]
        own = np.stack([(labels == j).sum(-1) for j in range(cloud.shape[-1])], -1)
        frac = np.where(fleet > 0, np.clip(np.maximum(fmin, a * own / np.maximum(fleet, 1)), 0, 1), f0)
        return ("aim", np.where(gap > 0, frac * gap, gap))
    return rule


FAMILIES = {
    "share": (share, [[1.0, 2.0, 3.0, 5.0], [0.1, 0.2, 0.3, 0.35]]),
    "pace": (pace, [[0.5, 1.0, 2.0, 4.0], [0.0, 0.5, 0.8, 1.0]]),
    "spread": (spread, [[0.35], [0.05, 0.1, 0.15, 0.2, 0.3]]),
    "echo": (echo, [[0.35, 0.5, 0.7, 1.0], [0.0, 0.5, 0.8, 1.0]]),
    "constant": (constant, [np.round(np.arange(0.25, 0.46, 0.02), 3)]),
    "linear": (linear, [[0.3, 0.35, 0.4, 0.45, 0.5, 0.6], [0.2, 0.25, 0.3, 0.35, 0.4]]),
    "last": (last, [[0.33, 0.35, 0.37], [0.2, 0.3, 0.5, 0.7, 1.0]]),
    "reach": (reach, [[0.3, 0.35, 0.4, 0.5], [-0.5, -0.25, 0.25, 0.5, 1.0]]),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="default")
    ap.add_argument("--family", default="linear")
    ap.add_argument("--params", default=None, help="JSON list of parameter lists (overrides the family's grid)")
    ap.add_argument("--first-seed", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE config override (JSON value)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    overrides = {}
    for kv in args.set:
        k, _, val = kv.partition("=")
        overrides[k] = json.loads(val)
    vector = vector_env(args.seeds, args.config, **overrides)
    t0 = time.perf_counter()
    greedy = run(vector, constant(1.0), args.first_seed)
    print(f"greedy {greedy:.3f} ({time.perf_counter() - t0:.1f}s)", flush=True)
    make, grid = FAMILIES[args.family]
    grid = json.loads(args.params) if args.params else grid
    rows = [{"family": "greedy", "params": [], "distance": greedy, "ratio": 1.0}]
    for params in itertools.product(*grid):
        d = run(vector, make(*params), args.first_seed)
        rows.append({"family": args.family, "params": list(map(float, params)), "distance": d, "ratio": d / greedy})
        print(f"{args.family}{tuple(params)}: {d:.3f} ({d / greedy:.3f}x)", flush=True)
    best = min(rows[1:], key=lambda r: r["distance"])
    print("best", best)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"config": args.config, "overrides": overrides, "first_seed": args.first_seed,
                       "seeds": args.seeds, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
