"""The comparison figure and table from marl-eval JSON files (``datagames eval`` writes ``marl_eval.json``).

    python docs/results/benchmarl/plot_comparison.py results/default/marl_eval.json [more.json ...] --out DIR

Per algorithm: the interquartile mean of the final distance to the target (lower is better) and of the episode
return over every evaluation episode, with 95% confidence intervals from the stratified hierarchical bootstrap
of ``datagames_env.harness.marl_eval`` (runs = training seeds, then episodes). Writes ``comparison.png`` and
``comparison.md``. marl-eval itself does not install on Python 3.11 here (it pins pandas 1.4.4): see that module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # this checkout's package

from datagames_env.harness import marl_eval  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", default=".")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    data = marl_eval.load(*args.files)
    distance = marl_eval.aggregate(data, "final_distance", resamples=args.resamples)
    returns = marl_eval.aggregate(data, "return", resamples=args.resamples)
    order = sorted(distance, key=lambda a: distance[a]["point"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| algorithm | runs | episodes | final distance IQM [95% CI] | mean | return IQM [95% CI] |",
             "|---|---|---|---|---|---|"]
    for a in order:
        d, r = distance[a], returns.get(a)
        ret = f"{r['point']:.3f} [{r['low']:.3f}, {r['high']:.3f}]" if r else "n/a"
        lines.append(f"| {a} | {d['runs']} | {d['episodes']} | {d['point']:.2f} [{d['low']:.2f}, {d['high']:.2f}] | "
                     f"{d['mean']:.2f} | {ret} |")
    (out / "comparison.md").write_text("\n".join(lines) + "\n")
    marl_eval.save_comparison(marl_eval.comparison_figure(distance, order), out / "comparison.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
