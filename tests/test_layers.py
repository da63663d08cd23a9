"""Layers point one way: ``datagames_env`` (core, scenarios, faces, harness) never imports ``baselines`` or
``agents``; those are loaded by entry point when a policy or trainer is built. An AST scan of every import of the
package, ``baselines`` and ``agents`` (also those inside functions) checks the layer order of docs/layout.md, that
no private name crosses from one package to another, and that there is no import circle; the scenario table is the
one place that names a scenario's config, reporter, policies and default config."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
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


# ---- layers: every import (module level or inside a function) of the package, baselines/ and agents/ points down
# or sideways in this order (docs/layout.md). baselines/ sit below the faces: a policy reads observations and infos
# through the policy protocol and the scenario layer, never a face. The package reaches baselines/ and agents/ only
# by "module:attr" entry points (strings, not imports), so a static import of them from it is an error of its own.
PACKAGES = ("datagames_env", "baselines", "agents")
LAYERS = {  # subpackage of datagames_env (or a top-level package) -> layer
    "config": 0, "data": 1, "selection": 1, "perception": 2, "core": 3, "scenarios": 4, "policy": 5,
    "baselines": 6, "faces": 7, "harness": 8, "benchmarl": 9, "": 9,  # "": the package root
    "agents": 10,
}


@dataclass(frozen=True)
class Import:
    module: str      # the importing module
    target: str      # the imported module (the deepest one that exists among the scanned packages)
    name: str | None  # the name taken from ``target`` by ``from target import name`` (None: a module)
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} -> {self.target}" + (f".{self.name}" if self.name else "")


def _modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(root: Path = ROOT) -> list[Import]:
    """Every import statement anywhere in a module's text (``from . import x`` of a module ``x`` counts as ``x``),
    resolved to the scanned modules; imports of other distributions are left out."""
    import ast

    modules = _modules(root)
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                pairs = [(f"{target}.{a.name}", None) if f"{target}.{a.name}" in modules else (target, a.name)
                         for a in node.names]
            elif isinstance(node, ast.Import):
                pairs = [(a.name, None) for a in node.names]
            else:
                continue
            for target, attr in pairs:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append(Import(name, target, attr, node.lineno))
    return found


def _import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    graph = {name: set() for name in _modules(root)}
    for imp in _imports(root):
        graph[imp.module].add(imp.target)
    return graph


def _layer(module: str) -> int:
    top, _, rest = module.partition(".")
    return LAYERS[rest.split(".")[0] if top == "datagames_env" else top]


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def _upward(imports: list[Import]) -> list[str]:
    return sorted(str(i) for i in imports if _layer(i.target) > _layer(i.module))


def _static_consumers(imports: list[Import]) -> list[str]:
    return sorted(str(i) for i in imports
                  if i.module.startswith("datagames_env") and i.target.split(".")[0] in ("baselines", "agents"))


def _private_crossings(imports: list[Import]) -> list[str]:
    return sorted(str(i) for i in imports if i.module.split(".")[0] != i.target.split(".")[0]
                  and (_private(i.name or "") or any(_private(p) for p in i.target.split("."))))


def test_every_module_has_a_layer():
    unknown = sorted(m for m in _modules() if m.startswith("datagames_env.") and m.split(".")[1] not in LAYERS)
    assert unknown == [], "a new subpackage needs a layer (LAYERS here and docs/layout.md)"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    assert _upward(_imports()) == []  # e.g. a scenario importing a face, or a baseline importing a face


def test_the_package_imports_baselines_and_agents_by_entry_point_only():
    assert _static_consumers(_imports()) == []  # the package names them in "module:attr" strings instead


def test_no_private_name_is_imported_across_packages():
    assert _private_crossings(_imports()) == []  # give the other package a public entry point instead


def test_the_scan_catches_imports_inside_functions(tmp_path):
    # the shapes of the two imports this scan was extended for: a baseline importing a face inside a function, and
    # the package importing a baseline's private helpers inside a function (relative imports resolved too)
    files = {
        "datagames_env/__init__.py": "", "datagames_env/policy.py": "", "datagames_env/faces/__init__.py": "",
        "datagames_env/faces/pettingzoo.py": "from ..policy import load_entry_point\n",
        "datagames_env/faces/comm.py": "def shares():\n    from baselines.fraction import _check_fractions\n",
        "baselines/__init__.py": "", "baselines/fraction.py": "from .solvers import _validate\n",
        "baselines/solvers.py": "",
        "baselines/dual_badge.py": "def face():\n    from datagames_env.faces.pettingzoo import DualParallelEnv\n",
        "agents/__init__.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    imports = _imports(tmp_path)
    assert _upward(imports) == ["baselines.dual_badge:2 -> datagames_env.faces.pettingzoo.DualParallelEnv"]
    assert _static_consumers(imports) == ["datagames_env.faces.comm:2 -> baselines.fraction._check_fractions"]
    assert _private_crossings(imports) == ["datagames_env.faces.comm:2 -> baselines.fraction._check_fractions"]
    # a private name within one package is fine; a relative import resolves to its module
    assert Import("baselines.fraction", "baselines.solvers", "_validate", 1) in imports
    assert Import("datagames_env.faces.pettingzoo", "datagames_env.policy", "load_entry_point", 1) in imports


def test_there_is_no_import_circle():
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


def test_the_scenario_table_is_the_one_place_that_names_a_scenarios_parts():
    """Each row's entry points (config loader, factories, reporter, policies, warm-up) and registry id are spelled
    in ``scenarios/__init__.py`` only: everything else reaches a scenario's parts through the table."""
    import ast

    from datagames_env.scenarios import SCENARIOS, entry_point

    names = {}
    for scenario, info in SCENARIOS.items():
        entries = [info.scenario_factory, info.config_loader, info.reporter, info.labelers, info.batched, info.warm,
                   *(ep for _, ep in info.policies)]
        for text in filter(None, entries):
            if ":" in text:
                entry_point(text)  # resolves (an ImportError or AttributeError names it)
                names[text] = scenario
        names[info.registry_id] = scenario
    table = ROOT / "datagames_env" / "scenarios" / "__init__.py"
    elsewhere = sorted(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}"
                       for path in _modules().values() if path != table
                       for node in ast.walk(ast.parse(path.read_text()))
                       if isinstance(node, ast.Constant) and node.value in names)
    assert elsewhere == []
