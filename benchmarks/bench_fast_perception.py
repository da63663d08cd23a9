"""Fast-tier perception (issue 17): per-round cost of the batched heads, and their accuracy against the paper tier.

    python benchmarks/bench_fast_perception.py              # timings + accuracy table
    python benchmarks/bench_fast_perception.py --quick      # fewer repeats, smaller accuracy instance

Timings: one p2p-like round for every (env, robot) head at once: ``add`` the rows a robot labeled this round,
``fit`` every head, ``predict`` its observations plus the samples its peers shared (probabilities and Mahalanobis
OoD scores in the same call). Random features stand in for the extractor's (the cost does not depend on values).
``robot-steps/s`` counts (B x N) / round time for the heads alone: the ceiling perception puts on a vector env.

Accuracy: embedded digits, a public split for the extractor (clean images only, or clean and fogged: the domain
set), robots with labeled sets of several sizes in a clean and a fogged domain; per robot the fast-tier heads
versus the paper tier (a network trained from scratch on the same labeled set, ``train_classifier``) and
scikit-learn's logistic regression on the same frozen features.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from datagames_env.config import PerceptionConfig
from datagames_env.perception.fast import HEADS, BatchedHeads, cached_features
from datagames_env.perception.models import train_classifier


def time_round(b_envs: int, n_robots: int, d: int, n_classes: int = 10, labeled: int = 300, added: int = 20,
               scored: int = 120, head: str = "student", repeats: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    n_rows = 5000
    table = rng.normal(size=(n_rows, d)).astype(np.float32)
    labels = rng.integers(0, n_classes, size=n_rows)
    heads = BatchedHeads(table, labels, n_classes, b_envs, n_robots, head=head)
    heads.add(rng.integers(0, n_rows, size=(b_envs, n_robots, labeled)))
    rounds = [(rng.integers(0, n_rows, size=(b_envs, n_robots, added)),
               rng.integers(0, n_rows, size=(b_envs, n_robots, scored))) for _ in range(repeats + 1)]
    parts = {"add": [], "fit": [], "predict": []}
    for k, (new_ids, query_ids) in enumerate(rounds):
        t0 = time.perf_counter()
        heads.add(new_ids)
        t1 = time.perf_counter()
        heads.fit()
        t2 = time.perf_counter()
        out = heads.predict(query_ids)
        out.novelty("mahalanobis")
        t3 = time.perf_counter()
        if k:  # the first round warms allocators up
            parts["add"].append(t1 - t0)
            parts["fit"].append(t2 - t1)
            parts["predict"].append(t3 - t2)
    ms = {name: 1e3 * float(np.median(values)) for name, values in parts.items()}
    total = sum(ms.values())
    return {"B": b_envs, "N": n_robots, "d": d, "head": head, **ms, "round_ms": total,
            "robot_steps_per_s": b_envs * n_robots / (total / 1e3)}


def accuracy_table(quick: bool) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    from datagames_env.data.datasets import load_dataset
    from datagames_env.data.domains import corrupt

    digits = load_dataset("digits")
    # p2p_default's local model (mlp, hidden 64, embedding 16, 150 Adam steps)
    cfg = PerceptionConfig(model="mlp", hidden=64, embedding_dim=16, train_steps=150)
    order = np.random.default_rng(0).permutation(digits.n_samples)
    public, pool, test = np.sort(order[:500]), np.sort(order[500:1400]), np.sort(order[1400:])
    # one feature array: clean digits, then a fogged copy of every image (a second domain)
    fog = corrupt(digits.as_images().features, "fog", 0.8, seed=1).reshape(digits.n_samples, -1)
    features = np.concatenate([digits.features, fog])
    labels = np.concatenate([digits.labels, digits.labels])
    # two extractors: pretrained on public clean digits only, or on the domain set (half of the public images
    # clean, the other half fogged: disjoint images, as p2p gives domains of one dataset disjoint images)
    half = len(public) // 2
    pretraining = {"clean": public, "clean+fog": np.concatenate([public[:half], public[half:] + digits.n_samples])}
    sizes = [20, 50, 100, 300] if not quick else [20, 100]
    rows = []
    for domain, offset in (("clean", 0), ("fog", digits.n_samples)):
        rng = np.random.default_rng(7)
        sets = [rng.choice(pool, size=size, replace=False) + offset for size in sizes]
        test_rows = test + offset
        ids = np.zeros((1, len(sizes), max(sizes)), dtype=np.int64)
        valid = np.zeros(ids.shape, dtype=bool)
        for k, rows_k in enumerate(sets):
            ids[0, k, :len(rows_k)], valid[0, k, :len(rows_k)] = rows_k, True
        papers = [train_classifier(features[r], labels[r], digits.n_classes, cfg, seed=k, max_threads=1)
                  .accuracy(features, labels, indices=test_rows) for k, r in enumerate(sets)]
        for pretrained_on, public_rows in pretraining.items():
            extracted = cached_features(features, labels, digits.n_classes, cfg, public_rows)
            fast_acc = {}
            for head in HEADS:
                heads = BatchedHeads.from_extractor(extracted, labels, 1, len(sizes), head=head)
                heads.add(ids, valid)
                heads.fit()
                probs = heads.predict(np.broadcast_to(test_rows, (1, len(sizes), len(test_rows)))).probs[0]
                fast_acc[head] = [float((probs[k].argmax(axis=1) == labels[test_rows]).mean())
                                  for k in range(len(sizes))]
            for k, rows_k in enumerate(sets):
                logistic = LogisticRegression(max_iter=5000).fit(extracted.features[rows_k], labels[rows_k])
                rows.append({"domain": domain, "pretrained": pretrained_on, "labeled": len(rows_k),
                             **{f"fast_{h}": fast_acc[h][k] for h in HEADS},
                             "sklearn_logreg": float(logistic.score(extracted.features[test_rows], labels[test_rows])),
                             "paper_tier": papers[k]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the scenarios run with 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 10
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); per round: add 20 rows, fit, predict "
          f"120 rows (+ Mahalanobis) per head; 300 labeled rows per head, 10 classes")
    print(f"{'B':>4} {'N':>3} {'d':>3} {'head':>8} {'add ms':>8} {'fit ms':>8} {'pred ms':>8} {'round ms':>9} "
          f"{'robot-steps/s':>14}")
    shapes = [(1, 3), (64, 3), (16, 12), (256, 3)]
    for d in (16, 32, 64):
        for b_envs, n_robots in shapes:
            for head in (HEADS if (b_envs, n_robots, d) == (64, 3, 16) else ("student",)):
                r = time_round(b_envs, n_robots, d, head=head, repeats=repeats)
                print(f"{r['B']:>4} {r['N']:>3} {r['d']:>3} {r['head']:>8} {r['add']:>8.2f} {r['fit']:>8.2f} "
                      f"{r['predict']:>8.2f} {r['round_ms']:>9.2f} {r['robot_steps_per_s']:>14,.0f}")
    print("\ntest accuracy on digits (397 test images per domain); extractor pretrained on 500 public images; "
          "paper tier: a network trained from scratch on the labeled set")
    header = ["domain", "pretrained", "labeled", *(f"fast_{h}" for h in HEADS), "sklearn_logreg", "paper_tier"]
    print(" ".join(f"{h:>14}" for h in header))
    for row in accuracy_table(args.quick):
        print(" ".join(f"{row[h]:>14}" if isinstance(row[h], (str, int)) else f"{row[h]:>14.3f}" for h in header))


if __name__ == "__main__":
    main()
