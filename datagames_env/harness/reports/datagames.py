"""Results of the cloud game (``datagames``): per round the distance to the target, reward, class counts, messages
and the Lemma-6 lower bound; ``rounds.csv``, ``final.csv``, ``distance.png``, ``final_counts.png``,
``final_distance.png``, ``summary.md``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ...config import EnvConfig
from .base import (Reporter, band, fmt_pm, mean_sd, new_figure, outside_legend, over_seeds, policy_colors,
                   save_figure, seeds_note)


def episode_lower_bound(cloud0: np.ndarray, target: np.ndarray, budget_per_round: int, rounds: int) -> list[float]:
    """L2 lower bound on the distance after r rounds, for any policy: relaxing a >= 0 leaves only the
    budget 1'x <= r * N * n_cache on everything uploaded, so the bound is the distance from target - cloud0
    to that half-space: max(0, 1'(target - cloud0) - r N n_cache) / sqrt(C) (Lemma 6 over r rounds)."""
    need = float(np.sum(target - cloud0))
    return [max(0.0, need - r * budget_per_round) / math.sqrt(len(target)) for r in range(rounds + 1)]


def summarise(records: list[dict], policies: list[str]) -> dict:
    summary = {}
    for p in policies:
        mine = [r for r in records if r["policy"] == p]
        final_mean, final_sd = mean_sd(r["final_distance"] for r in mine)
        acc = [r["final_test_accuracy"] for r in mine if r["final_test_accuracy"] is not None]
        acc_mean, acc_sd = mean_sd(acc)
        # sample standard deviations over seeds; None (no spread) for one seed
        summary[p] = {"final_distance_mean": final_mean, "final_distance_std": final_sd,
                      "final_accuracy_mean": acc_mean if acc else None, "final_accuracy_std": acc_sd,
                      "messages_mean": float(np.mean([r["messages"] for r in mine])),
                      "policy_time_s_mean": float(np.mean([r["policy_time_s"] for r in mine])),
                      "lower_bound": mine[0]["rounds"][-1]["lower_bound"], "n_seeds": len(mine)}
        rare = [r["rare_upload_share"] for r in mine if r.get("rare_upload_share") is not None]
        summary[p]["rare_upload_share_mean"] = float(np.mean(rare)) if rare else None
    for p, s in summary.items():
        for ref in ("greedy", "oracle"):
            if ref in summary and ref != p:
                base = summary[ref]["final_distance_mean"]
                # positive = p ends closer to the target than ref
                s[f"improvement_vs_{ref}_pct"] = 100.0 * (base - s["final_distance_mean"]) / base if base > 0 else None
    return summary


def summary_markdown(summary: dict, cfg: EnvConfig, n_seeds: int, elapsed: float, labels: dict[str, str]) -> str:
    lines = [f"# {cfg.dataset.name}: {cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round, "
             f"n_cache {cfg.n_cache}, initial cloud {cfg.initial_cloud_size}, target {cfg.target.kind}",
             "", f"{seeds_note(n_seeds)}, {cfg.loss} distance to the target; wall time {elapsed:.0f} s", "",
             "| policy | final distance | vs greedy | vs oracle | cloud model test accuracy | messages / episode |"
             " rare-class share of uploads |",
             "|---|---|---|---|---|---|---|"]
    for p, s in summary.items():
        acc = (fmt_pm(s["final_accuracy_mean"], s["final_accuracy_std"], ".4f")
               if s["final_accuracy_mean"] is not None else "n/a")
        vs_g = f"{s['improvement_vs_greedy_pct']:+.1f}%" if s.get("improvement_vs_greedy_pct") is not None else ""
        vs_o = f"{s['improvement_vs_oracle_pct']:+.1f}%" if s.get("improvement_vs_oracle_pct") is not None else ""
        rare = f"{s['rare_upload_share_mean']:.3f}" if s.get("rare_upload_share_mean") is not None else "n/a"
        lines.append(f"| {labels[p]} | {fmt_pm(s['final_distance_mean'], s['final_distance_std'])} | {vs_g} | "
                     f"{vs_o} | {acc} | {s['messages_mean']:.0f} | {rare} |")
    bound = next(iter(summary.values()))["lower_bound"]
    lines += ["", f"Lower bound on the final distance (any policy; Lemma 6 over the episode): {bound:.2f}.",
              "'vs X' = (d_X - d_policy) / d_X: positive means closer to the target than X."]
    return "\n".join(lines) + "\n"


def _write_csv(out: Path, records: list[dict]) -> None:
    n_classes = len(records[0]["target_counts"])
    with open(out / "rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "seed", "round", "distance", "reward", "messages", "sweeps", "wall_time_s", "lower_bound"]
                   + [f"count_{k}" for k in range(n_classes)])
        for r in records:
            for x in r["rounds"]:
                w.writerow([r["policy"], r["seed"], x["round"], x["distance"], x["reward"], x["messages"], x["sweeps"],
                            x["wall_time_s"], x["lower_bound"]] + x["cloud_counts"])
    with open(out / "final.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["policy", "seed", "initial_distance", "final_distance", "final_test_accuracy", "messages", "policy_time_s"])
        for r in records:
            w.writerow([r["policy"], r["seed"], r["initial_distance"], r["final_distance"], r["final_test_accuracy"],
                        r["messages"], r["policy_time_s"]])


def _plot(out: Path, records: list[dict], policies: list[str], cfg: EnvConfig, labels: dict[str, str]) -> dict:
    from matplotlib.ticker import MaxNLocator

    colors = policy_colors([labels[p] for p in policies])
    n_seeds = len({r["seed"] for r in records})
    instance = f"{cfg.dataset.name}, {cfg.n_robots} robots, n_cache {cfg.n_cache}"
    figures = {}

    fig, ax = new_figure(figsize=(7.2, 4.2))
    for p in policies:
        mean, sd = band([[x["distance"] for x in r["rounds"]] for r in records if r["policy"] == p])
        x = np.arange(len(mean))
        ax.plot(x, mean, marker="o", ms=3, color=colors[labels[p]], label=labels[p])
        if sd is not None:
            ax.fill_between(x, mean - sd, mean + sd, color=colors[labels[p]], alpha=0.2, lw=0)
    bound = [x["lower_bound"] for x in records[0]["rounds"]]
    if not np.isnan(bound).all():
        ax.plot(np.arange(len(bound)), bound, "k--", lw=1, label="lower bound (Lemma 6)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel(f"{cfg.loss} distance to the target")
    fig.suptitle(f"Distance to the target per round\n{instance}; {over_seeds(n_seeds)}", fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(fig)
    figures["distance.png"] = save_figure(fig, out / "distance.png", 120)

    names = records[0]["class_names"]
    fig, ax = new_figure(figsize=(min(16.0, max(8.0, 0.12 * len(names) * (len(policies) + 1) + 3.0)), 4.2))
    x = np.arange(len(names))
    width = 0.8 / len(policies)
    for k, p in enumerate(policies):
        mean, sd = band([r["rounds"][-1]["cloud_counts"] for r in records if r["policy"] == p])
        ax.bar(x - 0.4 + width * (k + 0.5), mean, width=width, color=colors[labels[p]], label=labels[p],
               yerr=sd, capsize=1.5, error_kw={"lw": 0.8})
    # the target as a black tick over each class's group of bars
    ax.hlines(records[0]["target_counts"], x - 0.45, x + 0.45, colors="k", lw=1.5, label="target")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("samples in the cloud after the last round")
    fig.suptitle(f"Final cloud per class (black: the target)\n{instance}; {over_seeds(n_seeds)}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    outside_legend(fig)
    figures["final_counts.png"] = save_figure(fig, out / "final_counts.png", 120)

    fig, ax = new_figure(figsize=(max(5.0, 1.1 * len(policies) + 2.0), 4.2))
    finals = [[r["final_distance"] for r in records if r["policy"] == p] for p in policies]
    if n_seeds > 1:  # quartiles of one value say nothing
        ax.boxplot(finals, positions=np.arange(len(policies)), widths=0.5, showfliers=False,
                   medianprops={"color": "k"}, boxprops={"color": "0.4"}, whiskerprops={"color": "0.4"},
                   capprops={"color": "0.4"})
    for k, (p, values) in enumerate(zip(policies, finals)):
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        ax.scatter(k + jitter, values, s=14, color=colors[labels[p]], zorder=3, edgecolors="none")
    ax.set_xticks(np.arange(len(policies)), [labels[p] for p in policies], rotation=20, ha="right", fontsize=8)
    ax.set_xlabel("policy")
    ax.set_ylabel(f"final {cfg.loss} distance to the target")
    spread = "seeds, one point per seed, boxes: quartiles" if n_seeds > 1 else "seed"
    fig.suptitle(f"Final distance per policy\n{instance}; {n_seeds} {spread}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    figures["final_distance.png"] = save_figure(fig, out / "final_distance.png", 120,
                                               boxes=len(policies) if n_seeds > 1 else 0)
    return figures


class DataGamesReporter(Reporter):
    scenario = "datagames"
    default_policy = "random"
    default_policies = "uniform,random,greedy,interactive,oracle"
    default_seeds = 10
    files = ("rounds.csv", "final.csv", "distance.png", "final_counts.png", "final_distance.png", "summary.md")

    def initial_round(self, env, infos):
        core = env.core
        return {"round": 0, "distance": float(core.distance[0]), "reward": 0.0, "messages": 0, "sweeps": 0,
                "wall_time_s": 0.0, "cloud_counts": core.cloud_counts[0].tolist()}

    def round_record(self, env, index, rewards, infos, stats, decide_s):
        info = next(iter(infos.values()))
        return {"round": index, "distance": info["distance"], "reward": float(next(iter(rewards.values()))),
                "messages": int(stats.get("messages", 0)), "sweeps": int(stats.get("sweeps", 0)),
                "wall_time_s": decide_s, "cloud_counts": np.asarray(info["cloud_counts"]).tolist()}

    def finish(self, env, episode, infos):
        cfg, rounds = env.config, episode["rounds"]
        bound = episode_lower_bound(np.asarray(rounds[0]["cloud_counts"]), env.core.target_counts, cfg.upload_budget,
                                    cfg.rounds) if cfg.loss == "l2" else [float("nan")] * (cfg.rounds + 1)
        for record, b in zip(rounds, bound):
            record["lower_bound"] = b
        uploads = np.asarray(rounds[-1]["cloud_counts"]) - np.asarray(rounds[0]["cloud_counts"])
        rare = cfg.stream.rare_classes
        rare_share = float(uploads[list(rare)].sum() / uploads.sum()) if rare and uploads.sum() > 0 else None
        final_accuracy = next(iter(infos.values()), {}).get("final_test_accuracy")
        return {"final_distance": rounds[-1]["distance"], "rare_upload_share": rare_share,
                "initial_distance": rounds[0]["distance"], "final_test_accuracy": final_accuracy,
                "return": float(sum(r["reward"] for r in rounds)), "target_counts": env.core.target_counts.tolist(),
                "class_names": list(env.class_names)}

    def summarise(self, payload, ctx):
        return summarise(payload["episodes"], payload["policies"])

    def summary_markdown(self, payload, ctx, baseline=None):
        return summary_markdown(payload["summary"], ctx, len(payload["seeds"]), payload["elapsed_s"],
                                self.labels(payload["policies"], ctx))

    def write_files(self, out, payload, ctx, baseline=None):
        _write_csv(out, payload["episodes"])
        figures = _plot(out, payload["episodes"], payload["policies"], ctx, self.labels(payload["policies"], ctx))
        (out / "summary.md").write_text(self.summary_markdown(payload, ctx, baseline))
        return figures

    def run_table(self, episode, ctx):
        from rich.table import Table

        title = (f"final cloud vs target ({ctx.loss} distance {episode['initial_distance']:.2f} -> "
                 f"{episode['final_distance']:.2f})")
        table = Table(title=title, min_width=len(title))
        for column in ("class", "cloud", "target", "gap"):
            table.add_column(column, justify="right")
        for name, c, t in zip(episode["class_names"], episode["rounds"][-1]["cloud_counts"], episode["target_counts"]):
            table.add_row(name, f"{c:.0f}", f"{t:.1f}", f"{t - c:+.1f}")
        return table

    def describe(self, ctx):
        return f"{super().describe(ctx)}, n_cache {ctx.n_cache}, dataset {ctx.dataset.name}"

    def round_progress(self, record):
        return f"distance {record['distance']:.2f}"
