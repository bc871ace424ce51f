"""The final stage (dno-run's last, and dno-eval): a policy's answers evaluated by `eval=`.

`eval=alpaca_eval2` is the official AlpacaEval 2.0 path (dno.alpacaeval). `eval=local`, the
offline final stage: the chosen iterate against pi_1 (or the data's teacher
answers) on the test split, annotated by the configured oracle, in AlpacaEval's formats, with
win-rate and length-controlled win-rate from the alpaca_eval package's own metric code.

The official LC metric needs per-instruction difficulty that exists only for AlpacaEval's 805
instructions. For our own prompts we fit the package's `length_controlled_minimal` GLM
(tanh of the standardised length difference plus an intercept) with its own design-matrix and
fitting functions, and read the win-rate at zero length difference, as the official metric does.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dno.alpacaeval import EvalError, official_evaluation, reference_path
from dno.metrics import length_controlled
from dno.records import read_json, run_stage, stage_seed, write_json, write_text
from dno.stages.evaluate import first_responses, head_to_head
from dno.stages.sample import sample_responses

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
                     annotator: str, min_valid_frac: float = 0.9) -> dict:
    """`eval=local`: the configured oracle annotates `outputs` against `reference` (pi_1's answers, or
    the data's teacher answers). Writes model_outputs.json, reference_outputs.json, annotations.json
    and summary.json into out_dir. Raises EvalError, with no summary, when fewer than `min_valid_frac`
    of the prompts got a valid judgement."""
    annotations = annotate(oracle, prompts, outputs, reference, annotator)
    write_json(out_dir / "model_outputs.json", outputs)
    write_json(out_dir / "reference_outputs.json", reference)
    write_json(out_dir / "annotations.json", annotations)
    valid = sum(a["preference"] is not None for a in annotations)
    if valid < min_valid_frac * len(annotations) or not valid:
        raise EvalError(f"the judge ({annotator}) gave a valid annotation for {valid} of {len(annotations)} test "
                        f"prompts, fewer than eval.min_valid_frac={min_valid_frac}: no win-rate is reported. The "
                        f"annotations are in {out_dir / 'annotations.json'} (preference null: no valid judgement). "
                        "Try a stronger judge or oracle.structured_output; the same command resumes, and the "
                        "answers paid for are cached.")
    summary = {**local_metrics(outputs, reference, annotations), "alpaca_eval/annotator": annotator,
               "alpaca_eval/baseline": reference[0]["generator"] if reference else None}
    write_json(out_dir / "summary.json", summary)
    return summary


def baseline_outputs(prompts: list[dict], init_samples: Path, baseline: str, dataset: str) -> list[dict]:
    """The reference answers: the data's teacher answers (`teacher`, or `auto` when every prompt has one)
    or pi_1's samples (`pi_1`, or `auto` otherwise)."""
    has_teacher = bool(prompts) and all(p.get("teacher") for p in prompts)
    if baseline == "teacher" and not has_teacher:
        raise ValueError("eval.baseline=teacher, but the data has no teacher answer for every test prompt")
    if baseline == "teacher" or (baseline == "auto" and has_teacher):
        return alpaca_outputs(prompts, [p["teacher"] for p in prompts], "teacher", dataset)
    return alpaca_outputs(prompts, first_responses(init_samples), "pi_1", dataset)


def final_evaluation(cfg: DictConfig, out: Path, *, policy, tokenizer, oracle, test_prompts: list[dict],
                     baseline_samples: Path, generator: str, same_as_baseline: bool = False) -> dict:
    """Answers of `policy()` evaluated by `cfg.eval` into `out` (resumable stages sample/evaluate).

    `baseline_samples`: pi_1's answers on `test_prompts` (eval=local); `same_as_baseline`: the
    policy is pi_1 itself, whose test answers are reused."""
    e = cfg.eval
    if e.name == "local":
        def sample() -> dict:
            if same_as_baseline:
                write_text(out / "model_samples.jsonl", Path(baseline_samples).read_text())
                return {}
            return sample_responses(policy(), tokenizer, test_prompts, out / "model_samples.jsonl", k=1,
                                    sampling=cfg.sampling, seed=stage_seed(cfg.seed, 0, "test"), desc="test")

        run_stage(out, "sample", sample, outputs=("model_samples.jsonl",))
        return run_stage(out, "evaluate", outputs=("annotations.json", "summary.json"), fn=lambda: local_evaluation(
            oracle, test_prompts, out,
            outputs=alpaca_outputs(test_prompts, first_responses(out / "model_samples.jsonl"), generator, DATASET),
            reference=baseline_outputs(test_prompts, baseline_samples, e.baseline, DATASET),
            annotator=cfg.oracle._target_.rsplit(".", 1)[-1], min_valid_frac=e.min_valid_frac))

    reference, revision = reference_path(e)
    rows = read_json(reference)[: e.num_instructions or None]
    prompts = [{"id": str(i), "instruction": r["instruction"]} for i, r in enumerate(rows)]
    sampling = OmegaConf.merge(cfg.sampling, {"max_new_tokens": e.max_new_tokens})
    run_stage(out, "sample", lambda: sample_responses(policy(), tokenizer, prompts, out / "model_samples.jsonl", k=1,
                                                      sampling=sampling, seed=stage_seed(cfg.seed, 0, "alpaca_eval"),
                                                      desc="AlpacaEval answers"), outputs=("model_samples.jsonl",))
    outputs = [{**o, "dataset": r.get("dataset", o["dataset"])} for o, r in zip(alpaca_outputs(
        prompts, first_responses(out / "model_samples.jsonl"), generator, "alpaca_eval"), rows, strict=True)]
    write_json(out / "model_outputs.json", outputs)
    reference_rows = out / "reference_outputs.json"
    write_json(reference_rows, rows)
    return run_stage(out, "evaluate", lambda: official_evaluation(e, out, outputs, generator, len(rows), revision,
                                                                  str(reference_rows)), outputs=("summary.json",))
