"""Results of the peer-to-peer scenario (``p2p``): per round and robot the per-domain test accuracy, reward,
feedback, caching and privacy counts; ``rounds.csv`` (one row per policy, seed, round, robot), ``accuracy.png``
(per robot and domain, mean ± std over seeds), ``rare_share.png`` (rare-domain share of what each robot cached) and
``summary.md``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .base import Reporter, band, new_figure, outside_legend, over_seeds, policy_colors, save_figure, seeds_note

PAPER_RARE_SHARE = {"kmnist": 88.18, "fashion_mnist": 88.96}  # the GU paper's toy: % of rare data cached by GU


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation over seeds (NaN left out); the deviation is None for one value."""
    arr = np.array([v for v in values if not (isinstance(v, float) and math.isnan(v))], dtype=np.float64)
    if arr.size == 0:
        return float("nan"), None
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else None


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


def _fmt(ms: tuple[float, float | None], pct: bool = False) -> str:
    mean, std = ms
    if math.isnan(mean):
        return "n/a"
    scale, spec = (100, ".1f") if pct else (1, ".3f")
    text = f"{scale * mean:{spec}}"
    return text if std is None or math.isnan(std) else f"{text} ± {scale * std:{spec}}"


def summary_markdown(payload: dict, env, labels: dict[str, str]) -> str:
    cfg = env.config
    summary, names = payload["summary"], payload["policies"]
    sources = ", ".join(f"{d} = {s}" for d, s in payload["domain_sources"].items())
    lines = [(f"# p2p: {cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round, share "
             f"{cfg.share_fraction:.0%} ({env.n_share}/round), topology {cfg.topology.kind}, OoD {cfg.ood.detector}, "
             f"reward {cfg.reward}, privacy {cfg.privacy.mode}"), "",
             (f"Domains: {sources}. Rare: {', '.join(cfg.rare_domains)}. {seeds_note(len(payload['seeds']))}; "
             f"wall time {payload['elapsed_s']:.0f} s."), "",
             "## Final test accuracy (%) per robot and domain", "",
             "| policy | robot | " + " | ".join(env.domain_names) + " |", "|---|---|" + "---|" * env.n_domains]
    for name in names:
        for agent in env.possible_agents:
            acc = summary[name]["robots"][agent]["final_accuracy"]
            lines.append(f"| {labels[name]} | {agent} | " + " | ".join(_fmt(acc[d], True) for d in env.domain_names)
                         + " |")
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
            lines.append(f"| {labels[name]} | {d} | " + " | ".join(f"{v:.1f}" for v in per_round) + " |")
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
            lines.append(f"| {labels[name]} | {a} | {_fmt(r['rare_share_cached'], True)} | "
                         f"{_fmt(r['rare_share_after_first_round'], True)} | {_fmt(r['rare_share_last_round'], True)} | "
                         f"{_fmt(r['rare_recall'], True)} |")
    lines += ["", "Paper (GU model, toy): 88.18% of rare KMNIST data and 88.96% of rare FashionMNIST data cached.",
              "", "## Privacy filter (per episode, all robots)", "",
              "| policy | private cached | blurred | dropped | passed unfiltered |", "|---|---|---|---|---|"]
    for name in names:
        p = summary[name]["privacy_per_episode"]
        lines.append(f"| {labels[name]} | {p['n_private_cached']:.1f} | {p['n_blurred']:.1f} | {p['n_dropped']:.1f} | "
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


def _plot(out: Path, episodes: list[dict], names: list[str], env, labels: dict[str, str]) -> dict:
    from matplotlib.ticker import MaxNLocator

    colors = policy_colors([labels[n] for n in names])
    n_seeds = len({e["seed"] for e in episodes})
    cfg = env.config
    instance = f"{cfg.n_robots} robots, share {cfg.share_fraction:.0%}, OoD {cfg.ood.detector}"
    figures = {}
    agents, domains = env.possible_agents, env.domain_names
    fig, axes = new_figure(len(agents), len(domains), figsize=(2.9 * len(domains) + 1.6, 2.1 * len(agents) + 1.0),
                           sharex=True, sharey=True, squeeze=False)
    for r, agent in enumerate(agents):
        for c, domain in enumerate(domains):
            ax = axes[r][c]
            for name in names:
                mean, sd = band([[x["robots"][agent]["domain_accuracy"][domain] for x in e["rounds"]]
                                 for e in episodes if e["policy"] == name])
                x = np.arange(len(mean))
                ax.plot(x, mean, marker="o", ms=2.5, color=colors[labels[name]],
                        label=labels[name] if r == c == 0 else "_nolegend_")
                if sd is not None:
                    ax.fill_between(x, mean - sd, mean + sd, color=colors[labels[name]], alpha=0.15, lw=0)
            ax.set_ylim(0, 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(f"test on {domain}", fontsize=9)
            if c == 0:
                ax.set_ylabel(agent, fontsize=9)
    fig.supxlabel("round", fontsize=9)
    fig.supylabel("test accuracy of the robot's model", fontsize=9)
    fig.suptitle(f"p2p: test accuracy per robot (rows) and test domain (columns)\n{instance}; "
                 f"{over_seeds(n_seeds)}", fontsize=10)
    outside_legend(fig)
    figures["accuracy.png"] = save_figure(fig, out / "accuracy.png", 110)

    rare_robots = _robots_with_rare(env)
    if rare_robots:
        fig, ax = new_figure(figsize=(2.6 + 0.5 * len(rare_robots) * len(names), 3.8))
        width = 0.8 / len(names)
        x = np.arange(len(rare_robots))
        for k, name in enumerate(names):
            shares = [[100 * e["rounds"][-1]["robots"][a]["rare_share_cached"] for e in episodes
                       if e["policy"] == name] for a in rare_robots]
            spread = [band(v)[1] for v in shares]
            ax.bar(x - 0.4 + width * (k + 0.5), [np.mean(v) for v in shares], width=width, color=colors[labels[name]],
                   yerr=None if spread[0] is None else [float(v) for v in spread], capsize=2, label=labels[name])
        ax.axhline(PAPER_RARE_SHARE["kmnist"], color="k", ls="--", lw=1, label="paper, GU model (88%)")
        ax.set_xticks(x, rare_robots)
        ax.set_xlabel("robot (those whose stream holds a rare domain)")
        ax.set_ylabel("rare-domain share of cached samples (%)")
        ax.set_ylim(0, 105)
        fig.suptitle(f"p2p: rare-domain share of what each robot cached\n{instance}; {over_seeds(n_seeds)}",
                     fontsize=10)
        outside_legend(fig)
        figures["rare_share.png"] = save_figure(fig, out / "rare_share.png", 110)
    return figures


class P2PReporter(Reporter):
    scenario = "p2p"
    default_policy = "gu"
    default_policies = "random,oracle,gu"
    default_seeds = 3
    data_dir_key = "data_dir"
    reuse_env = True
    files = ("rounds.csv", "accuracy.png", "rare_share.png", "summary.md")

    def context(self, env):
        return env

    def context_from_config(self, config, **overrides):
        from ...faces.pettingzoo import parallel_env as make_parallel_env

        return make_parallel_env(config, **overrides)  # builds the world only; no model is trained

    @staticmethod
    def _by_domain(env, info: dict) -> dict:  # infos carry arrays (fixed schema); the results name the domains
        return dict(zip(env.domain_names, np.asarray(info["domain_accuracy"]).tolist()))

    def initial_round(self, env, infos):
        return {"round": 0, "robots": {a: {"domain_accuracy": self._by_domain(env, infos[a]),
                                           "labeled_size": infos[a]["labeled_size"]} for a in env.possible_agents}}

    def round_record(self, env, index, rewards, infos, stats, decide_s):
        record = {"round": index, "robots": {}}
        for agent, info in infos.items():
            record["robots"][agent] = {
                "domain_accuracy": self._by_domain(env, info), "labeled_size": info["labeled_size"],
                "reward": float(rewards[agent]), "mean_utility": float(np.mean(info["feedback_utilities"])),
                "round_rare_share": float(info["round_rare_share"]), "rare_share_cached": info["rare_share_cached"],
                "total_rare_cached": info["total_rare_cached"], "total_rare_seen": info["total_rare_seen"],
                "n_sent": info["n_sent"], "n_received": info["n_received"], "n_kept": info["n_kept"],
                "n_private_cached": info["n_private_cached"], "n_blurred": info["n_blurred"],
                "n_dropped": info["n_dropped"], "n_passed_private": info["n_passed_private"]}
        return record

    def finish(self, env, episode, infos):
        rounds = episode["rounds"]
        return {"return": {a: float(sum(r["robots"][a]["reward"] for r in rounds[1:] if a in r["robots"]))  # dropped: absent
                           for a in env.possible_agents}}

    def payload_extras(self, env):
        return {"domain_sources": dict(zip(env.domain_names, env.world.domain_sources)),
                "rare_domains": list(env.config.rare_domains)}

    def summarise(self, payload, ctx):
        return summarise(payload["episodes"], payload["policies"], ctx)

    def summary_markdown(self, payload, ctx, baseline=None):
        return summary_markdown(payload, ctx, self.labels(payload["policies"], ctx))

    def write_files(self, out, payload, ctx, baseline=None):
        _write_csv(out, payload["episodes"], ctx)
        figures = _plot(out, payload["episodes"], payload["policies"], ctx, self.labels(payload["policies"], ctx))
        (out / "summary.md").write_text(self.summary_markdown(payload, ctx, baseline))
        return figures

    def run_table(self, episode, ctx):
        from rich.table import Table

        label = self.labels([episode["policy"]], ctx)[episode["policy"]]
        table = Table(title=f"{label}, seed {episode['seed']}: final test accuracy per robot and domain")
        for column in ("robot", *ctx.domain_names, "rare share cached", "return"):
            table.add_column(column, justify="right")
        for agent, x in episode["rounds"][-1]["robots"].items():
            rare = x.get("rare_share_cached", float("nan"))
            table.add_row(agent, *(f"{x['domain_accuracy'][d]:.3f}" for d in ctx.domain_names),
                          "n/a" if rare is None or math.isnan(rare) else f"{rare:.3f}", f"{episode['return'][agent]:.3f}")
        return table

    def describe(self, ctx):
        return f"{super().describe(ctx)}, share {ctx.n_share}/round, domains {', '.join(ctx.domain_names)}"

    def round_progress(self, record):
        acc = np.mean([np.mean(list(r["domain_accuracy"].values())) for r in record["robots"].values()])
        return f"mean accuracy {acc:.3f}"
