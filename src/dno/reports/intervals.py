"""A row's final benchmarks pooled over its seeds, each with a 95% interval (dno.reports.stats.seed_interval:
a bootstrap over seeds and, within each, over the benchmark's units), for Table 1, comparison.md and the
final-benchmarks bar chart.

Units: AlpacaEval-style, a test prompt's outcome (win 1, tie 0.5, loss 0); MT-Bench, a question's turn's rating
(1-10); Arena-Hard, a prompt's outcomes in its two position-swapped games (the headline category's, pooled as
upstream pools them). A row none of whose seeds ran a benchmark has no interval for it (None).
"""

from __future__ import annotations

import math

import numpy as np

from dno.reports.run_records import RunRecord
from dno.reports.stats import outcomes, paired_difference, seed_interval, win_rate

BENCHMARKS = {  # key: (title, unit)
    "alpaca_eval": ("AlpacaEval-style win-rate (%)", "test prompts"),
    "mt_bench": ("MT-Bench average (1-10)", "questions' turns"),
    "arena_hard": ("Arena-Hard-Auto score (%)", "prompts"),
}


def units(run: RunRecord, benchmark: str) -> dict[str, float | list[float]] | None:
    """A run's units of one benchmark (see the module's docstring), None when it did not run it."""
    if benchmark == "alpaca_eval":
        return outcomes(run.annotations) if run.annotations else None
    if benchmark == "mt_bench":
        return run.mt_bench_ratings or None
    return run.arena_hard_outcomes or None


def _mean(values) -> float:
    return float(np.mean(values))


def _flat_win_rate(values) -> float:
    return win_rate(np.concatenate([np.atleast_1d(v) for v in values]))


STATISTIC = {"alpaca_eval": win_rate, "mt_bench": _mean, "arena_hard": _flat_win_rate}


def interval(row: list[RunRecord], benchmark: str, *, samples: int = 1000, seed: int = 0) -> dict | None:
    """{mean, lo, hi, seeds} of one benchmark over the row's seeds that ran it; None when none did."""
    per_seed = [u for u in (units(r, benchmark) for r in row) if u]
    if not per_seed:
        return None
    values = [np.array(list(u.values()), dtype=float) if benchmark != "arena_hard" else list(u.values())
              for u in per_seed]
    return seed_interval(values, STATISTIC[benchmark], samples=samples, seed=seed)


def mt_bench_difference(row: list[RunRecord], reference: list[RunRecord], *, samples: int, seed: int) -> dict | None:
    """MT-Bench's average of `row` minus `reference`'s on their common questions' turns (paired bootstrap, in
    rating points); None when either did not run it."""
    a, b = ([u for u in (units(r, "mt_bench") for r in rows) if u] for rows in (row, reference))
    if not a or not b:
        return None
    return paired_difference(a, b, samples=samples, seed=seed, scale=1.0)


NOT_EVALUATED = "not evaluated"  # a table cell of a benchmark a run did not run


def fmt(x, digits: int = 1) -> str:
    """A table cell: `-` for a missing or NaN value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def with_interval(i: dict, digits: int) -> str:
    """An interval (mean, lo, hi) as `mean [lo, hi]`."""
    return f"{i['mean']:.{digits}f} [{i['lo']:.{digits}f}, {i['hi']:.{digits}f}]"
