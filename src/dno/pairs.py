"""Preference pairs by the rules of Algorithm 2, step 4 (arXiv 2404.03715, Section 4).

Eq. 13 approximates Eq. 8 only where sigma(r(y+) - r(y-)) is close to 1, so pairs keep large
margins: a positive scores at least `min_positive_score`; it is paired with every candidate that
scores at least `teacher_margin` lower when the positive is the gold (teacher) answer, at least
`student_margin` lower when it is a student sample. A student sample that loops (repeated word
n-grams above `max_repeat_frac`) is never a positive and is a negative for every positive.
`max_per_prompt` optionally keeps only the largest-margin pairs of a prompt (not in the paper).
A pairwise oracle (no scores) gives P(y+ > y-) directly: a pair is kept when it is at least
`min_preference`, the same large-margin idea; the looping rule applies as well.
Replay adds a random fraction of earlier iterations' own pairs (30% of t-1, 15% of t-2, ...).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from dno.oracles.rules import repeated_ngram_fraction

TEACHER_OVER_STUDENT = "teacher_over_student"
STUDENT_OVER_TEACHER = "student_over_teacher"
STUDENT_OVER_STUDENT = "student_over_student"
PAIR_TYPES = (TEACHER_OVER_STUDENT, STUDENT_OVER_TEACHER, STUDENT_OVER_STUDENT)


@dataclass(frozen=True)
class PairRules:
    min_positive_score: float = 5
    teacher_margin: float = 2
    student_margin: float = 1
    max_repeat_frac: float = 0.3
    ngram: int = 3
    max_per_prompt: int | None = None  # None keeps every pair, as the paper
    min_preference: float = 0.75  # pairwise oracles: keep (y+, y-) when P(y+ > y-) is at least this
    rule: str = "paper"  # "paper" (Algorithm 2) or "spin" (gold over every student sample)
    keep_types: tuple[str, ...] | None = None  # e.g. (teacher_over_student,) for DNO-Restrictive

    def __post_init__(self) -> None:
        if self.rule not in ("paper", "spin"):
            raise ValueError(f"schedule.pairs.rule must be paper or spin, got {self.rule!r}")
        unknown = set(self.keep_types or ()) - set(PAIR_TYPES)
        if unknown:
            raise ValueError(f"schedule.pairs.keep_types has unknown types {sorted(unknown)}; known: {PAIR_TYPES}")


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float
    win_rate: float
    is_gold: bool = False


def pair_type(pos: Candidate, neg: Candidate) -> str:
    if pos.is_gold:
        return TEACHER_OVER_STUDENT
    return STUDENT_OVER_TEACHER if neg.is_gold else STUDENT_OVER_STUDENT


def build_pairs(candidates: list[Candidate], rules: PairRules) -> list[tuple[Candidate, Candidate, str]]:
    """All (positive, negative, type) pairs of one prompt's judged candidates, by `rules.rule`,
    keeping only `rules.keep_types` when given."""
    if rules.rule == "spin":  # SPIN (Chen et al.): the gold answer beats every student sample
        pairs = [(g, c, TEACHER_OVER_STUDENT) for g in candidates if g.is_gold for c in candidates
                 if not c.is_gold and c.text != g.text]
    else:
        pairs = _paper_pairs(candidates, rules)
    return [p for p in pairs if rules.keep_types is None or p[2] in rules.keep_types]


def _paper_pairs(candidates: list[Candidate], rules: PairRules) -> list[tuple[Candidate, Candidate, str]]:
    looping = [
        not c.is_gold and repeated_ngram_fraction(c.text, rules.ngram) > rules.max_repeat_frac
        for c in candidates
    ]
    pairs = []
    for i, pos in enumerate(candidates):
        if looping[i] or pos.score < rules.min_positive_score:
            continue
        margin = rules.teacher_margin if pos.is_gold else rules.student_margin
        for j, neg in enumerate(candidates):
            if i == j or neg.text == pos.text:
                continue
            if looping[j] or neg.score <= pos.score - margin:
                pairs.append((pos, neg, pair_type(pos, neg)))
    return pairs


def preference_pairs(candidates: list[Candidate], judgement, rules: PairRules) -> list[tuple]:
    """Pairs of a pairwise judgement: (i, j) when P(i > j) >= `min_preference`, or when j loops
    and i does not; by `rules.rule` and `rules.keep_types` as `build_pairs`."""
    looping = [not c.is_gold and repeated_ngram_fraction(c.text, rules.ngram) > rules.max_repeat_frac
               for c in candidates]
    pairs = []
    for i, pos in enumerate(candidates):
        for j, neg in enumerate(candidates):
            if i == j or neg.text == pos.text or looping[i] or (rules.rule == "spin" and not pos.is_gold):
                continue
            p = judgement.preference(i, j)
            if rules.rule == "spin" or looping[j] or (p is not None and p >= rules.min_preference):
                pairs.append((pos, neg, pair_type(pos, neg)))
    return [p for p in pairs if rules.keep_types is None or p[2] in rules.keep_types]


def soft_pairs(candidates: list[Candidate], cap: int | None, rng: random.Random) -> list[tuple]:
    """Every unordered pair of distinct candidates (or a random `cap` of them), higher score first.

    Eq. 8 is a regression onto sigma(r_1 - r_2), so its pairs need no margin: the sampling
    distribution changes only the sample efficiency, not the target (Section 3 of the paper).
    """
    pairs = []
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            if a.text != b.text:
                pos, neg = (a, b) if a.score >= b.score else (b, a)
                pairs.append((pos, neg, pair_type(pos, neg)))
    return pairs if cap is None or len(pairs) <= cap else rng.sample(pairs, cap)


def limit_pairs(pairs: list[tuple], cap: int | None, rng: random.Random) -> list[tuple]:
    """At most `cap` pairs of one prompt, the largest score margins first (ties in random order).

    Not in the paper, which keeps every pair; a compute knob for small budgets.
    """
    if cap is None or len(pairs) <= cap:
        return pairs
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda p: p[0].score - p[1].score, reverse=True)[:cap]


def replay(earlier: list[list[dict]], fractions: list[float], seed: int) -> list[dict]:
    """A random `fractions[k]` share of the pairs of iteration t-1-k (k = 0, 1, ...).

    `earlier[k]` holds the new (not replayed) pairs of iteration t-1-k. Replayed pairs keep
    their labels; their reference log-probs are recomputed with the current policy.
    """
    rng = random.Random(seed)
    chosen = []
    for frac, pairs in zip(fractions, earlier, strict=False):
        k = round(frac * len(pairs))
        chosen.extend(rng.sample(pairs, k))
    return chosen


def count_types(pairs: list[dict]) -> dict[str, int]:
    counts = Counter(p["type"] for p in pairs)
    return {t: counts.get(t, 0) for t in PAIR_TYPES}
