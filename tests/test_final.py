"""Final-stage metrics through alpaca_eval's own code, on annotations with known answers."""

from __future__ import annotations

import pytest

from dno.metrics import length_controlled


def annotations(prefs, len_model, len_ref):
    return [{"instruction": f"q{i}", "output_1": "r" * lr, "output_2": "m" * lm, "generator_1": "pi_1",
             "generator_2": "model", "annotator": "rules", "preference": p}
            for i, (p, lm, lr) in enumerate(zip(prefs, len_model, len_ref, strict=True))]


def test_win_rate_counts_wins_ties_and_losses():
    # model wins 3, ties 1, loses 4 of 8: (3 + 0.5) / 8 = 43.75%
    m = length_controlled(annotations([2, 2, 2, 1.5, 1, 1, 1, 1], [10, 12, 9, 11, 10, 12, 9, 11], [10] * 8))
    assert m["win_rate"] == pytest.approx(43.75) and m["n_total"] == 8


def test_length_control_discounts_wins_that_come_from_length():
    # the model wins exactly where it is longer (15 of 20): the GLM attributes the wins to length
    prefs = [2] * 15 + [1] * 5
    lm = [150 + 5 * i for i in range(15)] + [60 + i for i in range(5)]
    m = length_controlled(annotations(prefs, lm, [100] * 20))
    assert m["win_rate"] == pytest.approx(75.0)
    assert m["lc_win_rate"] < 50.0  # measured 25.5 with alpaca-eval 0.6.6
    lc_fair = length_controlled(annotations([2] * 15 + [1] * 5, [100] * 20, [100] * 20))
    assert lc_fair["lc_win_rate"] == pytest.approx(75.0, abs=1.0)  # no length difference: LC equals WR


def test_excluded_annotations_are_not_counted():
    a = annotations([2, 1, 2, 2], [10, 10, 10, 10], [10, 10, 10, 10])
    a[1]["preference"] = None
    assert length_controlled(a)["n_total"] == 3


def test_the_lc_metric_is_alpaca_evals_own_and_says_nothing_of_scikit_learns_notices(tmp_path):
    """Our LC win-rate (no instruction difficulty) equals alpaca_eval's get_length_controlled_winrate with its
    `length_controlled_minimal` GLM on a fixed annotation set, and the fit shows no FutureWarning."""
    import warnings

    import pandas as pd
    from alpaca_eval.metrics import get_length_controlled_winrate

    from dno.benchmarks.alpaca_eval2 import instruction_difficulty

    lengths = [(40 + 7 * (i % 5), 60 - 3 * (i % 7)) for i in range(24)]
    prefs = [2.0 if lm > lr else 1.5 if i % 6 == 0 else 1.0 for i, (lm, lr) in enumerate(lengths)]
    ours = annotations(prefs, [lm for lm, _ in lengths], [lr for _, lr in lengths])
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        m = length_controlled(ours)
    assert not [w for w in shown if issubclass(w.category, FutureWarning)], [str(w.message) for w in shown]
    difficulty = tmp_path / "df_gamed.csv"  # the package reads per-instruction difficulty; the minimal GLM ignores it
    pd.DataFrame({"model": "m", "index": range(24), "preference": 0.5, "std_delta_len": 0.0,
                  "instruction_difficulty": 0.0, "not_gamed_baseline": False}).to_csv(difficulty, index=False)
    with instruction_difficulty(str(difficulty)), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = get_length_controlled_winrate(pd.DataFrame(ours).assign(index=range(24)),
                                               glm_name="length_controlled_minimal", save_weights_dir=None)
    assert m["lc_win_rate"] == pytest.approx(theirs["length_controlled_winrate"], abs=1e-9)
    assert m["win_rate"] == pytest.approx(theirs["win_rate"]) and 30 < m["lc_win_rate"] < m["win_rate"]

