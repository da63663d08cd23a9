"""Markdown tables of the rule grids in this folder (python docs/results/ppo075/tables.py > grids.md)."""
import glob
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
for path in sorted(glob.glob(os.path.join(here, "*.json"))):
    data = json.load(open(path))
    print(f"## {os.path.basename(path)}: config {data['config']} {data['overrides'] or ''}, seeds "
          f"{data['first_seed']}-{data['first_seed'] + data['seeds'] - 1}\n")
    print("| rule | parameters | final distance | vs greedy |\n|---|---|---|---|")
    for row in data["rows"]:
        print(f"| {row['family']} | {', '.join(f'{p:g}' for p in row['params'])} | {row['distance']:.2f} | "
              f"{row['ratio']:.3f}x |")
    print()
