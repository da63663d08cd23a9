"""``datagames dual ...``: run and evaluate upload / labeling policies on the DUAL scenario.

    datagames dual eval --config dual_mnist --policies random,entropy,submodular-interactive --seeds 3 \
        --out results/dual_mnist
    datagames dual run --config dual_default --policy submodular-independent --seed 0

A policy spec is ``UPLOAD`` or ``UPLOAD/LABELER``: the stage-1 policy (``baselines.dual_policies``) and, optionally,
the stage-2 labeler that overrides the config's ``labeler`` (``random/random`` is the "no curation" baseline,
``submodular-independent/submodular`` is DUAL). ``eval`` runs every spec on the same seeds and writes
``results.json``, ``rounds.csv``, ``accuracy.png`` and ``summary.md``; ``report FOLDER`` re-renders the last two.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .cli import _parse_overrides  # one --set parser for every scenario's commands

ROUND_FIELDS = ("round", "validation_accuracy", "test_accuracy", "labels_used", "labeled", "uploaded",
                "cloud_labeled", "cloud_unlabeled", "upload_objective", "upload_objective_gain", "label_objective",
                "coverage_gain", "reward")
PRIVACY_FIELDS = ("private", "dropped", "blurred", "passed_private")




def split_spec(spec: str) -> tuple[str, str | None]:
    """``"random/random"`` -> ("random", "random"); ``"entropy"`` -> ("entropy", None)."""
    upload, _, labeler = spec.partition("/")
    return upload.strip(), (labeler.strip() or None)


def run_episode(config: dict, spec: str, seed: int, env=None, on_round=None) -> dict:
    """One episode of one policy spec; returns the per-round history and totals (plain JSON types)."""
    from baselines.dual_policies import make_dual_policy
    from datagames_env.dual import LABELERS, parallel_env

    upload, labeler = split_spec(spec)
    if labeler is not None and labeler not in LABELERS:
        raise ValueError(f"policy spec '{spec}': labeler '{labeler}' is not one of {list(LABELERS)}")
    overrides = {"labeler": labeler} if labeler else {}
    if env is None or overrides:
        env = parallel_env(config, **overrides)
    policy = make_dual_policy(upload, env)
    policy.reset(seed)
    start = time.perf_counter()
    observations, infos = env.reset(seed=seed)
    messages = 0
    while env.agents:
        observations, _, _, _, infos = env.step(policy.act(observations, infos))
        messages += int(policy.last_stats.get("messages", 0))
        if on_round is not None:
            on_round(env.history[-1])
    rounds = [{k: (v if k != "privacy_total" else dict(v)) for k, v in r.items()} for r in env.history]
    return {"policy": spec, "upload_policy": upload, "labeler": env.config.labeler, "seed": int(seed),
            "privileged": bool(policy.privileged), "rounds": rounds,
            "final_test_accuracy": rounds[-1]["test_accuracy"], "labels_used": rounds[-1]["labels_used"],
            "mean_upload_objective_gain": float(np.mean([r["upload_objective_gain"] for r in rounds[1:]])),
            "messages": messages, "wall_s": time.perf_counter() - start}


def _job(args: tuple[dict, str, int]) -> dict:
    import torch

    torch.set_num_threads(1)  # processes share the cores; a second thread only spins
    return run_episode(*args)


def summarise(records: list[dict], specs: list[str]) -> dict:
    out = {}
    for spec in specs:
        recs = [r for r in records if r["policy"] == spec]
        acc = np.array([[x["test_accuracy"] for x in r["rounds"]] for r in recs])
        privacy = {k: int(sum(sum(x["privacy_total"][k] for x in r["rounds"][1:]) for r in recs)) for k in
                   PRIVACY_FIELDS}
        out[spec] = {
            "test_accuracy_mean": acc.mean(axis=0).tolist(), "test_accuracy_std": acc.std(axis=0).tolist(),
            "final_test_accuracy_mean": float(acc[:, -1].mean()), "final_test_accuracy_std": float(acc[:, -1].std()),
            "labels_used_mean": float(np.mean([r["labels_used"] for r in recs])),
            "upload_objective_gain_mean": float(np.mean([r["mean_upload_objective_gain"] for r in recs])),
            "label_objective_mean": float(np.nanmean([x["label_objective"] for r in recs for x in r["rounds"][1:]])),
            "privacy_totals": privacy, "privileged": recs[0]["privileged"] if recs else False,
            "wall_s_mean": float(np.mean([r["wall_s"] for r in recs])), "n_seeds": len(recs),
        }
    return out


def summary_markdown(summary: dict, cfg, seeds: list[int], elapsed: float, baseline: str | None) -> str:
    rounds = cfg.rounds
    lines = [f"# DUAL evaluation: {cfg.dataset.name}", "",
             (f"{cfg.n_robots} robots, {rounds} rounds, {cfg.obs_per_round} observations per robot per round, "
             f"n_cache {cfg.n_cache}, label budget {cfg.label_budget} per round, initial cloud "
             f"{cfg.initial_cloud_size}, stream {cfg.stream.kind} (alpha {cfg.stream.alpha}), kernel {cfg.kernel} "
             f"(scale {cfg.kernel_scale}), privacy {cfg.privacy.mode} (private fraction "
             f"{cfg.privacy.private_fraction}); seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); {elapsed:.0f} s."), "",
             "Test accuracy of the cloud model per round (mean ± std over seeds; round 0 = initial cloud):", "",
             "| policy (upload/labeler) | " + " | ".join(f"r{r}" for r in range(rounds + 1)) + " | labels used | "
             "upload objective gain | label objective | private: blurred / dropped / passed | s/episode |",
             "|---" * (rounds + 7) + "|"]
    for spec, s in summary.items():
        accs = " | ".join(f"{m:.3f} ± {sd:.3f}" for m, sd in zip(s["test_accuracy_mean"], s["test_accuracy_std"]))
        p = s["privacy_totals"]
        name = spec + (" (privileged)" if s["privileged"] else "")
        lines.append(f"| {name} | {accs} | {s['labels_used_mean']:.0f} | {s['upload_objective_gain_mean']:.5f} | "
                     f"{s['label_objective_mean']:.5f} | {p['blurred']} / {p['dropped']} / {p['passed_private']} | "
                     f"{s['wall_s_mean']:.1f} |")
    if baseline in summary:
        base = summary[baseline]["final_test_accuracy_mean"]
        lines += ["", (f"Final test accuracy relative to `{baseline}` (the paper's \"gain in accuracy\" is relative "
                  "in the same way; percentage points in brackets):"), ""]
        base_rounds = np.array(summary[baseline]["test_accuracy_mean"])
        for spec, s in summary.items():
            acc = s["final_test_accuracy_mean"]
            per_round = (np.array(s["test_accuracy_mean"]) - base_rounds) / base_rounds
            best = int(np.argmax(per_round[1:])) + 1 if len(per_round) > 1 else 0
            lines.append(f"- `{spec}`: {acc:.3f} ({100 * (acc - base) / base:+.1f}% relative, "
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


def _plot(path: Path, summary: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for spec, s in summary.items():
        mean, std = np.array(s["test_accuracy_mean"]), np.array(s["test_accuracy_std"])
        x = np.arange(len(mean))
        ax.plot(x, mean, marker="o", label=spec, linestyle="--" if s["privileged"] else "-")
        ax.fill_between(x, mean - std, mean + std, alpha=0.12)
    ax.set_xticks(np.arange(len(next(iter(summary.values()))["test_accuracy_mean"])) if summary else [])
    ax.set_xlabel("round")
    ax.set_ylabel("cloud model test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_eval(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from baselines.dual_policies import DUAL_POLICIES
    from datagames_env.dual import LABELERS, load_dual_config

    overrides = _parse_overrides(args.set)
    if args.data_dir:
        overrides["dataset.data_dir"] = args.data_dir
    cfg = load_dual_config(args.config, **overrides)
    specs = [p.strip() for p in args.policies.split(",") if p.strip()]
    for spec in specs:  # fail before any work
        upload, labeler = split_spec(spec)
        if upload not in DUAL_POLICIES or (labeler is not None and labeler not in LABELERS):
            raise ValueError(f"policy spec '{spec}': upload policy must be one of {sorted(DUAL_POLICIES)} and the "
                             f"optional labeler one of {list(LABELERS)}")
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = Path(args.out) if args.out else Path("results") / Path(str(args.config)).stem
    out.mkdir(parents=True, exist_ok=True)
    config = cfg.model_dump()
    jobs = [(config, spec, seed) for spec in specs for seed in seeds]
    console = Console()
    start = time.perf_counter()
    records = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("episodes", total=len(jobs))
        if args.workers <= 1:
            for job in jobs:
                progress.update(task, description=f"{job[1]} seed {job[2]}")
                records.append(_job(job))
                progress.advance(task)
        else:
            with ProcessPoolExecutor(args.workers) as pool:
                futures = [pool.submit(_job, job) for job in jobs]
                for future in as_completed(futures):
                    records.append(future.result())
                    progress.advance(task)
    records.sort(key=lambda r: (specs.index(r["policy"]), r["seed"]))
    elapsed = time.perf_counter() - start
    summary = summarise(records, specs)
    baseline = args.baseline if args.baseline in specs else specs[0]
    (out / "results.json").write_text(json.dumps({"config": config, "policies": specs, "seeds": seeds,
                                                  "elapsed_s": elapsed, "summary": summary, "records": records},
                                                 indent=1, default=_json_default))
    _write_csv(out / "rounds.csv", records)
    _plot(out / "accuracy.png", summary, f"DUAL on {cfg.dataset.name}: {cfg.n_robots} robots, "
                                         f"label budget {cfg.label_budget}/round")
    (out / "summary.md").write_text(summary_markdown(summary, cfg, seeds, elapsed, baseline))
    console.print(Markdown((out / "summary.md").read_text()))
    console.print(f"results in {out}/: results.json rounds.csv accuracy.png summary.md ({elapsed:.0f} s)")
    return 0


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render summary.md and accuracy.png from an eval folder's results.json (no episodes are run)."""
    from rich.console import Console
    from rich.markdown import Markdown

    from datagames_env.dual import DualConfig

    out = Path(args.folder)
    payload = json.loads((out / "results.json").read_text())
    cfg = DualConfig.model_validate(payload["config"])
    specs = payload["policies"]
    summary = summarise(payload["records"], specs)
    baseline = args.baseline if args.baseline in specs else specs[0]
    _plot(out / "accuracy.png", summary, f"DUAL on {cfg.dataset.name}: {cfg.n_robots} robots, "
                                         f"label budget {cfg.label_budget}/round")
    (out / "summary.md").write_text(summary_markdown(summary, cfg, payload["seeds"], payload["elapsed_s"], baseline))
    Console().print(Markdown((out / "summary.md").read_text()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from datagames_env.dual import load_dual_config

    overrides = _parse_overrides(args.set)
    if args.data_dir:
        overrides["dataset.data_dir"] = args.data_dir
    cfg = load_dual_config(args.config, **overrides)
    console = Console()
    with console.status("running episode..."):
        record = run_episode(cfg.model_dump(), args.policy, args.seed)
    table = Table(title=f"{args.policy} on {cfg.dataset.name}, seed {args.seed}")
    for column in ("round", "test acc", "val acc", "labels used", "uploaded", "upload obj. gain", "blurred/dropped"):
        table.add_column(column, justify="right")
    for r in record["rounds"]:
        p = r.get("privacy_total", {})
        table.add_row(str(r["round"]), f"{r['test_accuracy']:.3f}", f"{r['validation_accuracy']:.3f}",
                      str(r["labels_used"]), str(r.get("uploaded", "")), f"{r.get('upload_objective_gain', 0):.5f}",
                      f"{p.get('blurred', 0)}/{p.get('dropped', 0)}")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datagames dual", description="DUAL: two-stage upload + labeling.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval", help="compare policies on the same seeds; writes a results folder with a plot")
    ev.add_argument("--config", default="dual_default", help="config name in configs/ or a YAML path")
    ev.add_argument("--policies", default="random/random,entropy,margin,submodular-independent,"
                                          "submodular-interactive,submodular-centralized,greedy,interactive,oracle",
                    help="comma-separated specs UPLOAD[/LABELER]")
    ev.add_argument("--seeds", type=int, default=3)
    ev.add_argument("--first-seed", type=int, default=0)
    ev.add_argument("--workers", type=int, default=1, help="local processes (default 1)")
    ev.add_argument("--baseline", default="random/random", help="spec the summary compares against")
    ev.add_argument("--data-dir", default=None, help="dataset folder (else $DATAGAMES_DATA_DIR)")
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    ev.add_argument("--out", default=None, help="results folder (default: results/<config>)")
    ev.set_defaults(func=cmd_eval)
    rep = sub.add_parser("report", help="re-render summary.md and accuracy.png from a results folder")
    rep.add_argument("folder")
    rep.add_argument("--baseline", default="random/random")
    rep.set_defaults(func=cmd_report)
    run = sub.add_parser("run", help="one episode of one policy spec, printed round by round")
    run.add_argument("--config", default="dual_default")
    run.add_argument("--policy", default="submodular-independent")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--data-dir", default=None)
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    from datagames_env.config import ConfigError
    from datagames_env.datasets import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ValueError) as exc:
        print(f"datagames dual: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
