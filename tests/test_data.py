"""The builtin prompt set: deterministic, large enough, constraints as data; splits are disjoint."""

from __future__ import annotations

import pytest

from dno.data.builtin import make_records
from dno.data.constraints import KINDS, check, describe
from dno.data.splits import make_splits


def test_same_seed_same_records_and_other_seed_differs():
    a, b, c = make_records(600, seed=1), make_records(600, seed=1), make_records(600, seed=2)
    assert a == b and a != c
    assert len({r.instruction for r in a}) == 600


def test_records_carry_their_constraints_as_data():
    for r in make_records(600, seed=1234):
        assert 1 <= len(r.meta["constraints"]) <= 2 and r.teacher is None and r.system is None
        for c in r.meta["constraints"]:
            assert c["kind"] in KINDS and describe(c) in r.instruction
        assert r.instruction.lower().count(r.meta["topic"].lower()) == 1 and r.meta["keywords"]


@pytest.mark.parametrize("constraint,response,expected", [
    ({"kind": "max_words", "value": 5}, "one two three four", True),
    ({"kind": "max_words", "value": 4}, "one two three four", False),
    ({"kind": "min_words", "value": 3}, "one two three", True),
    ({"kind": "lowercase"}, "all lower case here.", True),
    ({"kind": "lowercase"}, "Not lower.", False),
    ({"kind": "include_word", "value": "bright"}, "A Bright day.", True),
    ({"kind": "include_word", "value": "bright"}, "Brightness only.", False),
    ({"kind": "avoid_word", "value": "very"}, "Every day.", True),
    ({"kind": "avoid_word", "value": "very"}, "A very nice day.", False),
    ({"kind": "no_commas"}, "No commas here.", True),
    ({"kind": "no_commas"}, "Yes, one.", False),
    ({"kind": "bullets", "value": 2}, "Intro:\n- one\n- two", True),
    ({"kind": "bullets", "value": 2}, "- one\n- two\n- three", False),
    ({"kind": "end_with", "value": "?"}, "Is it? ", True),
    ({"kind": "end_with", "value": "!"}, "It is.", False),
    ({"kind": "start_with", "value": "Imagine"}, "imagine, a city.", True),
    ({"kind": "start_with", "value": "Yes"}, "Well yes.", False),
])
def test_each_constraint_check(constraint, response, expected):
    assert check(response, constraint) is expected


def test_unknown_constraint_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown constraint kind"):
        check("x", {"kind": "rhymes"})


def test_splits_are_disjoint_and_sized():
    records = make_records(100, seed=0)
    s = make_splits(records, iterations=3, per_iteration=20, n_val=10, n_test=15, seed=0)
    ids = [r.id for part in [s.test, s.val, *s.iterations] for r in part]
    assert len(ids) == len(set(ids)) == 15 + 10 + 60
    assert [len(p) for p in s.iterations] == [20, 20, 20]
    even = make_splits(records, iterations=3, per_iteration=None, n_val=10, n_test=15, seed=0)
    assert [len(p) for p in even.iterations] == [25, 25, 25]
    assert s.test == make_splits(records, iterations=1, per_iteration=5, n_val=10, n_test=15, seed=0).test


def test_splits_that_do_not_fit_say_so():
    with pytest.raises(ValueError, match="the data has 10 prompts but the schedule needs 17"):
        make_splits(make_records(10, seed=0), iterations=2, per_iteration=5, n_val=3, n_test=4, seed=0)
