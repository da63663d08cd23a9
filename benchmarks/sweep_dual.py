"""Issue 19, DUAL: where does submodular curation beat random and simple uncertainty (fast perception tier)?

One axis at a time around a base regime (label budget, robots, stream skew, initial-cloud imbalance, redundancy,
initial cloud size, rounds), every policy spec on the same seeds; metric: final test accuracy of the cloud model
(DUAL's). Writes ``docs/results/fidelity_dual/sweep.csv`` (one row per episode), ``summary.csv`` (per setting and
spec: mean, sample std, DUAL's gain), ``sweep.png`` and prints the table and the largest gain found.

    PYTHONPATH=$PWD python benchmarks/sweep_dual.py                       # the sweep (tuning seeds 100-109)
    PYTHONPATH=$PWD python benchmarks/sweep_dual.py --quick               # 3 seeds, fewer points
    PYTHONPATH=$PWD python benchmarks/sweep_dual.py --confirm --seeds 300-319 --out docs/results/fidelity_dual/confirm
        # dual_default only, unseen seeds, plus the privacy modes (blur / drop / pass)
    PYTHONPATH=$PWD python benchmarks/sweep_dual.py --badge --reuse --seeds 100-109   # BADGE against features
    PYTHONPATH=$PWD python benchmarks/sweep_dual.py --regime guide_paper --seeds 50-59  # the paper tier (also mnist,
        # kmnist with DATAGAMES_DATA_DIR); specs `submodular-*-badge` upload / `submodular-badge` labeler = BADGE

Gains are in accuracy points (pp) and relative to the baseline (%); spread = sample std over seeds.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datagames_env.harness.episode import Job, run_job  # noqa: E402
from datagames_env.scenarios import load_scenario_config  # noqa: E402

DUAL = "submodular-independent/submodular"
SPECS = ("random/random", "entropy/entropy", "margin/margin", DUAL, "random/submodular",
         "submodular-independent/random")
BASELINES = ("random/random", "entropy/entropy", "margin/margin")

# the base regime of the sweep: the GUIDE's paper-tier regime (issue 19: budget 4, alpha 0.1, 12 robots), with a
# weaker generic model (5% public split instead of 30%) and a 10-sample initial cloud: with the default 30% public
# split the fast tier's prior alone is ~0.9 accurate on digits and no labeling rule matters (fidelity_dual.md)
BASE = {"label_budget": 4, "stream.alpha": 0.1, "n_robots": 12, "initial_cloud_size": 10, "rounds": 5,
        "obs_per_round": 60, "n_cache": 6, "initial_cloud_alpha": 1.0, "stream.kind": "dirichlet",
        "privacy.private_fraction": 0.0, "perception.public_fraction": 0.05}

AXES = {  # axis -> (config key, values); every other key stays at BASE
    "label_budget": ("label_budget", [2, 4, 8, 16]),
    "n_robots": ("n_robots", [3, 6, 12, 24]),
    "stream_alpha": ("stream.alpha", [0.05, 0.1, 0.5, 5.0]),
    "initial_cloud_alpha": ("initial_cloud_alpha", [0.1, 0.3, 1.0]),
    "redundancy_obs": ("obs_per_round", [30, 60, 120]),
    "initial_cloud_size": ("initial_cloud_size", [5, 10, 20, 50]),
    "public_fraction": ("perception.public_fraction", [0.02, 0.05, 0.1, 0.3]),
    "rounds": ("rounds", [2, 5, 10]),
}
# Fleet-AL's embedding (issue 19): facility location on BADGE gradient embeddings at stage 1, stage 2 or both,
# against DUAL on the frozen features, in the sweep's base and the settings with the largest gains
BADGE_SPECS = ("random/random", "entropy/entropy", "margin/margin", DUAL, "submodular-independent-badge/submodular",
               "submodular-independent/submodular-badge", "submodular-independent-badge/submodular-badge",
               "random/submodular-badge")
BADGE_SETTINGS = (  # name, overrides of BASE, the sweep row (axis, value) whose episodes can be reused
    ("base", {}, ("base", "-")), ("rounds = 10", {"rounds": 10}, ("rounds", "10")),
    ("n_robots = 24", {"n_robots": 24}, ("n_robots", "24")),
    ("obs_per_round = 120", {"obs_per_round": 120}, ("redundancy_obs", "120")),
    ("label_budget = 16", {"label_budget": 16}, ("label_budget", "16")),
    ("public_fraction = 0.02", {"perception.public_fraction": 0.02}, ("public_fraction", "0.02")))

# named regimes checked outside the fast-tier digits map (issue 19): the GUIDE's paper-tier regime (0dbebaf's
# dual_default with budget 4, alpha 0.1, 12 robots, initial cloud 20: DUAL +17.9% over random on seeds 50-52), and
# the MNIST / KMNIST configs on the fast tier (DATAGAMES_DATA_DIR must point at the IDX files)
REGIMES = {
    "guide_paper": ("dual_default", {"perception.tier": "paper", "n_robots": 12, "label_budget": 4,
                                     "stream.alpha": 0.1, "initial_cloud_size": 20,
                                     "privacy.private_fraction": 0.0}),
    "mnist": ("dual_mnist", {}),
    "kmnist": ("dual_kmnist", {}),
}

QUICK_AXES = {k: (key, vals[:: max(1, len(vals) // 2)]) for k, (key, vals) in AXES.items()}


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def resolve(spec: str, cfg: dict) -> tuple[str, object]:
    """A sweep spec -> (policy spec, env or None). ``submodular-*-badge`` uploads are the BADGE policies of
    ``baselines.dual_policies``; the labeler ``submodular-badge`` is ``submodular`` in the scenario of
    ``baselines.dual_badge`` (fast tier)."""
    upload, _, labeler = spec.partition("/")
    if upload.endswith("-badge"):
        variant = upload[len("submodular-"):-len("-badge")].capitalize()
        upload = f"baselines.dual_policies:Submodular{variant}BadgePolicy"
    if labeler == "submodular-badge":
        from baselines.dual_badge import badge_scenario
        from datagames_env.faces.pettingzoo import DualParallelEnv

        return f"{upload}/submodular", DualParallelEnv(scenario=badge_scenario({**cfg, "labeler": "submodular"}))
    return f"{upload}/{labeler}" if labeler else upload, None


def play(config: str, overrides: dict, specs, seeds) -> dict[str, list[dict]]:
    """spec -> per seed {final, rounds (test accuracy per round), privacy counts, labels used}."""
    cfg = load_scenario_config(config, **overrides).model_dump()
    out = {}
    for spec in specs:
        rows = []
        for seed in seeds:
            policy, env = resolve(spec, cfg)
            rec = run_job(Job(cfg, policy, seed), env=env)
            acc = [r["test_accuracy"] for r in rec["rounds"]]
            priv = {k: int(sum(r["privacy_total"][k] for r in rec["rounds"][1:])) for k in
                    ("private", "dropped", "blurred", "passed_private")}
            rows.append({"final": acc[-1], "rounds": acc, "labels": rec["labels_used"], **priv})
        out[spec] = rows
    return out


def stats(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def gains(result: dict, best: str = DUAL) -> dict[str, tuple[float, float, float]]:
    """baseline -> (mean gain in points, sample std of the paired per-seed gain, relative gain %)."""
    ours = np.array([r["final"] for r in result[best]])
    out = {}
    for base in BASELINES:
        if base in result and base != best:
            theirs = np.array([r["final"] for r in result[base]])
            d = ours - theirs
            out[base] = (100 * d.mean(), 100 * d.std(ddof=1) if len(d) > 1 else 0.0,
                         100 * (ours.mean() / theirs.mean() - 1))
    return out


def sweep(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    axes = QUICK_AXES if args.quick else AXES
    if args.axes:
        axes = {k: axes[k] for k in args.axes.split(",")}
    settings = [("base", "-", "-", dict(BASE))]
    for axis, (key, values) in axes.items():
        for v in values:
            ov = {**BASE, key: v}
            if ov != BASE:
                settings.append((axis, key, v, ov))
    ep_rows, summary = [], []
    started = time.time()
    for axis, key, value, ov in settings:
        t = time.time()
        res = play(args.config, ov, SPECS, seeds)
        for spec, rows in res.items():
            for seed, r in zip(seeds, rows):
                ep_rows.append({"axis": axis, "key": key, "value": value, "spec": spec, "seed": seed,
                                "final_test_accuracy": round(r["final"], 5),
                                "test_accuracy_per_round": " ".join(f"{a:.4f}" for a in r["rounds"])})
        g = gains(res)
        row = {"axis": axis, "key": key, "value": value}
        for spec, rows in res.items():
            m, s = stats([r["final"] for r in rows])
            row[f"{spec} mean"], row[f"{spec} std"] = round(m, 4), round(s, 4)
        for base, (dm, ds, rel) in g.items():
            row[f"gain vs {base} pp"], row[f"gain vs {base} pp std"] = round(dm, 2), round(ds, 2)
            row[f"gain vs {base} %"] = round(rel, 2)
        summary.append(row)
        print(f"{axis:>20} {key}={value}: " + "  ".join(
            f"{s.split('/')[0][:5]}/{s.split('/')[1][:5]} {np.mean([r['final'] for r in res[s]]):.3f}" for s in SPECS)
            + f"  | DUAL-random {g['random/random'][0]:+.1f}pp ({time.time() - t:.0f}s)", flush=True)
    with open(out / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ep_rows[0]))
        w.writeheader()
        w.writerows(ep_rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]))
        w.writeheader()
        w.writerows(summary)
    best = max(summary, key=lambda r: r["gain vs random/random pp"])
    print(f"\nseeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), base {BASE}, {time.time() - started:.0f} s")
    print(f"largest DUAL gain over random/random: {best['gain vs random/random pp']:+.2f} pp "
          f"(± {best['gain vs random/random pp std']:.2f}, {best['gain vs random/random %']:+.1f}%) at "
          f"{best['axis']} {best['key']}={best['value']}; "
          f"there vs entropy {best['gain vs entropy/entropy pp']:+.2f} pp, "
          f"vs margin {best['gain vs margin/margin pp']:+.2f} pp")
    plot(summary, out / "sweep.png", seeds)


def plot(summary: list[dict], path: Path, seeds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [a for a in dict.fromkeys(r["axis"] for r in summary) if a != "base"]
    base = next(r for r in summary if r["axis"] == "base")
    cols = (len(axes) + 1) // 2
    fig, grid = plt.subplots(2, cols, figsize=(3.4 * cols, 6.4), sharey=True, squeeze=False)
    for ax in grid.flat[len(axes):]:
        ax.set_visible(False)
    for ax, axis in zip(grid.flat, axes):
        key = next(r["key"] for r in summary if r["axis"] == axis)
        rows = [r for r in summary if r["axis"] == axis] + [{**base, "value": BASE[key]}]
        rows.sort(key=lambda r: float(r["value"]))
        x = [float(r["value"]) for r in rows]
        for b in BASELINES:
            y = np.array([r[f"gain vs {b} pp"] for r in rows])
            s = np.array([r[f"gain vs {b} pp std"] for r in rows]) / np.sqrt(len(seeds))
            ax.errorbar(x, y, yerr=s, marker="o", capsize=2, label=f"DUAL - {b.split('/')[0]}")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}" for v in x], fontsize=7)
        ax.minorticks_off()
        ax.set_title(key, fontsize=9)
    for row in grid:
        row[0].set_ylabel("final test accuracy gain (pp)")
    grid[0][0].legend(fontsize=7)
    fig.suptitle(f"DUAL (submodular upload + labeling) minus each baseline, fast tier, dual_default digits, seeds "
                 f"{seeds[0]}-{seeds[-1]} (mean ± s.e.); one knob at a time around label_budget 4, alpha 0.1, "
                 "12 robots, initial cloud 10, public split 5%", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def confirm(args) -> None:
    """The config (dual_default) on unseen seeds: every spec, then DUAL under each privacy mode."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    t = time.time()
    res = play(args.config, {}, SPECS, seeds)
    lines = [f"{args.config}, seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}), final test accuracy, mean ± sample std",
             "", "| policy (upload/labeler) | final test accuracy | labels used | private seen | blurred | dropped |",
             "|---|---|---|---|---|---|"]
    for spec, rows in res.items():
        m, s = stats([r["final"] for r in rows])
        lines.append(f"| {spec} | {m:.3f} ± {s:.3f} | {np.mean([r['labels'] for r in rows]):.0f} | "
                     f"{np.mean([r['private'] for r in rows]):.1f} | {np.mean([r['blurred'] for r in rows]):.1f} | "
                     f"{np.mean([r['dropped'] for r in rows]):.1f} |")
    lines += ["", "DUAL's paired gain (pp, mean ± sample std over seeds; relative %):", ""]
    for base, (dm, ds, rel) in gains(res).items():
        wins = int(np.sum(np.array([r["final"] for r in res[DUAL]]) > np.array([r["final"] for r in res[base]])))
        lines.append(f"- vs {base}: {dm:+.2f} ± {ds:.2f} pp ({rel:+.1f}%), DUAL higher on {wins}/{len(seeds)} seeds")
    lines += ["", "Privacy filter cost (DUAL, same seeds): final test accuracy per `privacy.mode`", "",
              "| mode | final test accuracy | blurred | dropped | passed private |", "|---|---|---|---|---|"]
    for mode in ("pass", "blur", "drop"):
        r = play(args.config, {"privacy.mode": mode}, [DUAL], seeds)[DUAL]
        m, s = stats([x["final"] for x in r])
        lines.append(f"| {mode} | {m:.3f} ± {s:.3f} | {np.mean([x['blurred'] for x in r]):.1f} | "
                     f"{np.mean([x['dropped'] for x in r]):.1f} | {np.mean([x['passed_private'] for x in r]):.1f} |")
    lines += ["", f"{time.time() - t:.0f} s"]
    text = "\n".join(lines)
    print(text)
    (out / "confirm.md").write_text(text + "\n")
    with open(out / "confirm.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["spec", "seed", "final_test_accuracy"])
        for spec, rows in res.items():
            for seed, r in zip(seeds, rows):
                w.writerow([spec, seed, round(r["final"], 5)])


def _stored(path: Path, match: dict) -> dict[tuple[str, int], dict]:
    """(spec, seed) -> {final, rounds} of a stored CSV's rows that match ``match`` (column -> value)."""
    if not path.exists():
        return {}
    out = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if all(r.get(k) == v for k, v in match.items()):
                rounds = [float(a) for a in r.get("test_accuracy_per_round", "").split()]
                out[(r["spec"], int(r["seed"]))] = {"final": float(r["final_test_accuracy"]), "rounds": rounds}
    return out


def badge(args) -> None:
    """BADGE against feature embeddings: ``BADGE_SPECS`` in ``BADGE_SETTINGS`` (around ``BASE``, seeds
    ``--seeds``) and in the config itself (``--confirm-seeds``); ``badge.csv`` (one row per episode, written as it
    ends) and ``badge.md``. With ``--reuse``, episodes already in ``sweep.csv`` / ``confirm.csv`` (same code,
    same seeds: deterministic) are read instead of played again."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    specs = args.specs.split(",") if args.specs else list(BADGE_SPECS)
    settings = [(name, {**BASE, **ov}, parse_seeds(args.seeds), (out / "sweep.csv", {"axis": a, "value": v}))
                for name, ov, (a, v) in BADGE_SETTINGS]
    settings.insert(1, (args.config, {}, parse_seeds(args.confirm_seeds), (out / "confirm.csv", {})))
    if args.settings:
        keep = args.settings.split(",")
        settings = [x for x in settings if x[0] in keep]
    started = time.time()
    texts = []
    with open(out / "badge.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "spec", "seed", "final_test_accuracy", "test_accuracy_per_round", "reused"])
        for name, ov, seeds, (stored_path, match) in settings:
            t = time.time()
            stored = _stored(stored_path, match) if args.reuse else {}
            res: dict[str, list[dict]] = {}
            for spec in specs:
                res[spec] = []
                for seed in seeds:
                    r = stored.get((spec, seed))
                    reused = r is not None
                    if r is None:
                        r = play(args.config, ov, [spec], [seed])[spec][0]
                    res[spec].append(r)
                    w.writerow([name, spec, seed, round(r["final"], 5), " ".join(f"{a:.4f}" for a in r["rounds"]),
                                int(reused)])
                    f.flush()
            texts.append(summary_text(f"### {name}", res, seeds, time.time() - t))
            d = {s: np.array([r["final"] for r in res[s]]) for s in res}
            print(f"{name}: " + "  ".join(f"{s} {d[s].mean():.3f}" for s in specs) + f" ({time.time() - t:.0f}s)",
                  flush=True)
    text = "\n\n".join(texts) + f"\n\ntotal {time.time() - started:.0f} s"
    print(text)
    (out / "badge.md").write_text(text + "\n")


def regime(args) -> None:
    """One named regime (``REGIMES``) for ``--specs`` on ``--seeds``: seed by seed (every spec of a seed before the
    next seed, so a stopped run still pairs), one CSV row per episode as it ends, then a markdown summary."""
    config, overrides = REGIMES[args.regime]
    specs = args.specs.split(",") if args.specs else list(SPECS)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    stem = out / f"regime_{args.regime}"
    res: dict[str, list[dict]] = {s: [] for s in specs}
    started = time.time()
    with open(f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["spec", "seed", "final_test_accuracy", "test_accuracy_per_round", "wall_s"])
        for seed in seeds:
            for spec in specs:
                t = time.time()
                row = play(config, overrides, [spec], [seed])[spec][0]
                res[spec].append(row)
                w.writerow([spec, seed, round(row["final"], 5), " ".join(f"{a:.4f}" for a in row["rounds"]),
                            round(time.time() - t, 1)])
                f.flush()
                print(f"seed {seed} {spec}: {row['final']:.4f} ({time.time() - t:.0f}s)", flush=True)
    text = summary_text(f"regime {args.regime}: {config} with {overrides}", res, seeds, time.time() - started)
    print(text)
    Path(f"{stem}.md").write_text(text + "\n")


def summary_text(title: str, res: dict, seeds, seconds: float) -> str:
    """Per spec mean ± sample std, and DUAL's (or the best badge spec's) paired gains with seed wins."""
    lines = [f"{title}; seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); final test accuracy, mean ± sample std",
             "", "| policy (upload/labeler) | final test accuracy | vs random/random (paired pp) | higher on |",
             "|---|---|---|---|"]
    base = np.array([r["final"] for r in res.get("random/random", [])])
    for spec, rows in res.items():
        v = np.array([r["final"] for r in rows])
        m, s = stats(v)
        cell, wins = "", ""
        if len(base) and spec != "random/random":
            d = 100 * (v - base[:len(v)])
            cell = f"{d.mean():+.2f} ± {d.std(ddof=1) if len(d) > 1 else 0:.2f} ({100 * (m / base.mean() - 1):+.1f}%)"
            wins = f"{int((d > 0).sum())}/{len(d)}"
        lines.append(f"| {spec} | {m:.3f} ± {s:.3f} | {cell} | {wins} |")
    if DUAL in res:
        lines += ["", "DUAL's paired gains (pp, mean ± sample std; relative %):"]
        for b, (dm, ds, rel) in gains(res).items():
            lines.append(f"- vs {b}: {dm:+.2f} ± {ds:.2f} pp ({rel:+.1f}%)")
    lines += ["", f"{seconds:.0f} s"]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="dual_default")
    p.add_argument("--seeds", default="100-109")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--axes", default="", help="comma-separated subset of " + ",".join(AXES))
    p.add_argument("--confirm", action="store_true")
    p.add_argument("--regime", default="", help="run one named regime: " + ",".join(REGIMES))
    p.add_argument("--badge", action="store_true", help="BADGE against feature embeddings (BADGE_SETTINGS)")
    p.add_argument("--reuse", action="store_true", help="with --badge: read episodes stored in sweep.csv / "
                   "confirm.csv instead of playing them again")
    p.add_argument("--confirm-seeds", default="300-309", help="with --badge: seeds of the config's own row")
    p.add_argument("--settings", default="", help="with --badge: comma-separated subset of the setting names")
    p.add_argument("--specs", default="", help="comma-separated policy specs (default: the sweep's)")
    p.add_argument("--replot", action="store_true", help="redraw sweep.png from summary.csv")
    p.add_argument("--out", default=str(ROOT / "docs/results/fidelity_dual"))
    args = p.parse_args()
    if args.replot:
        with open(Path(args.out) / "summary.csv") as f:
            rows = [{k: (float(v) if k.startswith("gain") or k.endswith(("mean", "std")) else v) for k, v in r.items()}
                    for r in csv.DictReader(f)]
        plot(rows, Path(args.out) / "sweep.png", parse_seeds(args.seeds))
    elif args.regime:
        regime(args)
    elif args.badge:
        badge(args)
    else:
        confirm(args) if args.confirm else sweep(args)


if __name__ == "__main__":
    main()
