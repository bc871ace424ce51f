"""The judge's router (router=distilled, random, student_only): Trust or Escalate's bound, kappa and ECE against
numbers computed by hand; the pair rule's decisions; a student that learns a judge it can learn and is unsure off
its data; a routed judge stage that pays exactly the audit slice and the unsure prompts, on the real rules judge
billed as GPT-4-Turbo and on the scripted API judge on 127.0.0.1; a changed router refused on resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dno.data import Prompt
from dno.oracles import ledger
from dno.oracles.base import Judgement
from dno.oracles.calibration import binomial_p_value, cohen_kappa, expected_calibration_error, trust_threshold
from dno.oracles.rules import RulesOracle
from dno.oracles.student import (
    LISTWISE,
    PAIRWISE,
    Example,
    Student,
    StudentOptions,
    StudentOracle,
    _pair_targets,
    judgement_of,
)
from dno.pairs import LargeMarginRule
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.judge import JudgeLimits
from dno.stages.records import Judged, Samples, read_rows, write_rows
from dno.stages.route import RoutedJudge, Router, RouterOptions, decisions, pair_labels, routed_judgements
from helpers import TOKENIZER, dno_run, documented, make_cfg, metric_names, tiny_model_config, wandb_history
from judge_server import JudgeServer, shown_responses

CACHE = make_cfg().cache_dir  # the tokenizer parsed once, as the apps find it


def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))


def test_the_bound_certifies_a_level_only_with_enough_agreeing_items():
    assert binomial_p_value(0, 22, 0.1) == pytest.approx(0.9**22)  # 0.0985
    assert binomial_p_value(5, 35, 0.1) == pytest.approx(binomial_cdf(5, 35, 0.1))
    assert trust_threshold([1.0] * 22, [True] * 22, 0.1, 0.1) == 1.0  # 0.9^22 = 0.098 <= 0.1
    assert trust_threshold([1.0] * 21, [True] * 21, 0.1, 0.1) is None  # 0.9^21 = 0.109: not certified
    # 25 sure and right, then 10 less sure with 5 wrong: P(X <= 5 | 35, 0.1) = 0.86 > 0.1 stops the sequence at 1.0
    conf, ok = [1.0] * 25 + [0.5] * 10, [True] * 25 + [True, False] * 5
    assert trust_threshold(conf, ok, 0.1, 0.1) == 1.0
    # a looser alpha certifies the lower level too: P(X <= 5 | 35, 0.3) = 0.018
    assert binomial_cdf(5, 35, 0.3) < 0.1 and trust_threshold(conf, ok, 0.3, 0.1) == 0.5
    # the highest level wrong: the sequence stops before it, whatever follows
    assert trust_threshold([1.0] * 3 + [0.9] * 40, [False] * 3 + [True] * 40, 0.1, 0.1) is None
    # the bound at equality certifies: one agreeing item at alpha = 0.5 has p = 0.5 <= delta = 0.5
    assert trust_threshold([1.0], [True], 0.5, 0.5) == 1.0 and trust_threshold([1.0], [True], 0.5, 0.49) is None
    with pytest.raises(ValueError, match="alpha"):
        trust_threshold([1.0], [True], 0.0, 0.1)


def test_kappa_and_calibration_error_by_hand():
    # p_o = 3/4; p_e = (2*1 + 2*3) / 16 = 1/2: kappa = (0.75 - 0.5) / 0.5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa(["-"] * 5, ["-"] * 5) == 1.0 and cohen_kappa([], []) is None
    assert cohen_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)
    # bins (0.8, 0.9]: accuracy 1/2 at confidence 0.9; (0.5, 0.6]: accuracy 1 at 0.6: 0.5 * 0.4 + 0.5 * 0.4
    assert expected_calibration_error([0.9, 0.9, 0.6, 0.6], [True, False, True, True]) == pytest.approx(0.4)
    assert expected_calibration_error([], []) is None
    # a confidence of exactly 1 (the student's most common) is in the top bin, wrong or right; 0.5 in the lowest
    assert expected_calibration_error([1.0], [False]) == 1.0 and expected_calibration_error([0.5], [True]) == 0.5


def row(n: int = 4, teacher: bool = False) -> Judged:
    texts = [f"Answer number {k} is here." for k in range(n)]
    return Judged(Prompt.of("p", "Say something."), texts, n - 1 if teacher else None, Judgement(status="pending"),
                  None)


def test_decisions_are_the_pair_rules_pairs_by_index():
    rule = LargeMarginRule()  # positives score >= 5; a student positive beats what scores at least 1 lower
    got = decisions(rule, row(), Judgement(scores=[6.0, 4.0, 5.0, 5.0]))
    assert got == {(0, 1), (0, 2), (0, 3), (2, 1), (3, 1)}
    assert pair_labels(got, 4) == [">", ">", ">", "<", "<", "-"]  # (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    assert decisions(rule, row(), Judgement(scores=[4.0, 4.0, 3.0, 1.0])) == frozenset()  # no positive
    # the teacher as y+ needs a margin of 2: 6 over 5 is not kept, 6 over 4 is
    assert decisions(rule, row(teacher=True), Judgement(scores=[5.0, 4.0, 3.0, 6.0])) == \
        {(3, 1), (3, 2), (0, 1), (0, 2)}
    # a pairwise judgement: kept where P(y+ > y-) >= 0.75
    prefs = [[None, 0.8, 0.5, 0.9], [0.2, None, 0.5, 0.5], [0.5, 0.5, None, 0.76], [0.1, 0.5, 0.24, None]]
    assert decisions(rule, row(), Judgement(prefs=prefs)) == {(0, 1), (0, 3), (2, 3)}


def synthetic(n_prompts: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, list[Example]]:
    """Features whose first coordinate decides the score: 1 + 5 * sigmoid(3 x0), 4 candidates per prompt."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_prompts * 4, 6, generator=g) + shift
    scores = 1 + 5 * torch.sigmoid(3 * x[:, 0])
    return x, [Example(list(range(4 * i, 4 * i + 4)), scores[4 * i : 4 * i + 4].tolist()) for i in range(n_prompts)]


def test_the_student_learns_a_learnable_judge_and_is_unsure_off_its_data(tmp_path):
    x, examples = synthetic(150, 0)
    student = Student.fit(x, examples, LISTWISE, StudentOptions(members=5, steps=400), seed=0)
    test_x, test = synthetic(40, 1)
    truth = torch.tensor([s for ex in test for s in ex.scores])
    member = student.member_scores(test_x)
    assert (member.mean(0) - truth).abs().mean() < 0.25  # on the judge's 1..6 scale
    far = student.member_scores(synthetic(40, 2, shift=8.0)[0])
    assert far.std(0).mean() > 3 * member.std(0).mean()  # the heads disagree where they never saw data
    student.meta |= {"features": {}}
    student.save(tmp_path / "student")
    again = Student.load(tmp_path / "student")
    assert torch.allclose(again.member_scores(test_x), member)
    # pairwise: P(a > b) = sigmoid(r_a - r_b) learnt from the judge's preferences, both orders one example
    prefs = [[[None if i == j else float(torch.sigmoid(2.0 * (x[r, 0] - x[c, 0])))
               for j, c in enumerate(ex.rows)] for i, r in enumerate(ex.rows)] for ex in examples]
    pairwise = Student.fit(x, [Example(ex.rows, prefs=p) for ex, p in zip(examples, prefs, strict=True)], PAIRWISE,
                           StudentOptions(members=3, steps=300), seed=0)
    rewards = pairwise.member_scores(test_x).mean(0)
    right = [(rewards[a] > rewards[b]) == (test_x[a, 0] > test_x[b, 0]) for a in range(0, 160, 4)
             for b in range(a + 1, a + 4)]
    assert sum(right) / len(right) > 0.9


def test_pairwise_targets_and_answers_by_hand():
    # the judge asked (1, 0) only: the pair (0, 1) is learnt as its complement, P(0 > 1) = 1 - 0.8
    a, b, p = _pair_targets([Example([5, 6], prefs=[[None, None], [0.8, None]]), Example([7, 8], prefs=[[None, 0.3],
                                                                                                      [None, None]])])
    assert a.tolist() == [5, 7] and b.tolist() == [6, 8] and p.tolist() == pytest.approx([0.2, 0.3])
    # a pairwise student answers as its judge: P(i > j) = sigmoid(r_i - r_j)
    prefs = judgement_of(PAIRWISE, [2.0, 0.0], {}).prefs
    assert prefs[0][1] == pytest.approx(1 / (1 + math.exp(-2.0))) and prefs[1][0] == pytest.approx(1 - prefs[0][1])
    assert prefs[0][0] is None and judgement_of(LISTWISE, [2.0, 0.0], {}).prefs is None


def test_router_options_fail_naming_the_key():
    with pytest.raises(ValueError, match="router.alpha"):
        RouterOptions.of({"kind": "distilled", "alpha": 1.5})
    with pytest.raises(ValueError, match="router.paid_share"):
        RouterOptions.of({"kind": "random"})
    with pytest.raises(ValueError, match="no key 'audit'"):
        RouterOptions.of({"kind": "distilled", "audit": 0.1})
    with pytest.raises(ValueError, match="router.student.members"):
        RouterOptions.of({"kind": "distilled", "student": {"members": 1}})
    assert RouterOptions.of({"kind": "random", "paid_share": [0.4, 0.2]}).share_at(4) == 0.2
    # iteration 2 (the first routed one) pays the first share, 3 the second
    assert [RouterOptions.of({"kind": "random", "paid_share": [0.4, 0.2]}).share_at(t) for t in (2, 3)] == [0.4, 0.2]


def prompts(n: int, start: int) -> list[Prompt]:
    return [Prompt.of(f"q{k}", f"Name a fruit. Answer in fewer than {5 + k} words.",
                      meta={"constraints": [{"kind": "max_words", "value": 5 + k}], "keywords": ["fruit"]})
            for k in range(start, start + n)]


def answers(k: int) -> list[str]:
    return ["A ripe fruit.", "Apple is a fruit I like a lot every day of the week.", "fruit", f"Pear {k}."]


def routed_dir(tmp_path, oracle) -> RunDir:
    """Iteration 1 judged by `oracle`, iteration 2 sampled: 8 prompts each, 4 answers."""
    run = RunDir(tmp_path / "run")
    for t, start in ((1, 0), (2, 8)):
        d = run.iteration(t)
        d.path.mkdir(parents=True)
        samples = [Samples(p, answers(k)) for k, p in enumerate(prompts(8, start))]
        write_rows(d.samples, samples)
        if t == 1:
            write_rows(d.judgements, [Judged.of(s, j) for s, j in
                                      zip(samples, oracle.judge_many([(s.prompt, s.responses) for s in samples]),
                                          strict=True)])
    return run


def tiny_router(kind: str, **options) -> Router:
    model = {"path": None, "tokenizer": TOKENIZER, "random_init": tiny_model_config(), "init_seed": 0,
             "dtype": "float32"}
    opts = RouterOptions.of({"kind": kind, "min_train_prompts": 4, "model": model,
                             "student": {"members": 4, "steps": 50}, **options})
    return Router(opts, CACHE, LargeMarginRule(min_positive_score=7), listwise=True)


def test_a_routed_stage_pays_the_audit_and_the_random_share_and_prices_the_rest(tmp_path):
    """router=random on the rules judge billed as GPT-4-Turbo: iteration 2's 8 prompts, 2 audited (25%), 2 more
    paid at random (paid_share 0.5), 4 answered by the student; the ledger holds exactly the paid ones and the
    dollars not paid are the rules judge's own prices of the student's prompts."""
    oracle = RulesOracle(bill_as="gpt-4-turbo-2024-04-09")
    run = routed_dir(tmp_path, oracle)
    router = tiny_router("random", audit_share=0.25, paid_share=0.5)
    ledger.activate(run.ledger)
    try:
        trained = router.train(run, 2, seed=0)
        metrics = routed_judgements(RoutedJudge(router, oracle, JudgeLimits(), seed=3), run.iteration(2), 2)
    finally:
        ledger.activate(None)
    assert trained["router/train_prompts"] == 8 and (run.iteration(2).student / "student.pt").exists()
    routes = [r["route"] for r in read_jsonl(run.iteration(2).routing)]
    assert sorted(routes) == ["audit"] * 2 + ["random"] * 2 + ["student"] * 4
    judged = read_rows(run.iteration(2).judgements, Judged)
    assert [j.judgement.detail["route"] for j in judged] == routes
    paid = [j for j in judged if j.judgement.detail["route"] != "student"]
    rows = ledger.read_ledger(run.ledger)
    assert len(rows) == 4 and metrics["oracle/requests"] == 4
    assert sum(r["usd"] for r in rows) == pytest.approx(sum(j.judgement.cost["usd"] for j in paid))
    students = [j for j in judged if j.judgement.detail["route"] == "student"]
    assert metrics["cost/router_saved_usd"] == pytest.approx(sum(oracle.price(j.prompt, j.candidates)
                                                                 for j in students))
    assert metrics["router/paid_share"] == 0.5 and metrics["router/audit_prompts"] == 2
    # no positive reaches 7: every decision is "no pair", which the student cannot get wrong
    assert metrics["router/audit_agreement"] == 1.0 and metrics["router/audit_kappa"] == 1.0
    # the student's verdicts are its heads' mean, the same numbers as oracle=student's on those answers
    saved = StudentOracle(str(run.iteration(2).student), CACHE)
    again = saved.judge_many([(j.prompt, j.candidates) for j in students])
    for j, a in zip(students, again, strict=True):
        assert a.scores == pytest.approx(j.judgement.scores, abs=1e-5)
    # iteration 3's student learns from the paid verdicts only: iteration 1's 8 and iteration 2's 4, never its own
    assert tiny_router("distilled", min_train_prompts=99).train(run, 3, seed=0) == {"router/train_prompts": 8 + 4}


def test_too_few_verdicts_send_everything_to_the_judge(tmp_path, caplog):
    oracle = RulesOracle()
    run = routed_dir(tmp_path, oracle)
    router = tiny_router("distilled", min_train_prompts=9)
    assert router.train(run, 2, seed=0) == {"router/train_prompts": 8}
    assert "fewer than router.min_train_prompts=9" in caplog.text
    metrics = routed_judgements(RoutedJudge(router, oracle, JudgeLimits(), seed=3), run.iteration(2), 2)
    assert metrics["router/paid_share"] == 1.0 and metrics["router/student_prompts"] == 0
    assert {r["route"] for r in read_jsonl(run.iteration(2).routing)} == {"audit", "unrouted"}


def api_judge(server: JudgeServer, tmp_path) -> list[str]:  # noqa: D103
    return ["oracle=openai_listwise", f"oracle.base_url={server.url}", "oracle.api_key_env=null",
            "oracle.model=scripted-judge", f"oracle.cache_path={tmp_path / 'judge.sqlite'}",
            "oracle.price_input_per_1m=10", "oracle.price_output_per_1m=30"]


ROUTED = ["model=tiny_random", "schedule=smoke", "router=distilled", "router.min_train_prompts=4",
          "router.audit_share=0.33", "router.alpha=0.5", "router.delta=0.5", "router.student.steps=50",
          "schedule.min_positive_score=7"]  # no answer scores 7: the judge's every decision is "no pair"


@pytest.mark.slow
def test_the_api_judge_receives_exactly_the_audit_slice_and_the_student_answers_the_rest(tmp_path):
    """router=distilled through dno-run against the scripted judge on 127.0.0.1: in iteration 2 the server gets the
    2 audited prompts' questions and nothing else of that stage; the bound (alpha = delta = 0.5: 0.5^2 <= 0.5)
    certifies the student, which answers the other 4; W&B and summary.json carry router/*."""
    run = RunDir(tmp_path / "run")
    with JudgeServer() as server:
        dno_run(*ROUTED, *api_judge(server, tmp_path), f"hydra.run.dir={run.path}")
        questions = [r["body"]["messages"][-1]["content"] for r in server.requests]
    routing = read_jsonl(run.iteration(2).routing)
    judged = {j.prompt.id: j for j in read_rows(run.iteration(2).judgements, Judged)}
    asked = [q for q in questions if len(shown_responses(q)) == 4 and any(
        j.prompt.as_text() in q for j in judged.values())]
    paid = {r["prompt_id"] for r in routing if r["route"] != "student"}
    assert [r["route"] for r in routing].count("audit") == 2 and len(paid) == 2
    assert sorted(sorted(shown_responses(q)) for q in asked) == sorted(sorted(judged[p].candidates) for p in paid)
    metrics = read_jsonl(run.metrics)[1]
    assert metrics["router/threshold"] == 1.0 and metrics["router/paid_share"] == pytest.approx(2 / 6)
    assert metrics["cost/judge/requests"] == 2 and metrics["router/student_train_s"] > 0
    # an API judge's price is known only once paid: the student's 4 prompts at the mean of the 2 paid
    paid_usd = [r["usd"] for r in ledger.read_ledger(run.ledger) if r["stage"] == "judge" and r["iteration"] == 2]
    assert metrics["cost/router_saved_usd"] == pytest.approx(4 * sum(paid_usd) / 2)
    summary = read_json(run.summary)
    assert summary["router/mean_paid_share"] == pytest.approx(2 / 6)
    logged_keys = {k for row in read_jsonl(run.metrics) for k in row} | set(summary)
    assert not [k for k in logged_keys if not documented(k, metric_names())]  # docs/reference/metrics.md names them
    logged = [h for h in wandb_history(run.path) if "router/paid_share" in h]
    assert [h["router/paid_share"] for h in logged] == [pytest.approx(2 / 6)]
    (table,) = run.path.glob("wandb/offline-run-*/files/media/table/router_audit/iter_2_*.table.json")
    audit = json.loads(table.read_text())  # the audit slice, the student's and the judge's verdicts side by side
    assert [r[0] for r in audit["data"]] == [r["prompt_id"] for r in routing if r["route"] == "audit"]
    assert audit["columns"][-1] == "agree" and all(r[-1] for r in audit["data"])
    # a resumed run with another student setting refuses the saved student before any compute, naming the key
    proc = dno_run(*ROUTED, *api_judge(server, tmp_path), f"hydra.run.dir={run.path}", "router.student.members=4",
                   "resume=continue", check=False)
    assert proc.returncode == 2 and "router.student.members=8" in proc.stderr + proc.stdout


def iteration_2_questions(server: JudgeServer, judged: dict) -> list[int]:
    """Indices of the server's requests that are iteration 2's judge questions (4 answers of its prompts)."""
    texts = [j.prompt.as_text() for j in judged.values()]
    return [k for k, r in enumerate(server.requests) if len(shown_responses(q := r["body"]["messages"][-1]["content"]))
            == 4 and any(t in q for t in texts)]


@pytest.mark.slow
@pytest.mark.cluster  # a kill -9, as tests/test_cluster_accidents.py's: make test-cluster
def test_a_routed_run_killed_in_its_routed_judge_stage_resumes_with_the_same_student_routes_and_bill(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from helpers import REPO, program

    routed = [*ROUTED[:2], "router=random", "router.paid_share=0.5", *ROUTED[3:]]  # 2 audited + 1 at random paid
    with JudgeServer() as server:
        whole = RunDir(tmp_path / "whole")
        dno_run(*routed, *api_judge(server, tmp_path / "whole"), f"hydra.run.dir={whole.path}")
        first = iteration_2_questions(server, {j.prompt.id: j for j in read_rows(whole.iteration(2).judgements,
                                                                                 Judged)})[0]
        server.requests.clear()
        server.hold(first)  # iteration 2's first paid question and those after it wait: the kill lands there
        killed = RunDir(tmp_path / "killed")
        cmd = [program("dno-run"), *routed, *api_judge(server, tmp_path / "killed"), f"hydra.run.dir={killed.path}"]
        err = (tmp_path / "killed.err").open("w")
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"},
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = time.time() + 240
        while len(server.requests) <= first and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "killed.err").read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert killed.iteration(2).done("student") and not killed.iteration(2).done("judge")
        server.release()
        dno_run(*routed, *api_judge(server, tmp_path / "killed"), f"hydra.run.dir={killed.path}")
        beyond_the_ledger = len(server.requests) - len(ledger.read_ledger(killed.ledger))
    a, b = whole.iteration(2), killed.iteration(2)
    assert (a.student / "student.pt").read_bytes() == (b.student / "student.pt").read_bytes()
    assert read_jsonl(a.routing) == read_jsonl(b.routing)
    assert sorted(r["key"] for r in ledger.read_ledger(whole.ledger)) == \
        sorted(r["key"] for r in ledger.read_ledger(killed.ledger))  # every paid question once, the same ones
    assert 1 <= beyond_the_ledger <= 8  # in flight at the kill, asked again (oracle.max_concurrency)


def test_the_plan_prices_routed_iterations_at_the_expected_share_and_the_rules_judge_as_billed(tmp_path):
    from dno.run import plan_run

    paper = ["oracle=openai_listwise", "model=mistral_7b_instruct", "schedule=paper",
             "plan_inputs.prompts_per_iteration=1000", "plan_inputs.instruction_chars=600",
             "plan_inputs.answer_chars=1500"]
    full = plan_run(make_cfg(*paper), tmp_path / "full")
    routed = plan_run(make_cfg(*paper, "router=distilled", "router.expected_paid_share=0.3"), tmp_path / "routed")
    assert [r["judge_requests"] for r in full["iterations"]] == [1000, 1000, 1000]
    assert [r["judge_requests"] for r in routed["iterations"]] == [1000, 300, 300]
    assert [r["prompts"] for r in routed["iterations"]] == [1000, 1000, 1000]
    assert routed["iterations"][1]["judge_usd"] == pytest.approx(0.3 * full["iterations"][1]["judge_usd"])
    assert routed["router"] == {"kind": "distilled", "paid_share_after_iteration_1": 0.3,
                                "source": "router.expected_paid_share"}
    # router=random plans its own shares; the rules judge billed as GPT-4-Turbo is priced as the listwise request
    rules = plan_run(make_cfg("model=tiny_random", "schedule=smoke", "oracle.bill_as=gpt-4-turbo-2024-04-09",
                              "router=random", "router.paid_share=0.5"), tmp_path / "rules")
    assert rules["judge"]["kind"] == "listwise" and rules["judge"]["price_per_1m"] == [10.0, 30.0]
    assert [r["judge_requests"] for r in rules["iterations"]] == [6, 3] and rules["total"]["usd"] > 0
