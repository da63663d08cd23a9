"""Paired final test accuracy of dual upload policies from `datagames eval` rounds.csv files (issue 18).

    python docs/results/dual_upload/paired.py RESULTS_DIR [RESULTS_DIR ...] [--baseline submodular-independent]
        [--markdown out.md] [--json out.json]

Per policy: mean ± sample std over seeds of the final-round test accuracy, and against each reference policy
the per-seed difference (mean ± std) and wins / ties / losses out of the seeds they share. A policy that appears
in several folders (same name, same seed) must agree, else the script stops.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path


def final_accuracies(folders: list[Path]) -> dict[str, dict[int, float]]:
    """policy -> seed -> test accuracy of the last round."""
    last: dict[tuple[str, int], tuple[int, float]] = {}
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for folder in folders:
        seen: dict[tuple[str, int], tuple[int, float]] = {}
        with open(folder / "rounds.csv") as f:
            for row in csv.DictReader(f):
                key, rnd = (row["policy"], int(row["seed"])), int(row["round"])
                if key not in seen or rnd > seen[key][0]:
                    seen[key] = (rnd, float(row["test_accuracy"]))
        for key, value in seen.items():
            if key in last and abs(last[key][1] - value[1]) > 1e-12:
                raise SystemExit(f"{key} differs between folders: {last[key][1]} vs {value[1]}")
            last[key] = value
    for (policy, seed), (_, acc) in last.items():
        out[policy][seed] = acc
    return dict(out)


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, std


def paired_table(acc: dict[str, dict[int, float]], references: list[str]) -> list[dict]:
    rows = []
    for policy, by_seed in acc.items():
        mean, std = _mean_std(list(by_seed.values()))
        row = {"policy": policy, "seeds": len(by_seed), "final_test_accuracy": mean, "std": std}
        for ref in references:
            if ref == policy or ref not in acc:
                continue
            seeds = sorted(set(by_seed) & set(acc[ref]))
            diff = [by_seed[s] - acc[ref][s] for s in seeds]
            d_mean, d_std = _mean_std(diff)
            row[f"vs {ref}"] = {"mean": d_mean, "std": d_std, "wins": sum(d > 1e-12 for d in diff),
                                "ties": sum(abs(d) <= 1e-12 for d in diff), "losses": sum(d < -1e-12 for d in diff),
                                "n": len(seeds)}
        rows.append(row)
    return rows


def markdown(rows: list[dict], references: list[str]) -> str:
    head = "| upload policy | final test accuracy | " + " | ".join(f"vs `{r}` (pp, W/T/L)" for r in references) + " |"
    lines = [head, "|" + "---|" * (2 + len(references))]
    for row in rows:
        cells = [f"`{row['policy']}`", f"{row['final_test_accuracy']:.4f} ± {row['std']:.4f}"]
        for ref in references:
            d = row.get(f"vs {ref}")
            cells.append("" if d is None else f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} "
                                              f"({d['wins']}/{d['ties']}/{d['losses']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--reference", action="append", default=None,
                        help="policy to pair against (repeatable; default submodular-independent and random)")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    acc = final_accuracies(args.folders)
    refs = args.reference or [p for p in ("submodular-independent", "random") if p in acc]
    rows = paired_table(acc, refs)
    text = markdown(rows, refs)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
