"""Layers point one way: ``datagames_env`` (core, scenarios, faces, harness) never imports ``baselines`` or
``agents``; those are loaded by entry point when a policy or trainer is built."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys
import datagames_env
import datagames_env.policy, datagames_env.harness, datagames_env.scenarios
import datagames_env.core, datagames_env.data, datagames_env.perception, datagames_env.faces.vector
from datagames_env.harness.cli import build_parser
parser = build_parser()
for argv in (["run", "--config", "p2p_default"], ["eval", "--config", "dual_default"], ["train"], ["report", "x"]):
    parser.parse_args(argv)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("baselines", "agents"))))
"""


def test_the_package_imports_neither_baselines_nor_agents():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_policies_load_lazily_by_entry_point():
    from datagames_env.policy import _REGISTRY, registered_policies

    assert {"greedy", "interactive", "oracle", "random", "uniform"} <= set(registered_policies("datagames"))
    assert set(registered_policies("p2p")) >= {"random", "oracle", "gu"}
    # everything outside the package is registered as a "module:attr" string, not an imported class
    outside = [ep for ep in _REGISTRY.values() if getattr(ep, "__module__", "").startswith(("baselines", "agents"))]
    assert outside == []
