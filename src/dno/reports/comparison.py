"""comparison.md (rows over seeds with 95% intervals and paired differences, dno.reports.stats) and the
evaluation-only noise of one checkpoint: the statistics part of dno-tables (dno.reports.tables)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dno.reports.intervals import NOT_EVALUATED, fmt, interval, mt_bench_difference, with_interval
from dno.reports.run_records import RunRecord, row_label, seed_rows
from dno.runtime.config import ConfigError
from dno.runtime.layout import RunDir


def comparison(runs: list[RunRecord], *, compare_to: str | None, samples: int, lc_samples: int, seed: int) -> str:
    """comparison.md: each row's seeds pooled (mean, 95% interval, number of seeds) and its paired win-rate
    difference with the reference row (see dno.reports.stats); MT-Bench's average the same way when runs ran it."""
    from dno.reports.stats import outcomes

    rows = seed_rows(runs)
    labels = [row_label(r) for r in rows]
    if compare_to is not None and compare_to not in labels:
        raise ConfigError(f"compare_to={compare_to!r} is not a row; the rows are: {', '.join(labels)}")
    ref = labels.index(compare_to) if compare_to else (labels.index("DNO") if "DNO" in labels else 0)
    lines = ["# Rows over seeds, with 95% intervals and paired differences", ""]
    if any(r.annotations for r in runs):
        judged = [[r for r in row if r.annotations] for row in rows]
        per_seed = [[outcomes(r.annotations) for r in done] for done in judged]
        lines += [f"Each row pools the runs that differ only in `seed`. Intervals: a bootstrap over seeds and, "
                  f"within each drawn seed, over test prompts ({samples} draws for the win-rate, percentiles; "
                  f"{lc_samples} for the length-controlled win-rate, whose GLM is refitted per draw: mean ± 1.96 sd). "
                  f"Δ: the row's win-rate minus {labels[ref]}'s on the same test prompts, paired bootstrap ({samples} "
                  "draws) with a two-sided p-value; * marks a difference whose interval excludes 0.", "",
                  f"| method | seeds | WR [95% CI] | LC WR [95% CI] | ΔWR vs {labels[ref]} [95% CI] | p |",
                  "|---|---|---|---|---|---|"]
        bootstrap = {"samples": samples, "lc_samples": lc_samples, "seed": seed}
        for k, (label, done) in enumerate(zip(labels, judged, strict=True)):
            reference = per_seed[ref] if k != ref and judged[ref] else None
            lines.append(_comparison_row(label, done, per_seed[k], reference, bootstrap))
        notes = _seed_notes(runs, labels, rows)
        if notes:
            lines += ["", "Missing or unfinished seeds:", *notes]
    if any(r.mt_bench_ratings for r in runs):
        lines += _mt_bench_comparison(rows, labels, ref, samples, seed)
    return "\n".join(lines) + "\n"


def _mt_bench_comparison(rows: list[list[RunRecord]], labels: list[str], ref: int, samples: int,
                         seed: int) -> list[str]:
    lines = ["", "## MT-Bench", "",
             f"The average rating (1-10) over seeds with a 95% interval: a bootstrap over seeds and, within each, over "
             f"the questions' turns ({samples} draws). Δ: the row's average minus {labels[ref]}'s on the same "
             "questions' turns, paired bootstrap with a two-sided p-value; * marks a difference whose interval "
             "excludes 0.", "", f"| method | seeds | MT-Bench avg [95% CI] | Δavg vs {labels[ref]} [95% CI] | p |",
             "|---|---|---|---|---|"]
    for k, (label, row) in enumerate(zip(labels, rows, strict=True)):
        pooled = interval(row, "mt_bench", samples=samples, seed=seed)
        if pooled is None:
            lines.append(f"| {label} | 0 | {NOT_EVALUATED} | - | - |")
            continue
        d = mt_bench_difference(row, rows[ref], samples=samples, seed=seed) if k != ref else None
        delta = p = "-"
        if d is not None:
            mark = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
            delta, p = f"{d['diff']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]{mark}", f"{d['p']:.3f}"
        lines.append(f"| {label} | {pooled['seeds']} | {with_interval(pooled, 2)} | {delta} | {p} |")
    return lines


def _comparison_row(label: str, done: list[RunRecord], outcomes: list[dict], reference: list[dict] | None,
                    bootstrap: dict) -> str:
    """One row of comparison.md: `done`, the row's runs with annotations; `outcomes`, theirs per seed;
    `reference`, the reference row's (None for the reference row itself)."""
    from dno.metrics import length_controlled
    from dno.reports.stats import paired_difference, seed_interval, win_rate

    if not done:
        return f"| {label} | 0 | - | - | - | - |"
    samples, seed = bootstrap["samples"], bootstrap["seed"]
    wr = seed_interval([np.array(list(o.values())) for o in outcomes], win_rate, samples=samples, seed=seed)
    lc = seed_interval([[a for a in r.annotations if a.get("preference") is not None] for r in done],
                       lambda a: length_controlled(a)["lc_win_rate"], samples=bootstrap["lc_samples"],
                       seed=seed, normal=True)
    delta = p = "-"
    if reference is not None:
        d = paired_difference(outcomes, reference, samples=samples, seed=seed)
        mark = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
        delta, p = f"{d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]{mark}", f"{d['p']:.3f}"
    return (f"| {label} | {wr['seeds']} | {wr['mean']:.1f} [{wr['lo']:.1f}, {wr['hi']:.1f}] | "
            f"{lc['mean']:.1f} [{lc['lo']:.1f}, {lc['hi']:.1f}] | {delta} | {p} |")


def _seed_notes(runs: list[RunRecord], labels: list[str], rows: list[list[RunRecord]]) -> list[str]:
    """Which rows lack a seed that other rows have, and which runs have no final annotations."""
    all_seeds = sorted({r.seed for r in runs if r.seed is not None})
    notes = []
    for label, row in zip(labels, rows, strict=True):
        missing = sorted(set(all_seeds) - {r.seed for r in row})
        unfinished = [f"seed {r.seed} ({Path(r.name).name})" for r in row if not r.annotations]
        if missing:
            notes.append(f"- {label}: no run with seed {', '.join(map(str, missing))} (other rows have it)")
        if unfinished:
            notes.append(f"- {label}: {', '.join(unfinished)} has no final annotations (unfinished?): left out")
    return notes


def eval_noise(sweep: Path, checkpoint: str) -> str:
    """The evaluation-only noise: one checkpoint evaluated by a dno-eval multirun over `seed` (the sampling
    seed of its answers and of pi_1's baseline answers; the test prompts and the judge stay the same)."""
    from omegaconf import OmegaConf

    rows = []
    for job in sorted(Path(sweep).iterdir(), key=lambda p: p.name):
        run = RunDir(job)
        if run.summary.exists() and run.hydra_config.exists():
            rows.append((OmegaConf.load(run.hydra_config).seed, json.loads(run.summary.read_text())))
    if not rows:
        raise ConfigError(f"{sweep}: no evaluation with a summary")
    lines = ["", "## Evaluation-only noise", "",
             f"The same checkpoint (`{checkpoint}`) evaluated {len(rows)} times on the same test prompts by the "
             "same judge; only the sampling seed of its answers and of pi_1's baseline answers changes.", "",
             "| sampling seed | WR | SE (prompts) | LC WR | length | n |", "|---|---|---|---|---|---|"]
    for seed, s in sorted(rows, key=lambda r: r[0]):
        lines.append(f"| {seed} | {s['alpaca_eval/win_rate']:.1f} | {s['alpaca_eval/standard_error']:.1f} | "
                     f"{s['alpaca_eval/lc_win_rate']:.1f} | {s['alpaca_eval/avg_length']:.0f} | "
                     f"{s['alpaca_eval/n_total']} |")
    wr, lc = (np.array([s[key] for _, s in rows]) for key in ("alpaca_eval/win_rate", "alpaca_eval/lc_win_rate"))
    def sd(x: np.ndarray) -> float:
        return float(x.std(ddof=1)) if len(x) > 1 else float("nan")

    lines += ["", f"Across sampling seeds: WR {wr.mean():.1f} (sd {fmt(sd(wr))}), LC WR {lc.mean():.1f} "
                  f"(sd {fmt(sd(lc))}); the mean standard error over prompts within one evaluation is "
                  f"{np.mean([s['alpaca_eval/standard_error'] for _, s in rows]):.1f}."]
    return "\n".join(lines) + "\n"
