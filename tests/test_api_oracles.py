"""The API judges against a real HTTP server on 127.0.0.1 that plays a chat-completions judge."""

from __future__ import annotations

import math
import multiprocessing
import signal
import sqlite3
import time

import pytest

from dno.data import Prompt
from dno.oracles.api import BudgetExceeded, ChatAPI, ClientOptions, JudgeServerGone, OracleError
from dno.oracles.base import FAILED, INVALID, OK
from dno.oracles.cache import JudgeCache
from dno.oracles.openai_listwise import OpenAIListwiseOracle, parse_scores, presentation_order
from dno.oracles.openai_pairwise import OpenAIPairwiseOracle, label_probability
from dno.runtime.concurrency import run_concurrently
from judge_server import JudgeServer, score

KEY_ENV, KEY = "DNO_TEST_JUDGE_KEY", "sk-test-0123456789-secret"
PROMPT = Prompt.of("p", "Describe the sea.")
CANDIDATES = ["The sea is wide.", "Water.", "Blue waves roll in from far away.", "Salt and wind.", "Deep."]


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with JudgeServer(timeout_sleep=1.0) as s:
        yield s


def listwise(server, tmp_path, **kw):
    kw = {"model": "judge", "base_url": server.url, "api_key_env": KEY_ENV, "max_retries": 3, "timeout_s": 0.5,
          "cache_path": str(tmp_path / "cache.sqlite"), **kw}
    return OpenAIListwiseOracle(**kw)


@pytest.mark.parametrize("text, why", [
    ("no json here", "not JSON"), ("[1, 2]", "not a JSON object"),
    ('{"id1_score": 3}', "missing id2_score"), ('{"id1_score": 3, "id2_score": 7}', "not a number from 1 to 6"),
    ('{"id1_score": 3, "id2_score": "5"}', "not a number"), ('{"id1_score": true, "id2_score": 2}', "not a number"),
])
def test_malformed_answers_are_invalid_with_a_reason(text, why):
    scores, reason = parse_scores(text, 2)
    assert scores is None and why in reason


def test_scores_parse_from_json_or_a_fenced_block():
    assert parse_scores('```json\n{"id1_score": 6, "id2_score": 1.0}\n```', 2) == ([6.0, 1.0], None)


def test_unshuffle_puts_scores_back_in_the_callers_order(server, tmp_path):
    j = listwise(server, tmp_path).judge(PROMPT, CANDIDATES)
    assert j.status == OK and j.scores == [float(score(c)) for c in CANDIDATES]
    order = j.detail["order"]
    assert sorted(order) == list(range(5)) and order != list(range(5))  # really shuffled
    shown = server.requests[0]["body"]["messages"][-1]["content"]
    for position, index in enumerate(order, start=1):  # id(k) shows candidate order[k-1]
        assert f"## id{position}\n{CANDIDATES[index]}" in shown
    assert server.requests[0]["authorization"] == f"Bearer {KEY}"  # the key was read from the environment
    assert presentation_order(PROMPT.instruction, CANDIDATES, 0) == order  # a repeat is the same question


def test_retries_recover_from_500_429_and_timeout(server, tmp_path):
    server.faults = ["500", "429", "timeout"]
    j = listwise(server, tmp_path).judge(PROMPT, CANDIDATES)
    assert j.status == OK and j.scores == [float(score(c)) for c in CANDIDATES]
    assert [r["fault"] for r in server.requests] == ["500", "429", "timeout", None]
    assert j.cost["requests"] == 1


def test_after_the_retries_the_answer_is_failed_not_a_guess(server, tmp_path):
    server.faults = ["500"] * 4  # the first try and max_retries=3 retries
    oracle = listwise(server, tmp_path, structured_output="json_schema")  # auto would try the next form
    j = oracle.judge(PROMPT, CANDIDATES)
    assert j.status == FAILED and j.scores is None and j.win_probs() is None
    assert "InternalServerError" in j.detail["error"]
    assert len(server.requests) == 4
    assert oracle.judge(PROMPT, CANDIDATES).status == OK  # a failure is not cached: asked again


@pytest.mark.parametrize("fault", ["malformed", "missing", "range"])
def test_a_malformed_answer_is_invalid_and_kept_raw(server, tmp_path, fault):
    server.faults = [fault]
    j = listwise(server, tmp_path).judge(PROMPT, CANDIDATES)
    assert j.status == INVALID and j.scores is None and j.raw and j.detail["error"]
    assert j.preference(0, 1) is None


def test_a_bad_key_stops_at_once_and_the_error_hides_the_key(server, tmp_path):
    server.faults = ["401"]
    with pytest.raises(OracleError) as e:
        listwise(server, tmp_path).judge(PROMPT, CANDIDATES)
    assert "Incorrect API key" in str(e.value) and KEY not in str(e.value)
    assert len(server.requests) == 1  # 401 is not retried


def test_a_judge_server_that_died_is_named_gone_with_its_logs_tail(server, tmp_path):
    log = tmp_path / "server.log"
    log.write_text("loading model\nllama_server: listening\nSegmentation fault (core dumped)\n")
    oracle = listwise(server, tmp_path, max_retries=1, server_log=str(log))
    assert oracle.judge(PROMPT, CANDIDATES).status == OK  # alive: judged
    server.__exit__(None, None, None)  # the server dies: its port now refuses connections
    with pytest.raises(JudgeServerGone, match=r"judge server at http://127\.0\.0\.1:\d+/v1 is gone") as e:
        oracle.judge(Prompt.of("q", "Another question."), CANDIDATES)
    assert "Segmentation fault (core dumped)" in str(e.value) and str(log) in str(e.value)
    assert isinstance(e.value, OracleError)  # the app's exit path for a judge that cannot answer


def test_a_signal_during_concurrent_calls_drops_the_queued_ones():
    """SIGTERM (preemption) raises in the main thread while it waits: the calls in flight finish, the queued ones
    are never made (a `with ThreadPoolExecutor` block would make all 40 before letting the exception out)."""
    calls = []

    def call(x: int) -> int:
        calls.append(x)
        time.sleep(0.2)
        return x

    class Preempted(Exception):
        pass

    def preempt(*_):
        raise Preempted

    previous = signal.signal(signal.SIGALRM, preempt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)  # during the second round of 4
    try:
        with pytest.raises(Preempted):
            run_concurrently(call, list(range(40)), 4, "calls")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 4 <= len(calls) <= 12


def test_missing_key_variable_fails_the_check(monkeypatch, tmp_path):
    monkeypatch.delenv("DNO_NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="DNO_NO_SUCH_KEY is not set"):
        OpenAIListwiseOracle(model="judge", api_key_env="DNO_NO_SUCH_KEY").check()


def test_the_cache_answers_a_repeat_and_invalid_answers_are_not_paid_twice(server, tmp_path):
    server.faults = ["malformed"]
    first = listwise(server, tmp_path).judge(PROMPT, CANDIDATES)
    again = listwise(server, tmp_path).judge(PROMPT, CANDIDATES)  # a new process would do the same
    assert first.status == again.status == INVALID and len(server.requests) == 1
    assert again.cost == {"cache_hits": 1}
    other = listwise(server, tmp_path).judge(PROMPT, CANDIDATES[:4])  # another question is asked
    assert other.status == OK and len(server.requests) == 2
    rows = sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT value FROM answers").fetchall()
    assert len(rows) == 2 and all(KEY not in v for (v,) in rows)


def test_budget_in_requests_stops_cleanly_after_saving_what_was_paid(server, tmp_path):
    items = [(Prompt.of(str(i), f"Question {i}"), CANDIDATES) for i in range(6)]
    oracle = listwise(server, tmp_path, max_requests=4, max_concurrency=2)
    with pytest.raises(BudgetExceeded, match="oracle.max_requests=4"):
        oracle.judge_many(items)
    assert len(server.requests) == 4 and len(JudgeCache(tmp_path / "cache.sqlite")) == 4
    rest = listwise(server, tmp_path).judge_many(items)  # the same command with a larger budget
    assert all(j.status == OK for j in rest) and len(server.requests) == 6
    assert sum(j.cost.get("cache_hits", 0) for j in rest) == 4


def test_budget_in_dollars(server, tmp_path):
    oracle = listwise(server, tmp_path, budget_usd=1e-9, price_input_per_1m=1.0)
    oracle.judge(PROMPT, CANDIDATES)  # the first request is under budget; it costs more than the budget
    prompt_tokens = len(server.requests[0]["body"]["messages"][-1]["content"]) // 4  # as the server bills
    assert oracle.api.usd == pytest.approx(prompt_tokens / 1e6) and oracle.api.usd > 1e-9
    with pytest.raises(BudgetExceeded, match="budget_usd"):
        oracle.judge(PROMPT, CANDIDATES[:3])


def test_concurrency_bound_and_rate_limit(server, tmp_path):
    server.latency = 0.2
    items = [(Prompt.of(str(i), f"Q{i}"), CANDIDATES) for i in range(8)]
    judgements = listwise(server, tmp_path, max_concurrency=3).judge_many(items)
    assert all(j.status == OK for j in judgements)
    assert server.max_in_flight == 3  # bounded, and really concurrent
    server.latency, server.requests = 0.0, []
    limited = listwise(server, tmp_path, cache_path=None, max_concurrency=4, requests_per_minute=600)
    limited.judge_many(items[:5])
    starts = sorted(r["time"] for r in server.requests)
    # 600/min: one start per 0.1 s (the first request also pays for opening the connection)
    assert starts[-1] - starts[0] >= 0.35 and all(b - a >= 0.05 for a, b in zip(starts, starts[1:], strict=False))


def test_pairwise_averages_both_orders_so_position_bias_cancels(server, tmp_path):
    server.position_bias = 1.5  # the judge prefers whatever is shown first
    oracle = OpenAIPairwiseOracle(model="judge", base_url=server.url, api_key_env=KEY_ENV, cache_path=None)
    a, b, c = CANDIDATES[0], CANDIDATES[1], CANDIDATES[2]
    j = oracle.judge(PROMPT, [a, b, c])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    d = score(a) - score(b)
    assert j.preference(0, 1) == pytest.approx((sig(d + 1.5) + 1 - sig(-d + 1.5)) / 2)
    assert j.preference(0, 1) + j.preference(1, 0) == pytest.approx(1.0)
    same = oracle.judge(PROMPT, [a, a + " "])  # equal scores: exactly a tie whatever the bias
    assert score(a + " ") != score(a) or same.preference(0, 1) == pytest.approx(0.5)
    assert len(server.requests) == 2 * 3 + 2  # 3 pairs x 2 orders, then 1 pair x 2 orders


def test_pairwise_label_probability_by_hand():
    top = [{"token": " A", "logprob": math.log(0.6)}, {"token": "B", "logprob": math.log(0.2)},
           {"token": "a", "logprob": math.log(0.1)}]
    assert label_probability("A", top) == pytest.approx(0.6 / 0.8)  # case-insensitive: best of A/a
    assert label_probability("A", [{"token": "A", "logprob": -0.1}]) == 1.0
    assert label_probability("B", None) == 0.0 and label_probability("maybe", None) is None


def _write_many(path: str, start: int) -> None:
    cache = JudgeCache(path)
    for i in range(start, start + 100):
        cache.put(f"k{i % 150}", {"writer": start, "i": i})


def test_cache_is_safe_under_concurrent_writer_processes(tmp_path):
    path = str(tmp_path / "c.sqlite")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(path, s)) for s in (0, 50, 100)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = JudgeCache(path)
    assert len(cache) == 150 and all(cache.get(f"k{i}") is not None for i in range(150))
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_each_null_price_is_the_tables_on_the_openai_api_and_0_on_another_server():
    """What oracle.price_input_per_1m and price_output_per_1m mean left null (conf/oracle/openai_*.yaml): each on
    its own, the model's row of conf/prices/openai.yaml on the OpenAI API; a price given alone keeps the row's
    other one (it was billed at 0), and 0 on a server of one's own (base_url)."""
    def api(model="gpt-4-turbo", **options):
        return ChatAPI(ClientOptions(model=model, api_key_env=None, **options))

    assert api(price_input_per_1m=5.0).prices == (5.0, 30.0)  # GPT-4-Turbo's output price, not 0
    assert api(price_output_per_1m=20.0).prices == (10.0, 20.0)
    assert api(base_url="http://127.0.0.1:8765/v1", price_output_per_1m=1.0).prices == (0.0, 1.0)
    cached = {"prompt_tokens": 1000, "cached_tokens": 1000}  # gpt-4.1: input 2, cached 0.5 in the table
    assert api("gpt-4.1").price(cached) == pytest.approx(1000 * 0.5 / 1e6)
    assert api("gpt-4.1", price_input_per_1m=4.0).price(cached) == pytest.approx(1000 * 4.0 / 1e6)  # not the table's
    assert api("gpt-4.1", price_output_per_1m=9.0).price(cached) == pytest.approx(1000 * 0.5 / 1e6)
    with pytest.raises(ValueError, match="give oracle.price_input_per_1m and oracle.price_output_per_1m"):
        api("gpt-99-omni", price_input_per_1m=1.0).check()  # a model the table lacks needs both
