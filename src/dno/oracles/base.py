"""The oracle interface: a judgement per prompt, with its status, raw text and cost.

DNO (arXiv 2404.03715) needs a preference, not a reward. An oracle answers, for a prompt and its
candidates, either a score per candidate (listwise: the paper's GPT-4-Turbo judge) or P(a > b) for
the pairs it is asked (pairwise: AlpacaEval-style judges, reward models, committees). The loop
derives each candidate's r_t(x, y), its expected probability of beating the others (`win_prob`,
in [0, 1]; `win_rate` is always a percentage), from either.

A judgement that is not `ok` (`invalid`: the judge answered but not in the asked form; `failed`:
no answer after the retries) never becomes a label: its prompt leaves the pair set.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from dno.data import Prompt

OK, INVALID, FAILED = "ok", "invalid", "failed"
_SEVERITY = {OK: 0, INVALID: 1, FAILED: 2}
# requests: paid API requests; cache_hits: answers the cache gave for free; calls: local model queries
COST_KEYS = ("requests", "cache_hits", "calls", "prompt_tokens", "completion_tokens", "usd", "batch_requests",
             "cached_tokens")


@dataclass
class Judgement:
    scores: list[float] | None = None  # listwise: one per candidate when status is ok
    status: str = OK
    raw: str | None = None  # the judge's own text, kept for inspection
    cost: dict = field(default_factory=dict)  # requests, cache_hits, prompt/completion tokens, usd
    prefs: list[list[float | None]] | None = None  # pairwise: prefs[i][j] = P(i > j) where asked
    detail: dict = field(default_factory=dict)  # e.g. the presentation order, or why it is invalid

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Judgement:
        return cls(**{k: d[k] for k in ("scores", "status", "raw", "cost") if k in d},
                   prefs=d.get("prefs"), detail=d.get("detail") or {})

    def preference(self, i: int, j: int) -> float | None:
        """P(candidate i > candidate j), or None when the judgement is not ok or the pair was not asked."""
        if self.status != OK:
            return None
        if self.prefs is not None:
            p = self.prefs[i][j]
            return p if p is not None else None if self.prefs[j][i] is None else 1.0 - self.prefs[j][i]
        return preference(self.scores[i], self.scores[j])

    def win_probs(self) -> list[float] | None:
        """r_t of each candidate: its mean P(win) against the others it was compared with, in [0, 1]."""
        if self.status != OK:
            return None
        if self.prefs is None:
            return win_probs_of_scores(self.scores)
        n = len(self.prefs)
        out = []
        for i in range(n):
            known = [p for j in range(n) if j != i and (p := self.preference(i, j)) is not None]
            out.append(sum(known) / len(known) if known else 0.5)
        return out


def win_probs_of_scores(scores: list[float]) -> list[float]:
    """Each candidate's share of wins against the other candidates (ties count one half)."""
    n = len(scores)
    if n < 2:
        raise ValueError("win probabilities need at least two candidates")
    return [
        sum(1.0 if s > o else 0.5 if s == o else 0.0 for j, o in enumerate(scores) if j != i) / (n - 1)
        for i, s in enumerate(scores)
    ]


def preference(score_a: float, score_b: float) -> float:
    """P(a > b) implied by two listwise scores: 1, 0.5 on a tie, or 0."""
    return 1.0 if score_a > score_b else 0.5 if score_a == score_b else 0.0


def worst(statuses) -> str:
    return max(statuses, key=_SEVERITY.__getitem__, default=OK)


def add_costs(costs) -> dict:
    """Sum of cost dicts (missing keys count zero)."""
    total = dict.fromkeys(COST_KEYS, 0)
    for c in costs:
        for k in COST_KEYS:
            total[k] += c.get(k, 0) or 0
    return total


def all_pairs(n: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


class Oracle:
    """Base class. `judge` answers one prompt; `judge_many` many (API oracles run them concurrently).

    `pairs` lists the (i, j) comparisons the caller needs (None: all); a listwise oracle scores
    every candidate in one call whatever is asked.
    """

    is_listwise: bool = True

    @property
    def name(self) -> str:
        """The judge's name in annotations and tables (the class name)."""
        return type(self).__name__

    @property
    def is_paid(self) -> bool:
        """Its answers cost money (an API judge; the rules judge with `bill_as`): what a router saves."""
        return getattr(self, "api", None) is not None

    def price(self, prompt: Prompt, candidates: list[str]) -> float | None:
        """What judging `candidates` would cost, without asking (None: not known before asking, e.g. an API judge
        whose answer length decides its price)."""
        return None if self.is_paid else 0.0

    def check(self) -> None:
        """Cheap checks before any compute (a missing API key, a bad option): raise ValueError."""

    def judge(self, prompt: Prompt, candidates: list[str], pairs: list[tuple[int, int]] | None = None) -> Judgement:
        raise NotImplementedError

    def judge_many(self, items: list[tuple[Prompt, list[str]]], pairs: list[tuple[int, int]] | None = None,
                   desc: str = "judging") -> list[Judgement]:
        return [self.judge(p, c, pairs) for p, c in tqdm(items, desc=desc, unit="prompt", leave=False)]


class PairwiseOracle(Oracle):
    """An oracle that answers P(a > b) for one pair at a time; `compare_many` may batch them."""

    is_listwise = False

    def compare_many(self, comparisons: list[tuple[Prompt, str, str]], desc: str) -> list[Judgement]:
        """One Judgement per (prompt, a, b), with prefs [[None, p], [1 - p, None]] when ok."""
        raise NotImplementedError

    def judge(self, prompt, candidates, pairs=None) -> Judgement:
        return self.judge_many([(prompt, candidates)], pairs)[0]

    def judge_many(self, items, pairs=None, desc="judging") -> list[Judgement]:
        asked = [pairs if pairs is not None else all_pairs(len(c)) for _, c in items]
        flat = [(p, c[i], c[j]) for (p, c), ps in zip(items, asked, strict=True) for i, j in ps]
        answers = iter(self.compare_many(flat, desc))
        out = []
        for (_, candidates), ps in zip(items, asked, strict=True):
            n = len(candidates)
            prefs: list[list[float | None]] = [[None] * n for _ in range(n)]
            parts = []
            for i, j in ps:
                a = next(answers)
                parts.append(a)
                if a.status == OK:
                    prefs[i][j], prefs[j][i] = a.prefs[0][1], 1.0 - a.prefs[0][1]
            status = worst(a.status for a in parts)
            out.append(Judgement(status=status, prefs=prefs if status == OK else None,
                                 raw="\n".join(a.raw for a in parts if a.raw) or None,
                                 cost=add_costs(a.cost for a in parts),
                                 detail={"pairs": [list(p) for p in ps]}))
        return out


def both_orders(comparisons: list[tuple[Prompt, str, str]]) -> list[tuple[str, str, str]]:
    """(prompt, a, b) then (prompt, b, a) for each comparison, the prompt as a judge reads it: a judge's
    position bias cancels when the two answers are averaged by `order_averaged`."""
    return [q for prompt, a, b in comparisons for q in ((prompt.as_text(), a, b), (prompt.as_text(), b, a))]


def order_averaged(p_a_first: float, p_b_first: float) -> float:
    """P(a > b) from P(first wins) asked with a first and with b first."""
    return (p_a_first + 1.0 - p_b_first) / 2


def pair_judgement(p: float | None, status: str = OK, raw: str | None = None, cost: dict | None = None,
                   detail: dict | None = None) -> Judgement:
    """The answer of one comparison of (a, b): P(a > b) = p."""
    return Judgement(status=status, prefs=[[None, p], [None if p is None else 1.0 - p, None]] if status == OK else None,
                     raw=raw, cost=cost or {}, detail=detail or {})
