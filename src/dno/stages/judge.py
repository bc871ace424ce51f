"""Stage 2: the oracle judges the K samples (and the teacher answer, when there is one) of each
prompt; each candidate gets r_t, its expected probability of beating the others (Algorithm 2, step 3)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from dno.oracles.api import OracleError
from dno.oracles.base import FAILED, INVALID, OK, Judgement, add_costs
from dno.stages.records import Judged, Samples, read_rows, write_rows


@dataclass(frozen=True)
class JudgeLimits:
    """When a judge stage stops (OracleError, exit 3): more than `max_failed_frac` of the judgements got no answer
    (a judge that is down), or more than `max_invalid_frac` an answer not in the asked form (one that cannot
    judge)."""

    max_failed_frac: float = 0.5
    max_invalid_frac: float = 0.5


def judge_samples(oracle, samples: Path, out: Path, limits: JudgeLimits = JudgeLimits()) -> dict:
    """Every prompt's candidates judged by `oracle`; stops past `limits` with nothing written (the answers that
    came are cached, a re-run goes on)."""
    rows = read_rows(samples, Samples)
    judgements = oracle.judge_many([(s.prompt, Judged.candidates_of(s)[0]) for s in rows], desc="judging")
    check_judgements(judgements, limits)
    judged = [Judged.of(s, j) for s, j in zip(rows, judgements, strict=True)]
    write_rows(out, judged)
    return judge_metrics(judged, judgements)


def check_judgements(judgements: list[Judgement], limits: JudgeLimits) -> None:
    """Raises OracleError when the judge's answers are mostly failed or invalid (`limits`)."""
    n = max(len(judgements), 1)
    failed = sum(j.status == FAILED for j in judgements) / n
    if failed > limits.max_failed_frac:
        errors = {j.detail.get("error", "?")[:200] for j in judgements if j.status == FAILED}
        raise OracleError(f"{failed:.0%} of the judgements failed (max_failed_frac={limits.max_failed_frac}); "
                          f"is the judge up? errors: {sorted(errors)[:3]}")
    invalid = [j for j in judgements if j.status == INVALID]
    if len(invalid) / n > limits.max_invalid_frac:
        raise OracleError(invalid_message(invalid, len(judgements), limits.max_invalid_frac))


def judge_metrics(judged: list[Judged], paid: list[Judgement]) -> dict:
    """Table 2's statistics of every judged prompt, and the paid judge's invalid and failed shares and cost."""
    return {**_statistics(judged), **oracle_metrics(paid)}


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


def _statistics(judged: list[Judged]) -> dict:
    """Table 2 of arXiv 2404.03715: student score (listwise oracles and reward models), student
    win-rate (every oracle); with teacher answers, teacher score, how often the best of the K students
    beats the teacher, and how many students beat it on average (a win: P(student > teacher) > 0.5)."""
    ok = [r for r in judged if r.judgement.status == OK]
    if not ok:
        return {}
    students = [[i for i in range(len(r.candidates)) if not r.is_teacher(i)] for r in ok]
    stats = {"data/student_win_rate_mean": statistics.fmean(r.win_probs[i] for r, s in zip(ok, students, strict=True)
                                                          for i in s)}
    scored = [(r, s) for r, s in zip(ok, students, strict=True) if r.judgement.scores is not None]
    if scored:
        stats["data/student_score_mean"] = statistics.fmean(r.judgement.scores[i] for r, s in scored for i in s)
        taught = [r for r, _ in scored if r.teacher_candidate is not None]
        if taught:
            stats["data/teacher_score_mean"] = statistics.fmean(r.judgement.scores[r.teacher_candidate] for r in taught)
    wins = [[(p := r.judgement.preference(i, r.teacher_candidate)) is not None and p > 0.5 for i in s]
            for r, s in zip(ok, students, strict=True) if r.teacher_candidate is not None]
    if wins:
        stats["data/best_of_n_win_rate"] = 100 * statistics.fmean(any(w) for w in wins)
        stats["data/avg_student_wins"] = statistics.fmean(sum(w) for w in wins)
    return stats
