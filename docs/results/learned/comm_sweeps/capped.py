"""Issue 18, step 1: what <= 3 message sweeps can reach on `default` (docs/learned.md, "Communication").

Interactive's own solver (``baselines.solvers.solve_interactive``) capped at K sweeps, Gauss-Seidel (robot by
robot, Algorithm 1) and Jacobi (everyone answers the last sweep's announcements), and the structured route's
solver with a constant fraction: Greedy towards ``f0`` of the gap, then K Jacobi sweeps in which every robot runs
Greedy's solver towards ``f`` of the gap the others' announcements leave (``baselines.fraction``). Messages are
counted as Interactive's 73k figure is: ``broadcast="all"``, ``N (N - 1) (1 + sweeps)`` per round.

    PYTHONPATH=$PWD python docs/results/learned/comm_sweeps/capped.py --seeds 100-119 --out docs/results/learned/comm_sweeps/seeds100.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from baselines.fraction import greedy_fraction_shares
from baselines.policies import InteractivePolicy, _SolverPolicy
from baselines.solvers import solve_interactive
from datagames_env.faces.pettingzoo import parallel_env
from datagames_env.harness.episode import run_episode


class CappedInteractive(InteractivePolicy):
    def __init__(self, env, sweeps: int | None, order: str = "gauss-seidel") -> None:
        super().__init__(env)
        self.sweeps, self.order = sweeps, order
        self.name = "interactive" if sweeps is None else f"interactive-{order}-{sweeps}"

    def _solve(self, observations, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        kw = {} if self.sweeps is None else {"max_sweeps": self.sweeps, "order": self.order}
        r = solve_interactive(feasible, cloud, target, self.n_cache, available=available, tol=self.tol, **kw)
        self.last_stats = {"messages": int(r.messages), "sweeps": int(r.sweeps)}
        return r.actions


class FractionSweeps(_SolverPolicy):
    """Announce Greedy towards f0 of the gap; then K Jacobi sweeps of Greedy towards f of what the others leave."""

    def __init__(self, env, sweeps: int, f0: float, f: float, order: str = "jacobi") -> None:
        super().__init__(env, None)
        self.sweeps, self.f0, self.f, self.order = sweeps, f0, f, order
        self.name = f"fraction-{order}-{sweeps}-f0={f0:g}-f={f:g}"

    def _solve(self, observations, infos, agents):
        feasible, cloud, target, available = self._problem(infos, agents)
        n = len(agents)
        counts = greedy_fraction_shares(feasible[None], cloud[None], target[None], self.f0, self.n_cache,
                                        available[None])[0] * self.n_cache
        for _ in range(self.sweeps):
            if self.order == "gauss-seidel":  # robot by robot, each reading the current announcements
                for i in range(n):
                    contrib = np.einsum("nyj,nj->ny", feasible, counts)
                    others = contrib.sum(0) - contrib[i]
                    counts[i] = greedy_fraction_shares(feasible[None, i:i + 1], (cloud + others)[None], target[None],
                                                       self.f, self.n_cache, available[None, i:i + 1])[0, 0] * self.n_cache
                continue
            contrib = np.einsum("nyj,nj->ny", feasible, counts)
            others = contrib.sum(0, keepdims=True) - contrib        # what each robot reads
            counts = self._answer(feasible, cloud, target, others, available)
        self.last_stats = {"messages": n * (n - 1) * (1 + self.sweeps), "sweeps": self.sweeps}
        return counts

    def _answer(self, feasible, cloud, target, others, available):
        # each robot its own problem: an env of one robot with cloud + others' announced contributions
        n = feasible.shape[0]
        shares = greedy_fraction_shares(feasible[:, None], cloud[None] + others, np.broadcast_to(target, cloud[None].shape
                                        ).repeat(n, 0), np.full((n, 1), self.f), self.n_cache, available[:, None])
        return shares[:, 0] * self.n_cache


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="100-119")
    ap.add_argument("--out", default=None)
    ap.add_argument("--fractions", default="")  # "f0:f,f0:f" structured-route looks
    ap.add_argument("--skip-capped", action="store_true")
    ap.add_argument("--order", default="jacobi", choices=("jacobi", "gauss-seidel"))
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.seeds.split("-"))
    seeds = list(range(lo, hi + 1))
    env = parallel_env("default")
    policies = []
    if not args.skip_capped:
        policies += [CappedInteractive(env, None)]
        policies += [CappedInteractive(env, k, o) for o in ("gauss-seidel", "jacobi") for k in (1, 2, 3)]
        policies += [_greedy(env)]
    for pair in filter(None, args.fractions.split(",")):
        f0, f = (float(x) for x in pair.split(":"))
        policies += [FractionSweeps(env, k, f0, f, args.order) for k in (1, 2, 3)]
    rows = {}
    for p in policies:
        t = time.perf_counter()
        eps = [run_episode(env, p, s) for s in seeds]
        d = np.array([e["final_distance"] for e in eps])
        m = np.mean([e["messages"] for e in eps])
        rows[p.name] = {"final_distance": d.tolist(), "mean": float(d.mean()), "std": float(d.std()),
                        "messages_per_episode": float(m)}
        print(f"{p.name:40s} {d.mean():7.2f} ± {d.std():5.2f}  messages/episode {m:9.0f}  {time.perf_counter()-t:5.1f}s",
              flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"seeds": seeds, "rows": rows}, fh, indent=1)


def _greedy(env):
    from baselines.policies import GreedyPolicy
    return GreedyPolicy(env)


if __name__ == "__main__":
    main()
