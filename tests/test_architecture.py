"""The module structure a contributor relies on: no import cycles (imports inside functions count), no
library module imports an app, only apps read Hydra's runtime, the apps stay thin and start without the model
libraries, the package's top level
shows the architecture, signatures stay short, no stage reads the whole config, and the run directory's
names are spelled in one module only."""

from __future__ import annotations

import ast
from pathlib import Path

from dno.runtime import layout
from helpers import REPO, program, starts_an_app

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
    assert "dno.stages.judge" in imports_of(MODULES["dno.loop"])  # imported at the top
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


def test_the_apps_start_without_the_model_libraries():
    """`dno-run --help`, `--cfg job` and a misspelt config group answer before torch and transformers load (about
    a second, not eight): each app imports the library inside its Hydra main."""
    import subprocess
    import sys

    apps = [m for m in MODULES if m.startswith("dno.apps.")]
    code = f"import sys; {'; '.join(f'import {m}' for m in apps)}; print(sorted(set(sys.modules) & {{'torch', " \
           "'transformers', 'datasets', 'wandb', 'matplotlib', 'pandas'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert len(apps) == 7 and out.strip() == "[]"


def test_losses_import_only_torch():
    assert GRAPH["dno.losses"] == set()
    assert not {d for d in GRAPH["dno.nash.game"] | GRAPH["dno.nash.methods"] if not d.startswith("dno.nash")}


def test_the_fast_suite_guard_knows_an_app_when_it_sees_one():
    assert starts_an_app([program("dno-run"), "model=tiny_random"]) and starts_an_app(["experiments/table1.sh"])
    assert starts_an_app(["/usr/bin/python3", "experiments/judge_agreement.py", "RUN"])
    assert not starts_an_app(["/usr/bin/python3", "-m", "dno.policy.serve", "--port", "0"])  # a server, not an app


def test_the_top_level_holds_the_method_and_subpackages_hold_the_rest():
    top = sorted(p.stem for p in (SRC / "dno").glob("*.py") if p.stem != "__init__")
    assert top == ["final", "loop", "losses", "metrics", "pairs", "plan", "run", "teacher", "variant"]
    subpackages = {p.name for p in (SRC / "dno").iterdir() if (p / "__init__.py").exists()}
    assert subpackages == {"apps", "benchmarks", "data", "nash", "oracles", "policy", "reports", "runtime", "stages"}


def parameters(node: ast.FunctionDef) -> int:
    a = node.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
    return n - (1 if a.args and a.args[0].arg in ("self", "cls") else 0)


def test_no_function_takes_more_than_six_parameters_or_runs_past_sixty_lines():
    """Options objects (SamplingOptions, TrainOptions, ClientOptions, ...) group what a call needs."""
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if parameters(node) > 6 or node.end_lineno - node.lineno >= 60:
                    long.append(f"{module}.{node.name}: {parameters(node)} parameters, "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert long == []


def test_no_stage_reads_the_whole_config():
    """Stages and benchmarks get option objects that the run builds once; only the run, the loop, the apps, the
    reports and the config checks see the Hydra config."""
    for module, path in MODULES.items():
        if module.startswith(("dno.stages", "dno.benchmarks.")) and module != "dno.benchmarks":
            tree = ast.parse(path.read_text())
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
                {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments) for a in n.args + n.kwonlyargs}
            assert not names & {"cfg", "DictConfig"}, module


def run_dir_names() -> set[str]:
    """Every file and folder name of the run directory, as dno.runtime.layout spells them."""
    run = layout.RunDir(REPO)
    names = set()
    for owner in (run, run.init, run.iteration(1), run.final):
        for name, prop in vars(type(owner)).items():
            if isinstance(prop, property) and isinstance(value := getattr(owner, name), Path):
                names.add(value.name)
    # folders named by words that are words elsewhere too, and the names alpaca_eval gives its own package files
    return names - {"wandb", "policy", "annotator", "weights", "checkpoint", "adapter", "configs.yaml",
                    "leaderboard.csv"}


def spelled(text: str, names: set[str]) -> bool:
    """A file name of the run directory in `text`, or a string that starts a marker or an iteration's folder
    (folders named by common words, `init` or `checkpoint`, are not looked for: they are words elsewhere too)."""
    return any(n in text for n in names) or text.startswith((layout.MARKER_PREFIX, layout.ITERATION_PREFIX))


def string_literals(path: Path) -> list[str]:
    """The string constants of a module, without its docstrings (which may name files for a reader)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_run_directory_names_are_spelled_only_in_the_layout_module(tmp_path):
    names = run_dir_names()
    assert {"samples.jsonl", "judgements.jsonl", "pairs.jsonl", "val_samples.jsonl", "metrics.jsonl",
            "provenance.json", "annotations.json"} <= names
    found = {module: [s for s in string_literals(path) if spelled(s, names)] for module, path in MODULES.items()
             if module != "dno.runtime.layout" and not module.startswith("dno.nash")}  # nash imports no LLM code
    assert {m: s for m, s in found.items() if s} == {}
    planted = "def f(run_dir):\n    return run_dir / 'iter_1' / 'pairs.jsonl'\n"  # what the check catches
    (tmp_path / "planted.py").write_text(planted)
    assert sorted(s for s in string_literals(tmp_path / "planted.py") if spelled(s, names)) == ["iter_1", "pairs.jsonl"]

