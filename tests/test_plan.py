"""dno-run plan=true: the priced plan before any model loads (no judge key needed), its numbers against a hand
computation, a resumed plan counting what the cache holds and what earlier iterations measured, and the run's
log holding the plan beside what was paid."""

from __future__ import annotations

import math

import pytest

from dno.oracles.openai_listwise import SYSTEM, user_message
from dno.plan import CHARS_PER_TOKEN
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from helpers import dno_run
from judge_server import JudgeServer

pytestmark = pytest.mark.slow
LISTWISE = ["model=tiny_random", "schedule=smoke", "oracle=openai_listwise", "oracle.price_input_per_1m=10",
            "oracle.price_output_per_1m=30", "logger=none"]


def test_the_plan_prices_a_run_before_any_model_loads_and_without_a_key(tmp_path):
    out = tmp_path / "plan"
    proc = dno_run(*LISTWISE, "plan=true", "plan_inputs.answer_chars=400", f"hydra.run.dir={out}",
                   env={"OPENAI_API_KEY": ""})
    plan = read_json(RunDir(out).plan)
    assert "| total |" in proc.stdout and "direct USD" in proc.stdout
    assert not (out / "init").exists() and not (out / "wandb").exists()  # nothing sampled, nothing logged
    k, n = 4, 6  # the smoke schedule: 4 samples of 6 prompts per iteration, no teacher answers
    assert plan["candidates_per_prompt"] == k and [r["prompts"] for r in plan["iterations"]] == [n, n]
    instruction = plan["estimates"]["instruction_chars"]["value"]
    template = len(SYSTEM) + len(user_message("", [""] * k))  # the judge's fixed text for 4 candidates
    prompt_tokens = (template + instruction + k * 400) / CHARS_PER_TOKEN
    row = plan["iterations"][0]
    assert row["judge_requests"] == n and row["judge_prompt_tokens"] == round(n * prompt_tokens)
    assert row["judge_completion_tokens"] == n * k * 140
    usd = (n * prompt_tokens * 10 + n * k * 140 * 30) / 1e6
    assert row["judge_usd"] == pytest.approx(usd, rel=1e-3) and row["judge_usd_batch"] == pytest.approx(usd / 2,
                                                                                                         rel=1e-3)
    assert plan["estimates"]["pairs_per_prompt"]["value"] == math.comb(k, 2)
    assert plan["hours_from"].startswith("missing")
    # the Batch API's total is there with oracle.batch=false too: every stage of this run asks the run's judge
    assert plan["total"]["usd_batch"] == pytest.approx(plan["total"]["usd"] / 2) and plan["total"]["usd"] > 0
    assert f"${plan['total']['usd_batch']:,.2f} through the Batch API (oracle.batch=true)" in proc.stdout


def test_a_run_logs_its_plan_beside_what_it_paid_and_a_resumed_plan_counts_the_cache(tmp_path):
    with JudgeServer() as server:
        judge = [f"oracle.base_url={server.url}", "oracle.api_key_env=null", "oracle.model=scripted-judge",
                 f"oracle.cache_path={tmp_path / 'judge.sqlite'}"]
        run_dir = tmp_path / "run"
        dno_run(*LISTWISE, *judge, f"hydra.run.dir={run_dir}")
        rows = read_jsonl(RunDir(run_dir).metrics)
        planned = read_json(RunDir(run_dir).plan)["iterations"]
        for row, plan in zip(rows, planned, strict=True):  # the plan made at the start, beside what was paid
            assert row["plan/judge_usd"] == pytest.approx(plan["judge_usd"]) and row["oracle/usd"] > 0
        first = rows[0]
        per_request = [first[f"oracle/{k}_tokens"] / first["oracle/requests"] for k in ("prompt", "completion")]
        left = planned[1]["judge_requests"]
        assert first["plan/remaining_judge_usd"] == pytest.approx(
            left * (per_request[0] * 10 + per_request[1] * 30) / 1e6)  # re-planned with what iteration 1 measured
        asked = len(server.requests)
        dno_run(*LISTWISE, *judge, "plan=true", f"hydra.run.dir={run_dir}")
        assert len(server.requests) == asked  # planning asks nothing
    assert read_json(RunDir(run_dir).plan)["iterations"] == planned  # the first plan is kept
    again = read_json(RunDir(run_dir).plans / "plan_2.json")
    assert [r["judge_requests_cached"] for r in again["iterations"]] == [6, 6]  # every question is in the cache
    assert again["total"]["judge_usd"] == 0
    assert again["estimates"]["judge_tokens_per_request"]["source"] == "measured in this run's earlier iterations"
    assert again["estimates"]["answer_chars"]["source"] == "this run's samples so far"
