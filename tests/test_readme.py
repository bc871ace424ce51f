"""Every command in README.md and docs/ runs: make targets by CI, dno-run, dno-eval and dno-tables lines here;
every number quoted in their prose is its file's under results/.

Commands on the tiny model run for real (into a temporary directory); commands that need the
model hub or a GPU are composed and checked, which catches a page naming a config that is gone.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest
from omegaconf import OmegaConf

from dno.runtime.config import validate
from dno.runtime.layout import RunDir
from helpers import (
    BETA_SWEEP,
    DDP,
    LORA_RUN,
    PAGES,
    REPO,
    SEARCH,
    SUBMITIT,
    SWEEP,
    VARIANTS_RUN,
    VLLM,
    dno_eval,
    dno_run,
    make_cfg,
    run,
    section,
    table_rows,
)

README = PAGES["README.md"]
BLOCKS = [b for text in PAGES.values() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)]
COMMANDS = list(dict.fromkeys(line.split("#")[0].strip() for block in BLOCKS for line in block.splitlines()
                              if line.strip()))


PROGRAMS = (".venv/bin/accelerate launch", ".venv/bin/dno-bench", ".venv/bin/python -m pytest tests/",
            ".venv/bin/dno-run", ".venv/bin/dno-eval", ".venv/bin/dno-tables", ".venv/bin/dno-nash", "make ",
            ".venv/bin/dno-export",
            "experiments/table1.sh", "experiments/nash.sh", "experiments/bench.sh", "experiments/table1_seeds.sh",
            "experiments/open_judge.sh", ".venv/bin/python experiments/sampler_levers.py", ".venv/bin/dno-report",
            "experiments/mt_bench_open_judge.sh", ".venv/bin/python experiments/open_llm_cost.py",
            ".venv/bin/python experiments/judge_bill.py", "experiments/local_slurm.sh",
            ".venv/bin/python experiments/vllm_cpu.py", ".venv/bin/python experiments/precision_speed.py",
            "experiments/search.sh", ".venv/bin/python experiments/update_levers.py")


def without_env(command: str) -> str:
    """The command without leading VAR=value assignments."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    return shlex.join(words)


def applied(cfg, overrides: list[str]) -> None:
    """Every `key=value` of a README command is in the composed config as written: the command means what it
    says (a misspelled key fails in compose, a value that an experiment or a schedule overrides fails here)."""
    import yaml

    for o in overrides:
        key, _, value = o.partition("=")
        if "." in key and not key.startswith(("hydra", "+", "~")) and "," not in value:
            got = OmegaConf.select(cfg, key)
            assert got == yaml.safe_load(value) or str(got) == value, (o, got)


def args_of(program: str) -> list[list[str]]:
    return [shlex.split(without_env(c))[1:] for c in COMMANDS if without_env(c).startswith(program)]


DNO_RUNS, DNO_EVALS, DNO_TABLES = args_of(".venv/bin/dno-run"), args_of(".venv/bin/dno-eval"), \
    args_of(".venv/bin/dno-tables")
TABLE1 = args_of("experiments/table1.sh")
TABLE1_ROWS = re.search(r"ROWS=(\S+)", (REPO / "experiments" / "table1.sh").read_text()).group(1).split(",")


def test_readme_gives_the_two_setup_commands_and_ci_runs_them():
    makes = [c for c in COMMANDS if c.startswith("make ")]
    assert makes[:2] == ["make demo", "make test"] and set(makes[2:]) <= {"make test-fast", "make test-experiments",
                                                                        "make test-cluster", "make vllm",
                                                                        "make test-vllm", "make docs"}
    ci = (REPO / ".ci" / "run").read_text()
    assert all(m in ci for m in ("make test\n", "make test-experiments", "make test-cluster", "make demo",
                                 "make docs"))
    assert all(without_env(c).startswith(PROGRAMS) for c in COMMANDS), COMMANDS


def test_make_test_fast_runs_the_tests_not_marked_slow():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}  # also under `make`
    dry = subprocess.run(["make", "-n", "test-fast"], cwd=REPO, capture_output=True, text=True, check=True, env=env)
    assert [line for line in dry.stdout.splitlines() if "pytest" in line][-1].endswith('-m pytest -q -m "not slow"')


def test_no_test_file_imports_the_tests_package_or_conftest():
    """What broke `pytest tests/test_configs.py` alone: `from tests.conftest import ...`. Shared code
    lives in tests/helpers.py, which a test file imports the same way alone or in the suite."""
    import ast

    for path in sorted((REPO / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("tests", "conftest")], path.name


@pytest.mark.slow
def test_a_test_file_runs_on_its_own_as_the_readme_says():
    import sys

    readme = [c for c in COMMANDS if c.startswith(".venv/bin/python -m pytest tests/")]
    assert readme and all((REPO / c.split()[-1]).exists() for c in readme)
    ran = subprocess.run(shlex.split(readme[0].replace(".venv/bin/python", sys.executable)), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and " passed" in ran.stdout, ran.stdout[-2000:]


def test_the_paper_to_code_table_names_code_that_exists():
    import importlib

    text = section("# From the paper to the code", "## Departures")
    refs = set(re.findall(r"`(dno\.[\w.]+)`", text))
    assert len(refs) >= 15
    for ref in refs:
        try:
            importlib.import_module(ref)
        except ImportError:
            module, _, attr = ref.rpartition(".")
            assert hasattr(importlib.import_module(module), attr), ref
    for key in ("loss.beta", "loss.replay", "schedule.samples_per_prompt", "loss.pairs"):
        assert OmegaConf.select(make_cfg(), key) is not None or key in text, key


def numbers(text: str) -> list[str]:
    return re.findall(r"-?\d+(?:\.\d+)?", text)


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started/demo.md"])
def test_the_demo_numbers_in_the_readme_are_results_demo_md(page):
    demo = (REPO / "results" / "demo.md").read_text()
    readme = section("## What `make demo` shows", "\n## ", page=page)
    ours, theirs = table_rows(readme, r"\d"), table_rows(demo, r"\d")
    assert len(ours) == 3 and ours.keys() == theirs.keys()
    for t, cells in ours.items():  # WR vs pi_1, WR vs pi_t, pairs new + replayed, then the length
        assert cells[:3] == theirs[t][:3] and cells[-1] == theirs[t][-1], t
    final = re.compile(r"win-rate (\S+)\s+\(standard error (\S+)\),\s+length-controlled win-rate (\S+)\*\*,"
                       r"\s+average length (\d+) vs (\d+) characters")
    assert final.search(readme).groups() == final.search(" ".join(demo.split())).groups()
    wall, cpu = re.search(r"\*\*(\d+ min \d+ s)\*\* on a 2-core (\S+ \S+)", readme).groups()
    assert f"wall time {wall} after the install, on {cpu}" in " ".join(demo.split())  # as make demo prints it
    assert "minutes" not in (REPO / "conf" / "schedule" / "demo.yaml").read_text()  # the time lives in results/


def test_the_table1_numbers_in_the_readme_are_results_table1_md():
    from omegaconf import OmegaConf as OC

    results = table_rows((REPO / "results" / "table1.md").read_text(), r"run `\d+`")
    by_method = {cells[0]: cells for cells in results.values()}
    readme = table_rows(PAGES["docs/guides/paper-tables.md"], r"`table1_\w+`")
    rows = {k: v for k, v in readme.items() if len(v) == 7}  # the results table, not the list of rows
    assert len(rows) == 7
    for row, (_tested, wr, lc, length, *_paper) in rows.items():
        method = OC.load(REPO / "conf" / "experiment" / f"{row.strip('`')}.yaml").method
        _, _, their_lc, their_wr, their_length, *_ = by_method[method]
        assert (wr, lc, length) == (their_wr, their_lc, their_length), row


def test_the_bench_table_in_the_readme_is_results_bench_md():
    bench = (REPO / "results" / "bench.md").read_text()
    for line in bench.splitlines():
        if line.startswith(("| sampling", "| reference", "| update", "Machine limit")):
            assert line in PAGES["docs/guides/performance.md"], line


def test_the_sampler_levers_table_in_the_readme_is_results_sampler_levers_md():
    levers = json.loads((REPO / "results" / "sampler_levers.json").read_text())
    for line in (REPO / "results" / "sampler_levers.md").read_text().splitlines():
        if line.startswith("| ") and not line.startswith("| lever"):
            assert line in PAGES["docs/guides/performance.md"], line
    before = next(r for r in levers["rows"] if r["lever"].startswith("`sampler=generate`"))
    # measured when shared_prefill was named `dno`: results/sampler_levers.md keeps the name it was measured under
    ours = next(r for r in levers["rows"] if r["lever"].startswith(("= `sampler=dno`", "= `sampler=shared_prefill`")))
    assert f"{ours['tokens_per_s'] / before['tokens_per_s']:.2f}x" in PAGES["docs/guides/performance.md"]


@pytest.mark.parametrize("args", TABLE1, ids=[" ".join(a) or "default" for a in TABLE1])
def test_readme_table1_commands_compose_for_every_row(args):
    # the script itself runs in tests/test_experiments.py on the tiny model
    for row in TABLE1_ROWS:
        cfg = make_cfg(f"experiment={row}", *args)
        validate(cfg)
        applied(cfg, args)
        assert cfg.method and "table1" in cfg.logger.tags  # the row names itself in tables and W&B


@pytest.mark.parametrize("args", DNO_RUNS, ids=[" ".join(a) for a in DNO_RUNS])
def test_readme_dno_run_commands_compose(args):
    overrides = [a for a in args if a != "-m" and not a.startswith(("hydra.", "hydra/"))]
    for combo in expand(overrides):
        cfg = make_cfg(*combo)
        validate(cfg)
        applied(cfg, combo)


def test_the_readme_lora_command_is_the_one_tests_run():
    lora = [a for a in DNO_RUNS if any(x.startswith("model.lora") for x in a)]
    assert lora == [[*LORA_RUN, "hydra.run.dir=outputs/lora"]]


def runs_elsewhere(args: list[str]) -> str | None:
    """Where a README command's config already runs end to end on the tiny model (not run twice)."""
    if args[:-1] == ["model=tiny_random", "schedule=smoke"]:
        return "the README sweep's seed-0 job is this config (the smoke_sweep fixture)"
    command = [a for a in args if not a.startswith("hydra.")]  # where it writes aside
    if command == SWEEP:
        return "the smoke_sweep fixture is this command (test_loop.py and test_tables.py read its two jobs)"
    if command == [a for a in SEARCH if not a.startswith("hydra.")]:
        return "test_search.py's search_sweep fixture is this command (3 trials, killed and resumed)"
    if command == BETA_SWEEP:
        return "test_report.py's sweep fixture is this command (the report's two groups of two runs)"
    if command == SUBMITIT:
        return "the submitit_sweep fixture is this command (test_distributed.py reads its two jobs)"
    if args[:-1] == LORA_RUN:
        return "test_lora.py runs it as it stands"
    if args[0].startswith("experiment=") and args[1:] == ["model=tiny_random", "schedule=smoke"]:
        return "test_experiments.py runs every Table 1 row through experiments/table1.sh on SMOKE"
    if args[0].removeprefix("loss=") in VARIANTS_RUN and args[1:3] == ["model=tiny_random", "schedule=smoke"]:
        return "test_loop.py's every-variant sweep runs it on SMOKE"
    if "hydra/launcher=slurm_cpu" in args:
        return "test_cluster.py runs it on the local SLURM cluster (make test-cluster)"
    if "generation/server=vllm_cpu" in args:
        return "test_vllm.py runs it on vLLM's CPU build (make test-vllm)"
    return None


def test_commands_run_elsewhere_are_few_and_named():
    plain = make_cfg("model=tiny_random", "schedule=smoke")  # the README's smoke run ...
    assert OmegaConf.to_container(plain) == OmegaConf.to_container(make_cfg(*SWEEP[1:-1], "seed=0"))  # = sweep job 0
    assert sorted(" ".join(a) for a in DNO_RUNS if runs_elsewhere(a)) == sorted([
        "loss=best_vs_worst model=tiny_random schedule=smoke hydra.run.dir=outputs/best-vs-worst",
        "loss=ipo model=tiny_random schedule=smoke hydra.run.dir=outputs/ipo",
        " ".join(SWEEP), " ".join([*SWEEP, "hydra.sweep.dir=multirun/my-sweep"]),
        " ".join(SUBMITIT), " ".join([*BETA_SWEEP, "hydra.sweep.dir=multirun/beta-sweep"]),
        " ".join([*SEARCH, "hydra.sweep.dir=multirun/search-smoke"]),
        "experiment=table1_spin model=tiny_random schedule=smoke",
        " ".join([*LORA_RUN, "hydra.run.dir=outputs/lora"]),
        "model=tiny_random schedule=smoke hydra.run.dir=outputs/smoke",
        "-m seed=0,1 model=tiny_random schedule=smoke logger=none hydra/launcher=slurm_cpu "
        "hydra.sweep.dir=multirun/slurm-smoke",
        "generation.backend=openai_server generation/server=vllm_cpu schedule=smoke schedule.iterations=1 "
        "logger=none hydra.run.dir=outputs/vllm-smoke"])
    assert [*VLLM, "hydra.run.dir=outputs/vllm-smoke"] in DNO_RUNS  # test_vllm.py's command


def distinct_runs(runs: list[list[str]]) -> list[list[str]]:
    """Commands that differ only in where they write (hydra.*) run once."""
    seen, out = set(), []
    for args in runs:
        key = tuple(a for a in args if not a.startswith("hydra."))
        if key not in seen:
            seen.add(key)
            out.append(args)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("args", distinct_runs([a for a in DNO_RUNS if "model=tiny_random" in a
                                                and not runs_elsewhere(a)]),
                         ids=lambda a: " ".join(a))
def test_readme_tiny_model_commands_run(args, tmp_path):
    args = [a for a in args if not a.startswith("hydra.")]
    where = f"hydra.sweep.dir={tmp_path}" if "-m" in args else f"hydra.run.dir={tmp_path}"
    dno_run(*args, where)
    summaries = [p for p in tmp_path.rglob("summary.json") if "final" not in p.relative_to(tmp_path).parts]
    assert len(summaries) == (len(expand(args)) if "-m" in args else 1)


LAUNCHES = [shlex.split(c)[2:] for c in COMMANDS if c.startswith(".venv/bin/accelerate launch")]


@pytest.mark.parametrize("args", LAUNCHES, ids=[" ".join(a) for a in LAUNCHES])
def test_readme_accelerate_commands_compose(args):
    from accelerate.commands.config.config_args import load_config_from_file

    flags, module = args[:args.index("-m")], args[args.index("-m"):]
    assert flags[0] == "--config_file" and module[:2] == ["-m", "dno.apps.run"], args
    options = dict(zip(flags[::2], flags[1::2], strict=True))
    processes = int(options.get("--num_processes", load_config_from_file(str(REPO / flags[1])).num_processes))
    overrides = [a for a in module[2:] if not a.startswith("hydra.")]
    assert any(a.startswith("hydra.run.dir=") for a in args), "every process needs the same run directory"
    cfg = make_cfg(*overrides)
    validate(cfg, processes)
    applied(cfg, overrides)
    if flags[1].endswith("cpu_ddp.yaml"):  # run for real by tests/test_distributed.py (one machine and two)
        assert overrides == DDP
    if "--num_machines" in options:  # the command of test_two_machines_on_loopback_match_one_process
        assert options["--num_machines"] == "2" and options["--main_process_ip"] == "127.0.0.1"


BENCHES = args_of("experiments/bench.sh") + args_of(".venv/bin/dno-bench")


@pytest.mark.parametrize("args", BENCHES, ids=[" ".join(a) or "default" for a in BENCHES])
def test_readme_bench_commands_compose(args):
    # experiments/bench.sh runs dno-bench for real on the tiny model in tests/test_bench.py
    overrides = [a for a in args if not a.startswith("hydra.")]
    cfg = make_cfg(*overrides, config_name="bench")
    validate(cfg)
    applied(cfg, overrides)
    assert cfg.bench.prompts >= 1


@pytest.mark.parametrize("args", DNO_EVALS, ids=[" ".join(a) for a in DNO_EVALS])
def test_readme_dno_eval_commands_compose(args):
    overrides = [a for a in args if not a.startswith("hydra.")]
    cfg = make_cfg(*overrides, config_name="eval_app")
    validate(cfg)
    applied(cfg, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("args", [a for a in DNO_EVALS if "model=tiny_random" in a], ids=lambda a: " ".join(a))
def test_readme_tiny_model_dno_eval_commands_run(args, tmp_path):
    dno_eval(*[a for a in args if not a.startswith("hydra.")], f"hydra.run.dir={tmp_path}")
    assert (tmp_path / "summary.json").exists() and RunDir(tmp_path).final.benchmark("local").annotations.exists()


@pytest.mark.parametrize("args", DNO_TABLES, ids=[" ".join(a) for a in DNO_TABLES])
def test_readme_dno_tables_commands_compose(args):
    # dno-tables itself runs in tests/test_tables.py and through experiments/table1.sh in test_experiments.py
    cfg = make_cfg(*args, config_name="tables")
    assert cfg.out and (cfg.runs or (cfg.wandb and cfg.group))


@pytest.mark.parametrize("args", args_of(".venv/bin/dno-report"), ids=" ".join)
def test_readme_dno_report_commands_compose(args):
    # dno-report itself runs in tests/test_report.py on a real offline sweep
    cfg = make_cfg(*[a for a in args if not a.startswith("hydra.")], config_name="report")
    assert cfg.runs or (cfg.wandb and cfg.group)
    applied(cfg, args)


@pytest.mark.parametrize("args", args_of(".venv/bin/dno-export"), ids=" ".join)
def test_readme_dno_export_commands_compose(args):
    # dno-export runs on a real run in tests/test_export.py, with the same two keys
    cfg = make_cfg(*args, config_name="export")
    assert [a.split("=")[0] for a in args] == ["run", "out"] and cfg.hub is None and cfg.private


@pytest.mark.slow
@pytest.mark.parametrize("args", args_of(".venv/bin/dno-nash"), ids=" ".join)
def test_readme_dno_nash_commands_run(args, tmp_path):
    run(["dno-nash", *args, f"out={tmp_path}"], timeout=120)
    assert (tmp_path / "summary.json").exists() and (tmp_path / "curves.png").exists()


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


def test_the_worked_example_in_the_readme_is_the_shipped_code():
    section_ = section("## A new variant", "## The documentation")
    yaml_block = re.search(r"```yaml\n(.*?)```", section_, flags=re.DOTALL).group(1)
    assert OmegaConf.create(yaml_block) == OmegaConf.load(REPO / "conf" / "loss" / "best_vs_worst.yaml")
    python_block = re.search(r"```python\n(.*?)```", section_, flags=re.DOTALL).group(1)
    shipped = (REPO / "src" / "dno" / "pairs.py").read_text()
    for line in python_block.splitlines():
        assert line.split("#")[0].strip() in shipped, line


def test_the_seeded_table1_numbers_in_the_readme_are_results_table1_seeds_md():
    report = (REPO / "results" / "table1_seeds.md").read_text()
    text = section("One seed says little")
    rows = [line for line in report.splitlines() if line.startswith(("| DNO", "| SPIN", "| Offline DPO"))]
    assert [r.split(" | ")[0][2:] for r in rows] == ["DNO", "DNO-Restrictive", "SPIN", "Offline DPO"]
    for row in rows:  # the comparison table, as dno-tables wrote it
        assert row in text and row in README, row
    seeds = sum(int(r.split(" | ")[1]) for r in rows)
    wall = re.search(r"(\d+) of 12 runs in (\d+) min", report)
    assert wall and int(wall.group(1)) == seeds and f"{seeds} of 12 runs in {wall.group(2)} min" in text
    noise = re.search(r"Across sampling seeds: WR (\S+) \(sd (\S+)\), LC WR (\S+) \(sd (\S+)\)", report)
    assert noise and f"WR {noise.group(1)} (sd {noise.group(2)})" in text


def test_the_open_judge_results_in_the_readme_are_results_open_judge_md():
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in
            (REPO / "results" / "open_judge.md").read_text().splitlines() if line.startswith("| json") or
            line.startswith("| none")}
    refused = rows["json_schema"][7]
    assert refused.startswith("exit 3: 100% of the judgements failed") and "500" in refused
    assert rows["json_object_schema"][2] == "0.00 / 0.00" and rows["json_object_schema"][7].startswith("finished")
    assert float(rows["json_object_schema"][4]) == pytest.approx(7, abs=0.5)
    assert rows["json_object"][2] == rows["none"][2] == "1.00 / 1.00"
    judges = PAGES["docs/guides/judges.md"]
    assert "refuses to report a win-rate" in judges and "0% invalid answers (about 7 s per prompt" in judges


def test_the_judge_bill_numbers_in_the_readme_are_results_judge_bill_md():
    bill = " ".join((REPO / "results" / "judge_bill.md").read_text().split())
    readme = " ".join(section("## The judge's bill", "## An open-model judge").split())
    for pattern in (r"(\d+M) prompt and (\d+M) completion tokens", r"\*\*(\$[\d,]+)\*\* direct",
                    r"\*\*(\$[\d,]+)\*\* (?:through the Batch API|batch)", r"\*\*(0\.\d+)\*\*",
                    r"off by \*\*([+-]\d+%)\*\*"):
        ours, theirs = re.findall(pattern, readme), re.findall(pattern, bill)
        assert ours and set(ours) <= set(theirs), (pattern, ours, theirs)
    for money in re.findall(r"\$(0\.\d{4})", readme):
        assert f"| {money} |" in bill, money


@pytest.mark.slow
@pytest.mark.experiment
def test_the_judge_bill_script_runs_and_its_report_reads(tmp_path):
    proc = run([".venv/bin/python", "experiments/judge_bill.py", f"out={tmp_path / 'bill'}"],
               env={"ITERATIONS": "2"}, timeout=600)
    assert "The ledgers' totals equal them to the cent: **True**" in proc.stdout
    assert "planned for the judge stage of iterations 2-2" in proc.stdout
    ratio = float(re.search(r"Batch / direct, the whole bill: \*\*(0\.\d+)\*\*", proc.stdout).group(1))
    assert 0.5 < ratio < 0.6  # half, but for the first question, asked directly to settle the form


def test_the_vllm_numbers_in_the_readme_are_results_vllm_cpu_md():
    report = " ".join((REPO / "results" / "vllm_cpu.md").read_text().split())
    readme = " ".join(section("**vLLM on CPU.**").split())
    rates = re.findall(r"\| (\d+\.\d) \| (\d\.\d\d) \|", report)  # tokens/s and mean score per sampler
    (ours, our_score), (theirs, their_score) = rates
    assert f"**{theirs}** tokens/s against **{ours}**" in readme and f"({their_score} and {our_score} of 6" in readme
    for pattern in (r"\*\*(\d\.\d\d)x?\*\*", r"\*\*(\d+ s)\*\*", r"\*\*(\d+\.\d GB)\*\*"):
        assert re.findall(pattern, readme) and set(re.findall(pattern, readme)) <= set(re.findall(pattern, report))
    assert "0.36x" in readme and "vLLM / dno tokens/s: **0.36**" in report


def test_the_mt_bench_open_judge_numbers_in_the_readme_are_results_mt_bench_open_judge_md():
    report = " ".join((REPO / "results" / "mt_bench_open_judge.md").read_text().split())
    readme = " ".join(section("**MT-Bench with an open judge, run here.**", "**Arena-Hard-Auto v2.0**").split())
    valid = re.search(r"\*\*(\d+ of \d+)\*\* turns of pi_1 and \*\*(\d+ of \d+)\*\* of the final model "
                      r"\(\*\*([\d.]+%)\*\* invalid", readme).groups()
    walls = re.search(r"\*\*(\d+ min \d+ s)\*\* for pi_1.*?\*\*(\d+ min \d+ s)\*\* for the final", readme).groups()
    for model, n, wall in zip(("pi_1", "final"), valid[:2], walls, strict=True):
        row = rf"\| {model} \|[^|]*\|[^|]*\|[^|]*\| {n} \| {re.escape(valid[2])} \| 3 \| {wall} \|"
        assert re.search(row, report), model
    assert "On 16 questions" in readme and "on 16 MT-Bench questions" in report and "question 81" in report


def test_the_open_llm_cost_table_in_the_readme_is_results_open_llm_cost_md():
    report = (REPO / "results" / "open_llm_cost.md").read_text()
    text = section("What it costs here, for SmolLM2-135M", "A judge server you run yourself")
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \| ([\d.]+) \|$", text, flags=re.MULTILINE)
    assert len(rows) == 6
    for task, shots, seconds, hours in rows:
        row = rf"^\| {task} \| {shots} \| {seconds} \| \d+ \| {hours} \|$"
        assert re.search(row, report, flags=re.MULTILINE), task
    total = re.search(r"about \*\*([\d.]+) hours\*\*", text).group(1)
    assert f"about {total} hours per model evaluated" in report and "on 20 stand-in items per task" in report


def test_the_cluster_times_in_the_readme_are_in_the_log():
    log = " ".join((REPO / "results" / "LOG.md").read_text().split())
    readme = " ".join(section("## Tested here: SLURM, two machines, FSDP, vLLM on CPU").split())
    for pattern in (r"`up` ([\d.]+ s)", r"about (\d+ s) more to install", r"`down` ([\d.]+ s)",
                    r"`make test-cluster` (\d+ min \d+ s)", r"within seconds \(([\d.]+ s) here"):
        value = re.search(pattern, readme).group(1)
        assert re.search(rf"(?<![\d.]){re.escape(value)}", log), (pattern, value)


def test_the_precision_numbers_in_the_docs_are_results_precision_speed_md():
    report = (REPO / "results" / "precision_speed.md").read_text()
    text = " ".join(section("## Mixed precision", "## The sampler").split())
    ratios = dict(re.findall(r"^\| (forward(?: \+ backward)?) \(tokens/s\) \| [\d.]+ \| [\d.]+ \| ([\d.]+) \|$", report,
                             re.MULTILINE))
    assert f"forward and backward pass at **{ratios['forward + backward']}x**" in text
    assert f"forward pass at **{ratios['forward']}x**" in text
    assert "bf16 unit: none" in report and "batch=2 length=64 repeats=1" in text and "2 sequences x 64 tokens" in report
