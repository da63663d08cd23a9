"""Regime map of the GU-sharing scenario (issue 19): where does the sharing policy matter?

Sweeps the knobs that decide whether curation matters around a base config (one knob at a time, each crossed with
``receiver_keeps``), on the fast perception tier, and runs ``random``, ``oracle`` and (at the chosen points) ``gu``
from ``baselines/p2p_policies.py`` on tuning seeds. The envs of a point step together in one
``make_batched(config, B)``; the policies are the per-robot classes of ``baselines/p2p_policies.py`` unchanged, each
env seen through a B = 1 view (:class:`EnvView`), so their numbers are what ``datagames eval`` measures.

Metric (the GU paper's): the *peers'* rare-domain accuracy, i.e. for each rare domain the final test accuracy of
the robots that never observe it, averaged; and the rare-data share of what the robots that do observe a rare
domain cache after the first feedback (rounds 2..R: round 1 of ``gu`` is random by design).

    PYTHONPATH=. python benchmarks/sweep_p2p.py                       # the map: CSV + PNG + table
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode check --seeds 300-319   # p2p_default on unseen seeds
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode privacy --seeds 300-319 # blur against drop against pass
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode liars --seeds 300-319   # do lying peers hurt themselves?
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode signal --seeds 300-319  # the votes as a rarity signal
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode ablate --seeds 100-109  # the gu rule ablated (tuning) ...
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode ablate --seeds 300-319  # ... and on unseen seeds
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode detectors --seeds 300-302  # paper tier: MC dropout etc.
    PYTHONPATH=. python benchmarks/sweep_p2p.py --mode check --seeds 300-319 --policies random,rllib:checkpoints/p2p-gu

Writes ``docs/results/fidelity_p2p/{sweep,check,privacy,liars,signal,ablate}.csv`` (one row per point, policy and
seed; ``ablate.csv`` keeps the rows of other seeds, so tuning and unseen runs share it) and ``sweep.png`` /
``ablate.png``, and prints a table (mean ± sample std over seeds).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from baselines.p2p_policies import BatchedGUPolicy, GUPolicy, make_p2p_policy  # noqa: E402
from datagames_env.scenarios import make_batched  # noqa: E402
from datagames_env.scenarios.p2p import load_p2p_config  # noqa: E402

OUT = ROOT / "docs" / "results" / "fidelity_p2p"


class EnvView:
    """Env ``b`` of a batched p2p scenario as the B = 1 env the policies of ``baselines/p2p_policies.py`` read."""

    def __init__(self, batch, b: int) -> None:
        self.batch, self.b = batch, b
        self.n_samples, self.n_share = batch.n_samples, batch.n_share
        self.obs_layout, self.sample_feature_dim = batch.obs_layout, batch.sample_feature_dim
        self.possible_agents = [f"robot_{i}" for i in range(batch.n_robots)]
        self.config = batch.config

    def observation_space(self, agent: str):  # the face's spaces: what rllib:PATH checks and maps actions to
        from gymnasium import spaces

        return spaces.Box(self.batch.observation_low, self.batch.observation_high, dtype=np.float32)

    def action_space(self, agent: str):
        from gymnasium import spaces

        return spaces.Box(0.0, 1.0, (self.batch.action_width,), dtype=np.float32)

    def privileged_view(self) -> dict:
        view, b = self.batch.privileged_view(), self.b
        return {"observed_domains": view["observed_domains"][b], "observed_labels": view["observed_labels"][b],
                "labeled_cell_counts": view["labeled_cell_counts"][b], "neighbors": view["neighbors"][b],
                "rare_domains": view["rare_domains"][b], "potential_cell_target": view["potential_cell_target"][b]}


def _per_robot(infos: dict, keys, b: int, i: int) -> dict:
    return {k: infos[k][b, i] for k in keys}


def run_point(config, policy: str, seeds: list[int], gu_batched: bool = True, gu_kwargs: dict | None = None,
              **overrides) -> list[dict]:
    """One episode per seed (all seeds in one batch); one metrics dict per seed. ``gu`` is
    :class:`BatchedGUPolicy` (every env's nets trained in one call, keyword arguments ``gu_kwargs``) unless
    ``gu_batched`` is False."""
    batch = make_batched(config, len(seeds), **overrides)
    if not hasattr(batch, "n_samples"):  # the paper tier's LoopedBatch: its envs' read-outs
        for name in ("n_samples", "n_share", "sample_feature_dim", "domain_names"):
            setattr(batch, name, getattr(batch.envs[0], name))
    cfg = batch.config
    views = [EnvView(batch, b) for b in range(len(seeds))]
    agents = views[0].possible_agents
    if policy == "gu" and gu_batched:
        policies = []
        batched = BatchedGUPolicy(batch, **(gu_kwargs or {}))
        batched.reset(int(seeds[0]))
    else:
        batched = None
        policies = [make_p2p_policy(policy, v) if policy != "gu" or not gu_kwargs else GUPolicy(v, **gu_kwargs)
                    for v in views]
    for p, s in zip(policies, seeds):
        p.reset(int(s))
    obs, infos = batch.reset(np.asarray(seeds))
    start_acc = infos["domain_accuracy"].copy()
    rare_ids = [batch.domain_names.index(d) for d in cfg.rare_domains]
    rare_share_steps, rare_seen_steps, t0 = [], [], time.perf_counter()
    policy_time = 0.0
    for _ in range(cfg.rounds):
        t = time.perf_counter()
        actions = np.zeros((len(seeds), batch.n_robots, batch.action_width), dtype=np.float32)
        if batched is not None:
            actions = batched.act(obs, infos)
        for b, p in enumerate(policies):
            acted = p.act({a: obs[b, i] for i, a in enumerate(agents)},
                          {a: _per_robot(infos, batch.robot_info_keys, b, i) for i, a in enumerate(agents)})
            actions[b] = np.stack([acted[a] for a in agents])
        policy_time += time.perf_counter() - t
        rare_seen_steps.append(np.isin(batch.privileged_view()["observed_domains"], rare_ids).sum(axis=2))
        step = batch.step(actions)
        obs, infos = step.observations, step.infos
        rare_share_steps.append(infos["round_rare_share"].copy())
    names = batch.domain_names
    rare = [names.index(d) for d in cfg.rare_domains]
    sees = np.array([[r.stream.get(names[d], 0) > 0 for d in range(len(names))] for r in cfg.robots])  # (N, D)
    rare_robots = np.flatnonzero(sees[:, rare].any(axis=1))
    final = infos["domain_accuracy"]
    shares = np.stack(rare_share_steps, axis=2)  # (B, N, rounds)
    # recall: the fraction of the rare samples a rare-domain robot observed that it cached (the paper's "caches
    # 88% of rare KMNIST data" read as recall; capped at share_fraction / rare frequency)
    cached_rare = shares * batch.n_share
    seen_rare = np.stack(rare_seen_steps, axis=2)
    rows = []
    for b, seed in enumerate(seeds):
        peer = [final[b, i, d] for d in rare for i in range(cfg.n_robots) if not sees[i, d]]
        peer0 = [start_acc[b, i, d] for d in rare for i in range(cfg.n_robots) if not sees[i, d]]
        own = [final[b, i, d] for d in rare for i in range(cfg.n_robots) if sees[i, d]]
        base = [final[b, i, d] for d in range(len(names)) if d not in rare for i in range(cfg.n_robots)]
        rows.append({
            "policy": policy, "seed": int(seed),
            "peer_rare_acc": float(np.mean(peer)) if peer else float("nan"),
            "peer_rare_gain": float(np.mean(peer) - np.mean(peer0)) if peer else float("nan"),
            "own_rare_acc": float(np.mean(own)) if own else float("nan"),
            "base_acc": float(np.mean(base)) if base else float("nan"),
            "rare_share_after_first": float(shares[b, rare_robots, 1:].mean()) if cfg.rounds > 1 else float("nan"),
            "rare_share_last": float(shares[b, rare_robots, -1].mean()),
            "rare_share_cached": float(infos["rare_share_cached"][b, rare_robots].mean()),
            "rare_recall_after_first": float(cached_rare[b, rare_robots, 1:].sum()
                                             / max(seen_rare[b, rare_robots, 1:].sum(), 1)),
            "rare_recall_last": float(cached_rare[b, rare_robots, -1].sum() / max(seen_rare[b, rare_robots, -1].sum(), 1)),
            "labeled_gain": float((infos["labeled_size"][b]).mean()),
            "n_kept": float(infos["n_kept"][b].mean()),
            "n_blurred": int(infos["total_blurred"][b].sum()) if "total_blurred" in infos else 0,
            "n_dropped": int(infos["total_dropped"][b].sum()) if "total_dropped" in infos else 0,
        })
        liars = getattr(batch, "liars", np.zeros((len(seeds), cfg.n_robots), dtype=bool))
        for i in range(cfg.n_robots):  # per robot: accuracy on the rare domains it never observes, and if it lies
            unseen = [d for d in rare if not sees[i, d]]
            rows[-1][f"peer_rare_acc_r{i}"] = float(final[b, i, unseen].mean()) if unseen else float("nan")
            rows[-1][f"liar_r{i}"] = int(liars[b, i])
        for t in range(cfg.rounds):  # the rare-domain robots' rare share of each round's cache
            rows[-1][f"rare_share_round{t + 1}"] = float(shares[b, rare_robots, t].mean())
    for r in rows:
        r["policy_time_s"] = policy_time / len(seeds)
        r["wall_s"] = (time.perf_counter() - t0) / len(seeds)
    return rows


def feedback_signal(config, seeds: list[int], **overrides) -> dict:
    """What the gu rule can learn: under random sharing, the mean utility peers return for rare-domain and base
    samples and the AUC of utility separating them (0.5: the votes carry no information about rarity)."""
    batch = make_batched(config, len(seeds), **overrides)
    rng = np.random.default_rng(0)
    batch.reset(np.asarray(seeds))
    rare_ids = [batch.domain_names.index(d) for d in batch.config.rare_domains]
    rare_u, base_u = [], []
    for _ in range(batch.config.rounds):
        domains = batch.privileged_view()["observed_domains"]
        step = batch.step(rng.random((len(seeds), batch.n_robots, batch.action_width)))
        cached = np.take_along_axis(domains, step.infos["cached_slots"], axis=2)
        sent = step.infos["sent_mask"]
        is_rare = np.isin(cached, rare_ids)
        rare_u.append(step.infos["feedback_utilities"][sent & is_rare])
        base_u.append(step.infos["feedback_utilities"][sent & ~is_rare])
    r, b = np.concatenate(rare_u), np.concatenate(base_u)
    auc = ((r[:, None] > b[None, :]).mean() + 0.5 * (r[:, None] == b[None, :]).mean()) if len(r) and len(b) else \
        float("nan")
    return {"rare_utility": float(r.mean()), "base_utility": float(b.mean()), "auc": float(auc)}


def summarise(rows: list[dict], key: str) -> tuple[float, float]:
    values = np.array([r.get(key, float("nan")) for r in rows], dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _robots(initial_base: int, initial_rare: int, rare_freq: float, extra: int = 0) -> list[dict]:
    """p2p_default's three robots with given initial labels and rare-domain frequency, plus ``extra`` clean ones."""
    robots = [{"stream": {"digits": 1.0}, "initial_labeled": {"digits": initial_base + initial_rare // 2}},
              {"stream": {"digits": 1 - rare_freq, "fog": rare_freq},
               "initial_labeled": {"digits": initial_base, "fog": initial_rare}},
              {"stream": {"digits": 1 - rare_freq, "snow": rare_freq},
               "initial_labeled": {"digits": initial_base, "snow": initial_rare}}]
    return robots + [dict(robots[0]) for _ in range(extra)]


def _domains(severity: float) -> list[dict]:
    return [{"name": "digits", "dataset": "digits"},
            {"name": "fog", "dataset": "digits", "corruption": "fog", "severity": severity},
            {"name": "snow", "dataset": "digits", "corruption": "snow", "severity": severity}]


def sweep_points(base: dict) -> list[tuple[str, object, dict]]:
    """(knob, value, overrides): one knob at a time around ``base`` (the knobs the robot list depends on are
    rebuilt from ``base``'s values)."""
    b = dict(base)

    def robots(**kw):
        args = {"initial_base": b["initial_base"], "initial_rare": b["initial_rare"], "rare_freq": b["rare_freq"],
                "extra": 0, **kw}
        return _robots(**args)

    points = [("base", 0, {})]
    points += [("share_fraction", v, {"share_fraction": v}) for v in (0.05, 0.2, 0.4)]
    points += [("rare_freq", v, {"robots": robots(rare_freq=v)}) for v in (0.05, 0.1, 0.4)]
    points += [("severity", v, {"domains": _domains(v)}) for v in (0.4, 0.6, 1.0)]
    points += [("initial_labels", v, {"robots": robots(initial_base=v, initial_rare=v)}) for v in (20, 60, 100)]
    points += [("rounds", v, {"rounds": v}) for v in (4, 16)]
    points += [("n_robots", 3 + v, {"robots": robots(extra=v)}) for v in (3,)]
    return points


# --mode ablate: one knob at a time around p2p_default and the gu defaults. (knob, value, env overrides, gu
# keyword arguments); an env knob re-runs random and the oracle too, a gu knob pairs with the default env's runs.
ABLATE_ENV = [
    ("default", "", {}),
    ("vote", "mahalanobis", {"perception.novelty": "mahalanobis"}),
    ("vote", "max_softmax", {"perception.novelty": "max_softmax"}),
    ("vote", "margin", {"perception.novelty": "margin"}),
    ("vote", "entropy q0.8", {"ood.calibration_quantile": 0.8}),
    ("rounds", 16, {"rounds": 16}),
    ("rounds", 32, {"rounds": 32}),
    ("rare_freq", 0.05, {"robots": _robots(100, 100, 0.05)}),  # rarer than the share: recall can reach 100%
]
ABLATE_GU = [
    ("hidden", 16, {"hidden": 16}),
    ("hidden", 256, {"hidden": 256}),
    ("train_steps", 50, {"train_steps": 50}),
    ("train_steps", 800, {"train_steps": 800}),
    ("feedback", "binary", {"feedback": "binary"}),
    ("feedback", "rank", {"feedback": "rank"}),
    ("feedback", "zscore", {"feedback": "zscore"}),
    ("explore", 0.0, {"explore": 0.0}),
    ("explore", 0.3, {"explore": 0.3}),
]


def _variant(knob: str, value) -> str:
    return knob if knob == "default" else f"{knob}={value}"


def run_ablation(config: str, seeds: list[int], only: set[str] | None = None, log=print,
                 done=lambda rows: None) -> list[dict]:
    """Rows of every ablation variant (``only``: these variant names; the default only if named) on ``seeds``;
    ``done(rows)`` after each variant (the CSV is written as the run goes)."""
    rows, t0 = [], time.perf_counter()
    points = [(k, v, env, {}) for k, v, env in ABLATE_ENV] + [(k, v, {}, gu) for k, v, gu in ABLATE_GU]
    for knob, value, env, gu in points:
        name = _variant(knob, value)
        if only and name not in only:
            continue
        for policy in (["random", "oracle", "gu"] if not gu else ["gu"]):
            for r in run_point(config, policy, seeds, gu_kwargs=gu, **env):
                rows.append({"variant": name, "knob": knob, "value": value, **r})
        log(f"[{time.perf_counter() - t0:6.0f} s] {name}")
        done(rows)
    return rows


def _paired(rows: list[dict], variant: str, first: str, second: str) -> list[float]:
    """Per seed, ``first``'s peer rare accuracy minus ``second``'s, in points; random and the oracle of a gu-only
    variant are the default env's."""
    env = variant if any(r["variant"] == variant and r["policy"] != "gu" for r in rows) else "default"

    def acc(policy):
        v = variant if policy == "gu" else env
        return {r["seed"]: r["peer_rare_acc"] for r in rows if r["variant"] == v and r["policy"] == policy}

    a, b = acc(first), acc(second)
    return [100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))]


def ablation_table(rows: list[dict]) -> str:
    head = ("variant | n | gu rare share after 1st | last round | gu rare recall after 1st | peer rare acc | "
            "gu - random (wins) | oracle - gu (wins)")
    lines = [head, "|".join(["---"] * 8)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant and r["policy"] == "gu"]
        if not mine:
            continue
        cells = [f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in (summarise(mine, k) for k in (
            "rare_share_after_first", "rare_share_last", "rare_recall_after_first", "peer_rare_acc"))]
        for first, second in (("gu", "random"), ("oracle", "gu")):
            d = np.array(_paired(rows, variant, first, second))
            cells.append(f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} ({(d > 0).sum()}/{len(d)})" if len(d) > 1 else "")
        lines.append(f"{variant} | {len(mine)} | " + " | ".join(cells))
    return "\n".join(lines)


def _plot_ablation(rows: list[dict], path: Path) -> None:
    """Rare share per round of the rare-domain robots' caches (mean over seeds) for the main variants."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    shown = [("rounds=32", "gu", "tab:green", "-"), ("rounds=32", "random", "tab:red", "-"),
             ("rounds=32", "oracle", "tab:blue", "-"), ("default", "gu", "black", "-"),
             ("vote=entropy q0.8", "gu", "tab:orange", "--"), ("vote=mahalanobis", "gu", "tab:gray", "--"),
             ("explore=0.0", "gu", "tab:purple", ":"), ("hidden=256", "gu", "tab:brown", ":"),
             ("feedback=binary", "gu", "tab:pink", ":")]
    for variant, policy, color, line in shown:
        mine = [r for r in rows if r["variant"] == variant and r["policy"] == policy]
        if not mine:
            continue
        t = 1
        values = []
        while f"rare_share_round{t}" in mine[0] and mine[0][f"rare_share_round{t}"] not in ("", None):
            values.append(100 * np.mean([float(r[f"rare_share_round{t}"]) for r in mine]))
            t += 1
        ax.plot(range(1, len(values) + 1), values, color=color, linestyle=line, marker=".",
                label=f"{policy}, {variant} (n = {len(mine)})")
    ax.axhline(88.2, color="k", linewidth=0.8, linestyle="-.", label="paper: 88.2% (KMNIST)")
    ax.set_xlabel("round")
    ax.set_ylabel("rare share of the rare-domain robots' caches (%)")
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("p2p_default, fast tier: the gu rule's rare share per round (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    with path.open() as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = int(v) if k in ("seed",) else (float(v) if k not in ("variant", "knob", "value",
                                                                                    "policy") else v)
                except ValueError:
                    row[k] = float("nan") if v == "" else v
            out.append(row)
    return out


def _parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def _write(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))  # per-robot columns vary with the number of robots
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def _table(rows: list[dict], group: tuple[str, ...]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[g] for g in group), []).append(r)
    head = " | ".join(group) + " | n | peer rare acc | gain vs start | own rare acc | rare share (after 1st) | kept/robot"
    lines = [head, "|".join(["---"] * (len(group) + 6))]
    for key, mine in groups.items():
        cells = [f"{100 * m:.1f} ± {100 * s:.1f}" for m, s in (summarise(mine, k) for k in (
            "peer_rare_acc", "peer_rare_gain", "own_rare_acc", "rare_share_after_first"))]
        lines.append(" | ".join(str(k) for k in key) + f" | {len(mine)} | " + " | ".join(cells)
                     + f" | {summarise(mine, 'n_kept')[0]:.1f}")
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    knobs = [k for k in dict.fromkeys(r["knob"] for r in rows) if k != "base"]
    fig, axes = plt.subplots(2, (len(knobs) + 1) // 2, figsize=(4 * ((len(knobs) + 1) // 2), 7), squeeze=False)
    styles = {"random": ("tab:red", "o"), "oracle": ("tab:blue", "s"), "gu": ("tab:green", "^")}
    for ax, knob in zip(axes.ravel(), knobs):
        for keeps, line in (("novel", "--"), ("all", "-")):
            for policy, (color, marker) in styles.items():
                mine = [r for r in rows if r["receiver_keeps"] == keeps and r["policy"] == policy
                        and r["knob"] == knob]
                if not mine:
                    continue
                values = sorted({r["value"] for r in mine})
                stats = [summarise([r for r in mine if r["value"] == v], "peer_rare_acc") for v in values]
                ax.errorbar(values, [100 * m for m, _ in stats], [100 * s for _, s in stats], color=color,
                            marker=marker, linestyle=line, capsize=2, label=f"{policy}, keeps {keeps}")
        ax.set_title(knob)
        ax.set_ylabel("peers' rare-domain accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(knobs):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7)
    fig.suptitle("p2p regime map (fast tier): peers' rare-domain accuracy, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("sweep", "check", "privacy", "liars", "signal", "ablate", "detectors"), default="sweep")
    parser.add_argument("--config", default="p2p_default")
    parser.add_argument("--seeds", default="100-109")
    parser.add_argument("--policies", default="random,oracle")
    parser.add_argument("--gu-knobs", default="base", help="sweep: knobs (comma list) where gu runs too; '' none")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--variants", default="", help="ablate: only these variants (comma list, e.g. default,hidden=16; gu variants pair with the "
                             "default rows already in ablate.csv)")
    args = parser.parse_args(argv)
    seeds = _parse_seeds(args.seeds)
    policies = [p for p in args.policies.split(",") if p]
    cfg = load_p2p_config(args.config)
    rows: list[dict] = []
    t0 = time.perf_counter()
    if args.mode == "sweep":
        base = {"initial_base": cfg.robots[1].initial_labeled.get("digits", 0),
                "initial_rare": cfg.robots[1].initial_labeled.get("fog", 0),
                "rare_freq": cfg.robots[1].stream.get("fog", 0.0)}
        base_values = {"share_fraction": cfg.share_fraction, "rare_freq": base["rare_freq"],
                       "severity": cfg.domains[1].severity, "initial_labels": base["initial_rare"],
                       "rounds": cfg.rounds, "n_robots": cfg.n_robots}
        gu_knobs = {k for k in args.gu_knobs.split(",") if k}
        for keeps in ("novel", "all"):
            for knob, value, overrides in sweep_points(base):
                run = policies + (["gu"] if knob in gu_knobs and "gu" not in policies else [])
                for policy in run:
                    for r in run_point(args.config, policy, seeds, receiver_keeps=keeps, **overrides):
                        rows.append({"knob": knob, "value": value, "receiver_keeps": keeps, **r})
                print(f"[{time.perf_counter() - t0:6.0f} s] keeps={keeps} {knob}={value}", flush=True)
        _write(rows, args.out / "sweep.csv")
        _plot(_with_base_values(rows, base_values), args.out / "sweep.png")
        print(_table(rows, ("receiver_keeps", "knob", "value", "policy")))
    elif args.mode == "ablate":
        path = args.out / "ablate.csv"  # keep the rows of other seeds (tuning and unseen runs share the file)

        def save(new: list[dict]) -> None:
            ran = {(r["variant"], r["policy"]) for r in new}
            kept = [r for r in _read_csv(path) if r["seed"] not in seeds or (r["variant"], r["policy"]) not in ran]
            _write(kept + new, path)
            _plot_ablation([r for r in kept + new if r["seed"] >= 300] or kept + new, args.out / "ablate.png")

        rows = run_ablation(args.config, seeds, {v for v in args.variants.split(",") if v}, done=save)
        print(ablation_table(rows))
    elif args.mode == "detectors":  # the paper tier's OoD detectors as the receivers' vote (slow: a few seeds)
        tier = {"perception.tier": "paper"}
        runs = [("mc_dropout", "gu"), ("random", "random"), ("ensemble", "gu"), ("max_softmax", "gu")]
        for detector, policy in runs:  # receivers keep all: random's accuracy does not depend on the detector
            extra = {} if policy == "random" else {"ood.detector": detector}
            for r in run_point(args.config, policy, seeds, gu_batched=False, **tier, **extra):
                rows.append({"variant": f"paper {detector}", **r})
            _write(rows, args.out / "detectors.csv")
            print(f"[{time.perf_counter() - t0:6.0f} s] paper tier, {detector} {policy}", flush=True)
        print(_table(rows, ("variant", "policy")))
    elif args.mode == "signal":  # the receivers' vote as a rarity signal, per novelty score and quantile
        for novelty in ("mahalanobis", "max_softmax", "entropy", "margin"):
            for quantile in (0.95, 0.9, 0.8):
                sig = feedback_signal(args.config, seeds, **{"perception.novelty": novelty,
                                                             "ood.calibration_quantile": quantile})
                rows.append({"novelty": novelty, "calibration_quantile": quantile, **sig})
                print(f"{novelty:12s} q={quantile}: utility rare {sig['rare_utility']:.3f} base "
                      f"{sig['base_utility']:.3f} AUC {sig['auc']:.3f}", flush=True)
        _write(rows, args.out / "signal.csv")
    else:
        variants = {"check": [("default", {})],
                    "privacy": [(m, {"privacy.mode": m}) for m in ("pass", "blur", "drop")],
                    "liars": [(f"liars={v}", {"faults.liars": v}) for v in (0.0, 1 / 3)]}[args.mode]
        if args.mode == "check" and "gu" not in policies:
            policies.append("gu")
        for name, overrides in variants:
            for policy in policies:
                for r in run_point(args.config, policy, seeds, **overrides):
                    rows.append({"variant": name, **r})
                print(f"[{time.perf_counter() - t0:6.0f} s] {name} {policy}", flush=True)
        _write(rows, args.out / f"{args.mode}.csv")
        print(_table(rows, ("variant", "policy")))
        if args.mode == "privacy":
            for name, _ in variants:
                mine = [r for r in rows if r["variant"] == name]
                print(f"{name}: blurred {summarise(mine, 'n_blurred')[0]:.1f}, dropped "
                      f"{summarise(mine, 'n_dropped')[0]:.1f} per episode")
        if args.mode == "liars":  # the same robot on the same seed, lying against honest (robots without a
            for policy in policies:  # rare domain they never observe are left out)
                honest = {r["seed"]: r for r in rows if r["variant"] == variants[0][0] and r["policy"] == policy}
                for name, _ in variants[1:]:
                    deltas = {True: [], False: []}
                    for r in rows:
                        if r["variant"] != name or r["policy"] != policy:
                            continue
                        for i in range(cfg.n_robots):
                            a, h = r[f"peer_rare_acc_r{i}"], honest[r["seed"]][f"peer_rare_acc_r{i}"]
                            if not np.isnan(a):
                                deltas[bool(r[f"liar_r{i}"])].append(100 * (a - h))
                    for lying, values in deltas.items():
                        if values:
                            print(f"{name} {policy}: {'liars' if lying else 'honest robots'}: peer rare acc change "
                                  f"{np.mean(values):+.1f} ± {np.std(values, ddof=1):.1f} points (n = {len(values)})")
    print(f"wall {time.perf_counter() - t0:.0f} s, {len(seeds)} seeds, policies {policies}")
    return 0


def _with_base_values(rows: list[dict], base_values: dict) -> list[dict]:
    """Copies of the base rows, one per knob, carrying that knob's base value (so each panel shows the base)."""
    out = [r for r in rows if r["knob"] != "base"]
    for r in rows:
        if r["knob"] == "base":
            for knob, value in base_values.items():
                out.append({**r, "knob": knob, "value": value})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
