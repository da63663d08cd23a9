"""marl-eval results: the JSON of instadeepai/marl-eval, and its statistics (IQM, bootstrap confidence intervals).

``datagames eval`` writes ``marl_eval.json`` beside ``results.json``, so analytic baselines, RLlib, SB3 and
BenchMARL runs are compared with the same statistics (BenchMARL writes this format for its own evaluations too)::

    {environment: {task: {algorithm: {"seed_<k>": {"step_0": {"step_count": S, "return": [...],
                                                              "final_distance": [...]},
                                                   "absolute_metrics": {"return": [...], "final_distance": [...]}}}}}}

``environment`` is ``datagames`` (or the scenario), ``task`` the config's name, ``algorithm`` the policy:
its name for registered policies, and for a checkpoint its kind and run folder with the training seed taken out
(``benchmarl:runs/train/default-mappo-seed2/checkpoint`` -> ``benchmarl:default-mappo``, run ``seed_2``), so the
training seeds of one recipe are the runs of one algorithm. A policy without training (the analytic baselines) is
one run, ``seed_0``. Each run's lists hold one value per evaluation episode (the evaluation seeds, in order);
``step_count`` is the agent steps the checkpoint trained (``datagames_meta.json``), 0 without training.

Statistics (:func:`aggregate`): the interquartile mean over episodes, with a 95% confidence interval from a
stratified hierarchical bootstrap (within each task: resample the runs, then the episodes of each drawn run), so a
learned policy's interval carries the spread between training seeds and an analytic one's the spread between
episodes. marl-eval itself (``id-marl-eval`` 0.0.4) pins pandas 1.4.4, which has no wheel for Python 3.11 and does
not build here: these few lines of numpy replace it; its JSON files (and BenchMARL's) load with :func:`load`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..scenarios import DEFAULT_SCENARIO

FILE = "marl_eval.json"
METRICS = ("return", "final_distance")
_SEED = re.compile(r"[-_]?seed(\d+)")


def algorithm_and_run(policy: str) -> tuple[str, int, int]:
    """A policy spec -> (algorithm name, training seed, agent steps trained) for the marl-eval JSON."""
    from ..policy import CHECKPOINT_KINDS

    kind, sep, path = policy.partition(":")
    if not sep or kind not in CHECKPOINT_KINDS:
        return policy, 0, 0
    p = Path(path)
    folder = p.parent if p.name in ("checkpoint", "policy.pt", "model.zip") else p
    meta_file = next((f for f in (p / "datagames_meta.json", p.parent / "datagames_meta.json") if f.is_file()), None)
    meta = json.loads(meta_file.read_text()) if meta_file is not None else {}
    match = _SEED.search(folder.name)
    seed = meta.get("settings", {}).get("seed", int(match.group(1)) if match else 0)
    steps = int(meta.get("agent_steps", 0) or 0)
    recipe = _SEED.sub("", folder.name) or folder.name
    return f"{kind}:{recipe}", int(seed), steps


def marl_eval_data(payload: dict, task: str | None = None) -> dict:
    """The marl-eval JSON (module docstring) of an evaluation payload (``harness.evaluate``)."""
    environment = payload.get("scenario", DEFAULT_SCENARIO)
    task = task or payload.get("task") or "task"
    runs: dict[str, dict[str, dict]] = {}
    for policy in payload["policies"]:
        episodes = [e for e in payload["episodes"] if e["policy"] == policy]
        algorithm, seed, steps = algorithm_and_run(policy)
        metrics = {m: [float(e[m]) for e in episodes if isinstance(e.get(m), (int, float))] for m in METRICS}
        metrics = {m: v for m, v in metrics.items() if v}
        run = {"step_0": {"step_count": steps, **metrics}, "absolute_metrics": dict(metrics)}
        run_key = f"seed_{seed}"
        if run_key in runs.setdefault(algorithm, {}):  # two policies map to one run: keep both, distinctly
            run_key = f"seed_{seed}_{policy}"
        runs[algorithm][run_key] = run
    return {environment: {task: runs}}


def write_marl_eval(out: str | Path, payload: dict, task: str | None = None) -> Path:
    path = Path(out) / FILE
    path.write_text(json.dumps(marl_eval_data(payload, task), indent=1))
    return path


def load(*paths: str | Path) -> dict:
    """Merge marl-eval JSON files (ours, BenchMARL's, marl-eval's) into one nested dict."""
    merged: dict = {}
    for path in paths:
        for env, tasks in json.loads(Path(path).read_text()).items():
            for task, algorithms in tasks.items():
                for algorithm, runs in algorithms.items():
                    merged.setdefault(env, {}).setdefault(task, {}).setdefault(algorithm, {}).update(runs)
    return merged


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean at 25%)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(values, dtype=np.float64), 0.25))


def _episodes(data: dict, algorithm: str, metric: str) -> dict[str, list[np.ndarray]]:
    """task -> one array of episode values per run of ``algorithm``."""
    out: dict[str, list[np.ndarray]] = {}
    for tasks in data.values():
        for task, algorithms in tasks.items():
            for run in algorithms.get(algorithm, {}).values():
                values = run.get("absolute_metrics", {}).get(metric)
                if values:
                    out.setdefault(task, []).append(np.asarray(values, dtype=np.float64))
    return out


def aggregate(data: dict, metric: str = "final_distance", statistic=iqm, resamples: int = 2000,
              confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, Any]]:
    """algorithm -> ``{"point", "low", "high", "runs", "episodes", "mean"}``: the statistic (IQM) over every episode
    of every task, and its confidence interval from the stratified hierarchical bootstrap (module docstring)."""
    rng = np.random.default_rng(seed)
    algorithms = sorted({a for tasks in data.values() for algs in tasks.values() for a in algs})
    out = {}
    for algorithm in algorithms:
        by_task = _episodes(data, algorithm, metric)
        if not by_task:
            continue
        pooled = np.concatenate([v for runs in by_task.values() for v in runs])
        draws = np.empty(resamples)
        for k in range(resamples):
            sample = []
            for runs in by_task.values():  # stratified: every task keeps its number of runs and episodes
                for r in rng.integers(len(runs), size=len(runs)):
                    sample.append(runs[r][rng.integers(len(runs[r]), size=len(runs[r]))])
            draws[k] = statistic(np.concatenate(sample))
        tail = (1.0 - confidence) / 2
        out[algorithm] = {"point": statistic(pooled), "low": float(np.quantile(draws, tail)),
                          "high": float(np.quantile(draws, 1 - tail)), "mean": float(pooled.mean()),
                          "runs": sum(len(r) for r in by_task.values()), "episodes": int(pooled.size)}
    return out


def comparison_figure(distance: dict[str, dict[str, Any]], order: list[str], metric: str = "final L2 distance "
                      "to the target", lower_is_better: bool = True):
    """One row per algorithm (``order``, best first): the IQM point and its 95% bootstrap interval (``aggregate``).
    Constrained layout sizes the margin to the longest name, so the plot keeps its width and nothing is cut."""
    from .reports.base import new_figure

    width = 4.5 + 0.075 * max((len(a) for a in order), default=10)  # the names' column, then the plot's 4.5 in
    fig, ax = new_figure(figsize=(width, 0.4 * len(order) + 1.5))
    for y, a in enumerate(order):
        d = distance[a]
        ax.plot([d["low"], d["high"]], [y, y], color="tab:blue", linewidth=6, alpha=0.4, solid_capstyle="butt")
        ax.plot([d["point"]], [y], "o", color="tab:blue")
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'lower' if lower_is_better else 'higher'} is better)")
    ax.set_title("IQM over evaluation episodes, 95% stratified bootstrap CI", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def save_comparison(fig, path: str | Path, dpi: int = 120) -> dict:
    """Write the comparison figure with a tight box (labels never cut); returns its ``figure_info``."""
    from .reports.base import save_figure

    return save_figure(fig, Path(path), dpi)
