"""Training curves of `datagames train` runs: mean episode return (summed over robots) against agent steps.

python docs/results/learned/plot_training.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
Reads each run's history.json (written by RLlib and SB3 training alike).
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(out: str, runs: list[str]) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for spec in runs:
        label, _, run_dir = spec.partition("=")
        history = json.loads((Path(run_dir) / "history.json").read_text())
        ax.plot([h["agent_steps"] for h in history], [h["episode_return_mean"] for h in history], label=label)
    ax.set_xlabel("agent steps")
    ax.set_ylabel("mean episode return (sum over robots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
