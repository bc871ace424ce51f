"""The judge's bill (dno.oracles.ledger): every paid call counted once, in every stage, against the scripted
OpenAI-compatible judge on 127.0.0.1: the logged total equals what the server would invoice for the same tokens;
a killed and resumed run's ledger equals an uninterrupted one's, and the provider's invoice exceeds it only by the
requests in flight at the kill -9 (asked again); the plan made before the run is within 10% of the
requests the run sends."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dno.oracles import ledger
from dno.oracles.api import ChatAPI, ClientOptions, Reply
from dno.oracles.ledger import cost_metrics, read_ledger
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from helpers import REPO, dno_run, program
from judge_server import JudgeServer

PRICES = (10.0, 30.0)


def smoke(server: JudgeServer, run_dir: Path, cache: Path, *extra: str) -> list[str]:
    return ["model=tiny_random", "schedule=smoke", "oracle=openai_listwise", f"oracle.base_url={server.url}",
            "oracle.api_key_env=null", "oracle.model=scripted-judge", f"oracle.cache_path={cache}",
            f"oracle.price_input_per_1m={PRICES[0]}", f"oracle.price_output_per_1m={PRICES[1]}", "logger=none",
            f"hydra.run.dir={run_dir}", *extra]


def invoiced(server: JudgeServer) -> tuple[int, float]:
    """What the server would invoice: its 200 answers, each at its own usage's tokens."""
    n, usd = 0, 0.0
    for r in server.requests:
        status, payload, _ = server.answer(r["body"], None) if r["fault"] is None else (None, None, None)
        if status == 200:
            n += 1
            usage = payload["usage"]
            usd += (usage["prompt_tokens"] * PRICES[0] + usage["completion_tokens"] * PRICES[1]) / 1e6
    return n, usd


@pytest.mark.slow
def test_the_ledger_counts_every_stage_and_equals_the_invoice(tmp_path):
    with JudgeServer() as server:
        run = RunDir(tmp_path / "run")
        proc = dno_run(*smoke(server, run.path, tmp_path / "judge.sqlite"))
        requests, usd = invoiced(server)
    summary, rows = read_json(run.summary), read_ledger(run.ledger)
    assert len(rows) == len({r["key"] for r in rows}) == requests == summary["cost/total_requests"]
    assert round(summary["cost/total_usd"], 2) == round(usd, 2) and summary["cost/total_usd"] == pytest.approx(usd)
    # the smoke schedule: 6 prompts x 2 iterations judged, 6 validation prompts x 2, 8 test prompts at the end
    assert (summary["cost/judge/requests"], summary["cost/validation/requests"],
            summary["cost/final/local/requests"]) == (12, 12, 8)
    assert sum(summary[f"cost/{s}/usd"] for s in ("judge", "validation", "final/local")) == pytest.approx(usd)
    logged = read_jsonl(run.metrics)
    assert [m["cost/judge/requests"] for m in logged] == [6, 6] and [m["cost/validation/requests"] for m in logged] \
        == [6, 6]
    assert logged[0]["cost/judge/usd"] == pytest.approx(sum(r["usd"] for r in rows if r["stage"] == "judge"
                                                            and r["iteration"] == 1))
    assert "Judge bill: $" in proc.stdout
    # the plan made at the start, within 10% of what the run sent, final stage included
    plan = read_json(run.plan)
    assert abs(plan["total"]["requests"] - requests) <= 0.1 * requests
    assert plan["final"]["local"]["requests"] == 8 and plan["total"]["final_requests"] == 8


@pytest.mark.slow
@pytest.mark.cluster  # a kill, as tests/test_cluster_accidents.py's: make test-cluster
def test_a_killed_and_resumed_run_pays_what_an_uninterrupted_one_pays(tmp_path):
    with JudgeServer() as server:
        whole = RunDir(tmp_path / "whole")
        dno_run(*smoke(server, whole.path, tmp_path / "whole.sqlite"))
        server.requests.clear()
        server.hold(9)  # the tenth request (iteration 2's judging) and those after it wait: the kill lands there
        killed = RunDir(tmp_path / "killed")
        cmd = [program("dno-run"), *smoke(server, killed.path, tmp_path / "killed.sqlite")]
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 240
        while len(server.requests) <= 9 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        paid_before = len(read_ledger(killed.ledger))
        assert 0 < paid_before < len(read_ledger(whole.ledger))
        server.release()
        plans_before = sorted(p.name for p in killed.plans.glob("*.json")) if killed.plans.exists() else []
        dno_run(*smoke(server, killed.path, tmp_path / "killed.sqlite"))
        beyond_the_ledger = len(server.requests) - len(read_ledger(killed.ledger))
    a, b = read_ledger(whole.ledger), read_ledger(killed.ledger)
    # received by the server, billed by a real provider, never answered here: the requests in flight at the kill,
    # at most oracle.max_concurrency (8) of them (docs/guides/judges.md and resume.md say so)
    assert 1 <= beyond_the_ledger <= 8
    assert sorted(r["key"] for r in a) == sorted(r["key"] for r in b)  # the same questions, each paid once
    assert read_json(killed.summary)["cost/total_usd"] == pytest.approx(read_json(whole.summary)["cost/total_usd"])
    # the first plan is kept; the resumed start's plan beside it
    assert not plans_before and sorted(p.name for p in killed.plans.glob("*.json")) == ["plan_2.json"]


def test_an_answer_cached_but_not_in_the_ledger_when_killed_gets_its_line_on_resume(tmp_path):
    """The cache is written before the ledger: a kill between the two leaves an answer marked paid by this run's
    ledger and no line; the resumed run writes it (once), and another run's ledger does not."""
    options = ClientOptions(model="judge", base_url="http://127.0.0.1:9/v1", api_key_env=None,
                            cache_path=str(tmp_path / "cache.sqlite"), price_input_per_1m=10.0,
                            price_output_per_1m=30.0)
    chat = ChatAPI(options)
    mine = ledger.activate(tmp_path / "run" / "ledger.jsonl")
    try:
        usage = {"prompt_tokens": 1000, "completion_tokens": 100}
        chat.cache.put("k", {"text": "4", "top_logprobs": None, "usage": usage, "batch": False, "paid_by": mine.id})
        assert chat.cached("k").cached and chat.cached("k").text == "4"
        (row,) = read_ledger(mine.path)
        assert row["recovered"] and row["usd"] == pytest.approx((1000 * 10 + 100 * 30) / 1e6)
        other = ledger.activate(tmp_path / "other" / "ledger.jsonl")
        chat.cached("k")  # another run's cache hit: free
        assert not other.path.exists()
        chat.store("k2", Reply(text="5", usage=usage))
        assert [r["key"] for r in read_ledger(other.path)] == ["k2"]
        assert cost_metrics(read_ledger(other.path))["cost/other/requests"] == 1  # outside a stage: `other`
    finally:
        ledger.activate(None)
