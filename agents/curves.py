"""Training curves of RLlib runs: mean episode return (summed over robots) against agent steps and wall time.

``python -m agents.curves OUT_STEM LABEL=RUN_DIR[,RUN_DIR...] ...`` reads each run's ``history.json`` (the rows
:func:`agents.rllib_train.train` writes: cumulative ``agent_steps``, ``elapsed_s`` since that run's start; its
TensorBoard scalars for a run stopped early) and
writes ``OUT_STEM.csv`` (label, iteration, agent_steps, wall_s, episode_return_mean) and ``OUT_STEM.png`` (two
panels). Runs joined by commas are one training continued with ``--resume``: their wall times are chained.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def run_history(run_dir: str | Path) -> list[dict]:
    """A run's ``history.json``, or, for a run stopped before writing it, the same rows from its TensorBoard
    scalars (``elapsed_s`` from the event wall times, counted from the first iteration's end)."""
    path = Path(run_dir) / "history.json"
    if path.is_file():
        return json.loads(path.read_text())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    returns = events.Scalars("env_runners/episode_return_mean")
    if not returns:
        raise ValueError(f"{run_dir}: neither history.json nor TensorBoard returns")
    start = returns[0].wall_time
    return [{"agent_steps": e.step, "elapsed_s": e.wall_time - start, "episode_return_mean": e.value}
            for e in returns]


def curve_rows(label: str, run_dirs: list[str | Path]) -> list[dict]:
    rows, wall_offset, iteration = [], 0.0, 0
    for run_dir in run_dirs:
        history = run_history(run_dir)
        for row in history:
            iteration += 1
            rows.append({"label": label, "iteration": iteration, "agent_steps": int(row["agent_steps"]),
                         "wall_s": round(wall_offset + float(row["elapsed_s"]), 2),
                         "episode_return_mean": float(row["episode_return_mean"])})
        if history:
            wall_offset += float(history[-1]["elapsed_s"])
    return rows


def write_curves(stem: str | Path, runs: dict[str, list[str | Path]], title: str = "") -> tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.png`` for ``runs`` (label -> run folders, chained); returns both paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    by_label = {label: curve_rows(label, dirs) for label, dirs in runs.items()}
    csv_path, png_path = stem.with_suffix(".csv"), stem.with_suffix(".png")
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "iteration", "agent_steps", "wall_s",
                                                    "episode_return_mean"])
        writer.writeheader()
        for rows in by_label.values():
            writer.writerows(rows)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for label, rows in by_label.items():
        returns = [r["episode_return_mean"] for r in rows]
        axes[0].plot([r["agent_steps"] / 1e6 for r in rows], returns, label=label, lw=1)
        axes[1].plot([r["wall_s"] / 60 for r in rows], returns, label=label, lw=1)
    axes[0].set_xlabel("agent steps (millions)")
    axes[1].set_xlabel("wall time (minutes)")
    axes[0].set_ylabel("episode return (sum over robots)")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m agents.curves OUT_STEM LABEL=RUN_DIR[,RUN_DIR...] ...")
    runs = {}
    for arg in sys.argv[2:]:
        label, _, dirs = arg.partition("=")
        if not dirs:
            raise SystemExit(f"'{arg}': expected LABEL=RUN_DIR[,RUN_DIR...]")
        runs[label] = dirs.split(",")
    print(*write_curves(sys.argv[1], runs))
