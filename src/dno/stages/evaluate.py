"""Stage 6: pi_{t+1} against pi_1 and pi_t on the validation prompts, judged by the oracle."""

from __future__ import annotations

import statistics
from pathlib import Path

from dno.data import Prompt
from dno.metrics import length_controlled, win_rate
from dno.runtime.layout import IterationDir
from dno.stages.records import Samples, Validation, read_rows, write_rows
from dno.stages.sample import sample_responses


def against(oracle, prompts: list[Prompt], a: list[str], *others: list[str]) -> list[list[float | None]]:
    """P(a > o) for each of `others`, per prompt, from ONE judgement of [a, *others] per prompt (a
    listwise oracle pays one call, not one per comparison; a pairwise one is asked only (a, o)).
    None where the judgement was not ok: excluded, never a label."""
    items = [(prompt, [x, *ys]) for prompt, x, *ys in zip(prompts, a, *others, strict=True)]
    judgements = oracle.judge_many(items, pairs=[(0, k) for k in range(1, len(others) + 1)], desc="evaluating")
    out = [[j.preference(0, k) for k in range(1, len(others) + 1)] for j in judgements]
    return [list(col) for col in zip(*out, strict=True)] if out else [[] for _ in others]


def head_to_head(oracle, prompts: list[Prompt], a: list[str], b: list[str]) -> list[float | None]:
    """P(a > b) per prompt, None where the judgement was not ok."""
    return against(oracle, prompts, a, b)[0]


def first_responses(path: Path) -> list[str]:
    """The first answer of each prompt of a samples file."""
    return [row.responses[0] for row in read_rows(path, Samples)]


def evaluate_policy(sampler, oracle, prompts: list[Prompt], out: IterationDir, baselines: tuple[Path, Path],
                    seed: int) -> dict:
    """pi_{t+1} (`sampler`) against pi_1 and pi_t, whose validation answers are the files `baselines`: writes
    `out`'s eval_samples and eval_judgements."""
    stats = sample_responses(sampler, prompts, out.eval_samples, k=1, seed=seed, desc="validation sampling")
    new, init, prev = first_responses(out.eval_samples), *(first_responses(b) for b in baselines)
    vs_init, vs_prev = against(oracle, prompts, new, init, prev)
    write_rows(out.eval_judgements, [Validation(p.id, a, b) for p, a, b in zip(prompts, vs_init, vs_prev,
                                                                                 strict=True)])
    return {**validation_win_rates(init, new, vs_init, vs_prev),
            "eval/avg_length": statistics.fmean(len(t) for t in new),
            "eval/avg_length_words": stats["data/student_len_words_mean"]}


def validation_win_rates(init: list[str], new: list[str], vs_init: list[float | None],
                         vs_prev: list[float | None]) -> dict:
    """Each win-rate with the number of valid judgements it rests on (`eval/n_judged` against pi_1,
    `eval/n_judged_vs_prev`); a win-rate over no valid judgement is left out, never 0, 50 or NaN."""
    n_init, n_prev = (sum(p is not None for p in prefs) for prefs in (vs_init, vs_prev))
    metrics = {"eval/n_judged": n_init, "eval/n_judged_vs_prev": n_prev, "eval/n_excluded": len(vs_init) - n_init}
    if n_init:
        metrics["eval/win_rate_vs_init"] = win_rate(vs_init)
    if n_init >= 2:
        metrics["eval/lc_win_rate_vs_init"] = validation_lc(init, new, vs_init)
    if n_prev:
        metrics["eval/win_rate_vs_prev"] = win_rate(vs_prev)
    return metrics


def validation_lc(init: list[str], new: list[str], vs_init: list[float | None]) -> float:
    """Length-controlled win-rate of pi_{t+1} against pi_1 on validation (alpaca_eval's minimal GLM),
    so that the length effect can be followed per iteration, not only at the end."""
    annotations = [{"instruction": str(i), "output_1": a, "output_2": b, "generator_1": "pi_1", "generator_2": "new",
                    "annotator": "oracle", "preference": None if p is None else 1.0 + p}
                   for i, (a, b, p) in enumerate(zip(init, new, vs_init, strict=True))]
    if sum(a["preference"] is not None for a in annotations) < 2:
        return float("nan")
    return length_controlled(annotations)["lc_win_rate"]
