"""Fleet facility-location gain of the stage-1 policies on the SAME rounds (same observations, same cloud).

    DATAGAMES_DATA_DIR=../shared/datasets .venv/bin/python docs/results/dual/same_round_objective.py \
        dual_mnist dual_kmnist        # about a minute; round 0 of seeds 0..4

Prints, per policy, the gain f(cloud + uploads) - f(cloud) over the union of the fleet's observations (mean ± std
over seeds) and its mean ratio to submodular-independent (Fleet-AL's "distributed").
"""

import sys

import numpy as np
import torch

from baselines.dual_policies import make_dual_policy
from baselines.submodular import fleet_objective
from datagames_env.faces.pettingzoo import DualParallelEnv as parallel_env  # dual unless the config says otherwise

NAMES = ["random", "entropy", "margin", "greedy", "submodular-independent", "submodular-interactive",
         "submodular-centralized"]


def main(configs: list[str]) -> None:
    torch.set_num_threads(1)
    for config in configs:
        env = parallel_env(config)
        gains: dict[str, list[float]] = {n: [] for n in NAMES}
        for seed in range(5):
            obs, infos = env.reset(seed=seed)
            embeddings, coverages = list(env.stream_embeddings), list(env.coverage)
            for name in NAMES:
                policy = make_dual_policy(name, env)
                policy.reset(seed)
                actions = policy.act(obs, infos)
                picks = [np.argsort(-actions[a], kind="stable")[:env.config.n_cache] for a in env.agents]
                gains[name].append(fleet_objective(embeddings, picks, coverages, kernel=env.config.kernel,
                                                   scale=env.config.kernel_scale)["gain"])
        reference = np.array(gains["submodular-independent"])
        print(f"{config}\n| policy | fleet objective gain | vs submodular-independent |\n|---|---|---|")
        for name in NAMES:
            g = np.array(gains[name])
            print(f"| {name} | {g.mean():.4f} ± {g.std():.4f} | {100 * np.mean(g / reference - 1):+.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["dual_default"])
