"""dno-tables on real run records: two smoke runs, and Table 4 for a long run."""

from __future__ import annotations

import pytest

from dno.reports.run_records import RunRecord, find_runs
from dno.reports.tables import write_tables
from dno.runtime.files import read_json, read_jsonl, write_json, write_jsonl
from dno.runtime.layout import RunDir
from helpers import run


@pytest.mark.slow
def test_two_smoke_runs_give_every_file_with_both_runs_rows(smoke_sweep, tmp_path):
    first, second_run = smoke_sweep
    run(["dno-tables", f"runs=[{first},{second_run}]", f"out={tmp_path}", "bootstrap.lc_samples=4"], timeout=120)
    table1 = (tmp_path / "table1.md").read_text()
    labels = [f"model=tiny_random schedule=smoke loss=dno_prct oracle=rules seed={s}" for s in (0, 1)]  # overrides
    pooled = "model=tiny_random schedule=smoke loss=dno_prct oracle=rules"  # the seeds of one config: one row
    row = next(line for line in table1.splitlines() if line.startswith(f"| runs `{first.name}`, `{second_run.name}`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    lcs = [read_json(job / "summary.json")["alpaca_eval/lc_win_rate"] for job in (first, second_run)]
    assert cells[0].endswith("(2 seeds)") and cells[1] == pooled and cells[3] == f"{sum(lcs) / 2:.1f}"
    comparison_row = next(line for line in (tmp_path / "comparison.md").read_text().splitlines()
                          if line.startswith(f"| {pooled} | 2 | "))
    assert cells[4] == comparison_row.split("|")[3].strip()  # the same pooled win-rate and interval
    assert cells[6:9] == ["not evaluated"] * 3 and row.endswith("| RulesOracle | pi_1 |")
    table2 = (tmp_path / "table2.md").read_text()
    m = read_jsonl(second_run / "metrics.jsonl")[1]  # iteration 2 holds pi_2's samples: "It 1"
    row = next(line for line in table2.splitlines()
               if line.startswith(f"| run `{second_run.name}` | {labels[1]} | 1 |"))
    assert row.endswith(f"| {m['data/student_score_mean']:.2f} | - | {m['pairs/teacher_over_student']} | "
                        f"{m['pairs/student_over_teacher']} | {m['pairs/student_over_student']} |")
    assert table2.count("| run `") == 4  # 2 iterations x 2 runs
    assert {p.name for p in tmp_path.iterdir()} == {"table1.md", "table2.md", "comparison.md", "win_rate.png",
                                                    "length.png", "final_benchmarks.png"}
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
    assert "| paper | It6 | 33.05 | 34.38 | 2683 | 7.28 | 6.65 | 6.97 |" in table4
    assert ("| run `long` (DNO-More-Data, RulesOracle) | It5 | 68.0 | 75.0 | 105 | not evaluated | not evaluated | "
            "not evaluated |") in table4


def mt_bench_run(tmp_path, name: str, seed: int, rating: float, questions=(81, 82, 83, 84)) -> RunRecord:
    """A run evaluated on MT-Bench whose every valid rating is `rating` (one invalid turn, left out)."""
    path = tmp_path / name
    rows = [{"question_id": q, "turn": t, "category": "writing", "rating": rating, "status": "ok"}
            for q in questions for t in (1, 2)]
    rows.append({"question_id": 99, "turn": 1, "category": "math", "rating": None, "status": "invalid"})
    write_jsonl(RunDir(path).final.benchmark("mt_bench").judgements, rows)
    summary = {"mt_bench/turn1": rating, "mt_bench/turn2": rating, "mt_bench/avg": rating, "final/model": "pi_3"}
    return RunRecord(name=str(path), label=f"DNO seed={seed}", judge="RulesOracle", summary=summary, metrics=[],
                     path=path, seed=seed, group="dno" if name.startswith("dno") else name)


def test_mt_bench_pools_seeds_into_one_row_with_its_interval_and_paired_difference(tmp_path):
    """Seeds rated 7 and 5 everywhere: the pooled mean is 6 and the bootstrap over seeds draws 5, 6 or 7, so the
    interval is [5, 7]; against a reference rated 4 everywhere, the difference is +2, each draw's +1, +2 or +3
    (the seeds are drawn again), so its interval is [+1, +3] and no draw is 2 away from it: p = 1/(1+B)."""
    runs = [mt_bench_run(tmp_path, "dno-0", 0, 7.0), mt_bench_run(tmp_path, "dno-1", 1, 5.0),
            mt_bench_run(tmp_path, "ref", 0, 4.0)]
    runs[2].label = "Offline DPO"
    written = write_tables(runs, tmp_path / "out", stats={"compare_to": "Offline DPO", "samples": 200})
    table1 = (tmp_path / "out" / "table1.md").read_text()
    assert (f"| runs `{runs[0].name.split('/')[-1]}`, `{runs[1].name.split('/')[-1]}` (2 seeds) | DNO | It 2 | "
            "not evaluated | not evaluated | not evaluated | 6.00 | 6.00 | 6.00 [5.00, 7.00] | RulesOracle | pi_1 |"
            ) in table1
    assert "| run `ref` | Offline DPO | It 2 | not evaluated | not evaluated | not evaluated | 4.00 | 4.00 | " \
           "4.00 [4.00, 4.00] |" in table1
    assert "| paper | DNO | It 3 | 22.59 | 24.97 | 2228 | 7.62 | 7.35 | 7.48 |" in table1
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "| DNO | 2 | 6.00 [5.00, 7.00] | +2.00 [+1.00, +3.00] * | 0.005 |" in comparison
    assert "| Offline DPO | 1 | 4.00 [4.00, 4.00] | - | - |" in comparison and "| WR [95% CI] |" not in comparison
    assert tmp_path / "out" / "final_benchmarks.png" in written
    assert (tmp_path / "out" / "final_benchmarks.png").read_bytes()[:4] == b"\x89PNG"


def test_table4_has_mt_bench_of_each_iterate_dno_eval_evaluated(tmp_path):
    path = tmp_path / "run"
    for t, avg in ((1, 5.5), (3, 6.25)):  # pi_1 and pi_3 evaluated; pi_2 not
        write_json(RunDir(path).iterate_final(t).summary, {"mt_bench/turn1": avg + 1, "mt_bench/turn2": avg - 1,
                                                           "mt_bench/avg": avg})
    for t in (1, 2):
        RunDir(path).iteration(t).path.mkdir(parents=True, exist_ok=True)
    metrics = [{"iteration": t, "eval/win_rate_vs_init": 60.0} for t in (1, 2)]
    record = RunRecord(name=str(path), label="DNO", judge="RulesOracle", summary={}, metrics=metrics, path=path)
    table4 = (write_tables([record], tmp_path / "out")[2]).read_text()
    assert "| run `run` (DNO, RulesOracle) | It0 (pi_1) | - | - | - | 6.50 | 4.50 | 5.50 |" in table4
    assert "| run `run` (DNO, RulesOracle) | It1 | - | 60.0 | - | not evaluated | not evaluated | not evaluated |" \
        in table4
    assert "| run `run` (DNO, RulesOracle) | It2 | - | 60.0 | - | 7.25 | 5.25 | 6.25 |" in table4


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


def test_table3_has_the_papers_rows_and_each_iterate_lm_eval_evaluated(tmp_path):
    path = tmp_path / "run"
    scores = {"arc_challenge": 0.25, "gsm8k": 0.0, "hellaswag": 0.3125, "mmlu": 0.26, "truthfulqa_mc2": 0.45,
              "winogrande": 0.5, "ifeval": 0.1}
    for t in (1, 2):  # pi_1 and pi_2; the table names them It 0 and It 1
        summary = {f"open_llm/{k}": v + (t - 1) / 100 for k, v in scores.items()}
        summary["open_llm/avg"] = sum(summary.values()) / len(summary)
        summary["open_llm/mmlu_version"] = "2"  # strings and counts are not scores
        write_json(RunDir(path).iterate_final(t).summary, summary)
    RunDir(path).iteration(1).path.mkdir(parents=True, exist_ok=True)
    record = RunRecord(name=str(path), label="DNO", judge="RulesOracle", summary={}, metrics=[], path=path)
    written = write_tables([record], tmp_path / "out")
    table3 = (tmp_path / "out" / "table3.md").read_text()
    assert tmp_path / "out" / "table3.md" in written
    assert "| paper | DNO It3 | .672 | .542 | .852 | .622 | .606 | .753 | .675 | - |" in table3
    avg0 = sum(scores.values()) / 7
    assert (f"| run `run` (DNO) | It 0 | 0.250 | 0.000 | 0.312 | 0.260 | 0.450 | 0.500 | {avg0:.3f} | ifeval 0.100 |"
            in table3)
    assert "| run `run` (DNO) | It 1 | 0.260 | 0.010 |" in table3
    only_arc = RunRecord(name="eval", label="x", judge="-", metrics=[],
                         summary={"open_llm/arc_challenge": 0.5, "open_llm/avg": 0.5})
    table3 = (write_tables([only_arc], tmp_path / "out2")[2]).read_text()
    assert "| run `eval` (x) | - (final) | 0.500 | not evaluated | not evaluated |" in table3
