"""The smoke loop with the paper's judge served on 127.0.0.1: faults, cache, budget, secrecy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dno.oracles.cache import JudgeCache
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, PairRow, read_rows
from helpers import dno_run
from judge_server import JudgeServer, score

KEY_ENV, KEY = "DNO_TEST_JUDGE_KEY", "sk-test-loop-9f8e7d6c5b4a-secret"

pytestmark = pytest.mark.slow  # every test here runs dno-run


def judged_run(server: JudgeServer, run_dir: Path, cache: Path, *extra: str, check: bool = True):
    return dno_run("model=tiny_random", "schedule=smoke", "schedule.iterations=1", "oracle=openai_listwise",
                   f"oracle.base_url={server.url}",
                   f"oracle.api_key_env={KEY_ENV}", f"oracle.cache_path={cache}", "oracle.timeout_s=0.5",
                   "oracle.max_retries=4", "oracle.max_concurrency=4", "oracle.model=scripted-judge",
                   f"hydra.run.dir={run_dir}", *extra, check=check, env={KEY_ENV: KEY})


def files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.fixture(scope="module")
def server():
    with JudgeServer(timeout_sleep=1.0) as s:
        yield s


def test_faults_are_retried_or_excluded_and_a_second_run_pays_nothing(server, tmp_path):
    cache, first = tmp_path / "judge.sqlite", tmp_path / "first"
    server.requests.clear()
    server.faults = ["500", "429", "timeout", "malformed", "missing", "range"]
    proc = judged_run(server, first, cache)
    assert not server.faults and {"500", "429", "timeout"} <= {r["fault"] for r in server.requests}
    assert all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)

    it = RunDir(first).iteration(1)
    judge = read_json(it.marker("judge"))
    assert judge["oracle/failed_frac"] == 0.0  # every 500, 429 and timeout was retried to an answer
    assert judge["oracle/invalid_frac"] == 0.5  # 3 of 6 prompts got a malformed answer
    rows = read_rows(it.judgements, Judged)
    invalid = {r.prompt.id for r in rows if r.judgement.status == "invalid"}
    assert len(invalid) == 3
    assert all(r.judgement.raw and r.win_probs is None for r in rows if r.prompt.id in invalid)
    pairs = read_rows(it.pairs, PairRow)
    assert pairs and not invalid & {p.prompt.id for p in pairs}  # excluded, never a label
    for r in rows:  # the scripted judge scores content, so the un-shuffled scores must match it
        if r.prompt.id not in invalid:
            assert r.judgement.scores == [float(score(c)) for c in r.candidates]
    assert any(r.judgement.detail["order"] != sorted(r.judgement.detail["order"]) for r in rows)

    sent = len(server.requests)
    assert server.answered() == len(JudgeCache(cache)) and judge["oracle/requests"] == 6
    second = tmp_path / "second"  # a new run of the same config: every question is in the cache
    proc2 = judged_run(server, second, cache)
    assert len(server.requests) == sent  # zero requests
    again = read_json(RunDir(second).iteration(1).marker("judge"))
    assert again["oracle/requests"] == 0 and again["oracle/cache_hits"] == 6
    win_rate = [read_json(run / "summary.json")["alpaca_eval/win_rate"] for run in (first, second)]
    assert win_rate[0] == win_rate[1]

    for run in (first, second):
        assert files_containing(run, KEY) == []  # not in configs, logs, W&B files or results
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert "oracle/invalid_frac" in metrics[0] and "oracle/cache_hits" in metrics[0]
    assert files_containing(tmp_path, KEY) == [] and KEY not in proc.stdout + proc.stderr + proc2.stderr


def test_a_budget_stop_is_clean_and_the_same_command_resumes_without_paying_twice(server, tmp_path):
    cache, run_dir = tmp_path / "judge.sqlite", tmp_path / "run"
    server.requests.clear()
    stopped = judged_run(server, run_dir, cache, "oracle.max_requests=3", check=False)
    assert stopped.returncode == 3 and "oracle budget spent" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not (run_dir / "iter_1" / "DONE.judge").exists()
    assert server.answered() == 3 == len(JudgeCache(cache))  # what was paid for is saved
    judged_run(server, run_dir, cache)  # the same command with no budget (a budget may change on a resume)
    assert server.answered() == len(JudgeCache(cache))  # each question was paid for once
    assert read_json(run_dir / "iter_1" / "DONE.judge")["oracle/cache_hits"] == 3
    for r in read_jsonl(run_dir / "iter_1" / "judgements.jsonl"):  # what an unbudgeted run gets: the budget
        assert r["judgement"]["scores"] == [float(score(c)) for c in r["candidates"]]  # changed no result
    assert (run_dir / "summary.json").exists()


def test_a_missing_key_fails_before_any_compute(tmp_path):
    proc = dno_run("model=tiny_random", "schedule=smoke", "oracle=openai_listwise",
                   "oracle.api_key_env=DNO_TEST_UNSET_KEY", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2 and "DNO_TEST_UNSET_KEY is not set" in proc.stderr
    assert not (tmp_path / "run" / "init").exists()


def test_a_judge_that_is_down_stops_the_run_instead_of_training_on_nothing(server, tmp_path):
    server.requests.clear()
    server.faults = ["500"] * 1000
    try:
        proc = judged_run(server, tmp_path / "run", tmp_path / "judge.sqlite", "oracle.max_retries=0", check=False)
    finally:
        server.faults = []
    assert proc.returncode == 3 and "100% of the judgements failed" in proc.stderr
    assert "InternalServerError" in proc.stderr
    assert not (tmp_path / "run" / "iter_1" / "judgements.jsonl").exists()
    # no retries asked for: the first prompt in each structured-output form (all refused, so the strongest is
    # kept), the other five once
    assert len(server.requests) == 4 + 5
