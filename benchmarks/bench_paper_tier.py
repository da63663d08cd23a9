"""The paper tier's per-robot MLP training on p2p, three ways (issue 17: "where the paper tier can batch, do it;
measure it"). Printed, never asserted; nothing here changes the library.

    python benchmarks/bench_paper_tier.py                        # p2p_default, paper tier, 1 and 16 envs
    python benchmarks/bench_paper_tier.py --envs 1 4 16 64 --repeat 5

The training sets are the ones a paper-tier ``p2p_default`` reset hands ``train_classifiers`` (its robots' initial
labeled sets, captured once); ``--envs B`` copies them for B envs with other seeds, as a ``LoopedBatch`` of B
scenarios would train them. Per B, seconds of one round's training (min over ``--repeat``), all of the same
models, the same seeded initialisations, minibatch plans and Adam:

=============  ======================================================================================
loop           one model after another (``_fit``: what a model costs alone)
stacked-env    each env's robots as one stacked model (``train_classifiers``: the library's path today,
               batched matmuls, ``baddbmm``), the envs one after another (a ``LoopedBatch``)
stacked-all    every robot of every env as ONE stacked model (``train_classifiers`` on all B x N sets)
vmap-all       the same as ``stacked-all`` with ``torch.func.vmap`` over ``functional_call`` of the module
=============  ======================================================================================

It also prints the largest difference of the trained models' logits on a probe batch against ``loop`` (float32
rounding of batched against single matmuls: the paths agree to a tolerance, not bitwise). One torch thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def capture_sets(config: str, seed: int) -> tuple[list, list, list, int, object, float]:
    """The (features, labels, seeds) of the first ``train_classifiers`` call of a paper-tier reset."""
    import datagames_env.scenarios.p2p as p2p
    from datagames_env.scenarios import make_scenario

    captured = {}
    original = p2p.train_classifiers

    def record(features, labels, n_classes, cfg, seeds, **kwargs):
        captured.setdefault("call", (list(features), list(labels), list(seeds), n_classes, cfg,
                                     kwargs.get("dropout", 0.0)))
        return original(features, labels, n_classes, cfg, seeds, **kwargs)

    p2p.train_classifiers = record
    try:
        make_scenario(config, **{"perception.tier": "paper"}).reset(seed=seed)
    finally:
        p2p.train_classifiers = original
    return captured["call"]


def train_loop(features, labels, seeds, n_classes, cfg, dropout):
    from datagames_env.perception.models import _fit, _prepare_training

    jobs = [_prepare_training(f, y, n_classes, cfg, s) for f, y, s in zip(features, labels, seeds)]
    for job in jobs:
        _fit(job, cfg, dropout)
    return [job.model for job in jobs], jobs


def train_stacked(features, labels, seeds, n_classes, cfg, dropout):
    from datagames_env.perception import train_classifiers

    return [c.model for c in train_classifiers(features, labels, n_classes, cfg, seeds, dropout=dropout)], None


def train_vmap(features, labels, seeds, n_classes, cfg, dropout):
    """``_train_stacked`` with the forward pass as ``vmap(functional_call)`` of the module (same plan, masks, loss
    and Adam), a prototype of ``torch.func`` stacking."""
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call, stack_module_state, vmap

    from datagames_env.perception.models import _prepare_training

    jobs = [_prepare_training(f, y, n_classes, cfg, s) for f, y, s in zip(features, labels, seeds)]
    steps, n_models = jobs[0].steps, len(jobs)
    rows = torch.tensor([min(j.n, cfg.batch_size) for j in jobs])
    width = int(rows.max())
    offsets = torch.tensor([0] + [j.n for j in jobs[:-1]]).cumsum(0)
    x_all, y_all = torch.cat([j.x for j in jobs]), torch.cat([j.y for j in jobs])
    plan = torch.zeros((steps, n_models, width), dtype=torch.int64)
    for k, j in enumerate(jobs):
        own = j.batches if j.batches is not None else torch.arange(j.n).expand(steps, j.n)
        plan[:, k, :own.shape[1]] = own + int(offsets[k])
    weight = (torch.arange(width)[None, :] < rows[:, None]).to(torch.float32)
    embedding_dim = jobs[0].model.head.in_features
    masks = torch.ones((1, n_models, width, embedding_dim)).expand(steps, -1, -1, -1)
    if dropout > 0:
        keep = 1.0 - dropout
        masks = torch.zeros((steps, n_models, width, embedding_dim))
        for k, j in enumerate(jobs):
            for step in range(steps):
                masks[step, k, :rows[k]] = (torch.rand((int(rows[k]), embedding_dim), generator=j.generator)
                                            < keep).to(torch.float32) / keep
    params, _ = stack_module_state([j.model for j in jobs])
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    base = jobs[0].model
    body = {k[len("body."):]: k for k in params if k.startswith("body.")}
    head = {k[len("head."):]: k for k in params if k.startswith("head.")}

    def logits_of(p, x, mask):
        hidden = functional_call(base.body, {k: p[v] for k, v in body.items()}, (x,))
        return functional_call(base.head, {k: p[v] for k, v in head.items()}, (F.relu(hidden) * mask,))

    batched = vmap(logits_of)
    optimizer = torch.optim.Adam(list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for step in range(steps):
        index = plan[step]
        logits = batched(params, x_all[index], masks[step])
        losses = F.cross_entropy(logits.reshape(n_models * width, -1), y_all[index].reshape(-1),
                                 reduction="none").reshape(n_models, width)
        loss = ((losses * weight).sum(dim=1) / rows).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for k, j in enumerate(jobs):
            for name, parameter in j.model.named_parameters():
                parameter.copy_(params[name][k])
    return [j.model for j in jobs], None


def _probe_logits(models, features):
    import torch

    with torch.no_grad():
        return [m.eval()(torch.as_tensor(f[:64], dtype=torch.float32)) for m, f in zip(models, features)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="p2p_default")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeat", type=int, default=3, help="timings per path; the minimum is printed")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    os.system("uptime")
    features, labels, seeds, n_classes, cfg, dropout = capture_sets(args.config, args.seed)
    n = len(features)
    print(f"{args.config} paper tier: {n} models per env, {cfg.train_steps} Adam steps, batch {cfg.batch_size}, "
          f"hidden {cfg.hidden}, embedding {cfg.embedding_dim}, dropout {dropout}; set sizes "
          f"{[len(y) for y in labels]}", flush=True)
    for b in args.envs:
        sets = (features * b, labels * b, [s + 7919 * e for e in range(b) for s in seeds])

        def per_env(f, y, s):
            out = []
            for e in range(b):
                out += train_stacked(f[e * n:(e + 1) * n], y[e * n:(e + 1) * n], s[e * n:(e + 1) * n], n_classes,
                                     cfg, dropout)[0]
            return out, None

        paths = {"loop": lambda f, y, s: train_loop(f, y, s, n_classes, cfg, dropout),
                 "stacked-env": per_env,
                 "stacked-all": lambda f, y, s: train_stacked(f, y, s, n_classes, cfg, dropout),
                 "vmap-all": lambda f, y, s: train_vmap(f, y, s, n_classes, cfg, dropout)}
        times, logits = {}, {}
        for name, path in paths.items():
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                models, _ = path(*sets)
                best = min(best, time.perf_counter() - start)
            times[name] = best
            logits[name] = _probe_logits(models, sets[0])
        for name, seconds in times.items():
            diff = max(float((a - r).abs().max()) for a, r in zip(logits[name], logits["loop"]))
            print(f"B = {b:3d} ({b * n:4d} models) {name:12s} {seconds * 1e3:9.1f} ms  "
                  f"{times['loop'] / seconds:5.1f}x loop  {times['stacked-env'] / seconds:5.1f}x stacked-env  "
                  f"max |logit - loop| {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
