"""experiments/routing.sh in its smallest form: every arm (full judging, router=distilled, the student alone, random
routing at the distilled runs' measured share) over two seeds on the tiny model, then results/routing.md's tables."""

from __future__ import annotations

import pytest

from dno.runtime.files import read_jsonl
from helpers import run

pytestmark = [pytest.mark.slow, pytest.mark.experiment]


def test_the_routing_script_runs_every_arm_and_reports_them(tmp_path):
    env = {"SWEEP_DIR": str(tmp_path / "sweep"), "RECORDS_DIR": str(tmp_path / "routing" / "runs"),
           "REPORT": str(tmp_path / "routing.md"), "FULL_RUNS": "run", "SEEDS": "0,1",
           "ROUTER_ARGS": "router.min_train_prompts=4 router.student.steps=50",
           # the bound certifies 2 agreeing audited prompts at alpha = delta = 0.5 (0.5^2 <= 0.5)
           "AUDIT_ARGS": "router.audit_share=0.33 router.alpha=0.5 router.delta=0.5"}
    # no answer scores 7: every decision of the judge is "no pair", which the student gets right
    proc = run(["experiments/routing.sh", "model=tiny_random", "schedule=smoke", "schedule.test_prompts=8",
                "schedule.min_positive_score=7", "logger=none"], env=env, timeout=1500)
    assert "distilled runs' paid share per routed iteration: [0.3333]" in proc.stdout
    random_routes = [r["route"] for r in read_jsonl(tmp_path / "routing" / "runs" / "random" / "0" / "iter_2" /
                                                    "routing.jsonl")]
    assert sorted(random_routes) == ["audit", "audit", "student", "student", "student", "student"]
    report = (tmp_path / "routing.md").read_text()
    for row in ("| DNO | 2 |", "| DNO-distilled | 2 |", "| DNO-student-only | 2 |", "| DNO-random | 2 |"):
        assert row in report
    assert "equals the full arm's of the same seed in 6 of 6 routed runs" in report  # paired by seed
    assert "| distilled | 2 | 2 | 0.333 | 1.000 | 1.000 | 1.000 |" in report and "2 of 2 (1.00, 1.00)" in report
    assert "| student_only | 2 | 2 | 0.000 |" in report
    # 2 seeds x 6 prompts of iteration 2 in the distilled and the student-only arm (the random arm's are not counted),
    # the student always right: every share gives 100% equal labels
    assert "24 prompts (4 routed iterations of the distilled and student-only runs)" in report
    assert "| 30% | 100.0 | 100.0 |" in report
    assert (tmp_path / "routing" / "routing_curve.png").stat().st_size > 10_000
    plan = [line for line in report.splitlines() if line.startswith(("| every prompt", "| 30% (the goal)"))]
    full, goal = (float(line.split("|")[3].replace(",", "")) for line in plan)
    assert 0.3 * full < goal < full
