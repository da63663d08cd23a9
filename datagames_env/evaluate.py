"""Evaluation harness: every policy on the same seeds (common random numbers), one results folder.

``datagames eval --config mnist_datagames --policies uniform,random,greedy,interactive,oracle --seeds 10``

Writes ``results.json`` (everything), ``rounds.csv`` (per policy, seed, round: distance, reward, class
counts, messages, sweeps, wall time, lower bound), ``final.csv`` (per policy and seed), ``distance.png``
(mean and spread per round, the lower bound drawn), ``final_counts.png`` (final class counts vs target) and
``summary.md`` (the table). A job is (policy, seed); jobs run in local processes or as Ray tasks: each job
builds its own environment from the config and seed, so results do not depend on where they ran.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import EnvConfig, load_config


@dataclass(frozen=True)
class Job:
    config: dict           # EnvConfig as a dict (picklable, JSON-able)
    policy: str
    seed: int


def episode_lower_bound(cloud0: np.ndarray, target: np.ndarray, budget_per_round: int, rounds: int) -> list[float]:
    """L2 lower bound on the distance after r rounds, for any policy: relaxing a >= 0 leaves only the
    budget 1'x <= r * N * n_cache on everything uploaded, so the bound is the distance from target - cloud0
    to that half-space: max(0, 1'(target - cloud0) - r N n_cache) / sqrt(C) (Lemma 6 over r rounds)."""
    need = float(np.sum(target - cloud0))
    return [max(0.0, need - r * budget_per_round) / math.sqrt(len(target)) for r in range(rounds + 1)]


def run_job(job: Job, on_round=None, env=None) -> dict:
    """Play one episode of one policy; the record has everything the tables and plots need.
    ``on_round(record_of_the_round)`` is called after every step (progress bars)."""
    import datagames_env
    from datagames_env.policy import make_policy

    env = env if env is not None else datagames_env.parallel_env(EnvConfig.model_validate(job.config))
    policy = make_policy(job.policy, env)
    observations, infos = env.reset(seed=job.seed)
    policy.reset(job.seed)
    core = env.core
    cfg = env.config
    rounds = [{"round": 0, "distance": float(core.distance[0]), "reward": 0.0, "messages": 0, "sweeps": 0,
               "wall_time_s": 0.0, "cloud_counts": core.cloud_counts[0].tolist()}]
    final_accuracy = None
    while env.agents:
        t = time.perf_counter()
        actions = policy.act(observations, infos)
        decide = time.perf_counter() - t
        observations, rewards, _, _, infos = env.step(actions)
        stats = getattr(policy, "last_stats", {}) or {}
        info = next(iter(infos.values()))
        rounds.append({"round": len(rounds), "distance": info["distance"], "reward": float(next(iter(rewards.values()))),
                       "messages": int(stats.get("messages", 0)), "sweeps": int(stats.get("sweeps", 0)),
                       "wall_time_s": decide, "cloud_counts": np.asarray(info["cloud_counts"]).tolist()})
        if on_round is not None:
            on_round(rounds[-1])
        final_accuracy = info.get("final_test_accuracy", final_accuracy)
    bound = episode_lower_bound(np.asarray(rounds[0]["cloud_counts"]), core.target_counts, cfg.upload_budget,
                                cfg.rounds) if cfg.loss == "l2" else [float("nan")] * (cfg.rounds + 1)
    for record, b in zip(rounds, bound):
        record["lower_bound"] = b
    uploads = np.asarray(rounds[-1]["cloud_counts"]) - np.asarray(rounds[0]["cloud_counts"])
    rare = cfg.stream.rare_classes
    rare_share = float(uploads[list(rare)].sum() / uploads.sum()) if rare and uploads.sum() > 0 else None
    return {"policy": job.policy, "seed": job.seed, "rounds": rounds, "final_distance": rounds[-1]["distance"],
            "rare_upload_share": rare_share,
            "initial_distance": rounds[0]["distance"], "final_test_accuracy": final_accuracy,
            "messages": sum(r["messages"] for r in rounds), "policy_time_s": sum(r["wall_time_s"] for r in rounds),
            "return": float(sum(r["reward"] for r in rounds)),
            "target_counts": core.target_counts.tolist(), "class_names": list(env.class_names)}


def _worker_init() -> None:
    # one intra-op thread per worker: several workers on few cores must not oversubscribe
    import torch

    torch.set_num_threads(1)


def _run_local(jobs: list[Job], workers: int, on_done) -> list[dict]:
    if workers <= 1:
        return [on_done(run_job(job)) for job in jobs]
    results = []
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        for future in as_completed(futures):
            results.append(on_done(future.result()))
    return results


def _run_ray(jobs: list[Job], address: str, on_done) -> list[dict]:
    import ray

    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(run_job)
    pending = [remote.remote(job) for job in jobs]
    results = []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        results.append(on_done(ray.get(done[0])))
    return results


def evaluate(config: str | dict | EnvConfig | None, policies: list[str], seeds: list[int], out_dir: str | Path,
             workers: int = 1, ray_address: str | None = None, progress: bool = True, **overrides) -> dict:
    """Run every (policy, seed) job, write the results folder, return the summary dict."""
    cfg = load_config(config, **overrides)
    import baselines.policies  # noqa: F401

    from .policy import POLICIES, is_checkpoint_spec, make_policy  # noqa: F401  validate names before any work starts
    unknown = [p for p in policies if p not in POLICIES and not is_checkpoint_spec(p)]
    missing = [p for p in policies if is_checkpoint_spec(p) and not Path(p.partition(":")[2]).exists()]
    if missing:
        raise ValueError(f"checkpoints not found: {missing}")
    if unknown:
        raise ValueError(f"unknown policies {unknown}; available: {sorted(POLICIES)}, or rllib:PATH, rllib-sample:PATH, sb3:PATH, sb3-sample:PATH")
    jobs = [Job(cfg.model_dump(), policy, seed) for seed in seeds for policy in policies]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress)
    started = time.perf_counter()
    with bar:
        task = bar.add_task(f"{len(policies)} policies x {len(seeds)} seeds", total=len(jobs))

        def on_done(record: dict) -> dict:
            bar.update(task, advance=1, description=f"{record['policy']} seed {record['seed']}: "
                                                    f"final distance {record['final_distance']:.2f}")
            return record

        records = None
        if ray_address:
            try:
                records = _run_ray(jobs, ray_address, on_done)
            except ImportError:
                warnings.warn("ray is not installed (pip install 'ray[default]'); running in local processes")
            except Exception as exc:  # an unreachable cluster must not lose the evaluation
                warnings.warn(f"Ray cluster at {ray_address!r} unavailable ({exc}); running in local processes")
        if records is None:
            records = _run_local(jobs, workers, on_done)
    elapsed = time.perf_counter() - started
    order = {(p, s): k for k, (p, s) in enumerate((j.policy, j.seed) for j in jobs)}
    records.sort(key=lambda r: order[(r["policy"], r["seed"])])
    summary = summarise(records, policies)
    payload = {"config": cfg.model_dump(), "policies": policies, "seeds": list(seeds), "elapsed_s": elapsed,
               "summary": summary, "episodes": records}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    _write_csv(out, records)
    _plot(out, records, policies, cfg)
    (out / "summary.md").write_text(summary_markdown(summary, cfg, len(seeds), elapsed))
    return payload


def summarise(records: list[dict], policies: list[str]) -> dict:
    summary = {}
    for p in policies:
        mine = [r for r in records if r["policy"] == p]
        final = np.array([r["final_distance"] for r in mine])
        acc = [r["final_test_accuracy"] for r in mine if r["final_test_accuracy"] is not None]
        summary[p] = {"final_distance_mean": float(final.mean()), "final_distance_std": float(final.std(ddof=1)) if len(final) > 1 else 0.0,
                      "final_accuracy_mean": float(np.mean(acc)) if acc else None,
                      "final_accuracy_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
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


def policy_label(policy: str) -> str:
    """``rllib:runs/train/default-ppo-.../checkpoint`` -> ``rllib:default-ppo-...`` for tables and legends."""
    kind, sep, path = policy.partition(":")
    if not sep or kind not in ("rllib", "rllib-sample", "sb3", "sb3-sample"):
        return policy
    p = Path(path)
    return f"{kind}:{p.parent.name if p.name == 'checkpoint' else p.name}"


def summary_markdown(summary: dict, cfg: EnvConfig, n_seeds: int, elapsed: float) -> str:
    lines = [f"# {cfg.dataset.name}: {cfg.n_robots} robots, {cfg.rounds} rounds, {cfg.obs_per_round} obs/round, "
             f"n_cache {cfg.n_cache}, initial cloud {cfg.initial_cloud_size}, target {cfg.target.kind}",
             "", f"{n_seeds} seeds (mean ± std), {cfg.loss} distance to the target; wall time {elapsed:.0f} s", "",
             "| policy | final distance | vs greedy | vs oracle | cloud model test accuracy | messages / episode |"
             " rare-class share of uploads |",
             "|---|---|---|---|---|---|---|"]
    for p, s in summary.items():
        acc = f"{s['final_accuracy_mean']:.4f} ± {s['final_accuracy_std'] or 0:.4f}" if s["final_accuracy_mean"] is not None else "n/a"
        vs_g = f"{s['improvement_vs_greedy_pct']:+.1f}%" if s.get("improvement_vs_greedy_pct") is not None else ""
        vs_o = f"{s['improvement_vs_oracle_pct']:+.1f}%" if s.get("improvement_vs_oracle_pct") is not None else ""
        rare = f"{s['rare_upload_share_mean']:.3f}" if s.get("rare_upload_share_mean") is not None else "n/a"
        lines.append(f"| {policy_label(p)} | {s['final_distance_mean']:.2f} ± {s['final_distance_std']:.2f} | {vs_g} | "
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


def _plot(out: Path, records: list[dict], policies: list[str], cfg: EnvConfig) -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for p in policies:
        d = np.array([[x["distance"] for x in r["rounds"]] for r in records if r["policy"] == p])
        mean, std = d.mean(axis=0), d.std(axis=0)
        x = np.arange(d.shape[1])
        ax.plot(x, mean, marker="o", ms=3, label=policy_label(p))
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    bound = [x["lower_bound"] for x in records[0]["rounds"]]
    if not np.isnan(bound).all():
        ax.plot(np.arange(len(bound)), bound, "k--", lw=1, label="lower bound")
    ax.set_xlabel("round")
    ax.set_ylabel(f"{cfg.loss} distance to target")
    ax.set_title(f"{cfg.dataset.name}: {cfg.n_robots} robots, n_cache {cfg.n_cache} (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "distance.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    names = records[0]["class_names"]
    x = np.arange(len(names))
    width = 0.8 / (len(policies) + 1)
    ax.bar(x - 0.4 + width / 2, records[0]["target_counts"], width=width, color="pink", label="target")
    for k, p in enumerate(policies, start=1):
        counts = np.mean([r["rounds"][-1]["cloud_counts"] for r in records if r["policy"] == p], axis=0)
        ax.bar(x - 0.4 + width * (k + 0.5), counts, width=width, label=policy_label(p))
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("samples in the cloud (final, mean over seeds)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "final_counts.png", dpi=120)
    plt.close(fig)
