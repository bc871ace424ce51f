"""Local judges (a causal LM, a reward model), the committee, and pairs from preferences."""

from __future__ import annotations

import math

import pytest
import torch

from dno.data import Prompt
from dno.oracles.base import FAILED, INVALID, OK, Judgement, Oracle
from dno.oracles.committee import Committee
from dno.oracles.local import LocalJudgeOracle, RewardModelOracle
from dno.pairs import (
    STUDENT_OVER_STUDENT,
    STUDENT_OVER_TEACHER,
    TEACHER_OVER_STUDENT,
    Candidate,
    LargeMarginRule,
)
from dno.runtime.files import read_json
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, read_rows
from helpers import TOKENIZER, dno_run, tiny_model_config

TINY = tiny_model_config(num_hidden_layers=1)  # one layer is enough to judge
PROMPT = Prompt.of("p", "Name a colour.")
CANDIDATES = ["Blue.", "The colour red, as in a ripe tomato.", "green green green", "Yellow, like the sun."]


def tiny(cls, cache_dir, **random_init):
    return cls(model={"path": None, "tokenizer": TOKENIZER, "random_init": {**TINY, **random_init},
                      "dtype": "float32", "init_seed": 3}, cache_dir=str(cache_dir), batch_size=3, device="cpu")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    from helpers import make_cfg

    return make_cfg().cache_dir  # the shared cache, so the tokenizer is converted once


def test_local_judge_reads_the_label_probabilities_and_averages_both_orders(cache_dir):
    judge = tiny(LocalJudgeOracle, cache_dir)
    j = judge.judge(PROMPT, CANDIDATES)
    model, tok = judge.model, judge.tokenizer
    id_a, id_b = judge.label_ids()

    def p_first(a, b):  # by hand: one unpadded forward, softmax over the two label logits
        ids = tok(judge.chat(PROMPT.instruction, a, b), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            logits = model(**ids).logits[0, -1]
        return torch.softmax(logits[[id_a, id_b]], dim=-1)[0].item()

    for i, k in [(0, 1), (1, 3), (2, 0)]:
        expected = (p_first(CANDIDATES[i], CANDIDATES[k]) + 1 - p_first(CANDIDATES[k], CANDIDATES[i])) / 2
        assert j.preference(i, k) == pytest.approx(expected, abs=1e-5)  # batched, left-padded == alone
        assert j.preference(i, k) + j.preference(k, i) == pytest.approx(1.0)
    assert j.status == OK and j.cost["calls"] == 2 * 6
    only = judge.judge(PROMPT, CANDIDATES, pairs=[(0, 2)])  # asked pairs only
    assert only.prefs[0][1] is None and only.preference(0, 2) == pytest.approx(j.preference(0, 2), abs=1e-5)


def test_reward_model_preference_is_the_bradley_terry_sigmoid(cache_dir):
    rm = tiny(RewardModelOracle, cache_dir, num_labels=1)
    j = rm.judge(PROMPT, CANDIDATES)
    alone = [rm.rewards([(PROMPT, c)])[0] for c in CANDIDATES]
    assert j.scores == pytest.approx(alone, abs=1e-5)
    for i in range(4):
        for k in range(4):
            if i != k:
                assert j.preference(i, k) == pytest.approx(1 / (1 + math.exp(alone[k] - alone[i])), abs=1e-5)
    best = max(range(4), key=alone.__getitem__)
    assert j.win_probs()[best] == max(j.win_probs())


class Ranking(Oracle):
    """A listwise judge with a fixed ranking of the candidates (by index)."""

    def __init__(self, ranking, status=OK):
        self.ranking, self.status = ranking, status

    def judge(self, prompt, candidates, pairs=None):
        if self.status != OK:
            return Judgement(status=self.status)
        return Judgement(scores=[float(len(self.ranking) - self.ranking.index(i)) for i in range(len(candidates))])


def test_committee_majority_is_intransitive_on_condorcets_example():
    committee = Committee([Ranking([0, 1, 2]), Ranking([1, 2, 0]), Ranking([2, 0, 1])])
    j = committee.judge(PROMPT, ["a", "b", "c"])
    assert (j.preference(0, 1), j.preference(1, 2), j.preference(2, 0)) == (1.0, 1.0, 1.0)  # a > b > c > a
    assert j.win_probs() == [0.5, 0.5, 0.5]  # no candidate is best: a reward could not say this
    assert Committee([Ranking([0, 1]), Ranking([1, 0])]).judge(PROMPT, ["a", "b"]).preference(0, 1) == 0.5


def test_committee_takes_no_vote_from_a_member_that_did_not_answer():
    j = Committee([Ranking([0, 1]), Ranking([0, 1]), Ranking([1, 0], status=FAILED)]).judge(PROMPT, ["a", "b"])
    assert j.status == FAILED and j.win_probs() is None
    j = Committee([Ranking([0, 1]), Ranking([0, 1], status=INVALID)]).judge(PROMPT, ["a", "b"])
    assert j.status == INVALID


def test_pairs_from_preferences_keep_large_margins_and_loops_as_negatives():
    prefs = [[None, 0.9, 0.6, 0.5], [0.1, None, 0.8, 0.75], [0.4, 0.2, None, 0.5], [0.5, 0.25, 0.5, None]]
    loop = "again and again and again and again and again and again"
    c = [Candidate("s0", 0, 0), Candidate("s1", 0, 0), Candidate(loop, 0, 0),
         Candidate("teacher", 0, 0, is_teacher=True)]
    pairs = LargeMarginRule(min_preference=0.75).pairs(c, Judgement(prefs=prefs))
    assert sorted((p.text, n.text, k) for p, n, k in pairs) == sorted([
        ("s0", "s1", STUDENT_OVER_STUDENT),          # 0.9 >= 0.75
        ("s0", loop, STUDENT_OVER_STUDENT),          # a loop is a negative whatever P says (0.6)
        ("s1", loop, STUDENT_OVER_STUDENT),          # 0.8
        ("s1", "teacher", STUDENT_OVER_TEACHER),        # 0.75, at the threshold
        ("teacher", loop, TEACHER_OVER_STUDENT),        # the teacher answer is never a loop
    ])


@pytest.mark.slow
def test_committee_of_rules_local_judge_and_reward_model_runs_the_loop(tmp_path):
    """A user's own oracle config (a config directory on hydra's search path) in the smoke loop."""
    model = {"path": None, "tokenizer": TOKENIZER, "random_init": TINY, "dtype": "float32"}
    conf = tmp_path / "conf" / "oracle"
    conf.mkdir(parents=True)
    import yaml

    (conf / "my_committee.yaml").write_text(yaml.safe_dump({
        "_target_": "dno.oracles.committee.Committee",
        "members": {
            "rules": {"_target_": "dno.oracles.rules.RulesOracle", "concise_max_words": 8},
            "judge": {"_target_": "dno.oracles.local.LocalJudgeOracle", "model": model, "cache_dir": "${cache_dir}"},
            "reward": {"_target_": "dno.oracles.local.RewardModelOracle", "cache_dir": "${cache_dir}",
                       "model": {**model, "random_init": {**TINY, "num_labels": 1}}},
        },
    }))
    run_dir = tmp_path / "run"
    dno_run("model=tiny_random", "schedule=smoke", "oracle=my_committee",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={run_dir}")
    run = RunDir(run_dir)
    rows = read_rows(run.iteration(1).judgements, Judged)
    assert all(r.judgement.prefs is not None and len(r.judgement.detail["members"]) == 3 for r in rows)
    assert all(p in (0.0, 0.5, 1.0) for r in rows for row in r.judgement.prefs for p in row if p is not None)
    assert read_json(run.iteration(1).marker("judge"))["oracle/invalid_frac"] == 0.0
    assert "alpaca_eval/win_rate" in read_json(run.summary)
