"""The module structure a contributor relies on: no import cycles (imports inside functions count), no
library module imports an app, only apps read Hydra's runtime, and the apps stay thin."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import DNO_RUN, REPO, starts_an_app

SRC = REPO / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in (SRC / "dno").rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """Every dno module `path` imports, at the top or inside a function, resolved to a module name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != "dno":
                found.add(name)
    return found - {module_name(path)}


GRAPH = {m: imports_of(p) for m, p in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert "dno.stages.final" in imports_of(MODULES["dno.loop"])  # imported at the top
    assert "dno.stages.reference" in imports_of(MODULES["dno.loop"])  # imported inside a function


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_no_library_module_imports_an_app():
    for module, deps in GRAPH.items():
        if not module.startswith("dno.apps"):
            assert not {d for d in deps if d.startswith("dno.apps")}, module


def test_only_apps_read_hydras_runtime_and_the_apps_are_thin():
    for module, path in MODULES.items():
        text = path.read_text()
        if not module.startswith("dno.apps"):
            assert "HydraConfig" not in text and "@hydra.main" not in text, module
    for module in ("dno.apps.run", "dno.apps.eval", "dno.apps.bench", "dno.apps.tables", "dno.apps.nash"):
        assert len(MODULES[module].read_text().splitlines()) <= 50, module


def test_losses_import_only_torch():
    assert GRAPH["dno.losses"] == set()
    assert not {d for d in GRAPH["dno.nash.game"] | GRAPH["dno.nash.methods"] if not d.startswith("dno.nash")}


def test_the_fast_suite_guard_knows_an_app_when_it_sees_one():
    assert starts_an_app([DNO_RUN, "model=tiny_random"]) and starts_an_app(["experiments/table1.sh"])
    assert starts_an_app(["/usr/bin/python3", "experiments/judge_agreement.py", "RUN"])
    assert not starts_an_app(["/usr/bin/python3", "-m", "dno.serve", "--port", "0"])  # a server, not an app
