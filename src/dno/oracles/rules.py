"""The offline default oracle: the paper's additive 6-point rubric, from verifiable checks.

Section 3 of arXiv 2404.03715 has GPT-4-Turbo give one point for each of six qualities. Here each
quality is a check a machine can make, so the judge is deterministic, free and needs no network.
One point each (the score is their sum, 0..6):

1. formatted: an answer of at least `min_words` words, with no chat-template debris and not a
   copy of the instruction;
2. relevant: mentions the topic (one of the record's keywords);
3. substantial: satisfies at least half of the instruction's constraints with at least
   `substantial_min_words` words (so that a three-word reply cannot collect every point);
4. correct: satisfies every constraint;
5. complete: ends like a finished answer (sentence punctuation, or a bullet list), and does not
   loop (fraction of repeated word n-grams at most `max_repeat_frac`);
6. concise: at most `concise_max_words` words.

Departures from the paper: the checks stand in for GPT-4-Turbo's reading; no teacher answer is
needed; justifications are the per-check results, kept in the judgement's raw text.
"""

from __future__ import annotations

import json
import math

from dno.data import Prompt
from dno.data.constraints import check, repeated_ngram_fraction, words
from dno.oracles.base import Judgement, Oracle

TEMPLATE_DEBRIS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "</s>", "[INST]")


def _ends_finished(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].rstrip()
    return last.endswith((".", "!", "?", '"', "'", ")")) or last.lstrip().startswith(("-", "*", "\u2022"))


class RulesOracle(Oracle):
    """`oracle=rules` (conf/oracle/rules.yaml): the 6-point rubric from checks (see the module docstring).

    Args:
        min_words: point 1 (formatted) needs at least this many words.
        substantial_min_words: point 3 (substantial) needs at least this many words.
        concise_max_words: point 6 (concise) allows at most this many words.
        max_repeat_frac: point 5 (complete) allows at most this share of repeated word n-grams.
        ngram: n of those n-grams.
    """

    is_listwise = True

    def __init__(
        self,
        min_words: int = 3,
        substantial_min_words: int = 8,
        concise_max_words: int = 60,
        max_repeat_frac: float = 0.3,
        ngram: int = 3,
    ) -> None:
        self.min_words = min_words
        self.substantial_min_words = substantial_min_words
        self.concise_max_words = concise_max_words
        self.max_repeat_frac = max_repeat_frac
        self.ngram = ngram

    def checks(self, prompt: Prompt, response: str) -> dict[str, bool]:
        text = response.strip()
        n_words = len(words(text))
        constraints = prompt.meta.get("constraints") or []
        met = sum(check(text, c) for c in constraints)
        keywords = [k.lower() for k in prompt.meta.get("keywords") or []]
        lowered = [w.lower() for w in words(text)]
        return {
            "formatted": n_words >= self.min_words
            and not any(d in text for d in TEMPLATE_DEBRIS)
            and prompt.instruction.strip().lower() not in text.lower(),
            "relevant": any(w in keywords for w in lowered) if keywords else n_words > 0,
            "substantial": met >= math.ceil(len(constraints) / 2) and n_words >= self.substantial_min_words,
            "correct": met == len(constraints) and n_words > 0,
            "complete": _ends_finished(text)
            and repeated_ngram_fraction(text, self.ngram) <= self.max_repeat_frac,
            "concise": 0 < n_words <= self.concise_max_words,
        }

    def judge(self, prompt: Prompt, candidates: list[str], pairs=None) -> Judgement:
        details = [self.checks(prompt, c) for c in candidates]
        scores = [float(sum(d.values())) for d in details]
        return Judgement(scores=scores, raw=json.dumps(details), cost={"calls": 0, "usd": 0.0})
