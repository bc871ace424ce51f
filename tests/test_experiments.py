"""Every Table 1 row runs end to end on the tiny model, through experiments/table1.sh as a user would."""

from __future__ import annotations

import json

import pytest

from dno.runtime.files import read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, PairRow, read_rows
from helpers import REPO, documented_commands, make_cfg, run


def pairs_of(job, t: int = 1) -> list[PairRow]:
    return read_rows(RunDir(job).iteration(t).pairs, PairRow)

pytestmark = [pytest.mark.slow, pytest.mark.experiment]
ROWS = ["table1_sft_positives", "table1_offline_dpo", "table1_spin", "table1_dno_restrictive",
        "table1_dno_lookahead", "table1_dno", "table1_dno_eq8"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("table1")
    env = {"SWEEP_DIR": str(out), "TABLES_DIR": str(out / "tables"),
           "TABLES_ARGS": "bootstrap.lc_samples=3 bootstrap.samples=200"}
    run(["experiments/table1.sh", "model=tiny_random", "schedule=smoke", "oracle.concise_max_words=8",
         "schedule.iterations=1"], env=env, timeout=900)
    jobs = {}
    for job in out.iterdir():
        if (job / "wandb_run.json").exists():
            name = json.loads((job / "wandb_run.json").read_text())["name"]
            jobs[name.split("experiment=")[1].split(",")[0]] = job
    return out, jobs


def test_every_row_finishes_in_one_wandb_group(sweep):
    out, jobs = sweep
    assert sorted(jobs) == sorted(ROWS)
    for row, job in jobs.items():
        record = json.loads((job / "wandb_run.json").read_text())
        assert record["group"] == out.name  # the sweep directory's own name, readable in the W&B UI
        summary = json.loads((job / "summary.json").read_text())
        assert 0 <= summary["alpaca_eval/win_rate"] <= 100, row
        assert row.removeprefix("table1_").encode() in b"".join(p.read_bytes() for p in job.glob("wandb/*/*.wandb"))


def test_rows_build_the_pairs_they_promise(sweep):
    _, jobs = sweep
    spin = pairs_of(jobs["table1_spin"])
    assert spin and all(p.type == "teacher_over_student" for p in spin)
    teacher = json.loads((jobs["table1_spin"] / "init" / "teacher.json").read_text())
    assert all(p.chosen == teacher[p.prompt.id] for p in spin)
    restrictive = pairs_of(jobs["table1_dno_restrictive"])
    assert all(p.type == "teacher_over_student" and p.chosen_score - p.rejected_score >= 2 for p in restrictive)
    kept, dno = (read_jsonl(jobs[row] / "metrics.jsonl")[0] for row in ("table1_dno_restrictive", "table1_dno"))
    assert dno["pairs/student_over_student"] > 0 and kept["pairs/student_over_student"] == 0  # dropped by the rule
    assert kept["pairs/teacher_over_student"] == dno["pairs/teacher_over_student"] == len(restrictive)
    judged = read_rows(RunDir(jobs["table1_dno"]).iteration(1).judgements, Judged)  # the teacher's answer is judged
    assert all(r.prompt.teacher and r.candidates[r.teacher_candidate] == r.prompt.teacher for r in judged)
    assert "data/teacher_score_mean" in dno


def test_single_pass_rows_and_lookahead(sweep):
    _, jobs = sweep
    for row, epochs in (("table1_sft_positives", 4), ("table1_offline_dpo", 4)):
        rows = read_jsonl(jobs[row] / "metrics.jsonl")
        assert [r["iteration"] for r in rows] == [1] and rows[0]["train/steps"] > 0
        assert rows[0]["train/steps"] % epochs == 0
    sft_pairs = pairs_of(jobs["table1_sft_positives"])
    assert sft_pairs and all(p.ref_chosen_logps is None for p in sft_pairs)  # SFT needs no reference
    look = json.loads((jobs["table1_dno_lookahead"] / "summary.json").read_text())
    assert look["final/model"] == "lookahead"
    n_new = sum(r["pairs/new"] for r in read_jsonl(jobs["table1_dno_lookahead"] / "metrics.jsonl"))
    assert look["lookahead/pairs"] == n_new  # every iteration's own pairs, once
    eq8 = pairs_of(jobs["table1_dno_eq8"])
    assert len(eq8) == 6 * 10  # soft pairs: every pair of 4 samples + the teacher's answer, for each of the 6 prompts


def test_the_script_writes_the_tables_and_plots_of_the_sweep(sweep):
    out, jobs = sweep
    table1 = (out / "tables" / "table1.md").read_text()
    for job in jobs.values():  # one row per run, with its own numbers and its judge
        summary = json.loads((job / "summary.json").read_text())
        assert f"| run `{job.name}` |" in table1
        assert f"{summary['alpaca_eval/win_rate']:.1f} ± {summary['alpaca_eval/standard_error']:.1f}" in table1
    for method in ("| DNO-Restrictive |", "| SFT on Positives |", "| DNO (Eq. 8) |", "| paper | DNO | It 3 | 22.59"):
        assert method in table1
    table2 = (out / "tables" / "table2.md").read_text()
    assert table2.count("| run `") == sum(len(read_jsonl(j / "metrics.jsonl")) for j in jobs.values())
    assert not (out / "tables" / "table4.md").exists()  # no run has more than 3 iterations
    comparison = (out / "tables" / "comparison.md").read_text()  # one seed per row: seven rows against DNO
    rows = [line for line in comparison.splitlines() if line.startswith("| ") and "| seeds |" not in line]
    assert len(rows) == 7 and "| ΔWR vs DNO [95% CI] |" in comparison
    assert next(r for r in rows if r.startswith("| DNO | 1 |")).endswith("| - | - |")
    for png in ("win_rate.png", "length.png"):
        data = (out / "tables" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def agreement(run_dir, *overrides: str) -> dict:
    return json.loads(run([str(REPO / ".venv" / "bin" / "python"), "experiments/judge_agreement.py", run_dir,
                           *overrides]).stdout)


def test_judge_agreement_of_the_runs_own_oracle_is_one_and_a_committee_is_measured(smoke_run):
    same = agreement(smoke_run, "oracle.concise_max_words=8")  # the smoke run's own oracle
    assert same["decided_pairs"] > 0 and same["agreement"] == 1.0 and same["abstained"] == 0
    other = agreement(smoke_run, "oracle=committee")
    assert other["decided_pairs"] == same["decided_pairs"] and 0.0 <= other["agreement"] <= 1.0


def test_nash_script_writes_the_report_and_plots(tmp_path):
    env = {"NASH_DIR": str(tmp_path / "nash"), "REPORT": str(tmp_path / "nash.md"), "ITERATIONS": "100"}
    run(["experiments/nash.sh"], env=env)
    report = (tmp_path / "nash.md").read_text()
    for problem in ("rock_paper_scissors", "weighted_cycle", "transitive", "random_8x8"):
        assert f"## {problem}" in report and (tmp_path / "nash" / f"{problem}.png").exists()
    assert report.count("| `dno_exact` |") == 4 and report.count("| `sppo (explore 0.1)` |") == 4
    errors = [float(line.split("|")[2]) for line in report.splitlines()
              if line.startswith(("| 30 ", "| 300", "| 3000"))]
    assert len(errors) == 4 and errors == sorted(errors, reverse=True)  # N = 30, 300, 3000, 30000


def test_table1_seeds_rows_fit_the_offline_default_with_200_test_prompts(tmp_path):
    """experiments/table1_seeds.sh's rows build (checked config, splits of the builtin prompts) as it runs them."""
    from dno.run import Run

    script = (REPO / "experiments" / "table1_seeds.sh").read_text()
    rows = script.split('ROWS="${ROWS:-')[1].split("}")[0].split(",")
    assert rows == ["table1_dno", "table1_dno_restrictive", "table1_spin", "table1_offline_dpo"]
    assert 'SEEDS="${SEEDS:-0,1,2}"' in script and "schedule.test_prompts=200" in script
    for row in rows:
        run = Run.build(make_cfg(f"experiment={row}", "schedule.test_prompts=200", "logger.mode=disabled"),
                        tmp_path / row)
        run.tracker.finish()
        assert len(run.splits.test) == 200 and len(run.splits.iterations) == run.cfg.schedule.iterations


def test_table1_seeds_pools_seeds_and_measures_the_evaluation_noise(tmp_path):
    """The README's experiments/table1_seeds.sh command on the tiny model, as written: two rows x two seeds,
    then the first row's seed-0 model evaluated with two sampling seeds, all in the report."""
    import shlex

    command = next(line for line in documented_commands()
                   if "experiments/table1_seeds.sh" in line and "model=tiny_random" in line)
    words = shlex.split(command)
    at = words.index("experiments/table1_seeds.sh")
    env = {**dict(w.split("=", 1) for w in words[:at]),
           "SWEEP_DIR": str(tmp_path / "sweep"), "TABLES_DIR": str(tmp_path / "tables"),
           "REPORT": str(tmp_path / "report.md"), "TABLES_ARGS": "bootstrap.lc_samples=3 bootstrap.samples=200"}
    assert {env["ROWS"], env["SEEDS"], env["EVAL_SEEDS"]} == {"table1_dno,table1_spin", "0,1"}
    run(words[at:], env=env, timeout=900)
    report = (tmp_path / "report.md").read_text()
    assert "| DNO | 2 |" in report and "| SPIN | 2 |" in report and "ΔWR vs DNO" in report
    noise = report.split("## Evaluation-only noise")[1]
    rows = [line for line in noise.splitlines() if line.startswith(("| 0 |", "| 1 |"))]
    assert len(rows) == 2 and all(line.endswith("| 200 |") for line in rows)  # 200 test prompts each
    assert "Across sampling seeds: WR " in noise and (tmp_path / "sweep" / "wall_time.txt").exists()
    assert (tmp_path / "tables" / "win_rate.png").exists()
    records = sorted(p.name for p in (tmp_path / "tables" / "runs").iterdir())  # the runs' records, then the report
    assert records == ["0", "1", "2", "3"] and (tmp_path / "tables" / "runs" / "0" / "wandb_run.json").exists()
    assert not list((tmp_path / "tables" / "runs").rglob("*.safetensors"))  # records only, no checkpoint
    check = json.loads((tmp_path / "tables" / "report" / "report_check.json").read_text())
    assert len(check["runs"]) == 4 and {r["group"] for r in check["runs"]} == {"table1_seeds"}


def test_sampler_levers_script_measures_every_lever_on_the_same_draws(tmp_path):
    """The README's experiments/sampler_levers.py command on the tiny model: every lever row, and the
    rows that only change how the work is laid out (prefill shared or not, batch order, dropping finished
    rows, static or dynamic cache, one batch) draw the very same tokens, since each sample has its own
    generator."""
    import shlex

    command = next(line for line in documented_commands()
                   if "experiments/sampler_levers.py" in line and "model=tiny_random" in line)
    out = tmp_path / "levers.md"
    words = [w for w in shlex.split(command.split("#")[0]) if not w.startswith("out=")] + [f"out={out}"]
    assert words[:2] == [".venv/bin/python", "experiments/sampler_levers.py"] and "prompts=4" in words
    run([str(REPO / words[0]), *words[1:]], timeout=600)
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {r["lever"]: r for r in report["rows"]}
    assert len(rows) == 11 and sum(r["kept"] for r in rows.values()) == 9 and report["prompts"] == 4
    same = [name for name in rows if name.startswith(("own decode loop", "+ ", "= ", "finished", "all "))]
    assert len(same) == 8 and len({rows[name]["tokens"] for name in same}) == 1
    assert 4 * 4 <= rows[same[0]]["tokens"] <= 4 * 4 * 12  # 4 prompts x K=4, at most max_new_tokens (12) each
    first, before = report["rows"][0], report["rows"][1]
    assert first["to_bare"] == 1.0 and before["to_before"] == 1.0
    for r in report["rows"]:
        assert r["flops"] == pytest.approx(2 * report["parameters"] * r["tokens_per_s"])
        assert r["to_before"] == pytest.approx(r["tokens_per_s"] / before["tokens_per_s"])
    md = out.read_text()
    assert "| = `sampler=shared_prefill` (dno.policy.sample.Sampler) |" in md
    assert "*tried on top of `sampler=shared_prefill`:*" in md


def test_search_finds_a_point_compares_it_with_fresh_seeds_and_says_which_won(tmp_path):
    """The search guide's experiments/search.sh command on the tiny model, as written: 3 trials (trial 0 the default,
    trial 2 wins on validation), then both points with a fresh seed on the test prompts, and results/search.md."""
    import shlex

    command = next(line for line in documented_commands()
                   if "experiments/search.sh" in line and "model=tiny_random" in line)
    words = shlex.split(command)
    at = words.index("experiments/search.sh")
    env = {**dict(w.split("=", 1) for w in words[:at]), "SWEEP_DIR": str(tmp_path / "sweep"),
           "OUT": str(tmp_path / "out"), "REPORT": str(tmp_path / "search.md"),
           "TABLES_ARGS": "bootstrap.lc_samples=3 bootstrap.samples=200", "REPORT_ARGS": "lc_samples=3"}
    run(words[at:], env=env, timeout=900)
    report = (tmp_path / "search.md").read_text()
    trials = [line.split("|")[2].strip() for line in report.splitlines() if line.startswith("| ")
              and line.split("|")[1].strip().isdigit()]
    assert sorted(trials) == ["0", "1", "2"] and "**Chosen point:** trial " in report
    assert "**Verdict:**" in report and "| default | 1 |" in report
    chosen = report.split("**Chosen point:** trial ")[1].split(",")[0]
    assert chosen == "0" or "| search best | 1 |" in report  # a non-default winner is run again with fresh seeds
    records = tmp_path / "out" / "trials"
    assert (records / "study.db").exists() and sorted(p.name for p in records.iterdir() if p.is_dir()) == \
        ["0", "1", "2"]
    check = json.loads((tmp_path / "out" / "report" / "report_check.json").read_text())
    assert [t["trial"] for t in check["search"]["trials"]][0] == int(chosen)
