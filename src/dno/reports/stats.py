"""Uncertainty of win-rates across test prompts and seeds, and paired comparisons of rows.

A row of a table is a method run with several seeds, each evaluated on the same test prompts
against the same baseline (`split_seed` is fixed, so seeds share their test prompts). A prompt's
outcome is its annotation's preference minus 1 (1 a win of the row's model, 0 a loss, 0.5 a tie).

- `seed_interval`: the row's mean over seeds and a 95% interval from a two-level bootstrap: resample
  the seeds (with replacement), then each drawn seed's prompts (with replacement), and take the
  statistic's mean over the drawn seeds. It holds both the test-prompt and the seed variance; with
  one seed it is the bootstrap over prompts alone. The win-rate's interval is the draws' percentiles;
  the length-controlled win-rate refits alpaca_eval's GLM per seed and draw (a fraction of a second
  each), so it takes fewer draws and the normal interval of their spread.
- `paired_difference`: a row minus a reference row on the same prompts: each bootstrap draw resamples
  each row's seeds, averages every prompt's outcome over the drawn seeds, then resamples the prompts
  jointly (the pairing); the interval is the draws' 2.5 and 97.5 percentiles, and the two-sided
  p-value that of the shifted bootstrap, (1 + #{|d* - d| >= |d|}) / (1 + B).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def outcomes(annotations: list[dict]) -> dict[str, float]:
    """Prompt (instruction) -> the model's outcome in [0, 1]; annotations without a preference are left out."""
    return {a["instruction"]: float(a["preference"]) - 1.0 for a in annotations if a.get("preference") is not None}


def win_rate(values: np.ndarray) -> float:
    return float(np.mean(values) * 100)


def seed_interval(per_seed: Sequence[Sequence], statistic: Callable[[Sequence], float], *, samples: int,
                  seed: int = 0, normal: bool = False) -> dict:
    """{mean, lo, hi, seeds} of `statistic` (applied to one seed's items: outcomes, or annotations) over seeds.

    The interval is the draws' 2.5 and 97.5 percentiles, or with `normal` the mean ± 1.96 standard
    deviations of the draws (for a costly statistic: a few dozen draws estimate a spread well, not a tail)."""
    rng = np.random.default_rng(seed)
    point = float(np.mean([statistic(items) for items in per_seed]))
    draws = []
    for _ in range(samples):
        chosen = rng.integers(len(per_seed), size=len(per_seed))
        draws.append(np.mean([statistic(_resample(per_seed[s], rng)) for s in chosen]))
    if len(draws) < 2:
        lo = hi = np.nan
    elif normal:
        lo, hi = point - 1.96 * np.std(draws, ddof=1), point + 1.96 * np.std(draws, ddof=1)
    else:
        lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"mean": point, "lo": float(lo), "hi": float(hi), "seeds": len(per_seed)}


def _resample(items: Sequence, rng) -> list | np.ndarray:
    idx = rng.integers(len(items), size=len(items))
    return items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]


def paired_difference(row: list[dict[str, float]], reference: list[dict[str, float]], *, samples: int,
                      seed: int = 0, scale: float = 100.0) -> dict:
    """Win-rate of `row` minus `reference` (points), each a list of per-seed {prompt: outcome}, on their
    common prompts: {diff, lo, hi, p, prompts}. `scale` 1 for a mean that is not a rate (MT-Bench's ratings)."""
    prompts = sorted(set.intersection(*(set(s) for s in row + reference)))
    if not prompts:
        raise ValueError("the rows share no annotated test prompt: they cannot be compared pairwise")
    a = np.array([[s[p] for p in prompts] for s in row])  # seeds x prompts
    b = np.array([[s[p] for p in prompts] for s in reference])
    diff = float((a.mean() - b.mean()) * scale)
    rng = np.random.default_rng(seed)
    draws = np.empty(samples)
    for i in range(samples):
        per_prompt = a[rng.integers(len(a), size=len(a))].mean(0) - b[rng.integers(len(b), size=len(b))].mean(0)
        draws[i] = per_prompt[rng.integers(len(prompts), size=len(prompts))].mean() * scale
    lo, hi = np.percentile(draws, [2.5, 97.5])
    p = (1 + np.sum(np.abs(draws - diff) >= abs(diff) - 1e-12)) / (1 + samples)
    return {"diff": diff, "lo": float(lo), "hi": float(hi), "p": float(min(p, 1.0)), "prompts": len(prompts)}
