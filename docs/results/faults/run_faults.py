"""Fault table of issue 12: each fault kind at 0, 10 and 30 percent of the robots, each policy, against the
fault-free run. Small configs and few seeds: minutes on 2 cores.

    python docs/results/faults/run_faults.py            # writes faults.json next to this file, prints the tables

Cloud game (digits, 10 robots, 5 rounds, 100 observations, n_cache 5): final L2 distance to the target (lower is
better) for greedy, interactive, interactive with bounded messages (``faults.robust: median``) and uniform.
p2p (``p2p_default`` with its three robots doubled: 6 robots, 8 rounds): the fleet's rare-domain share of what it
cached, and mean test accuracy (robots x domains), for random, gu and oracle; for liars also the liars' own mean
accuracy minus the same robots' accuracy in the fault-free run of the same seed (does lying hurt the liar?).

Fault kinds and what "x percent faulty" means: ``dropout`` = per-round dropout probability x (rejoin 0.5);
``message_loss`` = each message / transmission lost with probability x; ``message_delay`` (cloud game only) = each
Interactive message arrives one sweep late with probability x; ``liars`` = round(x N) robots lie (cloud
game: contributions x3; p2p: opposite votes), with and without the robust option.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from datagames_env.harness.episode import run_episode  # noqa: E402
from datagames_env.policy import make_policy  # noqa: E402
import datagames_env  # noqa: E402
from datagames_env.scenarios import p2p as p2p_module  # noqa: E402
from datagames_env.scenarios.p2p import load_p2p_config  # noqa: E402

LEVELS = [0.0, 0.1, 0.3]
SEEDS = [0, 1, 2]            # p2p (a few seconds per episode)
CLOUD_SEEDS = list(range(10))  # cloud game (milliseconds per episode once the kernels are compiled)
CLOUD = {"n_robots": 10, "rounds": 5, "obs_per_round": 100, "n_cache": 5}
CLOUD_POLICIES = [("greedy", "greedy", {}), ("interactive", "interactive", {}),
                  ("interactive+bounded", "interactive", {"faults.robust": "median"}), ("uniform", "uniform", {})]
P2P_POLICIES = ["random", "gu", "oracle"]


def fault_overrides(kind: str, level: float) -> dict:
    if level == 0.0:
        return {}
    if kind == "dropout":
        return {"faults.dropout": level, "faults.rejoin": 0.5}
    if kind == "message_loss":
        return {"faults.message_loss": level}
    if kind == "message_delay":  # Interactive only: that share of the messages arrives one sweep late
        return {"faults.message_delay": level}
    if kind.startswith("liars"):
        robust = kind.partition("+")[2] or "mean"
        return {"faults.liars": level, "faults.lie_scale": 3.0, "faults.robust": robust}
    raise ValueError(kind)


CLOUD_KINDS = ["dropout", "message_loss", "message_delay", "liars"]


def cloud_table(kinds=CLOUD_KINDS) -> dict:
    out = {}
    for kind in kinds:
        for label, policy, extra in CLOUD_POLICIES:
            for level in LEVELS:
                overrides = {**CLOUD, **fault_overrides(kind, level), **extra}
                distances = []
                for seed in CLOUD_SEEDS:
                    env = datagames_env.parallel_env(None, **overrides)
                    distances.append(run_episode(env, make_policy(policy, env), seed)["final_distance"])
                out[f"{kind}|{label}|{level}"] = float(np.mean(distances))
                out[f"{kind}|{label}|{level}|sd"] = float(np.std(distances))
                print(f"cloud {kind:13s} {label:20s} {level:.1f}  distance {out[f'{kind}|{label}|{level}']:.3f}",
                      flush=True)
    return out


def p2p_config():
    cfg = load_p2p_config("p2p_default").model_dump()
    cfg["robots"] = cfg["robots"] * 2  # 6 robots: 10% = 1 liar, 30% = 2 liars
    return cfg


def p2p_episode(cfg: dict, overrides: dict, policy: str, seed: int) -> dict:
    env = p2p_module.parallel_env(cfg, **overrides)
    run_episode(env, make_policy(policy, env), seed)
    scenario = env.scenario
    totals = scenario._totals  # read-out for the table (columns: TOTALS)
    names = list(p2p_module.TOTALS)
    rare = totals[:, names.index("total_rare_cached")].sum() / max(totals[:, names.index("total_cached")].sum(), 1)
    accuracy = np.array([robot.model.domain_accuracy.mean() for robot in scenario._robots])
    return {"rare_share": float(rare), "accuracy": accuracy, "liars": np.asarray(scenario.liars, dtype=bool)}


def p2p_table() -> dict:
    cfg = p2p_config()
    out = {}
    clean = {(policy, seed): p2p_episode(cfg, {}, policy, seed) for policy in P2P_POLICIES for seed in SEEDS}
    for kind in ["dropout", "message_loss", "liars", "liars+median", "liars+trimmed"]:
        for policy in P2P_POLICIES:
            for level in LEVELS:
                runs = [clean[policy, seed] if level == 0.0 else p2p_episode(cfg, fault_overrides(kind, level),
                                                                             policy, seed) for seed in SEEDS]
                row = {"rare_share": float(np.mean([r["rare_share"] for r in runs])),
                       "accuracy": float(np.mean([r["accuracy"].mean() for r in runs]))}
                if kind.startswith("liars") and level > 0:  # the liars' accuracy against their own clean run
                    changes = [(r["accuracy"][r["liars"]] - clean[policy, seed]["accuracy"][r["liars"]]).mean()
                               for r, seed in zip(runs, SEEDS)]
                    row["liar_accuracy_change"] = float(np.mean(changes))
                    row["liar_accuracy_change_sd"] = float(np.std(changes))
                    row["honest_accuracy_change"] = float(np.mean([
                        (r["accuracy"][~r["liars"]] - clean[policy, seed]["accuracy"][~r["liars"]]).mean()
                        for r, seed in zip(runs, SEEDS)]))
                out[f"{kind}|{policy}|{level}"] = row
                print(f"p2p {kind:14s} {policy:7s} {level:.1f} {row}", flush=True)
    return out


def tables_markdown(results: dict) -> str:
    """The measured tables (mean over seeds), as in faults.md."""
    levels = results["levels"]
    head = " | ".join(f"{int(100 * x)}%" for x in levels)
    lines = ["### Cloud game: final distance, mean ± sd over seeds (lower is better)", "",
             f"| fault | policy | {head} |", "|---|---|" + "---:|" * len(levels)]
    for key in results["cloud"]:
        kind, label, level, *sd = key.split("|")
        if float(level) == levels[0] and not sd:
            cells = [f"{results['cloud'][f'{kind}|{label}|{x}']:.2f} ± {results['cloud'][f'{kind}|{label}|{x}|sd']:.2f}"
                     for x in levels]
            lines.append(f"| {kind} | {label} | " + " | ".join(cells) + " |")
    lines += ["", "### p2p: rare share cached / mean accuracy (liars: change of the liars' own accuracy, and of "
              "the honest robots', against the same seeds without faults)", "",
              f"| fault | policy | {head} | liars' accuracy change, mean ± sd over seeds (10% / 30%) | honest robots' change (10% / 30%) |",
              "|---|---|" + "---:|" * len(levels) + "---:|---:|"]
    for key, row in results["p2p"].items():
        kind, policy, level = key.split("|")
        if float(level) != levels[0]:
            continue
        rows = [results["p2p"][f"{kind}|{policy}|{x}"] for x in levels]
        cells = [f"{r['rare_share']:.3f} / {r['accuracy']:.3f}" for r in rows]
        liar = " / ".join(f"{r['liar_accuracy_change']:+.3f} ± {r['liar_accuracy_change_sd']:.3f}"
                          for r in rows if "liar_accuracy_change" in r) or "-"
        honest = " / ".join(f"{r['honest_accuracy_change']:+.3f}" for r in rows if "honest_accuracy_change" in r) or "-"
        lines.append(f"| {kind} | {policy} | " + " | ".join(cells) + f" | {liar} | {honest} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if "--tables" in sys.argv:  # print the tables of an existing faults.json
        print(tables_markdown(json.loads(Path(__file__).with_name("faults.json").read_text())))
        return
    started = time.perf_counter()
    results = {"levels": LEVELS, "seeds": SEEDS, "cloud_seeds": CLOUD_SEEDS, "cloud": cloud_table(), "p2p": p2p_table()}
    results["wall_s"] = time.perf_counter() - started
    path = Path(__file__).with_name("faults.json")
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path} in {results['wall_s']:.0f} s")
    print(tables_markdown(results))


if __name__ == "__main__":
    main()
