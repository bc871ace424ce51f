"""The rules oracle against hand-scored examples of the 6-point rubric."""

from __future__ import annotations

import json

import pytest

from dno.data import Prompt
from dno.data.constraints import repeated_ngram_fraction
from dno.oracles.base import preference, win_probs_of_scores
from dno.oracles.rules import RulesOracle

PROMPT = Prompt.of("o", "Describe the ocean. Answer in fewer than 10 words. Do not use any commas.",
                   meta={"keywords": ["ocean", "sea"],
                         "constraints": [{"kind": "max_words", "value": 10}, {"kind": "no_commas"}]})


@pytest.mark.parametrize("response,points", [
    # formatted, relevant, substantial, correct, complete, concise
    ("The ocean is vast and deep and blue.", [1, 1, 1, 1, 1, 1]),           # 8 words, no comma: 6
    ("The ocean is vast, deep, calm and very blue.", [1, 1, 1, 0, 1, 1]),   # a comma: half the constraints: 5
    ("The ocean is vast, deep and blue.", [1, 1, 0, 0, 1, 1]),              # and only 7 words: not substantial
    ("The ocean is vast, deep and blue and full of life today", [1, 1, 0, 0, 0, 1]),  # 12 words, comma, no end
    ("Mountains are tall and green.", [1, 0, 0, 1, 1, 1]),                 # off topic, 5 words: 4
    ("Sea.", [0, 1, 0, 1, 1, 1]),                                          # one word is not an answer: 4
    ("", [0, 0, 0, 0, 0, 0]),
    ("<|im_start|>assistant ocean waves here.", [0, 1, 0, 1, 1, 1]),        # template debris
])
def test_hand_scored_examples(response, points):
    oracle = RulesOracle(min_words=3, concise_max_words=60)
    j = oracle.judge(PROMPT, [response])
    assert j.status == "ok" and j.scores == [float(sum(points))]
    details = json.loads(j.raw)[0]
    assert [int(v) for v in details.values()] == points


def test_concise_and_repetition_points():
    oracle = RulesOracle(min_words=3, substantial_min_words=4, concise_max_words=5, max_repeat_frac=0.3)
    prompt = Prompt.of("s", "Describe the sea.", meta={"keywords": ["sea"], "constraints": []})
    long_answer = "the sea is wide and the sea is deep today."         # 10 words > 5: no concise point
    loop = "the sea the sea the sea the sea the sea."
    scores = oracle.judge(prompt, [long_answer, loop, "The sea is calm."]).scores
    assert scores == [5.0, 4.0, 6.0]  # the loop also loses "complete"


def test_repeated_ngram_fraction_by_hand():
    assert repeated_ngram_fraction("a b c d") == 0.0
    # trigrams of "a b c a b c": abc, bca, cab, abc -> 3 distinct of 4
    assert repeated_ngram_fraction("a b c a b c") == pytest.approx(0.25)
    assert repeated_ngram_fraction("too short") == 0.0


def test_win_probs_by_hand():
    # scores 6, 4, 4, 2: 6 beats all three; each 4 beats the 2, ties the other 4, loses to 6
    assert win_probs_of_scores([6, 4, 4, 2]) == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert preference(5, 3) == 1.0 and preference(3, 3) == 0.5 and preference(2, 3) == 0.0


def test_rules_oracle_is_deterministic_and_order_free():
    oracle = RulesOracle()
    a, b = "The ocean is vast and deep and blue.", "Mountains, tall."
    assert oracle.judge(PROMPT, [a, b]).scores == oracle.judge(PROMPT, [b, a]).scores[::-1]


def test_one_listwise_call_gives_every_comparison_and_failures_stay_out():
    from dno.oracles.base import FAILED, Judgement
    from dno.stages.evaluate import against

    class Counting(RulesOracle):
        calls = 0

        def judge(self, prompt, candidates, pairs=None):
            Counting.calls += 1
            if "fail" in candidates[0]:
                return Judgement(scores=None, status=FAILED)
            return super().judge(prompt, candidates)

    good, short = "The ocean is vast and deep and blue.", "Sea."
    vs_a, vs_b = against(Counting(), [PROMPT, PROMPT], [good, "fail"], [short, short], [good, good])
    assert Counting.calls == 2  # one call per prompt, not one per comparison
    assert vs_a == [1.0, None] and vs_b == [0.5, None]
