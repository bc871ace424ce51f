"""Stage 3: the iteration's preference pairs by the variant's pair rule, plus replay of earlier
iterations' pairs (Algorithm 2, step 4)."""

from __future__ import annotations

import random

from dno.oracles.base import OK
from dno.pairs import Candidate, PairRule, count_types, replay
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, PairRow, read_rows, write_rows
from dno.variant import Variant


def candidates(row: Judged) -> list[Candidate]:
    """A judged prompt's candidates with their score (listwise: the rubric's; pairwise: r_t itself, so that
    pairs follow P(y+ > y-)) and r_t, the teacher's marked."""
    scores = row.judgement.scores if row.judgement.prefs is None else row.win_probs
    return [Candidate(text, score, win_prob, is_teacher=row.is_teacher(i)) for i, (text, score, win_prob)
            in enumerate(zip(row.candidates, scores, row.win_probs, strict=True))]


def new_pairs(judged: list[Judged], rule: PairRule, cap: int | None, iteration: int, seed: int) -> list[PairRow]:
    """The pairs `rule` makes of each prompt whose judgement is ok (an invalid or failed judgement never
    becomes a label), at most `cap` per prompt (`schedule.max_pairs_per_prompt`; None: all)."""
    rng, out = random.Random(seed), []
    for row in judged:
        if row.judgement.status != OK:
            continue
        for pos, neg, kind in rule.limit(rule.pairs(candidates(row), row.judgement), cap, rng):
            out.append(PairRow(row.prompt, pos.text, neg.text, pos.win_prob, neg.win_prob, kind, iteration,
                               chosen_score=pos.score, rejected_score=neg.score))
    return out


def make_pairs(run: RunDir, t: int, variant: Variant, cap: int | None, seed: int) -> dict:
    """Iteration t's pairs file: its new pairs, then a share of iterations t-1, t-2, ...'s own new pairs
    (`variant.replay`) without their reference log-probs (pi_t's are computed next)."""
    new = new_pairs(read_rows(run.iteration(t).judgements, Judged), variant.pairs, cap, t, seed)
    older = [[p for p in read_rows(run.iteration(t - 1 - k).pairs, PairRow) if p.source_iteration == t - 1 - k]
             for k in range(min(t - 1, len(variant.replay)))]
    replayed = [p.with_reference(None, None) for p in replay(older, list(variant.replay), seed)]
    write_rows(run.iteration(t).pairs, new + replayed)
    counts = count_types(new)
    return {**{f"pairs/{kind}": c for kind, c in counts.items()},
            "pairs/new": len(new), "pairs/replayed": len(replayed), "pairs/total": len(new) + len(replayed)}
