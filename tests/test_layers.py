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


# ---- the package's own layers: every import (module level or inside a function) points down or sideways
LAYERS = {  # package below datagames_env -> layer; a module may import its own layer and those below
    "config": 0, "data": 1, "selection": 1, "perception": 2, "core": 3, "scenarios": 4, "faces": 5, "policy": 5,
    "harness": 6, "benchmarl": 7, "": 7,  # "": the package root
}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its text (``from . import x`` counts as ``x``)."""
    import ast

    root = ROOT / "datagames_env"
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                candidates = subs if len(subs) == len(node.names) else [target, *subs]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            for candidate in candidates:
                while candidate and candidate not in modules:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name:
                    deps.add(candidate)
        graph[name] = deps
    return graph


def _layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return LAYERS[part]


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    graph = _import_graph()
    assert all(m.count(".") == 0 or m.split(".")[1] in LAYERS for m in graph), "a new subpackage needs a layer"
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps if _layer(d) > _layer(m))
    assert upward == []  # e.g. a scenario importing a face: faces are built from the scenario table instead


def test_the_package_has_no_import_circle():
    graph = _import_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []
