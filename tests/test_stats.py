"""Intervals over seeds and prompts, and paired differences, on synthetic annotations with known answers;
comparison.md's rows, reference and missing seeds through dno.tables."""

from __future__ import annotations

import numpy as np
import pytest

from dno.reports.comparison import comparison
from dno.reports.run_records import RunRecord
from dno.reports.stats import outcomes, paired_difference, seed_interval, win_rate
from dno.reports.tables import write_tables
from dno.runtime.config import ConfigError
from dno.runtime.files import write_json


def annotations(wins: np.ndarray, *, model_len: int = 100, prefix: str = "p") -> list[dict]:
    """alpaca_eval annotations: prompt i won (preference 2) where wins[i], else lost (1)."""
    return [{"instruction": f"{prefix}{i}", "output_1": "b" * 100, "output_2": "m" * (model_len + i % 7),
             "preference": 2.0 if w else 1.0} for i, w in enumerate(wins)]


def test_outcomes_map_preferences_and_leave_out_missing():
    rows = [{"instruction": "a", "preference": 2.0}, {"instruction": "b", "preference": 1.5},
            {"instruction": "c", "preference": 1.0}, {"instruction": "d", "preference": None}]
    assert outcomes(rows) == {"a": 1.0, "b": 0.5, "c": 0.0}


def test_one_seed_interval_is_the_prompt_bootstrap():
    """One seed, 200 prompts at 60%: the interval is close to 60 ± 1.96 x sqrt(.6 x .4 / 200) x 100 = ± 6.8."""
    values = np.array([1.0] * 120 + [0.0] * 80)
    ci = seed_interval([values], win_rate, samples=4000, seed=1)
    assert ci["mean"] == 60.0 and ci["seeds"] == 1
    assert ci["lo"] == pytest.approx(60 - 6.8, abs=0.8) and ci["hi"] == pytest.approx(60 + 6.8, abs=0.8)


def test_seed_variance_widens_the_interval():
    """Three seeds at 40%, 60%, 80% on 200 prompts each: the interval covers the seeds' spread, wider
    than any one seed's prompt interval."""
    per_seed = [np.array([1.0] * k + [0.0] * (200 - k)) for k in (80, 120, 160)]
    ci = seed_interval(per_seed, win_rate, samples=2000, seed=0)
    one = seed_interval(per_seed[1:2], win_rate, samples=2000, seed=0)
    assert ci["mean"] == pytest.approx(60.0) and ci["seeds"] == 3
    assert ci["hi"] - ci["lo"] > 2 * (one["hi"] - one["lo"])
    assert ci["lo"] < 50 and ci["hi"] > 70


def test_identical_rows_differ_by_zero_with_p_one():
    rng = np.random.default_rng(0)
    row = [outcomes(annotations(rng.random(200) < 0.6)) for _ in range(2)]
    d = paired_difference(row, row, samples=1000)
    assert d["diff"] == 0.0 and d["p"] == 1.0 and d["lo"] <= 0 <= d["hi"] and d["prompts"] == 200


def test_a_planted_twenty_point_difference_is_found():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    better = [outcomes(annotations(base < 0.7))]
    worse = [outcomes(annotations(base < 0.5))]  # the same prompts: 20 points fewer wins
    d = paired_difference(better, worse, samples=2000)
    assert d["diff"] == pytest.approx(100 * ((base < 0.7).mean() - (base < 0.5).mean()))
    assert 15 < d["diff"] < 25 and d["p"] < 0.01 and d["lo"] > 0


def test_rows_with_no_common_prompt_cannot_be_paired():
    with pytest.raises(ValueError, match="share no annotated test prompt"):
        paired_difference([{"a": 1.0}], [{"b": 0.0}], samples=10)


def run(tmp_path, label: str, seed: int, wins, group: str | None = None) -> RunRecord:
    path = tmp_path / f"{label}-{seed}"
    if wins is not None:
        write_json(path / "final" / "annotations.json", annotations(np.asarray(wins)))
    else:
        path.mkdir(parents=True)
    return RunRecord(name=str(path), label=f"{label} seed={seed}", judge="RulesOracle", summary={}, metrics=[],
                     path=path, seed=seed, group=group or label)


def test_comparison_pools_seeds_marks_differences_and_reports_missing_seeds(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.random(100)
    runs = [run(tmp_path, "DNO", s, base < 0.8) for s in (0, 1, 2)]
    runs += [run(tmp_path, "SPIN", s, base < 0.4) for s in (0, 1)]  # seed 2 missing
    runs += [run(tmp_path, "SFT", 0, base < 0.8), run(tmp_path, "SFT", 1, None)]  # seed 1 unfinished
    md = comparison(runs, compare_to=None, samples=300, lc_samples=3, seed=0)
    lines = {line.split(" | ")[0][2:]: line for line in md.splitlines()
             if line.startswith("| ") and "seeds" not in line}
    assert lines["DNO"].startswith(f"| DNO | 3 | {100 * (base < 0.8).mean():.1f} [")
    assert lines["DNO"].endswith("| - | - |")  # the reference row (DNO by default)
    spin = lines["SPIN"].split(" | ")
    assert spin[1] == "2" and spin[4].startswith(f"{100 * ((base < 0.4).mean() - (base < 0.8).mean()):+.1f} [")
    assert spin[4].endswith("*") and float(spin[5].rstrip(" |")) < 0.01
    assert lines["SFT"].split(" | ")[4] == "+0.0 [+0.0, +0.0]"  # identical outcomes: no difference, no mark
    assert "- SPIN: no run with seed 2" in md and "- SFT: no run with seed 2" in md
    assert "- SFT: seed 1 (SFT-1) has no final annotations" in md
    assert "ΔWR vs SPIN" in comparison(runs, compare_to="SPIN", samples=50, lc_samples=2, seed=0)
    with pytest.raises(ConfigError, match="compare_to='nope' is not a row; the rows are: DNO, SPIN, SFT"):
        comparison(runs, compare_to="nope", samples=10, lc_samples=2, seed=0)
    written = write_tables(runs, tmp_path / "tables", stats={"samples": 50, "lc_samples": 2})
    assert tmp_path / "tables" / "comparison.md" in written and (tmp_path / "tables" / "win_rate.png").exists()
