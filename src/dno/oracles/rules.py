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

Billed as if paid (`oracle.bill_as=gpt-4-turbo-2024-04-09`, for experiments about the judge's bill such as
experiments/routing.sh): each judgement counts as one request of the paper's listwise question and is priced at
that model's row of conf/prices/openai.yaml, for the question's prompt tokens (the listwise judge's system
prompt and question about these candidates, characters / 4) and `bill_tokens_per_candidate` completion tokens
per candidate. It goes into the run's ledger like a paid answer (once per question), and nothing is paid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from dno.data import Prompt
from dno.data.constraints import check, repeated_ngram_fraction, words
from dno.oracles import ledger
from dno.oracles.base import Judgement, Oracle
from dno.oracles.cache import cache_key

TEMPLATE_DEBRIS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "</s>", "[INST]")


def _ends_finished(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].rstrip()
    return last.endswith((".", "!", "?", '"', "'", ")")) or last.lstrip().startswith(("-", "*", "\u2022"))


@dataclass(eq=False)  # an options object; judged by identity, as every oracle
class RulesOracle(Oracle):
    """`oracle=rules` (conf/oracle/rules.yaml): the 6-point rubric from checks (see the module docstring).

    Attributes:
        min_words: point 1 (formatted) needs at least this many words.
        substantial_min_words: point 3 (substantial) needs at least this many words.
        concise_max_words: point 6 (concise) allows at most this many words.
        max_repeat_frac: point 5 (complete) allows at most this share of repeated word n-grams.
        ngram: n of those n-grams.
        bill_as: null, or a model of conf/prices/openai.yaml whose price every judgement is billed at (see the
            module docstring).
        bill_tokens_per_candidate: completion tokens billed per candidate (a 100-word justification and a score).
    """

    min_words: int = 3
    substantial_min_words: int = 8
    concise_max_words: int = 60
    max_repeat_frac: float = 0.3
    ngram: int = 3
    bill_as: str | None = None
    bill_tokens_per_candidate: int = 140
    is_listwise = True

    @property
    def is_paid(self) -> bool:
        return self.bill_as is not None

    def check(self) -> None:
        if self.bill_as is not None:
            from dno.oracles.prices import price_of

            try:
                price_of(self.bill_as)
            except ValueError as e:
                raise ValueError(f"oracle.bill_as: {e}") from None

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
        cost = self.bill(prompt, candidates) if self.bill_as else {"calls": 0, "usd": 0.0}
        return Judgement(scores=scores, raw=json.dumps(details), cost=cost)

    def bill(self, prompt: Prompt, candidates: list[str]) -> dict:
        """The cost of asking the paper's listwise judge `bill_as` this question, written to the run's ledger."""
        question, usage, usd = self._priced(prompt, candidates)
        active = ledger.active()
        if active is not None:
            active.pay(cache_key(model=self.bill_as, question=question), model=self.bill_as, usage=usage, usd=usd,
                       billed_as=True)
        return {"requests": 1, **usage, "usd": usd}

    def price(self, prompt: Prompt, candidates: list[str]) -> float | None:
        """What judging these candidates would be billed (nothing is paid): 0 when not billed as paid."""
        return self._priced(prompt, candidates)[2] if self.bill_as else 0.0

    def _priced(self, prompt: Prompt, candidates: list[str]) -> tuple[str, dict, float]:
        from dno.oracles.openai_listwise import SYSTEM, user_message
        from dno.oracles.prices import price_of

        question = SYSTEM + user_message(prompt.as_text(), candidates)
        usage = {"prompt_tokens": math.ceil(len(question) / 4),
                 "completion_tokens": self.bill_tokens_per_candidate * len(candidates)}
        return question, usage, price_of(self.bill_as).usd(usage)
