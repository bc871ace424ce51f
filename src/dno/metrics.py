"""Win-rates as AlpacaEval reports them: percentages (0..100), from P(a > b) per prompt.

`win_rate` is always a percentage in this code base (the logged `eval/win_rate_vs_init`,
`alpaca_eval/win_rate`); r_t(x, y), the [0, 1] quantity of the paper, is `win_prob`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from contextlib import contextmanager

# What scikit-learn says of the GLM fit alpaca_eval asks of it (`penalty`, `l1_ratios`, LogisticRegressionCV's
# attributes): changes due in scikit-learn 1.10, alpaca_eval's code, not ours; pyproject.toml bounds scikit-learn
# below 1.10 until alpaca_eval follows, and tests/test_final.py checks the metric against alpaca_eval's own.
SKLEARN_NOTICES = ("The default value for l1_ratios will change", "'penalty' was deprecated",
                   "The fitted attributes of LogisticRegressionCV will be simplified")


@contextmanager
def glm_notices_silenced():
    """Exactly scikit-learn's notices about alpaca_eval's GLM fit are silenced; every other warning shows."""
    with warnings.catch_warnings():
        for message in SKLEARN_NOTICES:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


def win_rate(prefs: list[float | None]) -> float:
    """Mean P(a > b) over the prompts with a valid judgement, in percent (NaN when none)."""
    valid = [p for p in prefs if p is not None]
    return 100 * statistics.fmean(valid) if valid else float("nan")


def length_controlled(annotations: list[dict]) -> dict[str, float]:
    """Win-rate, its standard error, and the length-controlled win-rate of alpaca_eval's `length_controlled_minimal`
    GLM (no instruction difficulty: our prompts have none), from annotations in alpaca_eval's format (those
    without a preference left out); n_total counts the annotations used."""
    import numpy as np
    import pandas as pd
    from alpaca_eval.metrics import get_winrate
    from alpaca_eval.metrics.glm_winrate import GLM_INFO, fit_LogisticRegressionCV, make_dmatrix_for_model

    df = pd.DataFrame([a for a in annotations if a["preference"] is not None])
    metrics = get_winrate(df)
    delta = df["output_1"].str.len() - df["output_2"].str.len()
    scale = delta.std()
    train = pd.DataFrame({
        "preference": df["preference"].astype(float) - 1,
        "std_delta_len": delta / scale if scale and math.isfinite(scale) else 0.0,
        "not_gamed_baseline": True,
    })
    test = train[["not_gamed_baseline"]].assign(std_delta_len=0.0)
    lc = float("nan")
    if len(train) >= 2:
        xy_train, x_test = make_dmatrix_for_model(train, test, formula=GLM_INFO["length_controlled_minimal"]["formula"])
        with glm_notices_silenced():
            model = fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True, n_splits=min(5, len(train)))
        lc = float(np.mean(model.predict_proba(x_test)[:, 1]) * 100)
    return {"win_rate": float(metrics["win_rate"]), "standard_error": float(metrics["standard_error"]),
            "lc_win_rate": lc, "n_total": int(metrics["n_total"])}
