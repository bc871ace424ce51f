"""Stage 2: the oracle judges the K samples (and the teacher answer, when there is one) of each
prompt; each candidate gets r_t, its expected probability of beating the others (Algorithm 2, step 3)."""

from __future__ import annotations

import statistics
from pathlib import Path

from dno.oracles.api import OracleError
from dno.oracles.base import FAILED, INVALID, OK, Judgement, add_costs
from dno.records import JUDGEMENTS_VERSION, read_samples, write_jsonl


def judge_samples(oracle, samples: Path, out: Path, max_failed_frac: float = 0.5) -> dict:
    """Raises OracleError when more than `max_failed_frac` of the prompts got no answer (a judge
    that is down): nothing is written, the answers that came are cached, a re-run goes on."""
    rows = read_samples(samples)
    items = [(row, list(row["responses"]) + ([row["teacher"]] if row.get("teacher") else [])) for row in rows]
    judgements = oracle.judge_many(items, desc="judging")
    failed = sum(j.status == FAILED for j in judgements) / max(len(judgements), 1)
    if failed > max_failed_frac:
        errors = {j.detail.get("error", "?")[:200] for j in judgements if j.status == FAILED}
        raise OracleError(f"{failed:.0%} of the judgements failed (max_failed_frac={max_failed_frac}); "
                          f"is the judge up? errors: {sorted(errors)[:3]}")
    judged = [{"version": JUDGEMENTS_VERSION, **row, "candidates": candidates, "judgement": j.to_dict(),
               "win_probs": j.win_probs()}
              for (row, candidates), j in zip(items, judgements, strict=True)]
    write_jsonl(out, judged)
    return {**_statistics(judged), **oracle_metrics(judgements)}


def oracle_metrics(judgements: list, prefix: str = "oracle/") -> dict:
    """Share of invalid and failed answers (their prompts are excluded) and what the judging cost."""
    n = max(len(judgements), 1)
    cost = add_costs(j.cost for j in judgements)
    return {f"{prefix}invalid_frac": sum(j.status == INVALID for j in judgements) / n,
            f"{prefix}failed_frac": sum(j.status == FAILED for j in judgements) / n,
            **{f"{prefix}{k}": v for k, v in cost.items()}}


def _statistics(judged: list[dict]) -> dict:
    """Table 2 of arXiv 2404.03715: student score (listwise oracles and reward models), student
    win-rate (every oracle); with teacher answers, teacher score, how often the best of the K students
    beats the teacher, and how many students beat it on average (a win: P(student > teacher) > 0.5)."""
    ok = [(r, len(r["responses"]), Judgement.from_dict(r["judgement"])) for r in judged
          if r["judgement"]["status"] == OK]
    if not ok:
        return {}
    stats = {"data/student_win_rate_mean": statistics.fmean(w for r, n, _ in ok for w in r["win_probs"][:n])}
    scored = [(r, n, j) for r, n, j in ok if j.scores is not None]
    if scored:
        stats["data/student_score_mean"] = statistics.fmean(s for _, n, j in scored for s in j.scores[:n])
        if any(r.get("teacher") for r, _, _ in scored):
            stats["data/teacher_score_mean"] = statistics.fmean(j.scores[n] for r, n, j in scored if r.get("teacher"))
    wins = [[(p := j.preference(i, n)) is not None and p > 0.5 for i in range(n)] for r, n, j in ok if r.get("teacher")]
    if wins:
        stats["data/best_of_n_win_rate"] = 100 * statistics.fmean(any(w) for w in wins)
        stats["data/avg_student_wins"] = statistics.fmean(sum(w) for w in wins)
    return stats
