"""An AlpacaEval-style pairwise judge: P(a > b) from the log-probabilities of the two labels.

The judge sees the instruction and two outputs labelled A and B and answers with one token. P(A)
is exp(logprob A) / (exp(logprob A) + exp(logprob B)) over the first token's alternatives (a label
missing from them counts zero); a server that returns no log-probabilities gives 1 or 0 from the
text. Each question is asked in both orders and the two answers averaged, which cancels the
judge's position bias: P(a > b) = (P(A | a, b) + 1 - P(A | b, a)) / 2, so P(a > b) + P(b > a) = 1.
An answer with neither label is `invalid`.
"""

from __future__ import annotations

import math

from dno.oracles.api import ChatAPI, ClientOptions
from dno.oracles.base import (
    FAILED,
    INVALID,
    OK,
    PairwiseOracle,
    add_costs,
    both_orders,
    order_averaged,
    pair_judgement,
    worst,
)
from dno.oracles.batch import complete_many

TEMPLATE_VERSION = "pairwise-v1"

SYSTEM = ("You are an impartial expert judge. Given an instruction and two outputs, decide which output "
          "follows the instruction better: more helpful, correct, relevant and concise. The order of the "
          "outputs means nothing. Answer with exactly one letter: A or B.")


def user_message(instruction: str, output_a: str, output_b: str) -> str:
    return (f"# Instruction\n{instruction}\n\n# Output A\n{output_a}\n\n# Output B\n{output_b}\n\n"
            f"Which output is better? Answer A or B.")


def label_probability(text: str | None, top_logprobs: list[dict] | None) -> float | None:
    """P(the judge prefers A), or None when the answer names neither label."""
    if top_logprobs:
        best: dict[str, float] = {}
        for alt in top_logprobs:
            label = alt["token"].strip().strip("()*.").upper()
            if label in ("A", "B"):
                best[label] = max(best.get(label, -math.inf), alt["logprob"])
        if best:
            pa, pb = math.exp(best.get("A", -math.inf)), math.exp(best.get("B", -math.inf))
            return pa / (pa + pb)
    label = (text or "").strip().strip("()*.").upper()[:1]
    return {"A": 1.0, "B": 0.0}.get(label)


class OpenAIPairwiseOracle(PairwiseOracle):
    """`oracle=openai_pairwise`: P(a > b) from the labels' log-probabilities, both orders averaged.

    Args: model (the judge), top_logprobs (alternatives asked for the label token), **client
    (`dno.oracles.api.ClientOptions`)."""

    def __init__(self, model: str, top_logprobs: int = 5, **client) -> None:
        self.api = ChatAPI(ClientOptions(model=model, **client), TEMPLATE_VERSION)
        self.top_logprobs = top_logprobs

    def check(self) -> None:
        self.api.check()

    def question(self, asked: tuple[str, str, str]) -> tuple[list[dict], dict]:
        instruction, a, b = asked
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(instruction, a, b)}]
        return messages, {"temperature": 0.0, "max_tokens": 1, "logprobs": True, "top_logprobs": self.top_logprobs}

    @staticmethod
    def label(reply):
        if reply.error is not None:
            return None, FAILED, reply
        p = label_probability(reply.text, reply.top_logprobs)
        return p, OK if p is not None else INVALID, reply

    def compare_many(self, comparisons, desc):
        """Both orders of every comparison asked (concurrently, or through the Batch API with oracle.batch)."""
        replies = complete_many(self.api, [self.question(q) for q in both_orders(comparisons)], desc)
        answers = [self.label(r) for r in replies]
        out = []
        for k in range(len(comparisons)):
            (p_ab, s_ab, r_ab), (p_ba, s_ba, r_ba) = answers[2 * k], answers[2 * k + 1]
            status = worst([s_ab, s_ba])
            cost = add_costs([r_ab.cost(self.api), r_ba.cost(self.api)])
            raw = f"a,b: {r_ab.text!r}; b,a: {r_ba.text!r}"
            detail = {"p_a_first": p_ab, "p_b_first": p_ba}
            if status == OK:
                out.append(pair_judgement(order_averaged(p_ab, p_ba), raw=raw, cost=cost, detail=detail))
            else:
                errors = [r.error for r in (r_ab, r_ba) if r.error]
                out.append(pair_judgement(None, status=status, raw=raw, cost=cost,
                                          detail={**detail, "error": errors[0] if errors else "no A/B label"}))
        return out
