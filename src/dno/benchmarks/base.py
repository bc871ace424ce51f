"""What every benchmark of the final stage is given (`Evaluated`), and how it fails (`EvalError`).

A benchmark is an object with `check()` and `run(target: Evaluated, out: BenchmarkDir) -> dict`: it answers its prompts
with the target policy, has them judged, writes its files into `out` (answers, annotations,
summary.json) through resumable stages, and returns its summary keys, namespaced by the benchmark
(`alpaca_eval/...`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dno.data import Prompt
from dno.policy.sample import Sampler, SamplingOptions
from dno.runtime.stages import stage_seed


class EvalError(RuntimeError):
    """The evaluation cannot report a comparable result (too few valid annotations, unmatched answers)."""


@dataclass(frozen=True)
class Evaluated:
    """The policy a benchmark evaluates, and what dno-run's final stage (or dno-eval) knows around it.

    Attributes:
        policy: returns the model, loaded when first asked (pi_1 answers are reused without loading it).
        tokenizer: the policy's tokenizer and chat template.
        sampling: the run's sampling options (a benchmark may ask for longer answers).
        seed: the run's seed; each benchmark draws its answers from a seed of its own.
        name: the generator's name in outputs and leaderboards.
        is_pi_1: the policy is pi_1 itself, whose test answers (`baseline_samples`) are reused.
        test_prompts: the data's test split; `baseline_samples`: pi_1's answers to them.
        oracle: the run's oracle (the local benchmark's annotator).
        checkpoint: the policy's folder (None: the configured model, pi_1), for tools that load it themselves.
    """

    policy: Callable[[], object]
    tokenizer: object
    sampling: SamplingOptions
    seed: int
    name: str
    is_pi_1: bool
    test_prompts: list[Prompt]
    baseline_samples: Path
    oracle: object
    checkpoint: Path | None = None

    def sampler(self, **changes) -> Sampler:
        """A sampler of the policy, with the run's sampling options changed by `changes`."""
        return Sampler(self.policy(), self.tokenizer, replace(self.sampling, **changes))

    def seed_of(self, benchmark: str) -> int:
        return stage_seed(self.seed, 0, benchmark)
