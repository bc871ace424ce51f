"""dno-tables on real run records: two smoke runs, and Table 4 for a long run."""

from __future__ import annotations

import pytest

from dno.reports.run_records import RunRecord, find_runs
from dno.reports.tables import write_tables
from dno.runtime.files import read_json, read_jsonl
from helpers import run


@pytest.mark.slow
def test_two_smoke_runs_give_every_file_with_both_runs_rows(smoke_sweep, tmp_path):
    first, second_run = smoke_sweep
    run(["dno-tables", f"runs=[{first},{second_run}]", f"out={tmp_path}", "bootstrap.lc_samples=4"], timeout=120)
    table1 = (tmp_path / "table1.md").read_text()
    labels = [f"model=tiny_random schedule=smoke loss=dno_prct oracle=rules seed={s}" for s in (0, 1)]  # overrides
    for job, label in zip((first, second_run), labels, strict=True):
        s = read_json(job / "summary.json")
        row = next(line for line in table1.splitlines() if line.startswith(f"| run `{job.name}` | {label} |"))
        assert f"| {s['alpaca_eval/lc_win_rate']:.1f} | {s['alpaca_eval/win_rate']:.1f} ± " in row
        assert row.endswith("| RulesOracle | pi_1 |")
    table2 = (tmp_path / "table2.md").read_text()
    m = read_jsonl(second_run / "metrics.jsonl")[1]  # iteration 2 holds pi_2's samples: "It 1"
    row = next(line for line in table2.splitlines()
               if line.startswith(f"| run `{second_run.name}` | {labels[1]} | 1 |"))
    assert row.endswith(f"| {m['data/student_score_mean']:.2f} | - | {m['pairs/teacher_over_student']} | "
                        f"{m['pairs/student_over_teacher']} | {m['pairs/student_over_student']} |")
    assert table2.count("| run `") == 4  # 2 iterations x 2 runs
    assert {p.name for p in tmp_path.iterdir()} == {"table1.md", "table2.md", "comparison.md", "win_rate.png",
                                                    "length.png"}
    rows = [line for line in (tmp_path / "comparison.md").read_text().splitlines() if line.startswith("| model=")]
    assert len(rows) == 1 and rows[0].startswith("| model=tiny_random schedule=smoke loss=dno_prct oracle=rules | 2 | ")
    commit = read_json(first / "provenance.json")["commit"][:10]
    torch_version = read_json(first / "provenance.json")["versions"]["torch"]
    for job in (first, second_run):  # both runs' provenance under the table, neither flagged (same judge)
        assert f"| `{job.name}` | {commit}" in table1 and f"| {torch_version} |" in table1
    assert table1.count("| RulesOracle | - |") == 2


def test_table4_appears_for_a_run_with_more_than_three_iterations(tmp_path):
    metrics = [{"iteration": t, "eval/win_rate_vs_init": 50.0 + 5 * t, "eval/lc_win_rate_vs_init": 48.0 + 4 * t,
                "eval/avg_length": 100.0 + t} for t in range(1, 6)]
    long = RunRecord(name="long", label="DNO-More-Data", judge="RulesOracle", summary={}, metrics=metrics,
                     init_length=99.0)
    written = write_tables([long], tmp_path)
    assert tmp_path / "table4.md" in written
    table4 = (tmp_path / "table4.md").read_text()
    assert "| paper | It6 | 33.05 | 34.38 | 2683 |" in table4
    assert "| run `long` (DNO-More-Data, RulesOracle) | It5 | 68.0 | 75.0 | 105 |" in table4


def test_rows_whose_judge_or_evaluator_differ_are_flagged(tmp_path):
    def record(name: str, judge: str, concise: int, alpaca_eval: str) -> RunRecord:
        prov = {"commit": "abc1234567890", "dirty": False, "versions": {"torch": "2.13", "alpaca_eval": alpaca_eval},
                "device": {"cpu": "EPYC", "dtype": "float32"},
                "config": {"oracle": {"_target_": f"dno.oracles.{judge}", "concise_max_words": concise}}}
        return RunRecord(name=name, label=name, judge=judge, summary={"alpaca_eval/win_rate": 60.0}, metrics=[],
                         provenance=prov)

    runs = [record("a", "RulesOracle", 60, "0.6.6"), record("b", "RulesOracle", 60, "0.6.6"),
            record("c", "RulesOracle", 8, "0.6.6"), record("d", "RulesOracle", 60, "0.6.5")]
    table1 = (write_tables(runs, tmp_path)[0]).read_text()
    flags = {line.split("`")[1]: line.rsplit("|", 2)[1].strip() for line in table1.splitlines()
             if line.startswith("| `")}
    assert flags == {"a": "-", "b": "-", "c": "judge differs", "d": "evaluator differs"}
    assert "| `a` | abc1234567 | 2.13 | - | 0.6.6 | EPYC (float32) | RulesOracle | - |" in table1
    legacy = RunRecord(name="old", label="old", judge="RulesOracle", summary={}, metrics=[])
    assert "no provenance (run before it was recorded)" in write_tables([legacy], tmp_path / "legacy")[0].read_text()


@pytest.mark.slow
def test_runs_accept_a_sweep_directory_a_glob_and_a_list(smoke_sweep):
    a, b = smoke_sweep
    assert find_runs(str(a.parent)) == [a, b]  # a sweep directory holding runs
    assert find_runs(f"{a},{b}") == find_runs([a, b]) == [a, b]
    assert find_runs(str(a.parent / "[1]")) == [b]  # a glob
    with pytest.raises(FileNotFoundError, match="no run directory"):
        find_runs("/nonexistent/*")
