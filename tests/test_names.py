"""Every name of code or file that conf/, docs/, the README, mkdocs.yml, experiments/ and the package's own
docstrings and comments give exists: each `src/...` path is a file or folder of the checkout, and each dotted `dno.`
name is a module of the package or a name defined in one (a function, class, constant, or a class's method or
attribute). A module that moves leaves its old name behind in prose (conf/export.yaml once named src/dno/export.py);
this test finds it. Names kept on purpose, an old name recorded beside today's (dno.runtime.config.RENAMED_VALUES),
a logger's name and a line quoted from results/ (measured under the name of its day), are the exceptions. A link of
docs/ opens in a checkout (and on GitHub) or goes to a page `make docs` generates (docs/gen_pages.py), and then its
paragraph says so or names the checkout's file."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

from helpers import REPO

SRC_PATH = re.compile(r"(?<![\w/.])src/[\w/.-]*[\w/]")
DOTTED = re.compile(r"(?<![\w./-])dno(?:\.[A-Za-z_]\w*)+")


def texts() -> dict[str, str]:
    """The files whose prose names code, by path."""
    files = [*REPO.glob("conf/**/*.yaml"), *REPO.glob("docs/**/*.md"), *REPO.glob("docs/*.py"), REPO / "README.md",
             REPO / "mkdocs.yml", *REPO.glob("experiments/*"), *REPO.glob("src/dno/**/*.py")]
    return {p.relative_to(REPO).as_posix(): p.read_text() for p in files if p.is_file()}


@functools.cache
def quoted_results() -> frozenset[str]:
    """Every line of results/: a measurement keeps the names it was made under, and so does a page quoting it."""
    return frozenset(line for p in REPO.glob("results/**/*.md") for line in p.read_text().splitlines())


def kept_on_purpose(line: str) -> bool:
    """A logger's name, an old name mapped to today's (RENAMED_VALUES: `"dno.old.X": "dno.new.X"`), or a line
    quoted from results/."""
    return "getLogger" in line or bool(re.search(r'"dno\.[\w.]+": "dno\.', line)) or line in quoted_results()


@functools.cache
def defined(module: Path) -> frozenset[str]:
    """The names a module defines at its top level, and `Class.name` for its classes' methods and attributes."""
    names = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                targets = [item.target] if isinstance(item, ast.AnnAssign) else getattr(item, "targets", [])
                names |= {f"{node.name}.{t.id}" for t in targets if isinstance(t, ast.Name)}
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(f"{node.name}.{item.name}")
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.ImportFrom):  # re-exported: `from dno.data.builtin import Prompt` in dno/data
            names |= {a.asname or a.name for a in node.names}
    return frozenset(names)


def exists(name: str) -> bool:
    """`dno.a.b` is a module or package of src/, or a name defined in the longest such prefix."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO / "src" / Path(*parts[:n])
        module = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if module.exists():
            rest = ".".join(parts[n:])
            return not rest or rest in defined(module)
    return False


def stale_names() -> list[str]:
    found = []
    for path, text in texts().items():
        for line in text.splitlines():
            if kept_on_purpose(line):
                continue
            found += [f"{path}: {m}" for m in SRC_PATH.findall(line) if not (REPO / m.rstrip(".")).exists()]
            found += [f"{path}: {m}" for m in DOTTED.findall(line) if not exists(m.rstrip("."))]
    return sorted(set(found))


def test_every_src_path_and_dno_name_in_the_docs_configs_and_docstrings_exists():
    assert stale_names() == []


def test_the_check_finds_a_moved_module_and_a_name_it_no_longer_defines():
    assert exists("dno.reports.tables") and exists("dno.runtime.config.RENAMED_VALUES")
    assert exists("dno.runtime.tracking.WandbSink.start") and exists("dno.oracles")
    assert not exists("dno.tables") and not exists("dno.stages.final") and not exists("dno.losses.NoSuchLoss")
    assert SRC_PATH.findall("see src/dno/stages/plan.py, then src/dno/oracles/.") == ["src/dno/stages/plan.py",
                                                                                    "src/dno/oracles/"]


GENERATED = ("reference/cli.md", "reference/config.md", "reference/run-directory.md")  # docs/gen_pages.py's pages
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def unsaid(page: Path, paragraph: str) -> list[str]:
    """The relative links of a paragraph of docs/ that a checkout cannot open and the paragraph does not explain: a
    page docs/gen_pages.py generates (a reference page, or a copy of a file under results/) is fine when the
    paragraph says it is generated or names the checkout's file (`results/...`); any other is a broken link."""
    docs, bad = REPO / "docs", []
    prose = LINK.sub("]", paragraph)  # what a reader sees: the link's text, not its target
    for target in LINK.findall(paragraph):
        if target.startswith(("http:", "https:", "mailto:")) or (page.parent / target).exists():
            continue
        site = (page.parent / target).resolve().relative_to(docs.resolve()).as_posix()
        copy = site.removeprefix("results/")
        from_results = site.startswith("results/") and ((REPO / "results" / copy).exists() or copy == "index.md")
        said = "generated" in prose or f"results/{copy}" in prose
        if not ((site in GENERATED or from_results) and said):
            bad.append(target)
    return bad


def test_every_link_of_the_docs_opens_in_a_checkout_or_says_the_site_generates_it():
    bad = [f"{page.relative_to(REPO)}: {target}" for page in sorted((REPO / "docs").rglob("*.md"))
           for paragraph in page.read_text().split("\n\n") for target in unsaid(page, paragraph)]
    assert bad == []
    index = REPO / "docs" / "index.md"
    assert unsaid(index, "the [results](results/index.md)") == ["results/index.md"]
    assert unsaid(index, "the [results](results/index.md), generated from `results/`") == []
    assert unsaid(index, "[gone](results/no_such.md), generated") == ["results/no_such.md"]
