"""Results of the DUAL scenario (``dual``): per round the cloud model's test accuracy, labels used, upload and label
objectives and privacy counts; ``rounds.csv``, ``accuracy.png`` and ``summary.md`` (relative to a baseline spec)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .base import (Reporter, fmt_pm, new_figure, outside_legend, over_seeds, policy_colors, policy_labels, save_figure,
                   seeds_note)

ROUND_FIELDS = ("round", "validation_accuracy", "test_accuracy", "labels_used", "labeled", "uploaded",
                "cloud_labeled", "cloud_unlabeled", "upload_objective", "upload_objective_gain", "label_objective",
                "coverage_gain", "reward")
PRIVACY_FIELDS = ("private", "dropped", "blurred", "passed_private")


def summarise(records: list[dict], specs: list[str]) -> dict:
    out = {}
    for spec in specs:
        recs = [r for r in records if r["policy"] == spec]
        acc = np.array([[x["test_accuracy"] for x in r["rounds"]] for r in recs])
        privacy = {k: int(sum(sum(x["privacy_total"][k] for x in r["rounds"][1:]) for r in recs)) for k in
                   PRIVACY_FIELDS}
        spread = len(recs) > 1  # sample standard deviations over seeds; None (no spread) for one seed
        out[spec] = {
            "test_accuracy_mean": acc.mean(axis=0).tolist(),
            "test_accuracy_std": acc.std(axis=0, ddof=1).tolist() if spread else None,
            "final_test_accuracy_mean": float(acc[:, -1].mean()),
            "final_test_accuracy_std": float(acc[:, -1].std(ddof=1)) if spread else None,
            "labels_used_mean": float(np.mean([r["labels_used"] for r in recs])),
            "upload_objective_gain_mean": float(np.mean([r["mean_upload_objective_gain"] for r in recs])),
            "label_objective_mean": float(np.nanmean([x["label_objective"] for r in recs for x in r["rounds"][1:]])),
            "privacy_totals": privacy, "privileged": recs[0]["privileged"] if recs else False,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in recs])), "n_seeds": len(recs),
        }
    return out


def summary_markdown(summary: dict, cfg, seeds: list[int], elapsed: float, baseline: str | None,
                     labels: dict[str, str]) -> str:
    rounds = cfg.rounds
    lines = [f"# DUAL evaluation: {cfg.dataset.name}", "",
             (f"{cfg.n_robots} robots, {rounds} rounds, {cfg.obs_per_round} observations per robot per round, "
             f"n_cache {cfg.n_cache}, label budget {cfg.label_budget} per round, initial cloud "
             f"{cfg.initial_cloud_size}, stream {cfg.stream.kind} (alpha {cfg.stream.alpha}), kernel {cfg.kernel} "
             f"(scale {cfg.kernel_scale}), privacy {cfg.privacy.mode} (private fraction "
             f"{cfg.privacy.private_fraction}); seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); {elapsed:.0f} s."), "",
             f"Test accuracy of the cloud model per round, {seeds_note(len(seeds))}; round 0 = the initial cloud:",
             "",
             "| policy (upload/labeler) | " + " | ".join(f"r{r}" for r in range(rounds + 1)) + " | labels used | "
             "upload objective gain | label objective | private: blurred / dropped / passed | s/episode |",
             "|---" * (rounds + 7) + "|"]
    for spec, s in summary.items():
        sds = s["test_accuracy_std"] or [None] * len(s["test_accuracy_mean"])
        accs = " | ".join(fmt_pm(m, sd, ".3f") for m, sd in zip(s["test_accuracy_mean"], sds))
        p = s["privacy_totals"]
        name = labels[spec] + (" (privileged)" if s["privileged"] else "")
        lines.append(f"| {name} | {accs} | {s['labels_used_mean']:.0f} | {s['upload_objective_gain_mean']:.5f} | "
                     f"{s['label_objective_mean']:.5f} | {p['blurred']} / {p['dropped']} / {p['passed_private']} | "
                     f"{s['wall_s_mean']:.1f} |")
    if baseline in summary:
        base = summary[baseline]["final_test_accuracy_mean"]
        lines += ["", (f"Final test accuracy relative to `{labels[baseline]}` (the paper's \"gain in accuracy\" is "
                       "relative in the same way; percentage points in brackets):"), ""]
        base_rounds = np.array(summary[baseline]["test_accuracy_mean"])
        for spec, s in summary.items():
            acc = s["final_test_accuracy_mean"]
            per_round = (np.array(s["test_accuracy_mean"]) - base_rounds) / base_rounds
            best = int(np.argmax(per_round[1:])) + 1 if len(per_round) > 1 else 0
            lines.append(f"- `{labels[spec]}`: {acc:.3f} ({100 * (acc - base) / base:+.1f}% relative, "
                         f"{100 * (acc - base):+.1f} pp); largest per-round gain {100 * per_round[best]:+.1f}% "
                         f"(round {best})")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, records: list[dict]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["policy", "seed", *ROUND_FIELDS, *PRIVACY_FIELDS])
        for r in records:
            for x in r["rounds"]:
                totals = x.get("privacy_total", {})
                writer.writerow([r["policy"], r["seed"], *[x.get(k, "") for k in ROUND_FIELDS],
                                 *[totals.get(k, 0) for k in PRIVACY_FIELDS]])


def _plot(path: Path, summary: dict, title: str, labels: dict[str, str], baseline: str, n_seeds: int) -> dict:
    """Test accuracy per round. Up to four policies share one plot; more get small multiples, one panel per
    policy against the baseline (grey), so that no panel holds more than two curves. A policy keeps its color."""
    specs = list(summary)
    colors = policy_colors([labels[s] for s in specs])
    others = [s for s in specs if s != baseline] if len(specs) > 4 else [None]
    ncols = min(3, len(others))
    nrows = -(-len(others) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.4 * ncols + 0.6, 2.5 * nrows + 1.3), sharex=True, sharey=True,
                           squeeze=False)

    def curve(ax, spec: str, color: str, zorder: float) -> None:
        s = summary[spec]
        mean = np.array(s["test_accuracy_mean"])
        x = np.arange(len(mean))
        ax.plot(x, mean, marker="o", ms=3, color=color, zorder=zorder, label=labels[spec],
                linestyle="--" if s["privileged"] else "-")
        if s["test_accuracy_std"] is not None:
            sd = np.array(s["test_accuracy_std"])
            ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15, lw=0, zorder=zorder - 1)

    for k, ax in enumerate(axes.flat):
        if k >= len(others):
            ax.set_visible(False)
            axes.flat[k - ncols].xaxis.set_tick_params(labelbottom=True)  # the panel above ends its column
            continue
        spec = others[k]
        if spec is None:  # one plot, every policy
            for s in specs:
                curve(ax, s, colors[labels[s]], 3)
        else:
            curve(ax, baseline, "k", 2)
            curve(ax, spec, colors[labels[spec]], 3)
            ax.set_title(labels[spec] + (" (privileged)" if summary[spec]["privileged"] else ""), fontsize=9)
        ax.set_xticks(np.arange(len(summary[specs[0]]["test_accuracy_mean"])))
        ax.grid(alpha=0.3)
    if others == [None]:
        axes[0][0].set_xlabel("round (0: the initial cloud)", fontsize=9)
        axes[0][0].set_ylabel("cloud model test accuracy", fontsize=9)
    else:
        fig.supxlabel("round (0: the initial cloud)", fontsize=9)
        fig.supylabel("cloud model test accuracy", fontsize=9)
    compared = f"; black: {labels[baseline]} (baseline)" if others != [None] else ""
    fig.suptitle(f"{title}\n{over_seeds(n_seeds)}{compared}; dashed: privileged", fontsize=10)
    if others == [None]:
        outside_legend(fig)
    return save_figure(fig, path, 110)


def _upload_part(name: str, labeler: str) -> str:
    """``"random/random"`` -> ``"random"``: the upload part of a spec whose labeler is ``labeler``."""
    return name[: -len(labeler) - 1] if name.endswith(f"/{labeler}") else name


class DualReporter(Reporter):
    scenario = "dual"
    default_policy = "submodular-independent"
    default_policies = ("random/random,entropy,margin,submodular-independent,submodular-interactive,"
                        "submodular-centralized,greedy,interactive,oracle")
    default_seeds = 3
    files = ("rounds.csv", "accuracy.png", "summary.md")

    def initial_round(self, env, infos):
        return self._copy(env.history[0])

    def round_record(self, env, index, rewards, infos, stats, decide_s):
        return self._copy(env.history[-1])

    @staticmethod
    def _copy(record):
        return {k: (dict(v) if k == "privacy_total" else v) for k, v in record.items()}

    def finish(self, env, episode, infos):
        rounds = episode["rounds"]
        return {"upload_policy": _upload_part(episode["policy"], env.config.labeler), "labeler": env.config.labeler,
                "final_test_accuracy": rounds[-1]["test_accuracy"], "labels_used": rounds[-1]["labels_used"],
                "mean_upload_objective_gain": float(np.mean([r["upload_objective_gain"] for r in rounds[1:]]))}

    def summarise(self, payload, ctx):
        return summarise(payload["episodes"], payload["policies"])

    def _baseline(self, payload, baseline):
        """The spec the summary compares against: the one asked for, else "no curation", else the first."""
        specs = payload["policies"]
        return next(s for s in (baseline, "random/random", specs[0]) if s in specs)

    def labels(self, policies, ctx):
        """``UPLOAD/LABELER`` for every spec: a spec without a labeler names the config's (``entropy`` ->
        ``entropy/submodular``); checkpoints by their short label (``policy_labels``)."""
        from ...policy import parse_policy_spec

        short = policy_labels(policies, self.scenario)
        labels = {}
        for spec in policies:
            try:
                has_labeler = parse_policy_spec(spec, self.scenario).labeler is not None
            except ValueError:
                has_labeler = False
            labels[spec] = short[spec] if has_labeler else f"{short[spec]}/{ctx.labeler}"
        return labels

    def summary_markdown(self, payload, ctx, baseline=None):
        return summary_markdown(payload["summary"], ctx, payload["seeds"], payload["elapsed_s"],
                                self._baseline(payload, baseline), self.labels(payload["policies"], ctx))

    def write_files(self, out, payload, ctx, baseline=None):
        _write_csv(out / "rounds.csv", payload["episodes"])
        figure = _plot(out / "accuracy.png", payload["summary"], f"DUAL on {ctx.dataset.name}: {ctx.n_robots} robots, "
                       f"label budget {ctx.label_budget}/round", self.labels(payload["policies"], ctx),
                       self._baseline(payload, baseline), len(payload["seeds"]))
        (out / "summary.md").write_text(self.summary_markdown(payload, ctx, baseline))
        return {"accuracy.png": figure}

    def run_table(self, episode, ctx):
        from rich.table import Table

        label = self.labels([episode["policy"]], ctx)[episode["policy"]]
        table = Table(title=f"{label} on {ctx.dataset.name}, seed {episode['seed']}")
        for column in ("round", "test acc", "val acc", "labels used", "uploaded", "upload obj. gain",
                       "blurred/dropped"):
            table.add_column(column, justify="right")
        for r in episode["rounds"]:
            p = r.get("privacy_total", {})
            table.add_row(str(r["round"]), f"{r['test_accuracy']:.3f}", f"{r['validation_accuracy']:.3f}",
                          str(r["labels_used"]), str(r.get("uploaded", "")), f"{r.get('upload_objective_gain', 0):.5f}",
                          f"{p.get('blurred', 0)}/{p.get('dropped', 0)}")
        return table

    def describe(self, ctx):
        return (f"{super().describe(ctx)}, n_cache {ctx.n_cache}, label budget {ctx.label_budget}/round, "
                f"labeler {ctx.labeler}, dataset {ctx.dataset.name}")

    def round_progress(self, record):
        return f"test accuracy {record['test_accuracy']:.3f}"
