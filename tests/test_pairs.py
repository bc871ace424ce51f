"""Pair rules (conf/pair_rule/) on hand-worked examples: the paper's, SPIN's, all pairs, best vs worst."""

from __future__ import annotations

import random

import pytest

from dno.oracles.base import Judgement
from dno.pairs import (
    STUDENT_OVER_STUDENT,
    STUDENT_OVER_TEACHER,
    TEACHER_OVER_STUDENT,
    AllPairs,
    BestVsWorst,
    Candidate,
    PaperRule,
    SpinRule,
    count_types,
    limit_pairs,
    replay,
)

RULE = PaperRule(min_positive_score=5, teacher_margin=2, student_margin=1, max_repeat_frac=0.3)
LISTWISE = Judgement()  # scores live on the candidates; no pairwise preferences


def names(pairs):
    return sorted((p.text, n.text, kind) for p, n, kind in pairs)


def test_student_positive_needs_margin_one():
    c = [Candidate("s6", 6, 0), Candidate("s5", 5, 0), Candidate("s4", 4, 0), Candidate("s3", 3, 0)]
    assert names(RULE.pairs(c, LISTWISE)) == [
        ("s5", "s3", STUDENT_OVER_STUDENT), ("s5", "s4", STUDENT_OVER_STUDENT),
        ("s6", "s3", STUDENT_OVER_STUDENT), ("s6", "s4", STUDENT_OVER_STUDENT), ("s6", "s5", STUDENT_OVER_STUDENT),
    ]


def test_teacher_positive_needs_margin_two_and_student_can_beat_teacher():
    c = [Candidate("teacher", 5, 0, is_teacher=True), Candidate("s4", 4, 0), Candidate("s3", 3, 0),
         Candidate("s6", 6, 0)]
    assert names(RULE.pairs(c, LISTWISE)) == [
        ("s6", "s3", STUDENT_OVER_STUDENT), ("s6", "s4", STUDENT_OVER_STUDENT),
        ("s6", "teacher", STUDENT_OVER_TEACHER),
        ("teacher", "s3", TEACHER_OVER_STUDENT),          # 5 - 3 >= 2; 5 - 4 < 2 gives no pair
    ]


def test_restrictive_keeps_only_teacher_over_student():
    c = [Candidate("teacher", 5, 0, is_teacher=True), Candidate("s4", 4, 0), Candidate("s3", 3, 0),
         Candidate("s6", 6, 0)]
    rule = PaperRule(keep_types=[TEACHER_OVER_STUDENT])
    assert names(rule.pairs(c, LISTWISE)) == [("teacher", "s3", TEACHER_OVER_STUDENT)]
    with pytest.raises(ValueError, match="loss.pairs.keep_types has unknown types"):
        PaperRule(keep_types=["teacher_over_everyone"])


def test_no_positive_below_threshold():
    c = [Candidate("s4", 4, 0), Candidate("s1", 1, 0)]
    assert RULE.pairs(c, LISTWISE) == []


def test_looping_sample_is_a_negative_even_with_a_high_score_and_never_a_positive():
    loop = "go go go go go go go go go go"
    c = [Candidate("a fine answer here.", 5, 0), Candidate(loop, 6, 0)]
    assert names(RULE.pairs(c, LISTWISE)) == [("a fine answer here.", loop, STUDENT_OVER_STUDENT)]


def test_identical_texts_are_not_paired():
    c = [Candidate("same", 6, 0), Candidate("same", 6, 0)]
    assert RULE.pairs(c, LISTWISE) == []


def test_spin_pairs_the_teacher_over_every_other_student_answer():
    c = [Candidate("s1", 6, 0), Candidate("teacher", 2, 0, is_teacher=True), Candidate("s2", 1, 0),
         Candidate("teacher", 3, 0)]  # a student sample equal to the teacher's answer is not paired
    assert names(SpinRule().pairs(c, LISTWISE)) == [("teacher", "s1", TEACHER_OVER_STUDENT),
                                                     ("teacher", "s2", TEACHER_OVER_STUDENT)]
    assert SpinRule().pairs([Candidate("s1", 6, 0), Candidate("s2", 1, 0)], LISTWISE) == []  # no teacher, no pair


def test_best_vs_worst_keeps_the_largest_margin_of_the_paper_pairs():
    c = [Candidate("s5", 5, 0), Candidate("s6", 6, 0), Candidate("s2", 2, 0), Candidate("s4", 4, 0)]
    # the paper's pairs: 5>2, 5>4, 6>5, 6>2, 6>4; the largest margin is 6 - 2 = 4
    assert names(BestVsWorst().pairs(c, LISTWISE)) == [("s6", "s2", STUDENT_OVER_STUDENT)]
    assert BestVsWorst().pairs([Candidate("s4", 4, 0), Candidate("s1", 1, 0)], LISTWISE) == []  # no positive


def test_replay_takes_the_configured_shares():
    last = [{"id": i, "type": TEACHER_OVER_STUDENT} for i in range(10)]
    before = [{"id": 100 + i, "type": STUDENT_OVER_STUDENT} for i in range(20)]
    picked = replay([last, before], [0.3, 0.15], seed=0)
    assert sum(p["id"] < 100 for p in picked) == 3 and sum(p["id"] >= 100 for p in picked) == 3
    assert replay([last, before], [0.3, 0.15], seed=0) == picked
    assert count_types(picked) == {TEACHER_OVER_STUDENT: 3, STUDENT_OVER_TEACHER: 0, STUDENT_OVER_STUDENT: 3}


def test_limit_keeps_the_largest_margins():
    c = [Candidate("s6", 6, 0), Candidate("s5", 5, 0), Candidate("s4", 4, 0), Candidate("s2", 2, 0)]
    pairs = RULE.pairs(c, LISTWISE)  # margins: 6-2=4, 5-2=3, 6-4=2, 5-4=1, 6-5=1
    kept = RULE.limit(pairs, 3, random.Random(0))
    assert [(p.text, n.text) for p, n, _ in kept] == [("s6", "s2"), ("s5", "s2"), ("s6", "s4")]
    assert limit_pairs(pairs, None, random.Random(0)) == pairs


def test_all_pairs_take_every_distinct_pair_higher_score_first():
    c = [Candidate("a", 2, 0.0), Candidate("b", 4, 1.0), Candidate("c", 3, 0.5), Candidate("b", 4, 1.0)]
    rule = AllPairs()
    pairs = rule.pairs(c, LISTWISE)
    # 6 index pairs; (b, b) has one text twice and is skipped: 5 remain
    assert sorted((p.text, n.text) for p, n, _ in pairs) == [("b", "a"), ("b", "a"), ("b", "c"), ("b", "c"), ("c", "a")]
    assert len(rule.limit(pairs, 2, random.Random(0))) == 2


def test_pairs_and_judgements_files_of_format_1_still_read(tmp_path):
    from dno.records import read_judgements, read_pairs, write_jsonl

    old = tmp_path / "pairs.jsonl"  # a run directory written before the names followed the paper
    write_jsonl(old, [{"prompt_id": "a", "chosen": "x", "rejected": "y", "chosen_win_rate": 1.0,
                       "rejected_win_rate": 0.0, "ref_logp_chosen": -3.0, "ref_logp_rejected": -4.0}])
    assert read_pairs(old) == [{"version": 2, "prompt_id": "a", "chosen": "x", "rejected": "y",
                                "chosen_win_prob": 1.0, "rejected_win_prob": 0.0, "ref_chosen_logps": -3.0,
                                "ref_rejected_logps": -4.0}]
    judged = tmp_path / "judgements.jsonl"
    write_jsonl(judged, [{"id": "a", "gold": "t", "win_rates": [0.5, 0.5]}])
    assert read_judgements(judged) == [{"version": 2, "id": "a", "teacher": "t", "win_probs": [0.5, 0.5]}]


def test_a_pairs_file_newer_than_the_code_is_a_clear_error(tmp_path):
    from dno.records import read_pairs, write_jsonl

    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"version": 2, "chosen": "x"}, {"version": 3, "chosen": "y"}])
    with pytest.raises(ValueError, match=r"pairs.jsonl, row 2: format version 3, but this code reads versions 1 to 2"):
        read_pairs(path)


def test_a_samples_file_of_an_older_run_keeps_its_teacher_answers(tmp_path):
    from dno.records import read_samples, write_jsonl

    path = tmp_path / "samples.jsonl"
    write_jsonl(path, [{"id": "a", "gold": "the teacher", "responses": ["x"]}, {"id": "b", "teacher": None}])
    assert read_samples(path) == [{"id": "a", "teacher": "the teacher", "responses": ["x"]},
                                  {"id": "b", "teacher": None}]
