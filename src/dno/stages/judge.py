"""Stage 2: the oracle judges the K samples (and the teacher answer, when there is one) of each
prompt; each candidate gets r_t, its expected probability of beating the others (Algorithm 2, step 3)."""

from __future__ import annotations

import statistics
from pathlib import Path

from dno.oracles.api import OracleError
from dno.oracles.base import FAILED, INVALID, OK, Judgement, add_costs
from dno.records import JUDGEMENTS_VERSION, read_samples, write_jsonl


def judge_samples(oracle, samples: Path, out: Path, max_failed_frac: float = 0.5,
                  max_invalid_frac: float = 0.5) -> dict:
    """Raises OracleError when more than `max_failed_frac` of the prompts got no answer (a judge that is
    down), or more than `max_invalid_frac` an answer not in the asked form (a judge that cannot judge):
    nothing is written, the answers that came are cached, a re-run goes on."""
    rows = read_samples(samples)
    items = [(row, list(row["responses"]) + ([row["teacher"]] if row.get("teacher") else [])) for row in rows]
    judgements = oracle.judge_many(items, desc="judging")
    n = max(len(judgements), 1)
    failed = sum(j.status == FAILED for j in judgements) / n
    if failed > max_failed_frac:
        errors = {j.detail.get("error", "?")[:200] for j in judgements if j.status == FAILED}
        raise OracleError(f"{failed:.0%} of the judgements failed (max_failed_frac={max_failed_frac}); "
                          f"is the judge up? errors: {sorted(errors)[:3]}")
    invalid = [j for j in judgements if j.status == INVALID]
    if len(invalid) / n > max_invalid_frac:
        raise OracleError(invalid_message(invalid, len(judgements), max_invalid_frac))
    judged = [{"version": JUDGEMENTS_VERSION, **row, "candidates": candidates, "judgement": j.to_dict(),
               "win_probs": j.win_probs()}
              for (row, candidates), j in zip(items, judgements, strict=True)]
    write_jsonl(out, judged)
    return {**_statistics(judged), **oracle_metrics(judgements)}


def invalid_message(invalid: list[Judgement], n: int, max_invalid_frac: float, quoted: int = 3) -> str:
    """Why the run stops on a judge whose answers are mostly invalid: how many, three of them (different ones
    first), what to try."""
    different = list({(j.raw or "")[:300]: j for j in invalid}.values())
    shown = (different + [j for j in invalid if all(j is not d for d in different)])[:quoted]
    answers = "\n".join(f"  {k}. {(j.raw or '')[:300]!r} ({j.detail.get('error', '?')})"
                         for k, j in enumerate(shown, start=1))
    return (f"{len(invalid)} of {n} judgements ({len(invalid) / n:.0%}) were invalid, over max_invalid_frac="
            f"{max_invalid_frac}: the judge did not answer in the asked form. Its answers:\n{answers}\n"
            "Try a stronger judge (oracle.model), a structured output the server enforces "
            "(oracle.structured_output=json_schema, or json_object_schema for llama.cpp), or a larger "
            "oracle.max_tokens if the answers are cut short. The answers paid for are cached.")


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
