"""The Batch API path (oracle.batch=true) against the scripted judge server's /v1/files and /v1/batches,
through the real openai client: what the cache holds is not submitted, answers cost half, an expired batch's
missing half and a malformed output line are asked directly, fallback=stop stops, a kill while polling resumes
the same batch, no question is paid twice; the structured-output form a server took is remembered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dno.data import Prompt
from dno.oracles.api import BudgetExceeded, ChatAPI, ClientOptions, OracleError
from dno.oracles.batch import complete_many
from dno.oracles.openai_listwise import OpenAIListwiseOracle
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, read_rows
from helpers import REPO, dno_run, program
from judge_server import JudgeServer

PRICES = {"price_input_per_1m": 10.0, "price_output_per_1m": 30.0}


def api(server: JudgeServer, tmp_path: Path, **kw) -> ChatAPI:
    options = {"model": "judge", "base_url": server.url, "api_key_env": None, "max_retries": 1, "timeout_s": 5,
               "cache_path": str(tmp_path / "cache.sqlite"), "batch": True, "batch_poll_s": 0.01, **PRICES, **kw}
    return ChatAPI(ClientOptions(**options), "test-v1")


def questions(n: int, start: int = 0) -> list[tuple[list[dict], dict]]:
    """Listwise questions the scripted judge answers with JSON scores."""
    return [([{"role": "system", "content": "Judge."},
              {"role": "user", "content": f"# Instruction\nQ{i}\n\n# Responses\n## id1\nanswer {i}\n\n## id2\nother"
                                          f" {i * 7}\n\nAnswer with one JSON object and nothing else: {{}}"}],
             {"temperature": 0.0, "max_tokens": 64}) for i in range(start, start + n)]


def paid(server: JudgeServer) -> list[str]:
    """Every question a server was paid for: answered directly (200) or by a batch."""
    direct = [r["body"] for r in server.requests if r["fault"] is None]
    return [json.dumps(b["messages"], sort_keys=True) for b in direct + server.batch_answered]


def test_what_the_cache_holds_is_not_submitted_and_a_batch_costs_half(tmp_path):
    with JudgeServer() as server:
        direct = api(server, tmp_path, batch=False)
        first = complete_many(direct, questions(2), "direct")  # two questions answered (and cached) before
        batched = complete_many(api(server, tmp_path), questions(6), "batch")
        assert [r.cached for r in batched] == [True, True, False, False, False, False]
        assert all(r.batch for r in batched[2:]) and len(server.batch_answered) == 4 and len(server.requests) == 2
        assert [r.text for r in batched[:2]] == [r.text for r in first]
        again = complete_many(api(server, tmp_path, batch=False), questions(4, start=2), "direct, at full price")
        for b, d in zip(batched[2:], again, strict=True):  # the same questions, the same answers
            assert d.cached and b.text == d.text
        full = direct.price(batched[2].usage)
        assert batched[2].cost(direct) == {"requests": 1, "batch_requests": 1, **batched[2].usage, "usd": full / 2}
        assert full > 0 and len(set(paid(server))) == len(paid(server)) == 6  # no question paid twice
        (entry,) = read_json(tmp_path / "batches.judge.json")
        assert entry["read"] and entry["status"] == "completed" and len(entry["custom_ids"]) == 4


def test_an_expired_batch_and_a_malformed_line_are_asked_directly_once(tmp_path):
    with JudgeServer() as server:
        server.batch_faults = ["expire_half"]
        replies = complete_many(api(server, tmp_path), questions(6), "batch")
        assert len(server.batch_answered) == 3 and len(server.requests) == 3  # the other half, directly
        assert all(r.error is None for r in replies) and sum(r.batch for r in replies) == 3
        server.batch_faults = ["malformed_line"]
        replies = complete_many(api(server, tmp_path), questions(4, start=10), "batch")
        assert sum(r.batch for r in replies) == 3 and len(server.requests) == 4  # one line unreadable: asked again
        assert len(set(paid(server))) == 10 and len(paid(server)) == 11  # only the unreadable line's, twice
        assert read_json(tmp_path / "batches.judge.json")[-1]["bad_lines"] == 1


def test_fallback_stop_stops_and_keeps_what_came(tmp_path):
    with JudgeServer() as server:
        server.batch_faults = ["fail"]
        with pytest.raises(OracleError, match="6 of 6 questions were not answered by the Batch API"):
            complete_many(api(server, tmp_path, batch_fallback="stop"), questions(6), "batch")
        assert not server.requests and not server.batch_answered
        replies = complete_many(api(server, tmp_path), questions(6), "batch")  # the same command again: resubmits
        assert len(server.batches) == 2 and all(r.batch for r in replies)


def test_the_budget_holds_a_whole_batch_before_it_is_sent(tmp_path):
    with JudgeServer() as server:
        with pytest.raises(BudgetExceeded, match="6 more asked, oracle.max_requests=5"):
            complete_many(api(server, tmp_path, max_requests=5), questions(6), "batch")
        assert not server.files


def test_a_kill_while_polling_resumes_the_same_batch(tmp_path):
    """A process killed while it waits for its batch: the next one polls that batch, submits nothing new."""
    with JudgeServer() as server:
        script = (f"import sys; sys.path.insert(0, {str(REPO / 'tests')!r})\n"
                  "from test_batch import api, questions\nfrom dno.oracles.batch import complete_many\n"
                  "from pathlib import Path\n"
                  "class Remote:\n    url = sys.argv[1]\n"
                  "complete_many(api(Remote, Path(sys.argv[2]), batch_poll_s=30), questions(5), 'batch')\n")
        proc = subprocess.Popen([program("python"), "-c", script, server.url, str(tmp_path)], cwd=REPO,
                                start_new_session=True)
        journal, deadline = tmp_path / "batches.judge.json", time.time() + 120
        while time.time() < deadline and not (journal.exists() and read_json(journal)[0].get("batch_id")):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert read_json(journal)[0]["batch_id"] == "batch_1" and not server.batch_answered
        replies = complete_many(api(server, tmp_path), questions(5), "batch")
        assert len(server.batches) == 1 and len(server.files) == 2  # the input file and the output: no resubmission
        assert all(r.batch for r in replies) and len(server.batch_answered) == 5 and not server.requests


def test_the_structured_output_form_a_server_took_is_remembered(tmp_path):
    """A llama.cpp-like server rejects OpenAI's json_schema: the first run probes and settles; a re-run (every
    answer cached) asks nothing, where it used to send the rejected form again first."""
    prompt, candidates = Prompt.of("p", "Describe the sea."), ["Blue.", "Wet and wide."]
    with JudgeServer(rejects=("json_schema",)) as server:
        kw = {"model": "judge", "base_url": server.url, "api_key_env": None, "max_retries": 0,
              "cache_path": str(tmp_path / "cache.sqlite")}
        first = OpenAIListwiseOracle(**kw).judge(prompt, candidates)
        assert first.detail["structured_output"] == "json_object_schema"
        assert [r["form"] for r in server.requests] == ["json_schema", "json_object_schema"]
        again = OpenAIListwiseOracle(**kw).judge(prompt, candidates)
        assert again.detail["structured_output"] == "json_object_schema" and len(server.requests) == 2


def test_cached_prompt_tokens_are_priced_at_the_cached_rate():
    chat = ChatAPI(ClientOptions(model="gpt-4o", **PRICES))
    assert chat.price({"prompt_tokens": 1000, "completion_tokens": 100}) == pytest.approx((10_000 + 3_000) / 1e6)
    assert chat.price({"prompt_tokens": 1000, "cached_tokens": 800, "completion_tokens": 100}) == pytest.approx(
        (1000 * 10 + 100 * 30) / 1e6)  # prices from the config without a cached rate: no discount assumed
    set_rate = ChatAPI(ClientOptions(model="gpt-4o", price_cached_input_per_1m=1.0, **PRICES))
    assert set_rate.price({"prompt_tokens": 1000, "cached_tokens": 1000}) == pytest.approx(1000 / 1e6)


@pytest.mark.slow
def test_the_judge_stage_through_batches_gives_the_direct_runs_judgements_at_half_the_price(tmp_path):
    with JudgeServer() as server:
        common = ["model=tiny_random", "schedule=smoke", "schedule.iterations=1", "oracle=openai_listwise",
                  f"oracle.base_url={server.url}", "oracle.api_key_env=null", "oracle.model=scripted-judge",
                  "oracle.price_input_per_1m=10", "oracle.price_output_per_1m=30", "logger=none"]
        dno_run(*common, f"oracle.cache_path={tmp_path / 'direct.sqlite'}", f"hydra.run.dir={tmp_path / 'direct'}")
        direct_requests = len(server.requests)
        dno_run(*common, f"oracle.cache_path={tmp_path / 'batch.sqlite'}", "oracle.batch=true",
                "oracle.batch_poll_s=0.01", f"hydra.run.dir={tmp_path / 'batch'}")
    direct, batch = (RunDir(tmp_path / d) for d in ("direct", "batch"))
    assert [j.judgement.scores for j in read_rows(batch.iteration(1).judgements, Judged)] == \
        [j.judgement.scores for j in read_rows(direct.iteration(1).judgements, Judged)]
    costs = [[j.judgement.cost["usd"] for j in read_rows(r.iteration(1).judgements, Judged)] for r in (direct, batch)]
    assert costs[1][0] == pytest.approx(costs[0][0])  # the first question settles the form, directly
    assert costs[1][1:] == pytest.approx([c / 2 for c in costs[0][1:]]) and min(costs[0]) > 0  # the rest: half
    m_direct, m_batch = (read_jsonl(r.metrics)[0] for r in (direct, batch))
    assert m_batch["oracle/batch_requests"] == m_direct["oracle/requests"] - 1
    assert len(server.requests) - direct_requests <= 2 + 8 + 8  # form probe + the direct stages (evaluation)
    journal = read_json(batch.iteration(1).batch_journal("judge"))
    assert journal[0]["read"] and journal[0]["status"] == "completed"


@pytest.fixture
def bill(tmp_path):
    """The run's ledger, active for the test's judges (and no other test's)."""
    from dno.oracles import ledger

    yield ledger.activate(tmp_path / "ledger.jsonl")
    ledger.activate(None)


def batch_usd(server: JudgeServer, chat: ChatAPI) -> float:
    """What the server billed for its batches' answers: their tokens at half the direct price."""
    total = 0.0
    for body in server.batch_answered:
        _, payload, _ = server.answer(body, None)
        total += chat.price(payload["usage"]) / 2
    return total


KILL_SCRIPT = """import os, signal, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_batch import api, questions
from dno.oracles import batch, ledger
ledger.activate(Path(sys.argv[2]) / "ledger.jsonl")
if sys.argv[3] == "stored":  # killed after the answers are stored, before the journal marks the batch read
    write = batch.write_json
    def write_json(path, entries):
        if any(e.get("read") for e in entries):
            os.kill(os.getpid(), signal.SIGKILL)
        write(path, entries)
    batch.write_json = write_json
class Remote:
    url = sys.argv[1]
batch.complete_many(api(Remote, Path(sys.argv[2])), questions(5), "batch")
"""


@pytest.mark.cluster  # kills, as tests/test_cluster_accidents.py's: make test-cluster (CI runs it)
@pytest.mark.parametrize("step", ["upload", "create", "read", "stored"])
def test_a_kill_at_any_step_of_a_batch_pays_nothing_twice(tmp_path, bill, step):
    """kill -9 while the input file is uploaded, the batch created, its output read, or just after its answers were
    stored: the same call again submits no second batch, asks nothing directly, and the ledger bills each question
    once, at the batch price the server billed."""
    with JudgeServer() as server:
        if step != "stored":
            server.hold_batch_step(step)
        proc = subprocess.Popen([program("python"), "-c", KILL_SCRIPT.format(tests=str(REPO / "tests")), server.url,
                                 str(tmp_path), step], cwd=REPO, start_new_session=True)
        if step == "stored":
            assert proc.wait(timeout=120) == -signal.SIGKILL
        else:
            assert server.held_reached.wait(timeout=120), f"the client never reached {step}"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            server.release()
        replies = complete_many(api(server, tmp_path), questions(5), "batch")
        assert len(server.batches) == 1 and len(server.batch_answered) == 5 and not server.requests
        assert all(r.batch or r.cached for r in replies) and all(r.error is None for r in replies)
        rows = read_jsonl(tmp_path / "ledger.jsonl")
        assert len(rows) == len({r["key"] for r in rows}) == 5 and all(r["batch"] for r in rows)
        chat = api(server, tmp_path, batch=False)
        assert sum(r["usd"] for r in rows) == pytest.approx(batch_usd(server, chat)) and rows[0]["usd"] > 0
        assert read_json(tmp_path / "batches.judge.json")[-1]["read"] or step == "stored"


def test_unreadable_and_error_lines_are_paid_reported_and_asked_once_directly(tmp_path, bill):
    with JudgeServer() as server:
        server.batch_faults = ["malformed_line"]
        complete_many(api(server, tmp_path), questions(4), "batch")
        rows = read_jsonl(tmp_path / "ledger.jsonl")
        unreadable = [r for r in rows if r.get("unreadable")]
        assert len(unreadable) == 1 and unreadable[0]["usd_unknown"]  # billed: counted, though its price is not known
        assert sum(not r["batch"] for r in rows) == 1 and len(server.requests) == 1  # its question, once, directly
        server.batch_faults = ["expire_half"]
        complete_many(api(server, tmp_path), questions(6, start=10), "batch")
        entry = read_json(tmp_path / "batches.judge.json")[-1]
        assert entry["errors"] == {"batch_expired": 3} and entry["answered"] == 3  # the error file was read
        assert len(server.requests) == 1 + 3
    from dno.oracles.ledger import cost_metrics

    bill_rows = read_jsonl(tmp_path / "ledger.jsonl")
    assert cost_metrics(bill_rows)["cost/unreadable_requests"] == 1 and len(bill_rows) == 4 + 1 + 6


def test_a_batch_past_its_completion_window_is_cancelled_and_its_questions_asked_directly(tmp_path, monkeypatch):
    from dno.oracles import batch

    monkeypatch.setattr(batch, "BATCH_GRACE_S", 0.0)
    with JudgeServer() as server:
        server.batch_faults = ["stuck"]
        replies = complete_many(api(server, tmp_path, batch_window="1s"), questions(3), "batch")
        assert server.batches["batch_1"]["status"] == "cancelled" and len(server.requests) == 3
        assert all(r.error is None and not r.batch for r in replies)


@pytest.mark.cluster
def test_the_request_counter_stays_whole_after_a_resume(tmp_path):
    """A batch submitted by a killed process and read by the next: its answers count as paid requests (the counter
    went negative: the unanswered part was released though this process never reserved it)."""
    with JudgeServer() as server:
        server.hold_batch_step("read")
        proc = subprocess.Popen([program("python"), "-c", KILL_SCRIPT.format(tests=str(REPO / "tests")), server.url,
                                 str(tmp_path), "read"], cwd=REPO, start_new_session=True)
        assert server.held_reached.wait(timeout=120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        server.release()
        chat = api(server, tmp_path)
        complete_many(chat, questions(5), "batch")
        assert chat.requests == 5
