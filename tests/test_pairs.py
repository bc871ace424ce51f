"""Pair rules of Algorithm 2, step 4, on hand-worked examples."""

from __future__ import annotations

from dno.pairs import (
    STUDENT_OVER_STUDENT,
    STUDENT_OVER_TEACHER,
    TEACHER_OVER_STUDENT,
    Candidate,
    PairRules,
    build_pairs,
    count_types,
    replay,
)

RULES = PairRules(min_positive_score=5, teacher_margin=2, student_margin=1, max_repeat_frac=0.3)


def names(pairs):
    return sorted((p.text, n.text, kind) for p, n, kind in pairs)


def test_student_positive_needs_margin_one():
    c = [Candidate("s6", 6, 0), Candidate("s5", 5, 0), Candidate("s4", 4, 0), Candidate("s3", 3, 0)]
    assert names(build_pairs(c, RULES)) == [
        ("s5", "s3", STUDENT_OVER_STUDENT), ("s5", "s4", STUDENT_OVER_STUDENT),
        ("s6", "s3", STUDENT_OVER_STUDENT), ("s6", "s4", STUDENT_OVER_STUDENT), ("s6", "s5", STUDENT_OVER_STUDENT),
    ]


def test_teacher_positive_needs_margin_two_and_student_can_beat_teacher():
    c = [Candidate("gold", 5, 0, is_gold=True), Candidate("s4", 4, 0), Candidate("s3", 3, 0), Candidate("s6", 6, 0)]
    assert names(build_pairs(c, RULES)) == [
        ("gold", "s3", TEACHER_OVER_STUDENT),          # 5 - 3 >= 2; 5 - 4 < 2 gives no pair
        ("s6", "gold", STUDENT_OVER_TEACHER),
        ("s6", "s3", STUDENT_OVER_STUDENT), ("s6", "s4", STUDENT_OVER_STUDENT),
    ]


def test_no_positive_below_threshold():
    c = [Candidate("s4", 4, 0), Candidate("s1", 1, 0)]
    assert build_pairs(c, RULES) == []


def test_looping_sample_is_a_negative_even_with_a_high_score_and_never_a_positive():
    loop = "go go go go go go go go go go"
    c = [Candidate("a fine answer here.", 5, 0), Candidate(loop, 6, 0)]
    assert names(build_pairs(c, RULES)) == [("a fine answer here.", loop, STUDENT_OVER_STUDENT)]


def test_identical_texts_are_not_paired():
    c = [Candidate("same", 6, 0), Candidate("same", 6, 0)]
    assert build_pairs(c, RULES) == []


def test_replay_takes_the_configured_shares():
    last = [{"id": i, "type": TEACHER_OVER_STUDENT} for i in range(10)]
    before = [{"id": 100 + i, "type": STUDENT_OVER_STUDENT} for i in range(20)]
    picked = replay([last, before], [0.3, 0.15], seed=0)
    assert sum(p["id"] < 100 for p in picked) == 3 and sum(p["id"] >= 100 for p in picked) == 3
    assert replay([last, before], [0.3, 0.15], seed=0) == picked
    assert count_types(picked) == {TEACHER_OVER_STUDENT: 3, STUDENT_OVER_TEACHER: 0, STUDENT_OVER_STUDENT: 3}


def test_limit_keeps_the_largest_margins():
    import random

    from dno.pairs import limit_pairs

    c = [Candidate("s6", 6, 0), Candidate("s5", 5, 0), Candidate("s4", 4, 0), Candidate("s2", 2, 0)]
    pairs = build_pairs(c, RULES)  # margins: 6-2=4, 5-2=3, 6-4=2, 5-4=1, 6-5=1
    kept = limit_pairs(pairs, 3, random.Random(0))
    assert [(p.text, n.text) for p, n, _ in kept] == [("s6", "s2"), ("s5", "s2"), ("s6", "s4")]
    assert limit_pairs(pairs, None, random.Random(0)) == pairs


def test_soft_pairs_take_every_distinct_pair_higher_score_first():
    import random

    from dno.pairs import soft_pairs

    c = [Candidate("a", 2, 0.0), Candidate("b", 4, 1.0), Candidate("c", 3, 0.5), Candidate("b", 4, 1.0)]
    pairs = soft_pairs(c, None, random.Random(0))
    # 6 index pairs; (b, b) has one text twice and is skipped: 5 remain
    assert sorted((p.text, n.text) for p, n, _ in pairs) == [("b", "a"), ("b", "a"), ("b", "c"), ("b", "c"), ("c", "a")]
    assert len(soft_pairs(c, 2, random.Random(0))) == 2
