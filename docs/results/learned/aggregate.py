"""Group an evaluation's learned policies by training recipe: one row per recipe over its training seeds.

python docs/results/learned/aggregate.py RESULTS.json [RESULTS.json ...] > table.md

A checkpoint policy ``rllib:.../<recipe>-s<k>/checkpoint`` (or ``rllib-sample:``) belongs to recipe ``<recipe>``;
baselines are rows of their own. Per row: the mean final distance over every (training seed, evaluation seed)
pair, the standard deviation of the per-training-seed means (how much the recipe depends on its training seed),
the ratio to Greedy's mean on the same evaluation seeds, and the messages per episode.
"""

import json
import re
import sys
from collections import defaultdict

import numpy as np


def recipe_of(policy: str) -> tuple[str, str]:
    match = re.match(r"^(rllib|rllib-sample|sb3|sb3-sample):.*/([^/]+?)-s(\d+)/checkpoint/?$", policy)
    if not match:
        return policy, "0"
    return f"{match.group(1)}:{match.group(2)}", match.group(3)


def main(paths: list[str]) -> None:
    finals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    messages: dict[str, list[float]] = defaultdict(list)
    eval_seeds = set()
    for path in paths:
        payload = json.loads(open(path).read())
        for episode in payload["episodes"]:
            recipe, train_seed = recipe_of(episode["policy"])
            finals[recipe][train_seed].append(episode["final_distance"])
            messages[recipe].append(episode.get("messages", 0))
            eval_seeds.add(episode["seed"])
    greedy = np.mean(finals["greedy"]["0"]) if "greedy" in finals else float("nan")
    print(f"evaluation seeds {min(eval_seeds)}-{max(eval_seeds)} ({len(eval_seeds)})\n")
    print("| policy | training seeds | final distance (mean ± std over all episodes) | std of seed means | vs greedy | "
          "messages / episode |")
    print("|---|---|---|---|---|---|")
    for recipe, by_seed in finals.items():
        seed_means = [np.mean(v) for v in by_seed.values()]
        pooled = np.mean([x for v in by_seed.values() for x in v])
        pooled_std = np.std([x for v in by_seed.values() for x in v])
        spread = f"{np.std(seed_means):.2f}" if len(seed_means) > 1 else ""
        print(f"| {recipe} | {len(seed_means) if recipe.startswith(('rllib', 'sb3')) else ''} | {pooled:.2f} ± {pooled_std:.2f} | "
              f"{spread} | {pooled / greedy:.2f}x | {np.mean(messages[recipe]):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
