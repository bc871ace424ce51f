"""What the README and docs/ claim beside their commands and numbers, held against the code and results/: the paper's
numbers set beside ours are results/paper/table1.csv's, the exit-code table is what the apps exit with, the glossary
defines every abbreviation and method the README uses, the departures from the paper are one list in both places,
and the worked example of a new loss is the shipped code (tests/test_readme.py holds the commands and numbers)."""

from __future__ import annotations

import csv
import re

import pytest
from omegaconf import OmegaConf

from dno.runtime.files import read_json, read_jsonl
from helpers import PAGES, REPO, make_cfg, section, table_rows

README = PAGES["README.md"]


def paper_table1(method: str) -> dict | None:
    """The paper's Table 1 row of one of our methods (results/paper/table1.csv: "Orca-2.5 SFT on Positives" is our
    "SFT on Positives")."""
    rows = list(csv.DictReader((REPO / "results" / "paper" / "table1.csv").open()))
    return next((r for r in rows if r["method"] in (method, f"Orca-2.5 {method}")), None)


@pytest.mark.parametrize("page", ["README.md", "docs/guides/paper-tables.md"])
def test_the_papers_numbers_beside_ours_are_results_paper_table1_csv(page):
    seeded = table_rows(PAGES[page], r"DNO|DNO-Restrictive|SPIN|Offline DPO")
    assert len(seeded) == 4
    for method, cells in seeded.items():  # ..., p, the paper's WR, the paper's LC WR
        assert cells[-2:] == [paper_table1(method)["win_rate"], paper_table1(method)["lc_win_rate"]], method
    if page == "README.md":
        return
    single = {k: v for k, v in table_rows(PAGES[page], r"`table1_\w+`").items() if len(v) == 7}
    for row, cells in single.items():
        paper = paper_table1(OmegaConf.load(REPO / "conf" / "experiment" / f"{row.strip('`')}.yaml").method)
        assert cells[-3:] == ([paper["win_rate"], paper["lc_win_rate"], paper["avg_length"]] if paper else
                              ["-", "-", "-"]), row
    assert single["`table1_dno_eq8`"][-1] == "-" and len(single) == 7  # ours, not the paper's


def test_the_worked_example_of_a_new_loss_is_the_shipped_code():
    text = section("### A new loss", "## The documentation")
    yaml_block = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL).group(1)
    assert OmegaConf.create(yaml_block) == OmegaConf.load(REPO / "conf" / "loss" / "ipo.yaml")
    shipped = (REPO / "src" / "dno" / "losses.py").read_text()
    for line in re.search(r"```python\n(.*?)```", text, flags=re.DOTALL).group(1).splitlines():
        assert line in shipped, line
    loss = make_cfg("loss=ipo").loss  # the objective reads loss.beta, as the page says
    assert loss.objective._target_ == "dno.losses.IPOLoss" and loss.objective.beta == loss.beta == 0.1


def test_the_exit_codes_table_is_what_the_apps_exit_with():
    """resume.md's table: 0, Hydra's 1 (tests/test_configs.py's unknown option and key), 2, 3, 4 from
    dno.apps.exit_codes, and 137 for SIGKILL, each code once."""
    import signal

    from dno.apps import exit_codes
    from dno.oracles.api import OracleError
    from dno.runtime.config import ConfigError
    from dno.runtime.signals import Preempted

    text = section("## Exit codes", "\n## ", page="docs/guides/resume.md")
    assert re.findall(r"^\| (\d+) \|", text, flags=re.MULTILINE) == ["0", "1", "2", "3", "4", "137"]
    assert 128 + signal.SIGKILL == 137 and "Hydra refused the command line" in text

    def code(error: BaseException) -> int:
        def fail():
            raise error
        with pytest.raises(SystemExit) as e:
            exit_codes("dno-test", fail)
        return e.value.code

    assert (code(ConfigError("x")), code(OracleError("x")), code(Preempted(signal.SIGTERM))) == (2, 3, 4)
    assert exit_codes("dno-test", lambda: "done") == "done"


EVERYDAY = {"API", "CPU", "GPU", "URL", "README", "LLM", "GPT-4", "MT"}  # MT: MT-Bench's, a benchmark's name


def glossary_terms() -> set[str]:
    """The first column of concepts.md's glossary: each comma-separated term, its bracketed short form, and the
    abbreviations it is made of ("LC win-rate" defines LC)."""
    table = section("## Glossary", page="docs/getting-started/concepts.md")
    terms = set()
    for cell in re.findall(r"^\| ([^|]+?) \|", table, flags=re.MULTILINE):
        for term in re.split(r",\s*", cell):
            name = re.sub(r"\s*\(.*\)", "", term)
            terms |= {name, *re.findall(r"\(([^)]+)\)", term), *re.findall(r"\b[A-Z]{2,}\b", name)}
    return terms


def test_the_glossary_defines_every_abbreviation_and_method_the_readme_uses():
    prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", re.sub(r"```.*?```", "", README, flags=re.DOTALL))
    acronyms = set(re.findall(r"\b[A-Z][A-Z0-9&-]*[A-Z0-9]\b", prose))
    terms = glossary_terms()
    assert acronyms - EVERYDAY <= terms, sorted(acronyms - EVERYDAY - terms)
    methods = table_rows(README, r"DNO|DNO-Restrictive|SPIN|Offline DPO")  # the seeded Table 1's rows
    assert set(methods) | {"p", "Batch API", "GGUF", "DDP", "FSDP"} <= terms


def test_the_departures_are_the_same_list_in_the_readme_and_paper_to_code():
    ours = section("## Departures from the paper", "\n## ", page="README.md")
    theirs = section("## Departures from the paper", "\n## ", page="docs/getting-started/paper-to-code.md")
    assert ours.strip() == theirs.strip()
    assert "Orca-2.5 7B, was not released" in ours and "`data=ultrafeedback` takes UltraFeedback's best-rated" in ours
    assert "The demo has no teacher" in ours  # the builtin prompts carry none (teacher=data)
    from hydra.utils import instantiate

    demo = make_cfg()
    assert demo.teacher._target_ == "dno.teacher.DataTeacher" and all(p.teacher is None for p in
                                                                        instantiate(demo.data)())


def test_the_search_guides_account_of_the_flat_lc_objective_is_results():
    """docs/guides/search.md: how many recorded validation LC win-rates are exactly 50.0, and how the 12 trials of
    results/search/ split between pi_1 kept, an LC of exactly 50.0 and other values; the plain win-rates of the
    iterates that scored 50.0."""
    values = [r["eval/lc_win_rate_vs_init"] for path in (REPO / "results").rglob("metrics.jsonl")
              for r in read_jsonl(path) if "eval/lc_win_rate_vs_init" in r]
    kept, flat, wrs, plain = [], [], [], []
    trials = sorted((REPO / "results" / "search" / "trials").glob("[0-9]*"))
    for trial in trials:
        best = read_json(trial / "summary.json")["final/best_iteration"]
        chosen = next((r for r in read_jsonl(trial / "metrics.jsonl") if r["iteration"] == best), None)
        plain.append((chosen["eval/win_rate_vs_init"] if chosen else 50.0, trial.name))
        if chosen is None:
            kept.append(trial.name)
        elif chosen["eval/lc_win_rate_vs_init"] == 50.0:
            flat.append(trial.name)
            wrs.append(chosen["eval/win_rate_vs_init"])
    page = " ".join(PAGES["docs/guides/search.md"].split())
    assert f"{sum(v == 50.0 for v in values)} of the {len(values)} validation values" in page
    assert f"{len(flat)} of the {len(trials)} trials' chosen iterates beat pi_1 on plain win-rate, by " \
           f"{min(wrs) - 50:.1f} to {max(wrs) - 50:.1f} points" in page
    assert f"{len(kept) + len(flat)} of the {len(trials)} trials scored exactly 50.00: {len(kept)} of them kept " \
           f"pi_1, and {len(flat)} chose an iterate" in page
    (top, first), (default, _), (third, _) = sorted(plain, reverse=True)[:3]  # the plain win-rate as the objective
    assert dict((t, v) for v, t in plain)["0"] == default and sum(v == third for v, _ in plain) == 3
    assert f"rank trial {first} first as well ({top:.1f}, the default {default:.1f}, then {third:.1f} for three " \
           "trials)" in page
