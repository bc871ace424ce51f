"""Every command in the README runs: make targets by CI, dno-run lines here.

Commands on the tiny model run for real (into a temporary directory); commands that need the
model hub or a GPU are composed and checked, which catches a README naming a config that is gone.
"""

from __future__ import annotations

import re
import shlex

import pytest
from tests.conftest import REPO, dno_run, make_cfg

from dno.config import validate

README = (REPO / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
COMMANDS = [line.split("#")[0].strip() for block in BLOCKS for line in block.splitlines() if line.strip()]
DNO_RUNS = [shlex.split(c)[1:] for c in COMMANDS if c.startswith(".venv/bin/dno-run")]
TABLE1 = [shlex.split(c)[1:] for c in COMMANDS if c.startswith("experiments/table1.sh")]
TABLE1_ROWS = re.search(r"ROWS=(\S+)", (REPO / "experiments" / "table1.sh").read_text()).group(1).split(",")


def test_readme_gives_the_two_setup_commands_and_ci_runs_them():
    makes = [c for c in COMMANDS if c.startswith("make ")]
    assert makes == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "make demo" in ci
    assert all(c.startswith((".venv/bin/dno-run", "make ", "experiments/table1.sh")) for c in COMMANDS), COMMANDS


@pytest.mark.parametrize("args", TABLE1, ids=[" ".join(a) or "default" for a in TABLE1])
def test_readme_table1_commands_compose_for_every_row(args):
    # the script itself runs in tests/test_experiments.py on the tiny model
    for row in TABLE1_ROWS:
        validate(make_cfg(f"experiment={row}", *args))


@pytest.mark.parametrize("args", DNO_RUNS, ids=[" ".join(a) for a in DNO_RUNS])
def test_readme_dno_run_commands_compose(args):
    overrides = [a for a in args if a != "-m" and not a.startswith("hydra.")]
    for combo in expand(overrides):
        validate(make_cfg(*combo))


@pytest.mark.slow
@pytest.mark.parametrize("args", [a for a in DNO_RUNS if "model=tiny_random" in a], ids=lambda a: " ".join(a))
def test_readme_tiny_model_commands_run(args, tmp_path):
    args = [a for a in args if not a.startswith("hydra.")]
    where = f"hydra.sweep.dir={tmp_path}" if "-m" in args else f"hydra.run.dir={tmp_path}"
    dno_run(*args, where)
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == (len(expand(args)) if "-m" in args else 1)


def expand(overrides: list[str]) -> list[list[str]]:
    """Hydra's comma sweep syntax, expanded into one override list per job."""
    combos: list[list[str]] = [[]]
    for o in overrides:
        if o == "-m":
            continue
        key, _, values = o.partition("=")
        options = values.split(",") if "," in values and not values.startswith("[") else [values]
        combos = [c + [f"{key}={v}"] for c in combos for v in options]
    return combos
