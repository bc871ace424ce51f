"""Pair rules: which (chosen, rejected) pairs one prompt's judged candidates give (conf/pair_rule/).

A rule is an object chosen by a loss variant (conf/loss/*.yaml picks one from conf/pair_rule/):
- `LargeMarginRule` (the paper's, `pair_rule=large_margin`; `PaperRule` is its old name): Algorithm 2,
  step 4 of arXiv 2404.03715. Eq. 13 approximates Eq. 8 only where
  sigma(r_t(y+) - r_t(y-)) is close to 1, so pairs keep large margins: a positive scores at least
  `min_positive_score`; it is paired with every candidate that scores at least `teacher_margin`
  lower when the positive is the teacher's answer, at least `student_margin` lower when it is a
  student sample. A student sample that loops (repeated word n-grams above `max_repeat_frac`) is
  never a positive and is a negative for every positive. A pairwise oracle (no scores) gives
  P(y+ > y-) directly: a pair is kept when it is at least `min_preference`, the same large-margin
  idea. `keep_types` keeps only some pair types (DNO-Restrictive: teacher over student).
- `SpinRule`: SPIN (Chen et al.): the teacher's answer beats every student sample.
- `AllPairs`: every pair of distinct candidates, higher score first: Eq. 8 regresses onto
  sigma(r_t(y1) - r_t(y2)) and needs no margin (Section 3 of the paper).
- `BestVsWorst` (not in the paper; the README's worked example of a new variant): of the large-margin
  pairs of a prompt, only the one of largest score margin.

`schedule.max_pairs_per_prompt` (not in the paper, a compute knob) caps the pairs of a prompt: a
rule's `limit` keeps the largest margins (`AllPairs`: a random subset). Replay adds a random
share of earlier iterations' own pairs (30% of t-1, 15% of t-2, ...).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from dno.data.constraints import repeated_ngram_fraction
from dno.oracles.base import Judgement

TEACHER_OVER_STUDENT = "teacher_over_student"
STUDENT_OVER_TEACHER = "student_over_teacher"
STUDENT_OVER_STUDENT = "student_over_student"
PAIR_TYPES = (TEACHER_OVER_STUDENT, STUDENT_OVER_TEACHER, STUDENT_OVER_STUDENT)


@dataclass(frozen=True)
class Candidate:
    """One judged answer to a prompt: a student sample of pi_t or the teacher's answer.

    `score`: the listwise oracle's score (a pairwise oracle's: the win probability);
    `win_prob`: r_t(x, y), its expected probability of beating the other candidates, in [0, 1]."""

    text: str
    score: float
    win_prob: float
    is_teacher: bool = False


class Pair(NamedTuple):
    chosen: Candidate
    rejected: Candidate
    type: str


def pair_type(chosen: Candidate, rejected: Candidate) -> str:
    if chosen.is_teacher:
        return TEACHER_OVER_STUDENT
    return STUDENT_OVER_TEACHER if rejected.is_teacher else STUDENT_OVER_STUDENT


def limit_pairs(pairs: list[Pair], cap: int | None, rng: random.Random) -> list[Pair]:
    """At most `cap` pairs of one prompt, the largest score margins first (ties in random order)."""
    if cap is None or len(pairs) <= cap:
        return pairs
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda p: p.chosen.score - p.rejected.score, reverse=True)[:cap]


class PairRule:
    """Base class: `pairs` for one prompt's candidates and judgement, `limit` under a cap.
    `needs_teacher`: the rule makes no pair without the teacher's answer."""

    needs_teacher = False

    def pairs(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        raise NotImplementedError

    def limit(self, pairs: list[Pair], cap: int | None, rng: random.Random) -> list[Pair]:
        return limit_pairs(pairs, cap, rng)


@dataclass(frozen=True)
class LargeMarginRule(PairRule):
    """Algorithm 2, step 4: pairs whose judged margin is large, so that Eq. 13 stands in for Eq. 8
    (conf/pair_rule/large_margin.yaml).

    Attributes:
        min_positive_score: a positive y+ scores at least this on the judge's scale (the paper: 5 of 6).
        teacher_margin: the teacher's answer as y+: a negative y- scores at least this much lower (2).
        student_margin: a student sample as y+: y- scores at least this much lower (1).
        min_preference: a pairwise oracle (no scores): keep (y+, y-) when P(y+ > y-) is at least this.
        max_repeat_frac: a student sample whose share of repeated word n-grams is above this loops: it is
            never y+ and is y- of every positive.
        ngram: n of that check.
        keep_types: keep only these pair types (None: all); DNO-Restrictive keeps teacher_over_student.
    """

    min_positive_score: float = 5
    teacher_margin: float = 2
    student_margin: float = 1
    min_preference: float = 0.75
    max_repeat_frac: float = 0.3
    ngram: int = 3
    keep_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.keep_types is not None:
            object.__setattr__(self, "keep_types", tuple(self.keep_types))
            unknown = set(self.keep_types) - set(PAIR_TYPES)
            if unknown:
                raise ValueError(f"loss.pairs.keep_types has unknown types {sorted(unknown)}; known: {PAIR_TYPES}")
        for key in ("teacher_margin", "student_margin"):
            if getattr(self, key) < 0:
                raise ValueError(f"loss.pairs.{key} must be at least 0, got {getattr(self, key)!r}")
        if not 0.5 <= self.min_preference <= 1:
            raise ValueError(f"loss.pairs.min_preference must be in [0.5, 1], got {self.min_preference!r}")

    @property
    def needs_teacher(self) -> bool:
        """Only when every kept pair type involves the teacher (DNO-Restrictive)."""
        return self.keep_types is not None and STUDENT_OVER_STUDENT not in self.keep_types

    def looping(self, candidates: list[Candidate]) -> list[bool]:
        return [not c.is_teacher and repeated_ngram_fraction(c.text, self.ngram) > self.max_repeat_frac
                for c in candidates]

    def pairs(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        found = self._by_preference(candidates, judgement) if judgement.prefs is not None \
            else self._by_score(candidates)
        return [p for p in found if self.keep_types is None or p.type in self.keep_types]

    def _by_score(self, candidates: list[Candidate]) -> list[Pair]:
        looping, pairs = self.looping(candidates), []
        for i, pos in enumerate(candidates):
            if looping[i] or pos.score < self.min_positive_score:
                continue
            margin = self.teacher_margin if pos.is_teacher else self.student_margin
            for j, neg in enumerate(candidates):
                if i != j and neg.text != pos.text and (looping[j] or neg.score <= pos.score - margin):
                    pairs.append(Pair(pos, neg, pair_type(pos, neg)))
        return pairs

    def _by_preference(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        looping, pairs = self.looping(candidates), []
        for i, pos in enumerate(candidates):
            for j, neg in enumerate(candidates):
                if i == j or neg.text == pos.text or looping[i]:
                    continue
                p = judgement.preference(i, j)
                if looping[j] or (p is not None and p >= self.min_preference):
                    pairs.append(Pair(pos, neg, pair_type(pos, neg)))
        return pairs


PaperRule = LargeMarginRule  # its name before it said what it keeps (run directories record it)


@dataclass(frozen=True)
class SpinRule(PairRule):
    """SPIN (Chen et al.): the teacher's answer over every student sample that differs from it."""

    needs_teacher = True

    def pairs(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        return [Pair(t, c, TEACHER_OVER_STUDENT) for t in candidates if t.is_teacher
                for c in candidates if not c.is_teacher and c.text != t.text]


@dataclass(frozen=True)
class AllPairs(PairRule):
    """Every pair of distinct candidates, the higher score first (Eq. 8's and SPPO's soft targets)."""

    def pairs(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        pairs = []
        for i, a in enumerate(candidates):
            for b in candidates[i + 1 :]:
                if a.text != b.text:
                    pos, neg = (a, b) if a.score >= b.score else (b, a)
                    pairs.append(Pair(pos, neg, pair_type(pos, neg)))
        return pairs

    def limit(self, pairs: list[Pair], cap: int | None, rng: random.Random) -> list[Pair]:
        """A random `cap` of them: the regression target does not depend on which pairs are drawn."""
        return pairs if cap is None or len(pairs) <= cap else rng.sample(pairs, cap)


@dataclass(frozen=True)
class BestVsWorst(LargeMarginRule):
    def pairs(self, candidates: list[Candidate], judgement: Judgement) -> list[Pair]:
        found = super().pairs(candidates, judgement)  # the paper's checks first
        return [max(found, key=lambda p: p.chosen.score - p.rejected.score)] if found else []


def replay(earlier: list[list], fractions: list[float], seed: int) -> list:
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


def count_types(pairs: list) -> dict[str, int]:
    """How many pairs of each type (`PairRow.type`)."""
    counts = Counter(p.type for p in pairs)
    return {t: counts.get(t, 0) for t in PAIR_TYPES}
