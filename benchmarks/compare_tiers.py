"""The paper and fast perception tiers side by side (issue 17): on ``p2p_default``, ``p2p_toy`` and
``dual_default``, do the policies rank in the same order, and by how much do the accuracies differ?

    python benchmarks/compare_tiers.py                                   # all three configs, default seeds
    python benchmarks/compare_tiers.py --configs dual_default --dual-seeds 300-319
    python benchmarks/compare_tiers.py --report-only                     # rebuild the page from the CSVs

Every (config, tier) plays the scenario's policies on the same unseen seeds through
:func:`datagames_env.harness.evaluate`, with ``perception.tier`` set to ``paper`` or ``fast`` and nothing else
changed. The metric per episode:

- ``p2p_default``, ``p2p_toy``: policies ``random``, ``oracle``, ``gu``; metric: the fleet's rare-domain accuracy
  (each robot's test accuracy on the config's ``rare_domains``, mean over them, averaged over robots).
- ``dual_default``: policies ``random/random``, ``entropy/entropy``, ``margin/margin``,
  ``submodular-independent/submodular`` (DUAL), ``random/submodular``; metric: the cloud model's test accuracy.

Each config writes one CSV (``--csv-dir``, default ``docs/results/tiers/<config>.csv``: one row per tier, policy
and seed, with the metric and, for p2p, each robot's rare-domain accuracy and rare share cached). The page
(``--out``, default ``docs/results/tiers.md``) is built from every CSV in ``--csv-dir``: per config, each policy's
mean ± sample std over seeds in both tiers, its rank in each, the gap to ``random`` paired by seed, and the rank
agreement of the two tiers (Spearman's rho and Kendall's tau over the policies' means). ``p2p_toy`` needs the
MNIST / KMNIST files (``--data-dir``, default ../shared/datasets) and is skipped without them.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("paper", "fast")
P2P_POLICIES = ("random", "oracle", "gu")
DUAL_POLICIES = ("random/random", "entropy/entropy", "margin/margin", "submodular-independent/submodular",
                 "random/submodular")
CONFIGS = {  # config -> (scenario, policies, metric column, what the metric is)
    "p2p_default": ("p2p", P2P_POLICIES, "fleet_rare_accuracy", "fleet rare-domain accuracy"),
    "p2p_toy": ("p2p", P2P_POLICIES, "fleet_rare_accuracy", "fleet rare-domain accuracy"),
    "dual_default": ("dual", DUAL_POLICIES, "final_test_accuracy", "final test accuracy of the cloud model"),
}
ORDER = list(CONFIGS)


def parse_seeds(text: str) -> list[int]:
    """``300-304`` or ``300,301``."""
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(statistics.fmean(values)) if values else float("nan")


def _std(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def run_tier(config: str, tier: str, seeds: list[int], overrides: dict) -> list[dict]:
    """One CSV row per (policy, seed) of ``config`` on ``tier``."""
    from datagames_env.harness import evaluate

    scenario, policies, metric, _ = CONFIGS[config]
    started = time.perf_counter()
    payload = evaluate(config, list(policies), seeds, progress=False, **overrides, **{"perception.tier": tier})
    seconds = time.perf_counter() - started
    cfg = payload["config"]
    rows = []
    for record in payload["episodes"]:
        row = {"config": config, "tier": tier, "policy": record["policy"], "seed": record["seed"]}
        if scenario == "p2p":
            rare = cfg["rare_domains"]
            last = record["rounds"][-1]["robots"]
            robots = sorted(last)
            # the robots whose stream holds a rare domain (the others cache none)
            sees_rare = [a for a, r in zip(robots, cfg["robots"]) if any(r["stream"].get(d, 0) > 0 for d in rare)]
            per_robot = {a: _mean([last[a]["domain_accuracy"][d] for d in rare]) for a in robots}
            row[metric] = _mean(list(per_robot.values()))
            row.update({f"{a}_rare_accuracy": round(v, 5) for a, v in per_robot.items()})
            row["rare_share_cached"] = round(_mean([float(last[a]["rare_share_cached"]) for a in sees_rare]), 5)
        else:
            row[metric] = record["final_test_accuracy"]
            row["labels_used"] = record["labels_used"]
        row[metric] = round(row[metric], 5)
        row["tier_seconds"] = round(seconds, 1)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _ranks(means: dict[str, float]) -> dict[str, int]:
    order = sorted(means, key=lambda p: -means[p])
    return {p: order.index(p) + 1 for p in means}


def config_section(config: str, rows: list[dict]) -> tuple[list[str], dict]:
    """The markdown of one config and its verdict numbers."""
    from scipy.stats import kendalltau, spearmanr

    _, policies, metric, label = CONFIGS[config]
    policies = [p for p in policies if any(r["policy"] == p for r in rows)]
    value = {(r["tier"], r["policy"], int(r["seed"])): float(r[metric]) for r in rows}
    seeds = sorted({int(r["seed"]) for r in rows})
    tiers = [t for t in TIERS if any(r["tier"] == t for r in rows)]
    per_seed = {t: {p: [value[(t, p, s)] for s in seeds if (t, p, s) in value] for p in policies} for t in tiers}
    means = {t: {p: _mean(per_seed[t][p]) for p in policies} for t in tiers}
    ranks = {t: _ranks(means[t]) for t in tiers}
    seconds = {t: float(next(r["tier_seconds"] for r in rows if r["tier"] == t)) for t in tiers}

    def paired(t: str, p: str) -> str:
        gaps = [value[(t, p, s)] - value[(t, "random" if "random" in policies else policies[0], s)]
                for s in seeds if (t, p, s) in value]
        return f"{_mean(gaps):+.3f} ± {_std(gaps):.3f} ({sum(g > 0 for g in gaps)}/{len(gaps)})"

    base = "random/random" if "random/random" in policies else "random"
    lines = [f"## `{config}`", "",
             f"Seeds {', '.join(map(str, seeds))} ({len(seeds)}); metric: {label}. Wall seconds per tier: "
             + ", ".join(f"{t} {seconds[t]:.0f}" for t in tiers) + ".", "",
             "| policy | " + " | ".join(f"{t} mean ± std" for t in tiers) + " | fast − paper | "
             + " | ".join(f"{t} rank" for t in tiers) + " | "
             + " | ".join(f"{t}: − {base} (paired)" for t in tiers) + " |",
             "|---|" + "---:|" * (3 * len(tiers) + 1)]
    for p in policies:
        diff = means["fast"][p] - means["paper"][p] if len(tiers) == 2 else float("nan")
        lines.append(f"| {p} | " + " | ".join(f"{means[t][p]:.3f} ± {_std(per_seed[t][p]):.3f}" for t in tiers)
                     + f" | {diff:+.3f} | " + " | ".join(str(ranks[t][p]) for t in tiers) + " | "
                     + " | ".join("—" if p == base else paired(t, p) for t in tiers) + " |")
    verdict = {}
    if len(tiers) == 2:
        a = [means["paper"][p] for p in policies]
        b = [means["fast"][p] for p in policies]
        rho, tau = float(spearmanr(a, b)[0]), float(kendalltau(a, b)[0])
        diffs = [means["fast"][p] - means["paper"][p] for p in policies]
        same = ranks["paper"] == ranks["fast"]
        order = {t: " > ".join(sorted(policies, key=lambda p: ranks[t][p])) for t in tiers}
        verdict = {"same": same, "rho": rho, "tau": tau, "mean_abs_diff": _mean([abs(d) for d in diffs]),
                   "diffs": dict(zip(policies, diffs))}
        lines += ["", f"Ranking (best first): paper {order['paper']}; fast {order['fast']}. Rank agreement over "
                  f"{len(policies)} policies: Spearman's rho {rho:+.2f}, Kendall's tau {tau:+.2f}. Fast minus paper: "
                  f"{_mean(diffs):+.3f} on average (|difference| {verdict['mean_abs_diff']:.3f}, from "
                  f"{min(diffs):+.3f} to {max(diffs):+.3f})."]
    if config.startswith("p2p"):
        robots = sorted(k[: -len("_rare_accuracy")] for k in rows[0]
                        if k.startswith("robot_") and k.endswith("_rare_accuracy"))
        lines += ["", "Per robot (rare-domain accuracy, mean over seeds) and the rare share of what the robots that "
                  "see rare data cached:", "",
                  "| tier | policy | " + " | ".join(robots) + " | rare share cached |",
                  "|---|---|" + "---:|" * (len(robots) + 1)]
        for t in tiers:
            for p in policies:
                mine = [r for r in rows if r["tier"] == t and r["policy"] == p]
                lines.append(f"| {t} | {p} | " + " | ".join(
                    f"{_mean([float(r[f'{a}_rare_accuracy']) for r in mine]):.3f}" for a in robots)
                    + f" | {_mean([float(r['rare_share_cached']) for r in mine]):.3f} |")
    lines.append("")
    return lines, verdict


def markdown(sections: dict[str, list[dict]]) -> str:
    lines = ["# The paper and fast perception tiers side by side", "",
             "Generated by `benchmarks/compare_tiers.py` (issue 17). Every config plays its policies on unseen seeds "
             "(300 and up) once per perception tier (`perception.tier: paper` or `fast`, nothing else changed) "
             "through `datagames_env.harness.evaluate`. Means over seeds, ± the sample standard deviation over "
             "seeds. Ranks order the policies by their mean (1 = best). The gap to random is paired by seed: mean ± "
             "sd (seeds where the policy is ahead / seeds). Rank agreement: Spearman's rho and Kendall's tau between "
             "the two tiers' policy means (1: same order, -1: reversed; with 3 policies one swap of neighbours gives "
             "rho 0.5, tau 0.33). Per-episode rows: `docs/results/tiers/<config>.csv`. Wall seconds were measured on "
             "a 2-core machine shared with other jobs.", "", "## Verdicts", ""]
    body = []
    for config in ORDER:
        if config not in sections:
            continue
        text, verdict = config_section(config, sections[config])
        body += text
        if verdict:
            lines.append(f"- **`{config}`**: {'same ranking' if verdict['same'] else 'the ranking differs'} "
                         f"(rho {verdict['rho']:+.2f}, tau {verdict['tau']:+.2f}); fast minus paper "
                         + ", ".join(f"{p} {d:+.3f}" for p, d in verdict["diffs"].items()) + ".")
    lines += ["", "Commands:", "", "```",
              "PYTHONPATH=$PWD python benchmarks/compare_tiers.py --configs p2p_default --seeds 300-309",
              "DATAGAMES_DATA_DIR=../shared/datasets PYTHONPATH=$PWD python benchmarks/compare_tiers.py "
              "--configs p2p_toy --toy-seeds 300-304",
              "PYTHONPATH=$PWD python benchmarks/compare_tiers.py --configs dual_default --dual-seeds 300-319",
              "PYTHONPATH=$PWD python benchmarks/compare_tiers.py --report-only", "```", ""]
    return "\n".join(lines + body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=ORDER, default=ORDER)
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("300-309"), help="p2p_default seeds")
    parser.add_argument("--toy-seeds", type=parse_seeds, default=parse_seeds("300-304"), help="p2p_toy seeds")
    parser.add_argument("--dual-seeds", type=parse_seeds, default=parse_seeds("300-319"), help="dual_default seeds")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets",
                        help="folder with MNIST/ and KMNIST/ for p2p_toy")
    parser.add_argument("--csv-dir", type=Path, default=ROOT / "docs" / "results" / "tiers")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "tiers.md")
    parser.add_argument("--report-only", action="store_true", help="rebuild the page from the CSVs, run nothing")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        seeds_of = {"p2p_default": args.seeds, "p2p_toy": args.toy_seeds, "dual_default": args.dual_seeds}
        for config in args.configs:
            overrides = {}
            if config == "p2p_toy":
                if not ((args.data_dir / "MNIST").is_dir() and (args.data_dir / "KMNIST").is_dir()):
                    print(f"p2p_toy skipped: no MNIST/ and KMNIST/ in {args.data_dir}")
                    continue
                overrides["data_dir"] = str(args.data_dir.resolve())
            rows = []
            for tier in TIERS:
                rows += run_tier(config, tier, seeds_of[config], overrides)
                print(f"{config} {tier}: {rows[-1]['tier_seconds']:.0f} s", flush=True)
            write_csv(args.csv_dir / f"{config}.csv", rows)
    sections = {p.stem: read_csv(p) for p in sorted(args.csv_dir.glob("*.csv")) if p.stem in CONFIGS}
    text = markdown(sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
