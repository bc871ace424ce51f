"""The documentation: a README a newcomer reads in minutes, a site that builds strictly offline (a broken link or
reference fails), reference pages generated from the code that owns them, a metrics page that names every key a
run logs, and the layers the contributing page states being what the imports show.

Every command and number of README.md and docs/ is tests/test_readme.py's. These run in `make docs` (marked docs),
beside the strict build CI runs there, not in `make test`."""

from __future__ import annotations

import ast
import html
import os
import re
import subprocess
import sys
import tomllib

import pytest
from omegaconf import OmegaConf

from dno.oracles.ledger import cost_metrics
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from helpers import REPO, documented, make_cfg, metric_names

DOCS = REPO / "docs"
pytestmark = pytest.mark.docs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "DISABLE_MKDOCS_2_WARNING": "true", "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def page(site, path: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", (site / path / "index.html").read_text()))


def test_the_readme_is_short_and_gives_the_two_commands_first():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    first = re.search(r"```bash\n(.*?)```", readme, flags=re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in first.splitlines()] == ["make demo", "make test"]
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):  # every page it points to exists
        assert (REPO / link).exists(), link


def test_the_site_builds_strictly_and_every_page_is_in_the_nav(site):
    nav = (REPO / "mkdocs.yml").read_text()
    for md in DOCS.rglob("*.md"):
        assert md.relative_to(DOCS).as_posix() in nav, md
    assert (site / "index.html").exists() and (site / "reference" / "api" / "index.html").exists()
    assert "class DNOPrctLoss" in page(site, "reference/api") or "DNOPrctLoss" in page(site, "reference/api")


def test_the_reference_pages_are_generated_from_the_code(site):
    run_dir = page(site, "reference/run-directory")
    for owner in (RunDir(REPO), RunDir(REPO).init, RunDir(REPO).iteration(1), RunDir(REPO).final):
        for name, prop in vars(type(owner)).items():  # every file and folder the layout names, with its docstring
            if isinstance(prop, property) and isinstance(path := getattr(owner, name), os.PathLike):
                assert path.name in run_dir and " ".join(prop.__doc__.split()[:4]) in html.unescape(run_dir), name
    cli = page(site, "reference/cli")
    for app in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]:
        assert app in cli, app
    config = page(site, "reference/config")
    for yaml in (REPO / "conf").rglob("*.yaml"):
        assert yaml.stem in config, yaml
    results = page(site, "results")
    for md in (REPO / "results").rglob("*.md"):
        assert f"results/{md.relative_to(REPO / 'results').as_posix()}" in results, md
        assert (site / "results" / md.relative_to(REPO / "results").with_suffix("") / "index.html").exists() or \
            md.name == "README.md", md


def test_the_paper_symbols_name_config_keys_that_exist():
    text = (DOCS / "gen_pages.py").read_text().split("SYMBOLS = (", 1)[1].split("\n)\n", 1)[0]
    keys = set(re.findall(r"\b((?:schedule|loss)\.[\w.]+)", text))
    cfg = make_cfg()
    assert len(keys) >= 8
    for key in keys:
        assert OmegaConf.select(cfg, key) is not None, key


@pytest.mark.slow
def test_the_metrics_page_names_every_key_a_run_logs(smoke_run):
    names = metric_names()
    run = RunDir(smoke_run)
    logged = {k for row in read_jsonl(run.metrics) for k in row} | set(read_json(run.summary))
    rows = [{"stage": s, "iteration": 1, "key": s, "usd": 0.1, "prompt_tokens": 1, "completion_tokens": 1,
             "unreadable": s == "judge"} for s in ("judge", "validation", "teacher", "lookahead", "final/mt_bench")]
    logged |= set(cost_metrics(rows))
    missing = sorted(k for k in logged if not documented(k, names))
    assert not missing, missing
    assert documented("cost/final/local/usd", names) and not documented("cost/nothing", names)


def layers() -> dict[str, int]:
    """The contributing page's layer table: module or package -> layer."""
    table = (DOCS / "contributing.md").read_text().split("## Layers", 1)[1]
    out = {}
    for level, names in re.findall(r"^\| (\d+) \| ([^|]+) \|", table, flags=re.MULTILINE):
        for name in re.findall(r"`(\w+)`", names):
            out[name] = int(level)
    return out


def upward_imports(src, level: dict[str, int]) -> list[str]:
    """Every `from dno.X import` (inside functions too) whose X is on a higher layer than the importing unit."""
    up = []
    for path in src.rglob("*.py"):
        me = path.relative_to(src).parts[0].removesuffix(".py")
        if me == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dno."):
                other = node.module.split(".")[1]
                if other != me and level[other] > level[me]:
                    up.append(f"{path.relative_to(src)} -> {node.module}")
    return up


def test_the_imports_point_down_the_layers_the_docs_state():
    level = layers()
    src = REPO / "src" / "dno"
    top = {p.stem for p in src.glob("*.py") if p.stem != "__init__"} | {p.name for p in src.iterdir()
                                                                         if (p / "__init__.py").exists()}
    assert set(level) == top, set(level) ^ top  # every unit has a layer, and the table names nothing else
    assert not upward_imports(src, level)


def test_the_layer_checker_finds_an_import_pointing_up(tmp_path):
    level = layers()
    assert level["runtime"] < level["oracles"] < level["stages"] < level["loop"] < level["reports"] < level["apps"]
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "records.py").write_text("def f():\n    from dno.oracles.base import Judgement\n")
    (tmp_path / "loop.py").write_text("from dno.runtime.files import write_json\n")
    assert upward_imports(tmp_path, level) == ["runtime/records.py -> dno.oracles.base"]
