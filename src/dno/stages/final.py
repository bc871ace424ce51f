"""`eval=local`, the offline final stage: the chosen iterate against pi_1 (or the data's gold
answers) on the test split, annotated by the configured oracle, in AlpacaEval's formats, with
win-rate and length-controlled win-rate from the alpaca_eval package's own metric code.

The official LC metric needs per-instruction difficulty that exists only for AlpacaEval's 805
instructions. For our own prompts we fit the package's `length_controlled_minimal` GLM
(tanh of the standardised length difference plus an intercept) with its own design-matrix and
fitting functions, and read the win-rate at zero length difference, as the official metric does.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from dno.records import write_json
from dno.stages.evaluate import first_responses, head_to_head

DATASET = "dno-test"


def alpaca_outputs(prompts: list[dict], texts: list[str], generator: str, dataset: str) -> list[dict]:
    return [{"instruction": p["instruction"], "output": t, "generator": generator, "dataset": dataset}
            for p, t in zip(prompts, texts, strict=True)]


def annotate(oracle, prompts: list[dict], model: list[dict], reference: list[dict], annotator: str) -> list[dict]:
    """alpaca_eval annotations: output_1 is the reference, preference 2 means the model won, 1.5 a tie."""
    prefs = head_to_head(oracle, prompts, [m["output"] for m in model], [r["output"] for r in reference])
    return [
        {"instruction": m["instruction"], "output_1": r["output"], "output_2": m["output"],
         "generator_1": r["generator"], "generator_2": m["generator"], "annotator": annotator,
         "preference": None if p is None else 1.0 + p}
        for m, r, p in zip(model, reference, prefs, strict=True)
    ]


def length_controlled(annotations: list[dict]) -> dict[str, float]:
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
        model = fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True, n_splits=min(5, len(train)))
        lc = float(np.mean(model.predict_proba(x_test)[:, 1]) * 100)
    return {"win_rate": float(metrics["win_rate"]), "standard_error": float(metrics["standard_error"]),
            "lc_win_rate": lc, "n_total": int(metrics["n_total"])}


def local_metrics(outputs: list[dict], reference: list[dict], annotations: list[dict]) -> dict:
    """The summary keys of an evaluation (`alpaca_eval/...`), from annotations in alpaca_eval's format."""
    m = length_controlled(annotations)
    return {
        "alpaca_eval/win_rate": m["win_rate"], "alpaca_eval/lc_win_rate": m["lc_win_rate"],
        "alpaca_eval/standard_error": m["standard_error"], "alpaca_eval/n_total": m["n_total"],
        "alpaca_eval/avg_length": statistics.fmean(len(o["output"]) for o in outputs),
        "alpaca_eval/avg_length_baseline": statistics.fmean(len(o["output"]) for o in reference),
        "alpaca_eval/n_excluded": sum(a["preference"] is None for a in annotations),
    }


def local_evaluation(oracle, prompts: list[dict], out_dir: Path, *, outputs: list[dict], reference: list[dict],
                     annotator: str) -> dict:
    """`eval=local`: the configured oracle annotates `outputs` against `reference` (pi_1's answers, or
    the data's gold answers). Writes model_outputs.json, reference_outputs.json, annotations.json
    and summary.json into out_dir."""
    annotations = annotate(oracle, prompts, outputs, reference, annotator)
    write_json(out_dir / "model_outputs.json", outputs)
    write_json(out_dir / "reference_outputs.json", reference)
    write_json(out_dir / "annotations.json", annotations)
    summary = {**local_metrics(outputs, reference, annotations), "alpaca_eval/annotator": annotator,
               "alpaca_eval/baseline": reference[0]["generator"] if reference else None}
    write_json(out_dir / "summary.json", summary)
    return summary


def baseline_outputs(prompts: list[dict], init_samples: Path, baseline: str, dataset: str) -> list[dict]:
    """The reference answers: the data's gold answers (`gold`, or `auto` when every prompt has one)
    or pi_1's samples (`pi_1`, or `auto` otherwise)."""
    has_gold = bool(prompts) and all(p.get("gold") for p in prompts)
    if baseline == "gold" and not has_gold:
        raise ValueError("eval.baseline=gold, but the data has no gold answer for every test prompt")
    if baseline == "gold" or (baseline == "auto" and has_gold):
        return alpaca_outputs(prompts, [p["gold"] for p in prompts], "gold", dataset)
    return alpaca_outputs(prompts, first_responses(init_samples), "pi_1", dataset)
