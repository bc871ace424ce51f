"""dno-run: DNO-Prct (Algorithm 2 of arXiv 2404.03715), iteration by iteration, resumable.

    dno-run                                        # the offline default: SmolLM2-135M, rules oracle
    dno-run model=tiny_random schedule=smoke hydra.run.dir=/tmp/smoke
    dno-run -m model=tiny_random schedule=smoke seed=0,1

Each iteration t writes <run_dir>/iter_<t>/: samples.jsonl, judgements.jsonl, pairs.jsonl (with
reference log-probs), checkpoint/ (pi_{t+1}), eval_samples.jsonl, and DONE.<stage> markers. Re-running
with the same hydra.run.dir skips every finished stage.

Departures from the paper:
1. The oracle is configurable; the default is a rules judge on verifiable constraints, not GPT-4-Turbo.
2. Iterations are numbered from 1 like pi_t: iteration t samples from pi_t and trains pi_{t+1}
   (the paper's Table 2 numbers them from 0).
3. Evaluation on the validation split compares pi_{t+1} with pi_1 and pi_t under the same oracle;
   the final stage runs the chosen iterate against pi_1 on the test split in AlpacaEval's formats.
4. The unexplained "alpha 0.005" of Appendix C is not used.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import zlib
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dno.config import ConfigError, grad_accumulation, validate
from dno.data.splits import make_splits
from dno.pairs import PairRules
from dno.records import read_json, run_stage
from dno.tracking import Tracker

log = logging.getLogger("dno")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
SECRET_KEY = re.compile(r"(api_key|token|secret|password)$", re.IGNORECASE)


def stage_seed(seed: int, iteration: int, stage: str) -> int:
    """A seed per (run seed, iteration, stage): a resumed stage draws what it would have drawn."""
    return zlib.crc32(f"{seed}/{iteration}/{stage}".encode()) % (2**31)


def redact(obj):
    """The config as logged to W&B: values of keys that look like secrets are dropped."""
    if isinstance(obj, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


class Policies:
    """Holds one policy in memory and loads another only when a stage asks for it."""

    def __init__(self, cfg: DictConfig, tokenizer, device) -> None:
        self.cfg, self.tokenizer, self.device = cfg, tokenizer, device
        self.model, self.path = None, "unloaded"

    def get(self, path: Path | None):
        """path None is pi_1 (the configured model), else a checkpoint directory."""
        if self.path != path:
            from dno.policy import load_model

            self.model = None
            self.model = load_model(self.cfg.model, self.cfg.cache_dir, self.tokenizer,
                                    path=None if path is None else str(path)).to(self.device)
            self.path = path
        return self.model


def checkpoint(run_dir: Path, iteration: int) -> Path | None:
    """Where pi_{iteration + 1} lives; None for pi_1."""
    return None if iteration == 0 else run_dir / f"iter_{iteration}" / "checkpoint"


def run(cfg: DictConfig) -> dict:
    from accelerate import Accelerator

    accelerator = Accelerator()
    validate(cfg, accelerator.num_processes)
    grad_accum = grad_accumulation(cfg, accelerator.num_processes)
    oracle, loss, sink = instantiate(cfg.oracle), instantiate(cfg.loss), instantiate(cfg.logger)
    from dno.policy import check_path

    if cfg.model.path:
        check_path(cfg.model.path)
    s = cfg.schedule
    try:
        splits = make_splits(instantiate(cfg.data), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                             n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    rules = PairRules(**s.pairs)

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    logged = {t for t in range(1, s.iterations + 1) if (run_dir / f"iter_{t}" / "DONE.log").exists()}
    tracker = Tracker(run_dir, sink)
    tracker.start(redact(OmegaConf.to_container(cfg, resolve=True)),
                  group=hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None,
                  name=hc.job.override_dirname or run_dir.name, logged_iterations=logged)

    from dno.policy import load_tokenizer
    from dno.stages.evaluate import evaluate_policy
    from dno.stages.judge import judge_samples
    from dno.stages.make_pairs import make_pairs
    from dno.stages.reference import reference_logps
    from dno.stages.sample import sample_responses
    from dno.stages.train import save_checkpoint, train_policy

    tokenizer = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    policies = Policies(cfg, tokenizer, accelerator.device)
    init = run_dir / "init"

    def sample(path, prompts, out, k, seed, desc="sampling"):
        return sample_responses(policies.get(path), tokenizer, prompts, out, k=k, sampling=cfg.sampling,
                                seed=seed, desc=desc)

    run_stage(init, "val_samples", lambda: sample(None, splits.val, init / "val_samples.jsonl", 1,
                                                  stage_seed(cfg.seed, 0, "val"), "pi_1 validation"))
    run_stage(init, "test_samples", lambda: sample(None, splits.test, init / "test_samples.jsonl", 1,
                                                   stage_seed(cfg.seed, 0, "test"), "pi_1 test"))
    for t in range(1, s.iterations + 1):
        d, pi_t, pi_next = run_dir / f"iter_{t}", checkpoint(run_dir, t - 1), checkpoint(run_dir, t)
        prev_eval = init / "val_samples.jsonl" if t == 1 else run_dir / f"iter_{t - 1}" / "eval_samples.jsonl"
        m = run_stage(d, "sample", lambda: sample(pi_t, splits.iterations[t - 1], d / "samples.jsonl",
                                                  s.samples_per_prompt, stage_seed(cfg.seed, t, "sample")))
        m |= run_stage(d, "judge", lambda: judge_samples(oracle, d / "samples.jsonl", d / "judgements.jsonl"))
        m |= run_stage(d, "pairs", lambda: make_pairs(
            d / "judgements.jsonl", d / "pairs.jsonl", rules=rules, iteration=t,
            earlier=[run_dir / f"iter_{t - 1 - k}" / "pairs.jsonl" for k in range(min(t - 1, len(s.replay)))],
            replay_fractions=list(s.replay), seed=stage_seed(cfg.seed, t, "pairs")))
        m |= run_stage(d, "reference", lambda: reference_logps(
            policies.get(pi_t), tokenizer, d / "pairs.jsonl", micro_batch_size=cfg.train.micro_batch_size,
            max_length=cfg.model.max_length))

        def train():
            stats = train_policy(policies.get(pi_t), tokenizer, d / "pairs.jsonl", loss, accelerator=accelerator,
                                 optim=s, epochs=s.epochs, micro_batch_size=cfg.train.micro_batch_size,
                                 grad_accum=grad_accum, max_length=cfg.model.max_length,
                                 seed=stage_seed(cfg.seed, t, "train"))
            save_checkpoint(policies.model, tokenizer, pi_next, accelerator)
            policies.path = pi_next  # the model in memory is now pi_{t+1}
            return stats

        m |= run_stage(d, "train", train)
        m |= run_stage(d, "evaluate", lambda: evaluate_policy(
            policies.get(pi_next), tokenizer, oracle, splits.val, d, init_samples=init / "val_samples.jsonl",
            prev_samples=prev_eval, sampling=cfg.sampling, seed=stage_seed(cfg.seed, t, "evaluate")))
        run_stage(d, "log", lambda: (tracker.log(m, t), m)[1])

    per_iteration = [read_json(run_dir / f"iter_{t}" / "DONE.log") for t in range(1, s.iterations + 1)]
    best = max(range(s.iterations + 1),
               key=lambda t: (per_iteration[t - 1]["eval/win_rate_vs_init"] if t else 50.0, -t))
    final = run_dir / "final"

    def final_samples():
        if best == 0:  # no iterate beat pi_1 on validation: its test samples are already there
            final.mkdir(parents=True, exist_ok=True)
            shutil.copy(init / "test_samples.jsonl", final / "model_samples.jsonl")
            return {}
        return sample(checkpoint(run_dir, best), splits.test, final / "model_samples.jsonl", 1,
                      stage_seed(cfg.seed, 0, "test"), f"pi_{best + 1} test")

    run_stage(final, "sample", final_samples)
    from dno.stages.final import final_evaluation

    metrics = run_stage(final, "evaluate", lambda: final_evaluation(
        oracle, splits.test, final, init_samples=init / "test_samples.jsonl",
        model_samples=final / "model_samples.jsonl", generator=f"{cfg.model.name}-dno-pi_{best + 1}",
        annotator=cfg.oracle._target_.rsplit(".", 1)[-1]))
    summary = {**metrics, "final/best_iteration": best, "final/iterations": s.iterations}
    tracker.summary(summary)
    tracker.finish()
    print(results_table(per_iteration, summary))
    return summary


def results_table(per_iteration: list[dict], summary: dict) -> str:
    rows = ["| iter | WR vs pi_1 (val) | WR vs prev (val) | pairs | student score | len (chars) |",
            "|---|---|---|---|---|---|"]
    for t, m in enumerate(per_iteration, start=1):
        rows.append(f"| {t} | {m['eval/win_rate_vs_init']:.1f} | {m['eval/win_rate_vs_prev']:.1f} | "
                    f"{m['pairs/total']} | {m.get('data/student_score_mean', float('nan')):.2f} | "
                    f"{m['eval/avg_length']:.0f} |")
    rows.append(f"\nFinal (test, pi_{summary['final/best_iteration'] + 1} vs pi_1, n={summary['final/n_total']}): "
                f"win-rate {summary['final/win_rate']:.1f}, LC win-rate {summary['final/lc_win_rate']:.1f}, "
                f"length {summary['final/avg_length']:.0f} vs {summary['final/avg_length_init']:.0f} chars")
    return "\n".join(rows)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"dno-run: config error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
