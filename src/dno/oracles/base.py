"""The oracle interface: a judgement per prompt, with its status, raw text and cost.

A listwise oracle scores all candidates of a prompt in one call (the paper's GPT-4-Turbo judge).
From scores the loop derives each candidate's expected win-rate against the others, r_t(x, y) of
arXiv 2404.03715. A judgement that is not `ok` never becomes a label: its prompt is dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OK, INVALID, FAILED = "ok", "invalid", "failed"


@dataclass
class Judgement:
    scores: list[float] | None  # one per candidate when status is ok
    status: str = OK
    raw: str | None = None  # the judge's own text, kept for inspection
    cost: dict = field(default_factory=dict)  # e.g. {"prompt_tokens": .., "completion_tokens": .., "usd": ..}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Judgement:
        return cls(**{k: d[k] for k in ("scores", "status", "raw", "cost")})


def expected_win_rates(scores: list[float]) -> list[float]:
    """Each candidate's share of wins against the other candidates (ties count one half)."""
    n = len(scores)
    if n < 2:
        raise ValueError("expected win-rates need at least two candidates")
    return [
        sum(1.0 if s > o else 0.5 if s == o else 0.0 for j, o in enumerate(scores) if j != i) / (n - 1)
        for i, s in enumerate(scores)
    ]


def preference(score_a: float, score_b: float) -> float:
    """P(a > b) implied by two listwise scores: 1, 0.5 on a tie, or 0."""
    return 1.0 if score_a > score_b else 0.5 if score_a == score_b else 0.0


class Oracle:
    """Base class. Subclasses set `is_listwise` and implement `judge`."""

    is_listwise: bool = True

    def judge(self, prompt: dict, candidates: list[str]) -> Judgement:
        raise NotImplementedError
