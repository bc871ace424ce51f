"""Stage 2: the oracle judges the K samples (and the gold answer, when there is one) of each
prompt in one call; each candidate gets its expected win-rate against the others (Algorithm 2, step 3)."""

from __future__ import annotations

import statistics
from pathlib import Path

from tqdm.auto import tqdm

from dno.oracles.base import FAILED, INVALID, OK, expected_win_rates
from dno.records import read_jsonl, write_jsonl


def judge_samples(oracle, samples: Path, out: Path) -> dict:
    rows = read_jsonl(samples)
    judged, status_counts = [], {OK: 0, INVALID: 0, FAILED: 0}
    for row in tqdm(rows, desc="judging", unit="prompt", leave=False):
        candidates = list(row["responses"]) + ([row["gold"]] if row.get("gold") else [])
        judgement = oracle.judge(row, candidates)
        status_counts[judgement.status] += 1
        win_rates = expected_win_rates(judgement.scores) if judgement.status == OK else None
        judged.append({**row, "candidates": candidates, "judgement": judgement.to_dict(), "win_rates": win_rates})
    write_jsonl(out, judged)
    return {**_statistics(judged), **_status_fractions(status_counts, len(rows))}


def _status_fractions(counts: dict, n: int) -> dict:
    return {"oracle/invalid_frac": counts[INVALID] / max(n, 1), "oracle/failed_frac": counts[FAILED] / max(n, 1)}


def _statistics(judged: list[dict]) -> dict:
    """Table 2 of arXiv 2404.03715: student score; with gold answers, teacher score, how often the
    best of the K students beats the teacher, and how many students beat it on average."""
    ok = [r for r in judged if r["judgement"]["status"] == OK]
    if not ok:
        return {}
    k = [len(r["responses"]) for r in ok]
    student = [s for r, n in zip(ok, k, strict=True) for s in r["judgement"]["scores"][:n]]
    stats = {"data/student_score_mean": statistics.fmean(student)}
    gold = [(r["judgement"]["scores"][:n], r["judgement"]["scores"][n]) for r, n in zip(ok, k, strict=True)
            if r.get("gold")]
    if gold:
        stats["data/teacher_score_mean"] = statistics.fmean(t for _, t in gold)
        stats["data/best_of_n_win_rate"] = 100 * statistics.fmean(max(s) > t for s, t in gold)
        stats["data/avg_student_wins"] = statistics.fmean(sum(x > t for x in s) for s, t in gold)
    return stats
