"""Training curves of `datagames train` runs: mean episode return (summed over robots) against agent steps.

python docs/results/learned/plot_training.py OUT.png LABEL=RUN_DIR[,RUN_DIR...] [LABEL=...]
Reads each run's history.json (written by RLlib and SB3 training alike). Several runs under one label (training
seeds) are drawn as their mean with a band of +- one standard deviation.
"""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, runs: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for spec in runs:
        label, _, run_dirs = spec.partition("=")
        histories = [json.loads((Path(d) / "history.json").read_text()) for d in run_dirs.split(",")]
        length = min(len(h) for h in histories)
        steps = np.array([h["agent_steps"] for h in histories[0][:length]])
        returns = np.array([[h["episode_return_mean"] for h in history[:length]] for history in histories])
        mean = returns.mean(axis=0)
        (line,) = ax.plot(steps, mean, label=f"{label} ({len(histories)} seed{'s' if len(histories) > 1 else ''})")
        if len(histories) > 1:
            std = returns.std(axis=0)
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("agent steps")
    ax.set_ylabel("mean episode return (sum over robots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
