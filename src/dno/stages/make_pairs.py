"""Stage 3: preference pairs of the iteration, plus replay of earlier iterations' pairs
(Algorithm 2, step 4)."""

from __future__ import annotations

import random
from pathlib import Path

from dno.oracles.base import OK, Judgement
from dno.pairs import (
    Candidate,
    PairRules,
    build_pairs,
    count_types,
    limit_pairs,
    preference_pairs,
    replay,
    soft_pairs,
)
from dno.records import read_jsonl, write_jsonl


def make_pairs(judgements: Path, out: Path, *, rules: PairRules, iteration: int, earlier: list[Path],
               replay_fractions: list[float], seed: int, soft: bool = False) -> dict:
    """`earlier[k]` is the pairs file of iteration t-1-k; only its own new pairs are replayed.

    `soft` (a loss with soft targets, Eq. 8): every pair of candidates, no margin rule.
    """
    new, rng = [], random.Random(seed)
    for row in read_jsonl(judgements):
        if row["judgement"]["status"] != OK:
            continue  # an invalid or failed judgement never becomes a label
        n, j = len(row["responses"]), Judgement.from_dict(row["judgement"])
        # listwise: the rubric score; pairwise: the expected win-rate (pairs then follow P(y+ > y-))
        scores = j.scores if j.prefs is None else row["win_rates"]
        candidates = [Candidate(text, score, wr, is_gold=i >= n) for i, (text, score, wr)
                      in enumerate(zip(row["candidates"], scores, row["win_rates"], strict=True))]
        if soft:
            chosen = soft_pairs(candidates, rules.max_per_prompt, rng)
        else:
            built = build_pairs(candidates, rules) if j.prefs is None else preference_pairs(candidates, j, rules)
            chosen = limit_pairs(built, rules.max_per_prompt, rng)
        for pos, neg, kind in chosen:
            new.append({
                "prompt_id": row["id"], "instruction": row["instruction"], "chosen": pos.text,
                "rejected": neg.text, "chosen_score": pos.score, "rejected_score": neg.score,
                "chosen_win_rate": pos.win_rate, "rejected_win_rate": neg.win_rate,
                "type": kind, "source_iteration": iteration,
            })
    older = [[p for p in read_jsonl(path) if p["source_iteration"] == iteration - 1 - k]
             for k, path in enumerate(earlier)]
    replayed = [{k: v for k, v in p.items() if not k.startswith("ref_")}
                for p in replay(older, list(replay_fractions), seed)]
    write_jsonl(out, new + replayed)
    counts = count_types(new)
    return {**{f"pairs/{t}": c for t, c in counts.items()},
            "pairs/new": len(new), "pairs/replayed": len(replayed), "pairs/total": len(new) + len(replayed)}
