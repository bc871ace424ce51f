"""Stage 3: preference pairs of the iteration by the variant's pair rule, plus replay of earlier
iterations' pairs (Algorithm 2, step 4)."""

from __future__ import annotations

import random
from pathlib import Path

from dno.data import prompt_fields
from dno.oracles.base import OK, Judgement
from dno.pairs import Candidate, PairRule, count_types, replay
from dno.records import PAIRS_VERSION, read_judgements, read_pairs, write_jsonl


def make_pairs(judgements: Path, out: Path, *, rule: PairRule, cap: int | None, iteration: int, earlier: list[Path],
               replay_fractions: list[float], seed: int) -> dict:
    """`earlier[k]` is the pairs file of iteration t-1-k; only its own new pairs are replayed.
    `cap`: at most this many pairs per prompt (`schedule.max_pairs_per_prompt`, None: all)."""
    new, rng = [], random.Random(seed)
    for row in read_judgements(judgements):
        if row["judgement"]["status"] != OK:
            continue  # an invalid or failed judgement never becomes a label
        n, j = len(row["responses"]), Judgement.from_dict(row["judgement"])
        # listwise: the rubric score; pairwise: r_t itself (pairs then follow P(y+ > y-))
        scores = j.scores if j.prefs is None else row["win_probs"]
        candidates = [Candidate(text, score, win_prob, is_teacher=i >= n) for i, (text, score, win_prob)
                      in enumerate(zip(row["candidates"], scores, row["win_probs"], strict=True))]
        for pos, neg, kind in rule.limit(rule.pairs(candidates, j), cap, rng):
            new.append({
                "version": PAIRS_VERSION, "prompt_id": row["id"], **prompt_fields(row),
                "chosen": pos.text, "rejected": neg.text, "chosen_score": pos.score, "rejected_score": neg.score,
                "chosen_win_prob": pos.win_prob, "rejected_win_prob": neg.win_prob,
                "type": kind, "source_iteration": iteration,
            })
    older = [[p for p in read_pairs(path) if p["source_iteration"] == iteration - 1 - k]
             for k, path in enumerate(earlier)]
    replayed = [{k: v for k, v in p.items() if not k.startswith("ref_")}
                for p in replay(older, list(replay_fractions), seed)]
    write_jsonl(out, new + replayed)
    counts = count_types(new)
    return {**{f"pairs/{t}": c for t, c in counts.items()},
            "pairs/new": len(new), "pairs/replayed": len(replayed), "pairs/total": len(new) + len(replayed)}
