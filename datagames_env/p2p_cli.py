"""``datagames p2p``: run and evaluate sharing policies in the peer-to-peer scenario.

    datagames p2p run  --config p2p_default --policy gu --seed 0
    datagames p2p eval --config p2p_toy --policies random,oracle,gu --seeds 3 --out results/p2p_toy

``eval`` plays every (policy, seed) episode in this process (one env per config: the initial models are trained
once) and writes ``results.json``, ``rounds.csv`` (one row per policy, seed, round, robot), ``accuracy.png``
(per-robot, per-domain test accuracy per round, mean ± std over seeds), ``rare_share.png`` (rare-domain share among
what each robot cached) and ``summary.md``. Policies: the names of :mod:`baselines.p2p_policies`, names added with
``register_p2p_policy``, or ``module:factory`` (``factory(env)`` returns a policy); from Python,
:func:`evaluate_p2p` also takes policy objects.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .cli import _parse_overrides  # one --set parser for every scenario's commands

PAPER_RARE_SHARE = {"kmnist": 88.18, "fashion_mnist": 88.96}  # the GU paper's toy: % of rare data cached by GU




def _policy_name(spec: Any, policy: Any) -> str:
    return spec if isinstance(spec, str) and ":" not in spec else str(getattr(policy, "name", type(policy).__name__))


def run_episode(env, policy, seed: int, on_round=None) -> dict:
    """Play one episode; per round and robot: per-domain accuracy, reward, feedback, caching and privacy counts."""
    observations, infos = env.reset(seed=seed)
    policy.reset(seed)
    def by_domain(info: dict) -> dict:  # infos carry arrays (fixed schema); the results name the domains
        return dict(zip(env.domain_names, np.asarray(info["domain_accuracy"]).tolist()))

    rounds = [{"round": 0, "robots": {a: {"domain_accuracy": by_domain(infos[a]),
                                          "labeled_size": infos[a]["labeled_size"]} for a in env.possible_agents}}]
    decide_s = 0.0
    while env.agents:
        t = time.perf_counter()
        actions = policy.act(observations, infos)
        decide_s += time.perf_counter() - t
        observations, rewards, _, _, infos = env.step(actions)
        record = {"round": len(rounds), "robots": {}}
        for agent, info in infos.items():
            record["robots"][agent] = {
                "domain_accuracy": by_domain(info), "labeled_size": info["labeled_size"],
                "reward": float(rewards[agent]), "mean_utility": float(np.mean(info["feedback_utilities"])),
                "round_rare_share": float(info["round_rare_share"]), "rare_share_cached": info["rare_share_cached"],
                "total_rare_cached": info["total_rare_cached"], "total_rare_seen": info["total_rare_seen"],
                "n_sent": info["n_sent"], "n_received": info["n_received"], "n_kept": info["n_kept"],
                "n_private_cached": info["n_private_cached"], "n_blurred": info["n_blurred"],
                "n_dropped": info["n_dropped"], "n_passed_private": info["n_passed_private"]}
        rounds.append(record)
        if on_round is not None:
            on_round(record)
    return {"seed": seed, "rounds": rounds, "policy_time_s": decide_s,
            "return": {a: float(sum(r["robots"][a]["reward"] for r in rounds[1:])) for a in env.possible_agents}}


def evaluate_p2p(config: Any, policies: list[Any], seeds: list[int], out_dir: str | Path | None = None,
                 progress: bool = True, env=None, **overrides) -> dict:
    """Every (policy, seed) episode; writes the results folder when ``out_dir`` is given; returns the payload.

    ``policies``: names / ``module:factory`` strings / policy objects (see :func:`baselines.p2p_policies.make_p2p_policy`).
    """
    from baselines.p2p_policies import make_p2p_policy
    from datagames_env.p2p import parallel_env

    env = env if env is not None else parallel_env(config, **overrides)
    built = [make_p2p_policy(spec, env) for spec in policies]  # fail on a bad name before any episode
    names = [_policy_name(spec, p) for spec, p in zip(policies, built)]
    if len(set(names)) != len(names):
        raise ValueError(f"policy names must be distinct, got {names}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress)
    episodes = []
    started = time.perf_counter()
    with bar:
        task = bar.add_task(f"{len(built)} policies x {len(seeds)} seeds", total=len(built) * len(seeds) * env.config.rounds)
        for name, policy in zip(names, built):
            for seed in seeds:
                def on_round(record, name=name, seed=seed):
                    acc = np.mean([np.mean(list(r["domain_accuracy"].values())) for r in record["robots"].values()])
                    bar.update(task, advance=1, description=f"{name} seed {seed} round {record['round']}: "
                                                            f"mean accuracy {acc:.3f}")

                episode = run_episode(env, policy, seed, on_round)
                episode["policy"] = name
                episodes.append(episode)
    elapsed = time.perf_counter() - started
    cfg = env.config
    summary = summarise(episodes, names, env)
    payload = {"config": cfg.model_dump(), "domain_sources": dict(zip(env.domain_names, env.world.domain_sources)),
               "rare_domains": list(cfg.rare_domains), "policies": names, "seeds": list(seeds),
               "elapsed_s": elapsed, "summary": summary, "episodes": episodes}
    if out_dir is not None:
        write_results(out_dir, payload, env)
    return payload


def write_results(out_dir: str | Path, payload: dict, env) -> None:
    """results.json, rounds.csv, accuracy.png, rare_share.png and summary.md of an evaluation payload."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=_json_default))
    _write_csv(out, payload["episodes"], env)
    _plot(out, payload["episodes"], payload["policies"], env)
    (out / "summary.md").write_text(summary_markdown(payload, env))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def _robots_with_rare(env) -> list[str]:
    rare = set(env.config.rare_domains)
    return [a for a, r in zip(env.possible_agents, env.config.robots) if rare & {d for d, s in r.stream.items() if s > 0}]


def summarise(episodes: list[dict], names: list[str], env) -> dict:
    summary = {}
    rare_robots = _robots_with_rare(env)
    for name in names:
        mine = [e for e in episodes if e["policy"] == name]
        per_robot = {}
        for agent in env.possible_agents:
            final = [e["rounds"][-1]["robots"][agent] for e in mine]
            entry = {"final_accuracy": {d: _mean_std([f["domain_accuracy"][d] for f in final]) for d in env.domain_names},
                     "initial_accuracy": {d: _mean_std([e["rounds"][0]["robots"][agent]["domain_accuracy"][d]
                                                        for e in mine]) for d in env.domain_names},
                     "return": _mean_std([e["return"][agent] for e in mine]),
                     "labeled_size": _mean_std([f["labeled_size"] for f in final])}
            if agent in rare_robots:
                entry["rare_share_cached"] = _mean_std([f["rare_share_cached"] for f in final])
                # after the first feedback (round 1 of a learned sharer is random) and in the last round
                entry["rare_share_after_first_round"] = _mean_std([
                    float(np.mean([r["robots"][agent]["round_rare_share"] for r in e["rounds"][2:]]))
                    for e in mine if len(e["rounds"]) > 2])
                entry["rare_share_last_round"] = _mean_std([f["round_rare_share"] for f in final])
                entry["rare_recall"] = _mean_std([f["total_rare_cached"] / max(f["total_rare_seen"], 1) for f in final])
            per_robot[agent] = entry
        privacy = {key: float(np.mean([sum(r["robots"][a][key] for r in e["rounds"][1:] for a in env.possible_agents)
                                       for e in mine])) for key in ("n_private_cached", "n_blurred", "n_dropped",
                                                                    "n_passed_private")}
        fleet_final = {d: _mean_std([np.mean([e["rounds"][-1]["robots"][a]["domain_accuracy"][d]
                                              for a in env.possible_agents]) for e in mine]) for d in env.domain_names}
        summary[name] = {"robots": per_robot, "fleet_final_accuracy": fleet_final, "privacy_per_episode": privacy,
                         "policy_time_s": float(np.mean([e["policy_time_s"] for e in mine])), "n_seeds": len(mine)}
    return summary


def _fmt(ms: tuple[float, float], pct: bool = False) -> str:
    mean, std = ms
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if pct else f"{mean:.3f} ± {std:.3f}"


def summary_markdown(payload: dict, env) -> str:
    cfg = env.config
    summary, names = payload["summary"], payload["policies"]
    sources = ", ".join(f"{d} = {s}" for d, s in payload["domain_sources"].items())
    lines = [(f"# p2p: {cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round, share "
             f"{cfg.share_fraction:.0%} ({env.n_share}/round), topology {cfg.topology.kind}, OoD {cfg.ood.detector}, "
             f"reward {cfg.reward}, privacy {cfg.privacy.mode}"), "",
             (f"Domains: {sources}. Rare: {', '.join(cfg.rare_domains)}. {len(payload['seeds'])} seeds (mean ± std); "
             f"wall time {payload['elapsed_s']:.0f} s."), "",
             "## Final test accuracy (%) per robot and domain", "",
             "| policy | robot | " + " | ".join(env.domain_names) + " |", "|---|---|" + "---|" * env.n_domains]
    for name in names:
        for agent in env.possible_agents:
            acc = summary[name]["robots"][agent]["final_accuracy"]
            lines.append(f"| {name} | {agent} | " + " | ".join(_fmt(acc[d], True) for d in env.domain_names) + " |")
    first = names[0]
    lines += ["", "Round 0 (before any sharing; the same for every policy): " + "; ".join(
        f"{a}: " + ", ".join(f"{d} {100 * summary[first]['robots'][a]['initial_accuracy'][d][0]:.1f}"
                             for d in env.domain_names) for a in env.possible_agents) + ".",
              "", "## Accuracy (%) per round, mean over robots and seeds", "",
              "Per-robot curves: accuracy.png; every robot, domain and round: rounds.csv.", "",
              "| policy | test domain | " + " | ".join(f"r{r}" for r in range(cfg.rounds + 1)) + " |",
              "|---|---|" + "---|" * (cfg.rounds + 1)]
    for name in names:
        mine = [e for e in payload["episodes"] if e["policy"] == name]
        for d in env.domain_names:
            per_round = [100 * np.mean([np.mean([r["robots"][a]["domain_accuracy"][d] for a in env.possible_agents])
                                        for r in (e["rounds"][k] for e in mine)]) for k in range(cfg.rounds + 1)]
            lines.append(f"| {name} | {d} | " + " | ".join(f"{v:.1f}" for v in per_round) + " |")
    lines += ["", "## Rare-domain share among cached samples (%)", "",
              ("Share of the samples a robot cached that came from a rare domain (only robots whose stream holds rare "
               "data; random sharing caches about its stream share): over the whole episode, over rounds 2.. (after "
               "the first feedback: a learned sharer starts at random), and in the last round. Recall: share of the "
               "rare samples it saw that it cached (bounded by n_share / rare samples per round)."), ""]
    rare_robots = _robots_with_rare(env)
    lines += ["| policy | robot | share, episode | share, rounds 2.. | share, last round | recall |",
              "|---|---|---|---|---|---|"]
    for name in names:
        robots = summary[name]["robots"]
        for a in rare_robots:
            r = robots[a]
            lines.append(f"| {name} | {a} | {_fmt(r['rare_share_cached'], True)} | "
                         f"{_fmt(r['rare_share_after_first_round'], True)} | {_fmt(r['rare_share_last_round'], True)} | "
                         f"{_fmt(r['rare_recall'], True)} |")
    lines += ["", "Paper (GU model, toy): 88.18% of rare KMNIST data and 88.96% of rare FashionMNIST data cached.",
              "", "## Privacy filter (per episode, all robots)", "",
              "| policy | private cached | blurred | dropped | passed unfiltered |", "|---|---|---|---|---|"]
    for name in names:
        p = summary[name]["privacy_per_episode"]
        lines.append(f"| {name} | {p['n_private_cached']:.1f} | {p['n_blurred']:.1f} | {p['n_dropped']:.1f} | "
                     f"{p['n_passed_private']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_csv(out: Path, episodes: list[dict], env) -> None:
    import csv

    keys = ("reward", "mean_utility", "round_rare_share", "rare_share_cached", "n_sent", "n_received", "n_kept",
            "n_private_cached", "n_blurred", "n_dropped", "n_passed_private")
    with open(out / "rounds.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["policy", "seed", "round", "robot", "labeled_size"]
                        + [f"accuracy_{d}" for d in env.domain_names] + list(keys))
        for e in episodes:
            for r in e["rounds"]:
                for agent, x in r["robots"].items():
                    writer.writerow([e["policy"], e["seed"], r["round"], agent, x["labeled_size"]]
                                    + [x["domain_accuracy"][d] for d in env.domain_names] + [x.get(k, "") for k in keys])


def _plot(out: Path, episodes: list[dict], names: list[str], env) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agents, domains = env.possible_agents, env.domain_names
    fig, axes = plt.subplots(len(agents), len(domains), figsize=(3.2 * len(domains), 2.4 * len(agents)),
                             sharex=True, sharey=True, squeeze=False)
    for r, agent in enumerate(agents):
        for c, domain in enumerate(domains):
            ax = axes[r][c]
            for name in names:
                acc = np.array([[x["robots"][agent]["domain_accuracy"][domain] for x in e["rounds"]]
                                for e in episodes if e["policy"] == name])
                mean, std = acc.mean(axis=0), acc.std(axis=0)
                x = np.arange(acc.shape[1])
                ax.plot(x, mean, marker="o", ms=2.5, label=name)
                ax.fill_between(x, mean - std, mean + std, alpha=0.15)
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"test on {domain}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{agent}\naccuracy", fontsize=8)
            if r == len(agents) - 1:
                ax.set_xlabel("round", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    rare_robots = _robots_with_rare(env)
    if rare_robots:
        fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(rare_robots) * len(names) / 2, 3.6))
        width = 0.8 / len(names)
        x = np.arange(len(rare_robots))
        for k, name in enumerate(names):
            vals = [[e["rounds"][-1]["robots"][a]["rare_share_cached"] for e in episodes if e["policy"] == name]
                    for a in rare_robots]
            ax.bar(x - 0.4 + width * (k + 0.5), [100 * np.mean(v) for v in vals], width=width,
                   yerr=[100 * np.std(v) for v in vals], capsize=2, label=name)
        ax.axhline(88.18, color="k", ls="--", lw=1, label="paper GU (88%)")
        ax.set_xticks(x, rare_robots)
        ax.set_ylabel("rare-domain share of cached (%)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "rare_share.png", dpi=110)
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------ commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datagames p2p", description="peer-to-peer GU sharing scenario")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"run": "play one episode of one policy", "eval": "compare policies over seeds, write a results folder"}
    for name in ("run", "eval"):
        p = sub.add_parser(name, help=helps[name])
        p.add_argument("--config", default="p2p_default", help="name in configs/ or a YAML path")
        p.add_argument("--data-dir", default=None)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (dotted keys)")
        p.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="rewrite summary.md, CSV and plots from a results folder")
    report.add_argument("results", help="folder holding results.json")
    report.add_argument("--data-dir", default=None)
    run = sub.choices["run"]
    run.add_argument("--policy", default="gu", help="random | oracle | gu | module:factory")
    run.add_argument("--seed", type=int, default=0)
    ev = sub.choices["eval"]
    ev.add_argument("--policies", default="random,oracle,gu", help="comma-separated names or module:factory")
    ev.add_argument("--seeds", type=int, default=3)
    ev.add_argument("--first-seed", type=int, default=0)
    ev.add_argument("--out", default=None, help="results folder (default: results/<config>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from datagames_env.config import ConfigError
    from datagames_env.datasets import DatasetError

    overrides = _parse_overrides(getattr(args, "set", []))
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    try:
        if args.command == "report":
            from datagames_env.p2p import parallel_env

            payload = json.loads((Path(args.results) / "results.json").read_text())
            env = parallel_env(payload["config"], **overrides)  # builds the world only; no model is trained
            payload["summary"] = summarise(payload["episodes"], payload["policies"], env)
            write_results(args.results, payload, env)
            print((Path(args.results) / "summary.md").read_text())
            return 0
        if args.command == "eval":
            out = args.out or f"results/{Path(str(args.config)).stem}"
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            payload = evaluate_p2p(args.config, [p.strip() for p in args.policies.split(",") if p.strip()], seeds,
                                   out, progress=not args.no_progress, **overrides)
            print((Path(out) / "summary.md").read_text())
            print(f"results written to {out}/ (results.json, rounds.csv, accuracy.png, rare_share.png, summary.md)"
                  f" in {payload['elapsed_s']:.0f} s")
            return 0
        payload = evaluate_p2p(args.config, [args.policy], [args.seed], None, progress=not args.no_progress,
                               **overrides)
        episode = payload["episodes"][0]
        for agent, x in episode["rounds"][-1]["robots"].items():
            acc = ", ".join(f"{d} {v:.3f}" for d, v in x["domain_accuracy"].items())
            print(f"{agent}: accuracy {acc}; rare share cached {x['rare_share_cached']:.3f}; "
                  f"return {episode['return'][agent]:.3f}")
        return 0
    except (ConfigError, DatasetError, ValueError, TypeError) as exc:
        print(f"datagames p2p: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
