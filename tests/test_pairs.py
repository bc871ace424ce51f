"""Pair rules (conf/pair_rule/) on hand-worked examples: the paper's large margins, SPIN's, all pairs, best vs
worst."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

from dno.oracles.base import Judgement
from dno.pairs import (
    STUDENT_OVER_STUDENT,
    STUDENT_OVER_TEACHER,
    TEACHER_OVER_STUDENT,
    AllPairs,
    BestVsWorst,
    Candidate,
    LargeMarginRule,
    PaperRule,
    SpinRule,
    count_types,
    limit_pairs,
    replay,
)

RULE = LargeMarginRule(min_positive_score=5, teacher_margin=2, student_margin=1, max_repeat_frac=0.3)
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
    rule = LargeMarginRule(keep_types=[TEACHER_OVER_STUDENT])
    assert names(rule.pairs(c, LISTWISE)) == [("teacher", "s3", TEACHER_OVER_STUDENT)]
    with pytest.raises(ValueError, match="loss.pairs.keep_types has unknown types"):
        LargeMarginRule(keep_types=["teacher_over_everyone"])


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
    last = [SimpleNamespace(id=i, type=TEACHER_OVER_STUDENT) for i in range(10)]
    before = [SimpleNamespace(id=100 + i, type=STUDENT_OVER_STUDENT) for i in range(20)]
    picked = replay([last, before], [0.3, 0.15], seed=0)
    assert sum(p.id < 100 for p in picked) == 3 and sum(p.id >= 100 for p in picked) == 3
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


def test_the_old_name_of_the_large_margin_rule_still_builds_it():
    assert PaperRule is LargeMarginRule  # run directories and configs made before the rename record PaperRule
