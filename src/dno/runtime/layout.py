"""The run directory: every file and folder a run writes, named here and only here.

    run = RunDir(path)
    run.iteration(2).pairs              # <path>/iter_2/pairs.jsonl
    run.iteration(2).marker("train")    # <path>/iter_2/DONE.train
    run.final.benchmark("local").summary  # <path>/final/local/summary.json

dno-run writes it; dno-eval writes a `FinalDir` of its own; dno-tables, dno-export and dno-bench read
it. `tests/test_architecture.py` fails when a run-directory name is spelled anywhere else in src/,
and the documentation's run-directory page lists every property below with its docstring (docs/gen_pages.py).

Every folder here is a `StageDir`: the stages that write into it leave a `DONE.<stage>` marker when
they finish (dno.runtime.stages), so a re-run skips them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKER_PREFIX = "DONE."
ITERATION_PREFIX = "iter_"


@dataclass(frozen=True)
class StageDir:
    """A folder of resumable stages."""

    path: Path

    def marker(self, stage: str) -> Path:
        """Written last by a finished stage: its metrics and the commit that ran it."""
        return self.path / f"{MARKER_PREFIX}{stage}"

    def markers(self) -> list[Path]:
        return sorted(self.path.glob(f"{MARKER_PREFIX}*"))

    def batch_journal(self, stage: str) -> Path:
        """oracle.batch=true: the stage's Batch API batches (their ids, input files, questions): a resumed stage
        polls them again instead of submitting the same questions twice."""
        return self.path / f"batches.{stage}.json"

    def done(self, stage: str) -> bool:
        """The marker exists (whether the stage's outputs are whole is dno.runtime.stages' to check)."""
        return self.marker(stage).exists()

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class InitDir(StageDir):
    """init/: what comes before iteration 1."""

    @property
    def val_samples(self) -> Path:
        """pi_1's answers to the validation prompts (one each)."""
        return self.path / "val_samples.jsonl"

    @property
    def test_samples(self) -> Path:
        """pi_1's answers to the test prompts: the final stage's baseline."""
        return self.path / "test_samples.jsonl"

    @property
    def teacher(self) -> Path:
        """The teacher's answers (prompt id -> answer) where the data had none."""
        return self.path / "teacher.json"

    @property
    def policy(self) -> Path:
        """pi_1 in HF format for a generation server (from a GGUF file or random weights)."""
        return self.path / "policy"

    @property
    def server_log(self) -> Path:
        """The generation server's log, while pi_1 answers on one."""
        return self.path / "server.log"


@dataclass(frozen=True)
class IterationDir(StageDir):
    """iter_<t>/ (and lookahead/): the files of one iteration, in the order the stages write them."""

    @property
    def samples(self) -> Path:
        """K answers of pi_t per prompt (records.Samples)."""
        return self.path / "samples.jsonl"

    @property
    def judgements(self) -> Path:
        """The oracle's judgement of each prompt's candidates, r_t of each (records.Judged)."""
        return self.path / "judgements.jsonl"

    @property
    def pairs(self) -> Path:
        """The pairs the update trains on, with pi_t's log-probs (records.PairRow)."""
        return self.path / "pairs.jsonl"

    @property
    def checkpoint(self) -> Path:
        """pi_{t+1} in HF format."""
        return self.path / "checkpoint"

    @property
    def adapter(self) -> Path:
        """With model.lora.r > 0: the update's LoRA adapter, on pi_t (peft format)."""
        return self.path / "adapter"

    @property
    def eval_samples(self) -> Path:
        """pi_{t+1}'s answers to the validation prompts."""
        return self.path / "eval_samples.jsonl"

    @property
    def eval_judgements(self) -> Path:
        """P(pi_{t+1} > pi_1), P(pi_{t+1} > pi_t) per prompt (records.Validation)."""
        return self.path / "eval_judgements.jsonl"

    @property
    def server_log(self) -> Path:
        """The generation server's log (generation.backend=openai_server)."""
        return self.path / "server.log"

    @property
    def student_features(self) -> Path:
        """With a router: the frozen feature model's vector of every candidate judged here (torch file)."""
        return self.path / "student_features.pt"

    @property
    def student(self) -> Path:
        """With a router: the student trained on the judge's verdicts before this judge stage (oracle=student)."""
        return self.path / "student_judge"

    @property
    def routing(self) -> Path:
        """With a router: each prompt's route (audit, paid or the student's) and both verdicts where known."""
        return self.path / "routing.jsonl"


@dataclass(frozen=True)
class BenchmarkDir(StageDir):
    """final/<benchmark>/: a model's answers to one benchmark, their judgements and the benchmark's metrics."""

    @property
    def baseline_samples(self) -> Path:
        """dno-eval only: pi_1's test answers, drawn as dno-run's are (eval=local)."""
        return self.path / "baseline_samples.jsonl"

    @property
    def model_samples(self) -> Path:
        """The evaluated model's answers (MT-Bench: to the first turn)."""
        return self.path / "model_samples.jsonl"

    @property
    def second_turn_samples(self) -> Path:
        """MT-Bench: the answers to the second turn, asked after the model's own first answer."""
        return self.path / "second_turn_samples.jsonl"

    @property
    def model_outputs(self) -> Path:
        """The model's answers in alpaca_eval's format."""
        return self.path / "model_outputs.json"

    @property
    def reference_outputs(self) -> Path:
        """The baseline's answers in alpaca_eval's format."""
        return self.path / "reference_outputs.json"

    @property
    def annotations(self) -> Path:
        """One judged comparison per prompt (preference null: no valid judgement)."""
        return self.path / "annotations.json"

    @property
    def judgements(self) -> Path:
        """MT-Bench's ratings (a question's turn a row), Arena-Hard's two games per question."""
        return self.path / "judgements.jsonl"

    @property
    def summary(self) -> Path:
        """The benchmark's metrics."""
        return self.path / "summary.json"

    def task(self, name: str) -> Path:
        """eval=open_llm: one lm-eval task's folder, lm-eval's results and per-item samples as it writes them."""
        return self.path / name

    def task_results(self, name: str) -> Path:
        """eval=open_llm: one task's results (lm-eval's dict without the samples)."""
        return self.task(name) / "results.json"

    @property
    def annotator(self) -> Path:
        """alpaca_eval's annotator config and cache, here instead of in site-packages."""
        return self.path / "annotator"

    @property
    def annotator_config(self) -> Path:
        """The annotator's config, pointed at the judge of `eval=`."""
        return self.annotator / "configs.yaml"

    @property
    def client_config(self) -> Path:
        """The judge server's address (eval.alpaca_eval2.base_url), no key."""
        return self.annotator / "client_config.yaml"

    @property
    def annotator_cache(self) -> Path:
        """alpaca_eval's own annotation cache."""
        return self.annotator / "annotations_cache.json"

    @property
    def glm_weights(self) -> Path:
        """alpaca_eval's length-controlled GLM weights."""
        return self.path / "weights"

    @property
    def leaderboard(self) -> Path:
        """AlpacaEval 2.0's leaderboard with this model's row (official annotator)."""
        return self.path / "leaderboard.csv"


@dataclass(frozen=True)
class FinalDir(StageDir):
    """final/: the final stage, a folder per benchmark of `eval=[...]` (also under an iteration's folder when
    `dno-eval run_dir=RUN` evaluates every iterate)."""

    def benchmark(self, name: str) -> BenchmarkDir:
        return BenchmarkDir(self.path / name)

    @property
    def summary(self) -> Path:
        """An evaluated iterate's metrics, every benchmark's (the run's final ones are in the run's summary)."""
        return self.path / "summary.json"

    @property
    def annotations(self) -> Path:
        """The pairwise benchmark's annotations (eval=local or alpaca_eval2; final/ itself in a run directory made
        before benchmarks had folders)."""
        found = [p for p in (self.benchmark("local").annotations, self.benchmark("alpaca_eval2").annotations,
                             self.path / "annotations.json") if p.exists()]
        return found[0] if found else self.benchmark("local").annotations

    def adopt_flat_layout(self, name: str) -> None:
        """A run directory made before benchmarks had folders kept one benchmark's files in final/ itself: they
        move into final/<name>/, markers last, so that a kill half-way leaves it to the next call to finish."""
        if not self.markers():
            return
        target = self.benchmark(name).path
        target.mkdir(parents=True, exist_ok=True)
        flat = [p for p in self.path.iterdir() if p != target]
        for p in sorted(flat, key=lambda p: p.name.startswith(MARKER_PREFIX)):
            if not (target / p.name).exists():
                p.rename(target / p.name)


@dataclass(frozen=True)
class RunDir:
    """A run directory (hydra.run.dir of dno-run)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def hydra_config(self) -> Path:
        """The composed config, written by Hydra (no secrets: keys are read from the environment)."""
        return self.path / ".hydra" / "config.yaml"

    @property
    def hydra_overrides(self) -> Path:
        """The command-line overrides that made the run."""
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def hydra_settings(self) -> Path:
        """Hydra's settings of the run, with the option chosen in each config group."""
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def provenance(self) -> Path:
        """Commit, versions, device, config hash, model and prompt identities, resumes."""
        return self.path / "provenance.json"

    @property
    def metrics(self) -> Path:
        """One JSON object per iteration's log, always with "iteration"."""
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        """The final metrics, namespaced per benchmark (alpaca_eval/, mt_bench/, arena_hard/; final/ the model)."""
        return self.path / "summary.json"

    @property
    def plan(self) -> Path:
        """The run's priced plan, made at its start (dno-run plan=true writes it and stops)."""
        return self.path / "plan.json"

    @property
    def ledger(self) -> Path:
        """The judge's bill: a line per paid answer (stage, cache key, tokens, USD, batch or direct), written when
        it is paid (dno.oracles.ledger)."""
        return self.path / "ledger.jsonl"

    @property
    def plans(self) -> Path:
        """Every later start's plan (plan.json keeps the first): plan_2.json, plan_3.json, ..."""
        return self.path / "plans"

    @property
    def lock(self) -> Path:
        """The owner's lock (PID, host, start time), released when it exits or dies."""
        return self.path / ".lock"

    @property
    def wandb_run(self) -> Path:
        """The W&B run's id: a re-run resumes the same W&B run."""
        return self.path / "wandb_run.json"

    @property
    def wandb(self) -> Path:
        """The W&B run's files (offline by default)."""
        return self.path / "wandb"

    @property
    def init(self) -> InitDir:
        return InitDir(self.path / "init")

    def iteration(self, t: int) -> IterationDir:
        """Iteration t: samples of pi_t, ..., pi_{t+1} in checkpoint/."""
        return IterationDir(self.path / f"{ITERATION_PREFIX}{t}")

    def iterations(self) -> list[int]:
        """The iterations that have a folder, in order."""
        found = (re.fullmatch(rf"{ITERATION_PREFIX}(\d+)", p.name) for p in self.path.glob(f"{ITERATION_PREFIX}*"))
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def lookahead(self) -> IterationDir:
        """DNO-Lookahead: all iterations' pairs, one update from pi_1 (as iter_<t>/)."""
        return IterationDir(self.path / "lookahead")

    @property
    def final(self) -> FinalDir:
        """The final stage: the best iterate (or dno-eval's checkpoint) on each benchmark of `eval=[...]`."""
        return FinalDir(self.path / "final")

    def iterate_final(self, t: int) -> FinalDir:
        """dno-eval run_dir=RUN: pi_t's benchmarks, pi_1's under init/final/, pi_t's under iter_<t-1>/final/."""
        return FinalDir((self.init if t == 1 else self.iteration(t - 1)).path / "final")

    def checkpoint(self, t: int) -> Path | None:
        """Where pi_{t+1} lives: the checkpoint of iteration t; None for pi_1 (t = 0)."""
        return None if t == 0 else self.iteration(t).checkpoint

    def validation_samples(self, t: int) -> Path:
        """pi_t's answers to the validation prompts: init/ for pi_1, else iteration t-1's evaluation."""
        return self.init.val_samples if t == 1 else self.iteration(t - 1).eval_samples

    def stage_dirs(self) -> list[StageDir]:
        return [self.init, *(self.iteration(t) for t in self.iterations()), self.lookahead, self.final]


def bill_name(directory: StageDir, stage: str) -> tuple[str, int | None]:
    """A stage's name in the judge's bill and its iteration (dno.runtime.stages.bill_stage)."""
    def iteration_of(path: Path) -> int | None:
        found = re.fullmatch(rf"{ITERATION_PREFIX}(\d+)", path.name)
        return int(found.group(1)) if found else None

    path = directory.path
    if path.parent.name == "final":
        return f"final/{path.name}", iteration_of(path.parent.parent)
    if path.name == "init":
        return stage, 0
    if path.name == "lookahead":
        return "lookahead" if stage == "evaluate" else f"lookahead/{stage}", None
    if (t := iteration_of(path)) is not None:
        return {"evaluate": "validation"}.get(stage, stage), t
    return f"{path.name}/{stage}", None
