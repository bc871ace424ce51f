"""How far a cheap judge can be trusted, measured on verdicts the real judge gave: Trust or Escalate's threshold
(Jung et al., arXiv 2407.18370), Cohen's kappa and the expected calibration error.

    threshold = trust_threshold(confidence, correct, alpha=0.1, delta=0.1)   # None: trust nothing

`trust_threshold` is the fixed-sequence test of Trust or Escalate: confidence levels from the highest down,
each tested for H0 "the cheap judge disagrees with the real one on more than `alpha` of the items at least
this confident" with the exact binomial tail; the lowest level reached before the first test that fails to
reject at `delta` is the threshold. Then, for items drawn as the audit was, agreement above the threshold is
at least 1 - alpha with probability at least 1 - delta.
"""

from __future__ import annotations

from collections import Counter


def binomial_p_value(errors: int, n: int, alpha: float) -> float:
    """P(X <= errors) for X ~ Binomial(n, alpha): how likely so few errors are if the true error rate were alpha."""
    from scipy.stats import binom

    return float(binom.cdf(errors, n, alpha))


def trust_threshold(confidence: list[float], correct: list[bool], alpha: float, delta: float) -> float | None:
    """The lowest confidence level whose agreement is certified at 1 - alpha with probability 1 - delta (fixed
    sequence from the highest level down); None when not even the highest level is."""
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise ValueError(f"alpha and delta must be in (0, 1), got alpha={alpha}, delta={delta}")
    found = None
    for level in sorted(set(confidence), reverse=True):
        chosen = [ok for c, ok in zip(confidence, correct, strict=True) if c >= level]
        if binomial_p_value(len(chosen) - sum(chosen), len(chosen), alpha) > delta:
            break
        found = level
    return found


def cohen_kappa(a: list, b: list) -> float | None:
    """Agreement of two raters beyond chance: (p_o - p_e) / (1 - p_e); None without items, 1.0 when both always
    give the one same label."""
    n = len(a)
    if n == 0 or n != len(b):
        return None
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in ca) / n**2
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def expected_calibration_error(confidence: list[float], correct: list[bool], bins: int = 10) -> float | None:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| weighted by the bin's share."""
    n = len(confidence)
    if n == 0:
        return None
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidence) if lo < c <= hi or (b == 0 and c == 0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidence[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - conf)
    return total
