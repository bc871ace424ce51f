"""`eval=local`, the offline final stage: the chosen iterate against pi_1 (or the data's teacher answers)
on the test split, annotated by the run's oracle, in AlpacaEval's formats, with win-rate and
length-controlled win-rate from the alpaca_eval package's own metric code.

The official LC metric needs per-instruction difficulty that exists only for AlpacaEval's 805
instructions. For our own prompts we fit the package's `length_controlled_minimal` GLM
(tanh of the standardised length difference plus an intercept) with its own design-matrix and
fitting functions, and read the win-rate at zero length difference, as the official metric does
(dno.metrics.length_controlled).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from dno.benchmarks.base import EvalError, Evaluated
from dno.data import Prompt
from dno.metrics import length_controlled
from dno.runtime.files import write_json, write_text
from dno.runtime.layout import BenchmarkDir
from dno.runtime.stages import run_stage
from dno.stages.evaluate import first_responses, head_to_head
from dno.stages.sample import sample_responses

DATASET = "dno-test"
BASELINES = ("auto", "pi_1", "teacher")


def alpaca_outputs(prompts: list[Prompt], texts: list[str], generator: str, dataset: str) -> list[dict]:
    """Answers in alpaca_eval's model_outputs format (joined with the reference's on `instruction`)."""
    return [{"instruction": p.as_text(), "output": t, "generator": generator, "dataset": dataset}
            for p, t in zip(prompts, texts, strict=True)]


def annotate(oracle, prompts: list[Prompt], model: list[dict], reference: list[dict]) -> list[dict]:
    """alpaca_eval annotations: output_1 is the reference, preference 2 means the model won, 1.5 a tie."""
    prefs = head_to_head(oracle, prompts, [m["output"] for m in model], [r["output"] for r in reference])
    return [
        {"instruction": m["instruction"], "output_1": r["output"], "output_2": m["output"],
         "generator_1": r["generator"], "generator_2": m["generator"], "annotator": oracle.name,
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


@dataclass(frozen=True)
class LocalBenchmark:
    """`eval=local` (conf/eval/local.yaml).

    Attributes:
        baseline: what the answers are compared with: `pi_1` (its test answers), `teacher` (the data's
            teacher answers), or `auto` (the teacher's when every test prompt has one, else pi_1's).
        min_valid_frac: fail (EvalError, exit 3) when fewer test prompts got a valid judgement.
    """

    baseline: str = "auto"
    min_valid_frac: float = 0.9

    def check(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"eval.local.baseline must be auto, pi_1 or teacher, got {self.baseline!r}")
        if not 0.0 <= self.min_valid_frac <= 1.0:
            raise ValueError(f"eval.local.min_valid_frac must be in [0, 1], got {self.min_valid_frac}")

    def plan_questions(self, n_test: int, instruction: float, answer: float) -> dict:
        """What the plan prices (dno.plan): a judgement of two answers per test prompt, by the run's oracle."""
        return {"requests": n_test, "oracle": True, "candidates": 2}

    def run(self, target: Evaluated, out: BenchmarkDir) -> dict:
        """The target's test answers (stage `sample`), annotated against the baseline (stage `evaluate`)."""
        def sample() -> dict:
            if target.is_pi_1:
                write_text(out.model_samples, target.baseline_samples.read_text())
                return {}
            return sample_responses(target.sampler(), target.test_prompts, out.model_samples, k=1,
                                    seed=target.seed_of("test"), desc="test")

        run_stage(out, "sample", sample, (out.model_samples,))
        return run_stage(out, "evaluate", lambda: self.evaluate(target, out), (out.annotations, out.summary))

    def evaluate(self, target: Evaluated, out: BenchmarkDir) -> dict:
        """The oracle annotates the target's answers against the baseline's. Writes model_outputs.json,
        reference_outputs.json, annotations.json and summary.json into `out`. Raises EvalError, with no
        summary, when fewer than `min_valid_frac` of the prompts got a valid judgement."""
        prompts = target.test_prompts
        outputs = alpaca_outputs(prompts, first_responses(out.model_samples), target.name, DATASET)
        reference = self.reference(prompts, first_responses(target.baseline_samples))
        annotations = annotate(target.oracle, prompts, outputs, reference)
        write_json(out.model_outputs, outputs)
        write_json(out.reference_outputs, reference)
        write_json(out.annotations, annotations)
        valid = sum(a["preference"] is not None for a in annotations)
        if valid < self.min_valid_frac * len(annotations) or not valid:
            raise EvalError(f"the judge ({target.oracle.name}) gave a valid annotation for {valid} of "
                            f"{len(annotations)} test prompts, fewer than "
                            f"eval.local.min_valid_frac={self.min_valid_frac}: no win-rate is reported. The "
                            f"annotations are in {out.annotations} (preference null: no valid judgement). Try a "
                            "stronger judge or oracle.structured_output; the same command resumes, and the answers "
                            "paid for are cached.")
        summary = {**local_metrics(outputs, reference, annotations), "alpaca_eval/annotator": target.oracle.name,
                   "alpaca_eval/baseline": reference[0]["generator"] if reference else None}
        write_json(out.summary, summary)
        return summary

    def reference(self, prompts: list[Prompt], pi_1: list[str]) -> list[dict]:
        """The reference answers: the data's teacher answers (`teacher`, or `auto` when every prompt has one)
        or pi_1's (`pi_1`, or `auto` otherwise)."""
        has_teacher = bool(prompts) and all(p.teacher for p in prompts)
        if self.baseline == "teacher" and not has_teacher:
            raise ValueError("eval.local.baseline=teacher, but the data has no teacher answer for every test prompt")
        if self.baseline == "teacher" or (self.baseline == "auto" and has_teacher):
            return alpaca_outputs(prompts, [p.teacher for p in prompts], "teacher", DATASET)
        return alpaca_outputs(prompts, pi_1, "pi_1", DATASET)
