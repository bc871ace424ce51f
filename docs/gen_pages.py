"""Pages generated from the code and files that own them, at every `mkdocs build` (mkdocs-gen-files):

- reference/run-directory.md   describe(): every file and folder of a run, from dno.runtime.layout's properties
- reference/cli.md             every app of pyproject.toml's [project.scripts], its docstring and its config file
- reference/config.md          every config group of conf/ and every option file, with its comments
- results/                     every file under results/ (the markdown included as it is, the plots beside it)

Nothing here is typed twice: a file added under results/ or an app added to pyproject.toml shows up by itself.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import mkdocs_gen_files

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# the paper's symbols and the config keys that hold them (tests/test_docs.py composes every key)
SYMBOLS = (
    ("T", "iterations", "schedule.iterations"),
    ("K", "samples per prompt from pi_t", "schedule.samples_per_prompt"),
    ("eta (the paper's), beta (DPO's)", "the KL-regularisation of Eq. 8 and Eq. 13", "loss.beta"),
    ("pi_1", "the initial policy", "model"),
    ("P(y > y' | x)", "the preference oracle", "oracle"),
    ("r_t(x, y)", "a response's expected win-rate (`win_prob`)", "oracle (derived)"),
    ("y_gold", "the teacher's answer", "teacher"),
    ("the margin of Algorithm 2, step 4", "a positive's minimum score and its lead over a negative",
     "loss.pairs.min_positive_score, loss.pairs.student_margin, loss.pairs.teacher_margin"),
    ("replay 30% of t-1, 15% of t-2", "pairs of earlier iterations trained again", "loss.replay"),
    ("learning rate, epochs, batch size", "the update's optimisation", "schedule.lr, schedule.epochs, "
     "schedule.effective_batch_size"),
)

VERSIONS = """Every row of `samples.jsonl`, `judgements.jsonl`, `pairs.jsonl` and `eval_judgements.jsonl` carries
its format `version` (3: the prompt a `Prompt` under `prompt`, and the teacher's candidate named by
`teacher_candidate`, not found by position). Rows of earlier versions are read into today's types:
version 2 (the prompt's fields flat, the teacher's answer the last candidate by convention) and
version 1 (before the names followed the paper: `win_rates`, `chosen_win_rate`, `ref_logp_chosen`,
`gold`), so a run directory made before resumes where it stopped; a row with a field this code
does not know, or of a version newer than the code, is a clear error naming the file, row and field
(`dno.stages.records`)."""


def describe() -> str:
    """The run directory as dno.runtime.layout names it: one line per file or folder, from its properties'
    docstrings."""
    from dno.runtime.layout import (
        ITERATION_PREFIX,
        MARKER_PREFIX,
        BenchmarkDir,
        InitDir,
        IterationDir,
        RunDir,
        StageDir,
    )

    run = RunDir(Path("<run_dir>"))
    rows = []
    for owner in (run, run.init, run.iteration(1), run.final, run.final.benchmark("<benchmark>")):
        for name, prop in vars(type(owner)).items():
            if isinstance(prop, property) and isinstance(value := getattr(owner, name), Path):
                rows.append((value, prop.__doc__))
        if isinstance(owner, IterationDir):
            rows.append((run.iterate_final(2).path, RunDir.iterate_final.__doc__))
        if isinstance(owner, BenchmarkDir):
            rows += [(owner.task("<task>"), BenchmarkDir.task.__doc__),
                     (owner.task_results("<task>"), BenchmarkDir.task_results.__doc__)]
        if isinstance(owner, InitDir | IterationDir | BenchmarkDir):
            rows += [(owner.marker("<stage>"), StageDir.marker.__doc__),
                     (owner.batch_journal("<stage>"), StageDir.batch_journal.__doc__)]
    rows.insert(len(rows) - sum(1 for p, _ in rows if "iter_1" in str(p) or "final" in str(p)),
                (run.lookahead.path, RunDir.lookahead.__doc__))

    def shown(path: Path) -> str:
        text = str(path).replace(f"{ITERATION_PREFIX}1", f"{ITERATION_PREFIX}<t>")
        return text + ("/" if not path.suffix and not path.name.startswith((".", MARKER_PREFIX)) else "")

    return "\n".join(f"{shown(p):<42} {' '.join((doc or '').split())}".rstrip() for p, doc in rows)


def run_directory() -> str:
    return ("# The run directory\n\nEvery file and folder of a run, as `dno.runtime.layout.RunDir` names them (this "
            "block is generated from `RunDir`'s properties and their docstrings at every build; `final/` is also the "
            "layout of `dno-eval`'s output "
            "directory):\n\n```\n" + describe() + "\n```\n\n" + VERSIONS + "\n")


def cli() -> str:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    out = ["# Command-line apps", "",
           f"{len(scripts)} apps, each a thin Hydra entry point over one library function (`src/dno/apps/`). Every "
           "key of its config can be overridden on the command line (`key=value`, `+key=value` for a new one), "
           "`--help` prints the composed config, and `-m` makes a multirun. Exit codes are the same for every app: "
           "[the exit-code table](../guides/resume.md#exit-codes).", ""]
    for name, target in scripts.items():
        module = importlib.import_module(target.split(":")[0])
        doc = (module.__doc__ or "").strip()
        config = {"dno-run": "config.yaml", "dno-eval": "eval_app.yaml"}.get(name, f"{name.removeprefix('dno-')}.yaml")
        out += [f"## `{name}`", "", doc, "", f"Config: `conf/{config}`" if (CONF / config).exists() else "", ""]
    return "\n".join(out)


def config_reference() -> str:
    out = ["# Config groups and keys", "",
           "Every file under `conf/`, with its comments: they are the documentation of each key. A group is a "
           "directory (`loss/`, `oracle/`, ...): choose an option with `group=option` (`loss=dno_prct`), and set "
           "a key with `group.key=value` (`loss.beta=0.05`).", "",
           "## The paper's symbols", "", "| symbol | meaning | config key |", "|---|---|---|"]
    out += [f"| {s} | {m} | `{k}` |" for s, m, k in SYMBOLS]
    out += ["", "## The apps' configs", ""]
    for f in sorted(CONF.glob("*.yaml")):
        out += [f"### `conf/{f.name}`", "", "```yaml", f.read_text().rstrip(), "```", ""]
    for group in sorted(p for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml"))):
        name = group.relative_to(CONF).as_posix()
        out += [f"## `{name}`", ""]
        for f in sorted(group.glob("*.yaml")):
            out += [f"### `{name}={f.stem}`" if name not in ("accelerate", "prices") else f"### `conf/{name}/{f.name}`",
                    "", "```yaml", f.read_text().rstrip(), "```", ""]
    return "\n".join(out)


def results() -> None:
    root = REPO / "results"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    pages = [p for p in files if p.suffix == ".md"]
    index = ["# Results", "",
             "Every measured table and plot of this repository, each page the file under `results/` as it is "
             "(generated by the command it names; tests keep the numbers quoted elsewhere equal to these files).", ""]
    for p in pages:
        rel = p.relative_to(root).as_posix()
        title = next((line.lstrip("# ").strip() for line in p.read_text().splitlines() if line.startswith("#")), rel)
        index.append(f"- [{title}]({rel}) (`results/{rel}`)")
        with mkdocs_gen_files.open(f"results/{rel}", "w") as f:
            f.write(p.read_text())
    for p in files:
        if p.suffix in (".png", ".csv", ".json", ".yaml"):
            with mkdocs_gen_files.open(f"results/{p.relative_to(root).as_posix()}", "wb") as f:
                f.write(p.read_bytes())
    with mkdocs_gen_files.open("results/index.md", "w") as f:
        f.write("\n".join(index) + "\n")


with mkdocs_gen_files.open("reference/run-directory.md", "w") as f:
    f.write(run_directory())
with mkdocs_gen_files.open("reference/cli.md", "w") as f:
    f.write(cli())
with mkdocs_gen_files.open("reference/config.md", "w") as f:
    f.write(config_reference())
results()
