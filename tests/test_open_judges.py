"""Open-model judges that answer badly: structured outputs, a stop on mostly-invalid judgements, metrics
that say how many judgements they rest on, prices only where they apply. The servers are the scripted
judge on 127.0.0.1 playing llama.cpp (rejects OpenAI's json_schema form) and a small model (garbage
unless a schema constrains it)."""

from __future__ import annotations

import json
import logging
import math

import pytest

import helpers
from dno.benchmarks.base import EvalError, Evaluated
from dno.benchmarks.local import LocalBenchmark
from dno.data import Prompt
from dno.oracles.api import ChatAPI, ClientOptions, OracleError
from dno.oracles.base import INVALID, OK
from dno.oracles.openai_listwise import OpenAIListwiseOracle, response_format
from dno.runtime.files import read_jsonl
from dno.runtime.layout import BenchmarkDir
from dno.stages.evaluate import validation_win_rates
from dno.stages.judge import JudgeLimits, judge_samples
from dno.stages.records import Judged, Samples, read_rows, write_rows
from helpers import dno_run, wandb_history
from judge_server import JudgeServer, score, weak_reply

CANDIDATES = ["The sea is wide.", "Water.", "Blue waves roll in from far away."]


def listwise(server, tmp_path, **kw):
    kw = {"model": "judge", "base_url": server.url, "api_key_env": None, "max_retries": 1, "timeout_s": 2,
          "cache_path": str(tmp_path / "cache.sqlite"), "max_concurrency": 4, **kw}
    return OpenAIListwiseOracle(**kw)


def items(n: int) -> list[tuple[Prompt, list[str]]]:
    return [(Prompt.of(str(i), f"Question {i}"), [f"{c} ({i})" for c in CANDIDATES]) for i in range(n)]


def test_each_structured_output_form_by_hand():
    score_ = {"type": "integer", "enum": [1, 2, 3, 4, 5, 6]}
    schema = {"type": "object",
              "properties": {"id1_justification": {"type": "string"}, "id1_score": score_,
                             "id2_justification": {"type": "string"}, "id2_score": score_},
              "required": ["id1_justification", "id1_score", "id2_justification", "id2_score"],
              "additionalProperties": False}
    assert response_format("json_schema", 2) == {"response_format": {
        "type": "json_schema", "json_schema": {"name": "scores", "strict": True, "schema": schema}}}
    assert response_format("json_object_schema", 2) == {"response_format": {"type": "json_object", "schema": schema}}
    assert response_format("json_object", 2) == {"response_format": {"type": "json_object"}}
    assert response_format("none", 2) == {}


def test_a_server_that_honours_the_schema_gets_json_schema_and_a_small_model_judges(tmp_path, caplog):
    with JudgeServer(weak=True) as server, caplog.at_level(logging.WARNING):
        judgements = listwise(server, tmp_path).judge_many(items(6))
    assert [j.status for j in judgements] == [OK] * 6
    for (_, candidates), j in zip(items(6), judgements, strict=True):
        assert j.scores == [float(score(c)) for c in candidates] and j.detail["structured_output"] == "json_schema"
    assert [r["form"] for r in server.requests] == ["json_schema"] * 6 and not caplog.records


def test_a_server_that_rejects_json_schema_falls_back_once_with_one_warning(tmp_path, caplog):
    """llama.cpp's server: HTTP 500 for OpenAI's json_schema form, the schema honoured in its own form."""
    with JudgeServer(weak=True, rejects=("json_schema",)) as server, caplog.at_level(logging.WARNING):
        judgements = listwise(server, tmp_path).judge_many(items(8))
        forms = [r["form"] for r in server.requests]
        assert [j.status for j in judgements] == [OK] * 8
        assert forms == ["json_schema"] * 2 + ["json_object_schema"] * 8  # the first try and its one retry
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "json_schema (HTTP 500)" in warnings[0] and \
            "structured_output=json_object_schema" in warnings[0]
        assert {j.detail["structured_output"] for j in judgements} == {"json_object_schema"}
        assert sum(j.cost.get("requests", 0) for j in judgements) == 8  # the refused ones are not paid

        server.requests.clear()  # another process on the same cache: the form is remembered, every answer cached
        again = listwise(server, tmp_path).judge_many(items(8))
        assert server.requests == []  # no rejected form probed again
        assert [j.cost for j in again] == [{"cache_hits": 1}] * 8


def test_the_cache_key_includes_the_form(tmp_path):
    with JudgeServer() as server:
        for form in ("json_schema", "json_object", "none", "json_schema"):
            assert listwise(server, tmp_path, structured_output=form).judge(*items(1)[0]).status == OK
        assert [r["form"] for r in server.requests] == ["json_schema", "json_object", "none"]  # the repeat: cached


def test_an_unknown_form_is_a_config_error():
    with pytest.raises(ValueError, match="oracle.structured_output must be auto or one of json_schema, "):
        OpenAIListwiseOracle(model="judge", api_key_env=None, structured_output="grammar").check()


def test_mostly_invalid_judgements_stop_before_pairs_quoting_three_answers(tmp_path):
    samples, out = tmp_path / "samples.jsonl", tmp_path / "judgements.jsonl"
    write_rows(samples, [Samples(p, c) for p, c in items(6)])
    with JudgeServer(weak=True) as server:
        oracle = listwise(server, tmp_path, structured_output="json_object")  # no schema: the small model's garbage
        with pytest.raises(OracleError) as e:
            judge_samples(oracle, samples, out)
        message = str(e.value)
        assert message.startswith("6 of 6 judgements (100%) were invalid, over max_invalid_frac=0.5")
        quoted = [line for line in message.splitlines() if line.startswith("  ")]
        broken = "'{\"id1_score\": 4, \"id2_score\": 2' (not JSON: Expecting ',' delimiter)"
        wrong_keys = "'{\"response1\": 3, \"response2\": 5}' (missing id1_score)"
        assert [q[:5] for q in quoted] == ["  1. ", "  2. ", "  3. "]
        replies = [weak_reply(r["body"]["messages"][-1]["content"]) for r in server.requests]
        assert len(set(replies)) == 2  # both kinds of garbage came back (each question's own, in any order): ...
        assert {q[5:] for q in quoted[:2]} == {broken, wrong_keys}  # ... the different ones quoted first
        assert quoted[2][5:] in (broken, wrong_keys)
        assert "oracle.structured_output" in message
        assert not out.exists() and len(server.requests) == 6
        with pytest.raises(OracleError):  # the same question again: from the cache, not paid twice
            judge_samples(listwise(server, tmp_path, structured_output="json_object"), samples, out)
        assert len(server.requests) == 6
        # at or under the limit the run goes on; the invalid prompts leave the pair set
        metrics = judge_samples(listwise(server, tmp_path, structured_output="json_object"), samples, out,
                                JudgeLimits(max_invalid_frac=1.0))
        assert metrics["oracle/invalid_frac"] == 1.0 and out.exists()
        assert {r.judgement.status for r in read_rows(out, Judged)} == {INVALID}


def test_prices_come_from_the_table_by_exact_name_on_the_openai_api_only():
    def prices(model="gpt-4-turbo", **options):
        return ChatAPI(ClientOptions(model=model, **options)).prices

    assert prices() == prices("gpt-4-turbo-2024-04-09") == (10.0, 30.0)
    # exact names first: a prefix priced gpt-4o-mini as gpt-4o and gpt-4.1-mini/nano as gpt-4.1
    assert prices("gpt-4o") == (2.5, 10.0) and prices("gpt-4o-mini") == (0.15, 0.6)
    assert prices("gpt-4o-mini-2024-07-18") == (0.15, 0.6)  # a snapshot date is taken off
    assert prices("gpt-4.1-mini") == (0.4, 1.6) and prices("gpt-4.1-nano") == (0.1, 0.4)
    assert prices("gpt-4o-2024-05-13") == (5.0, 15.0)  # a snapshot of its own price
    assert prices(base_url="http://127.0.0.1:8765/v1") == (0.0, 0.0)
    assert prices(base_url="http://127.0.0.1:8765/v1", price_input_per_1m=0.2) == (0.2, 0.0)
    assert prices(price_input_per_1m=10.0, price_output_per_1m=15.0) == (10.0, 15.0)
    # the cached-input rate is the model's own: a quarter of gpt-4.1's input price, half of gpt-4o's
    assert ChatAPI(ClientOptions(model="gpt-4.1")).price({"prompt_tokens": 1000, "cached_tokens": 1000}) == \
        pytest.approx(1000 * 0.5 / 1e6)
    assert ChatAPI(ClientOptions(model="gpt-4o")).price({"prompt_tokens": 1000, "cached_tokens": 1000}) == \
        pytest.approx(1000 * 1.25 / 1e6)


def test_a_model_without_a_price_is_an_error_for_a_paid_run_unless_prices_are_given():
    unknown = ChatAPI(ClientOptions(model="gpt-99-omni", api_key_env=None))
    with pytest.raises(ValueError, match="no price for the judge model 'gpt-99-omni' in .*openai.yaml"):
        unknown.check()
    with pytest.raises(ValueError, match="gpt-99-omni"):
        unknown.price({"prompt_tokens": 1})
    given = ChatAPI(ClientOptions(model="gpt-99-omni", api_key_env=None, price_input_per_1m=1.0,
                                  price_output_per_1m=2.0))
    given.check()
    assert given.price({"prompt_tokens": 1000, "completion_tokens": 1000}) == pytest.approx(3000 / 1e6)


def test_validation_win_rates_carry_their_counts_and_skip_what_was_not_judged():
    init, new = ["a" * 10, "b" * 20, "c" * 30], ["x" * 12, "y" * 25, "z" * 31]
    m = validation_win_rates(init, new, [1.0, None, 0.5], [None, None, None])
    assert m["eval/n_judged"] == 2 and m["eval/n_excluded"] == 1 and m["eval/win_rate_vs_init"] == 75.0
    assert m["eval/n_judged_vs_prev"] == 0 and "eval/win_rate_vs_prev" not in m
    assert math.isfinite(m["eval/lc_win_rate_vs_init"])
    m = validation_win_rates(init, new, [None] * 3, [None] * 3)
    assert m == {"eval/n_judged": 0, "eval/n_judged_vs_prev": 0, "eval/n_excluded": 3}


def test_best_iterate_ignores_iterations_whose_validation_was_not_judged(caplog):
    from dno.loop import best_iterate

    per_iteration = [{"eval/win_rate_vs_init": 55.0}, {"eval/n_judged": 0}, {"eval/win_rate_vs_init": 60.0}]
    assert best_iterate(per_iteration) == 3
    with caplog.at_level(logging.WARNING):
        assert best_iterate([{"eval/win_rate_vs_init": 45.0}, {"eval/n_judged": 0}]) == 0  # pi_1 (50%)
    assert "no valid validation judgement of pi_3" in caplog.text
    assert best_iterate([{"eval/n_judged": 0}]) == 0


def test_the_final_stage_with_too_few_valid_annotations_fails_with_a_message(tmp_path):
    class Half:  # judges every second prompt validly
        is_listwise, name = True, "half"

        def judge_many(self, items, pairs=None, desc=""):
            from dno.oracles.base import Judgement

            return [Judgement(scores=[2.0, 1.0]) if k % 2 == 0 else Judgement(status=INVALID, raw="?")
                    for k in range(len(items))]

    prompts = [Prompt.of(str(i), f"Q{i}") for i in range(10)]
    out = BenchmarkDir(tmp_path)
    write_rows(out.model_samples, [Samples(p, ["long answer " * (i + 1)]) for i, p in enumerate(prompts)])
    write_rows(tmp_path / "pi_1.jsonl", [Samples(p, ["ref"]) for p in prompts])
    target = Evaluated(None, None, None, 0, "m", False, prompts, tmp_path / "pi_1.jsonl", Half())
    with pytest.raises(EvalError, match=r"valid annotation for 5 of 10 test prompts, fewer than "
                                        r"eval.local.min_valid_frac=0.9: no win-rate is reported"):
        LocalBenchmark(baseline="pi_1").evaluate(target, out)
    assert not out.summary.exists() and out.annotations.exists()
    summary = LocalBenchmark(baseline="pi_1", min_valid_frac=0.5).evaluate(target, out)
    assert summary["alpaca_eval/n_total"] == 5 and summary["alpaca_eval/win_rate"] == 100.0
    assert summary["alpaca_eval/n_excluded"] == 5 and summary["alpaca_eval/annotator"] == "half"


@pytest.mark.slow
@pytest.mark.experiment
def test_a_small_judge_through_the_loop_and_experiments_open_judge(tmp_path):
    """A small model served without a schema: dno-run stops at the judge (exit 3). experiments/open_judge.sh
    against the same server (standing in for llama.cpp's: json_schema refused): asked for json_object and let
    go on, nothing unjudged is logged as a number and the final stage fails with a message; auto settles on
    the server's schema form with one warning and judges every prompt; a local server costs $0."""
    with JudgeServer(weak=True, rejects=("json_schema",)) as server:
        proc = dno_run("model=tiny_random", "schedule=smoke", "oracle=openai_listwise", f"oracle.base_url={server.url}",
                       "oracle.api_key_env=null", f"oracle.cache_path={tmp_path / 'judge.sqlite'}",
                       "oracle.model=smollm2", "oracle.structured_output=json_object", "logger=none",
                       f"hydra.run.dir={tmp_path / 'stop'}", check=False)
        assert proc.returncode == 3 and "judgements (100%) were invalid, over max_invalid_frac=0.5" in proc.stderr
        assert "  3. " in proc.stderr and not (tmp_path / "stop" / "iter_1" / "DONE.judge").exists()

        out, report = tmp_path / "open_judge", tmp_path / "open_judge.md"
        env = {"SERVER_URL": server.url, "JUDGE_MODEL": "smollm2", "MODES": "json_object,auto", "OUT": str(out),
               "REPORT": str(report)}
        helpers.run(["experiments/open_judge.sh", "oracle.max_retries=1"], env=env, timeout=600)

    run = out / "json_object"  # went on past the invalid judgements
    assert json.loads((run / "ended.json").read_text())["exit"] == 3
    log = (out / "json_object.log").read_text()
    assert "fewer than eval.local.min_valid_frac=0.9: no win-rate is reported" in log and "KeyError" not in log
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["eval/n_judged"] for m in metrics] == [0, 0] and [m["pairs/total"] for m in metrics] == [0, 0]
    assert not any(k.startswith(("eval/win_rate", "eval/lc_")) for m in metrics for k in m)
    text = (run / "metrics.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    logged = [r for r in wandb_history(run) if "eval/n_judged" in r]
    assert len(logged) == 2 and not any(k.startswith("eval/win_rate") for r in logged for k in r)
    assert not any(isinstance(v, float) and not math.isfinite(v) for r in logged for v in r.values())

    run = out / "auto"
    assert json.loads((run / "ended.json").read_text())["exit"] == 0
    metrics = read_jsonl(run / "metrics.jsonl")
    n_val = len(read_jsonl(run / "init" / "val_samples.jsonl"))
    assert all(m["oracle/invalid_frac"] == 0 and m["oracle/usd"] == 0 and m["oracle/requests"] > 0
               and m["eval/n_judged"] == n_val for m in metrics)
    assert (run / "run.log").read_text().count("rejected structured_output=json_schema (HTTP 500)") == 1
    assert json.loads((run / "summary.json").read_text())["alpaca_eval/n_excluded"] == 0
    agreement = json.loads((run / "agreement.json").read_text())
    assert agreement["decided_pairs"] > 0 and 0 <= agreement["agreement"] <= 1

    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in report.read_text().splitlines()
            if line.startswith("| json_object |") or line.startswith("| auto |")}
    assert rows["json_object"][1] == "json_object x12" and rows["json_object"][2] == "1.00 / 1.00"
    assert rows["json_object"][7].startswith("exit 3: the judge (OpenAIListwiseOracle) gave a valid annotation for 0")
    assert rows["auto"][1] == "json_object_schema x12" and rows["auto"][2] == "0.00 / 0.00"
    compared = agreement["decided_pairs"] - agreement["abstained"]
    assert rows["auto"][3] == f"{n_val} / {n_val}"
    share, ties = f"{100 * agreement['agreement']:.0f}%", agreement["abstained"]
    assert rows["auto"][5] == (f"{share} of {compared} ({ties} rules ties)" if compared else "- (no pair compared)")
    assert rows["auto"][7].startswith("finished: test WR ")
