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
