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
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dno.config import ConfigError, grad_accumulation, validate
from dno.data.splits import Splits, make_splits
from dno.distributed import make_accelerator, same_run_dir, stage
from dno.generation import GenerationError
from dno.oracles.api import BudgetExceeded, OracleError
from dno.pairs import PairRules
from dno.records import read_json, read_jsonl, write_json, write_jsonl
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

            self.release()
            self.model = load_model(self.cfg.model, self.cfg.cache_dir, self.tokenizer,
                                    path=None if path is None else str(path)).to(self.device)
            self.path = path
        return self.model

    def release(self) -> None:
        """Drop the model in memory (before a generation server needs the GPU)."""
        import torch

        self.model, self.path = None, "unloaded"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class Run:
    """What every stage of a run shares; built once, after the config has been checked."""

    cfg: DictConfig
    run_dir: Path
    splits: Splits
    oracle: object
    loss: object
    teacher: object
    tracker: Tracker
    accelerator: object
    grad_accum: int
    rules: PairRules
    tokenizer: object = None
    policies: Policies = None

    def checkpoint(self, iteration: int) -> Path | None:
        """Where pi_{iteration + 1} lives; None for pi_1."""
        return None if iteration == 0 else self.run_dir / f"iter_{iteration}" / "checkpoint"

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def stage(self, directory: Path, name: str, fn, *, everyone: bool = False) -> dict:
        return stage(self.accelerator, directory, name, fn, everyone=everyone)

    def sample(self, policy: Path | None, prompts: list[dict], out: Path, k: int, seed: int, desc: str = "sampling"):
        """In process, every process samples its shard (call on all); see sample_with_server."""
        from dno.stages.sample import sample_responses

        return sample_responses(self.policies.get(policy), self.tokenizer, prompts, out, k=k,
                                sampling=self.cfg.sampling, seed=seed, desc=desc, accelerator=self.accelerator)

    def sample_with_server(self, policy: Path | None, prompts: list[dict], out: Path, k: int, seed: int) -> dict:
        """generation.backend=openai_server, on the main process: a server for `policy` while sampling."""
        from dno.generation import ServerBackend
        from dno.stages.sample import sample_responses

        checkpoint = served_checkpoint(self, policy)
        self.policies.release()
        backend = ServerBackend(self.cfg.generation.server)
        with backend.serving(str(checkpoint), out.parent / "server.log", seed=seed, dtype=self.cfg.model.dtype) as srv:
            return sample_responses(None, self.tokenizer, prompts, out, k=k, sampling=self.cfg.sampling, seed=seed,
                                    server=srv)


def served_checkpoint(r: Run, policy: Path | None) -> str:
    """What the generation server loads: a checkpoint, or pi_1 as given when it is a directory or hub
    id, else pi_1 written once to <run_dir>/init/policy (a GGUF file or random weights)."""
    if policy is not None:
        return str(policy)
    from dno.policy import resolve_path

    path = r.cfg.model.path
    if path and not resolve_path(path).endswith(".gguf"):
        return resolve_path(path)
    target = r.run_dir / "init" / "policy"
    if not target.exists():
        tmp = target.with_name("policy.tmp")
        r.policies.get(None).save_pretrained(tmp)
        r.tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    return str(target)


def prepare(cfg: DictConfig) -> Run:
    """Check and instantiate everything cheap, so that a bad config fails before any compute."""
    accelerator = make_accelerator(cfg.train.process_timeout_min)
    validate(cfg, accelerator.num_processes)
    from dno.policy import check_path

    if cfg.model.path:
        check_path(cfg.model.path)
    s = cfg.schedule
    try:
        oracle, loss, teacher, sink = (instantiate(cfg[k]) for k in ("oracle", "loss", "teacher", "logger"))
        oracle.check()
        from dno.alpacaeval import check as check_eval

        check_eval(cfg)
        if cfg.generation.backend == "openai_server":
            from dno.generation import ServerBackend

            ServerBackend(cfg.generation.server).command("checkpoint", 1, 0, "float32")  # placeholders known
        splits = make_splits(instantiate(cfg.data), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                             n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
        rules = PairRules(**OmegaConf.to_container(s.pairs, resolve=True))
    except (ValueError, InstantiationException) as e:
        raise ConfigError(str(e)) from None
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    same_run_dir(accelerator, run_dir)
    tracker = Tracker(run_dir, sink, enabled=accelerator.is_main_process)  # only the main process logs
    tracker.start(redact(OmegaConf.to_container(cfg, resolve=True)),
                  group=hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None,
                  name=hc.job.override_dirname or run_dir.name,
                  logged_iterations={t for t in range(1, s.iterations + 1)
                                     if (run_dir / f"iter_{t}" / "DONE.log").exists()})
    return Run(cfg, run_dir, splits, oracle, loss, teacher, tracker, accelerator,
               grad_accumulation(cfg, accelerator.num_processes), rules)


def reference(r: Run, policy: Path | None, pairs: Path) -> dict:
    """Reference log-probs of the pairs under `policy`, when the loss has a reference."""
    if not r.loss.needs_reference:
        return {}
    from dno.stages.reference import reference_logps

    return reference_logps(r.policies.get(policy), r.tokenizer, pairs, micro_batch_size=r.cfg.train.micro_batch_size,
                           max_length=r.cfg.model.max_length, accelerator=r.accelerator)


def train(r: Run, start: Path | None, pairs: Path, out: Path, seed: int) -> dict:
    """The update from `start`'s weights on `pairs`, saved to `out`."""
    from dno.stages.train import save_checkpoint, train_policy

    cfg, s = r.cfg, r.cfg.schedule
    stats = train_policy(r.policies.get(start), r.tokenizer, pairs, r.loss, accelerator=r.accelerator, optim=s,
                         epochs=s.epochs, micro_batch_size=cfg.train.micro_batch_size, grad_accum=r.grad_accum,
                         max_length=cfg.model.max_length, seed=seed)
    save_checkpoint(r.policies.model, r.tokenizer, out, r.accelerator)
    if r.accelerator.num_processes == 1:
        r.policies.path = out  # the model in memory is now the trained one
    else:  # wrapped (and under FSDP sharded) for training: read the saved weights back when needed
        r.policies.release()
    return stats


def iteration(r: Run, t: int) -> dict:
    """Algorithm 2, one iteration: sample, judge, pairs, reference log-probs, update, evaluate, log."""
    from dno.stages.evaluate import evaluate_policy
    from dno.stages.judge import judge_samples
    from dno.stages.make_pairs import make_pairs

    cfg, s, seed = r.cfg, r.cfg.schedule, r.cfg.seed
    d, pi_t, pi_next = r.run_dir / f"iter_{t}", r.checkpoint(t - 1), r.checkpoint(t)
    prompts, server = r.splits.iterations[t - 1], cfg.generation.backend == "openai_server"
    sample = r.sample_with_server if server else r.sample
    m = r.stage(d, "sample", lambda: sample(pi_t, prompts, d / "samples.jsonl", s.samples_per_prompt,
                                            stage_seed(seed, t, "sample")), everyone=not server)
    m |= r.stage(d, "judge", lambda: judge_samples(r.oracle, d / "samples.jsonl", d / "judgements.jsonl",
                                                     cfg.max_failed_frac))
    m |= r.stage(d, "pairs", lambda: make_pairs(
        d / "judgements.jsonl", d / "pairs.jsonl", rules=r.rules, iteration=t,
        earlier=[r.run_dir / f"iter_{t - 1 - k}" / "pairs.jsonl" for k in range(min(t - 1, len(s.replay)))],
        replay_fractions=list(s.replay), seed=stage_seed(seed, t, "pairs"), soft=r.loss.needs_soft_targets))
    m |= r.stage(d, "reference", lambda: reference(r, pi_t, d / "pairs.jsonl"), everyone=True)
    m |= r.stage(d, "train", lambda: train(r, pi_t, d / "pairs.jsonl", pi_next, stage_seed(seed, t, "train")),
                 everyone=True)
    prev = r.run_dir / "init" if t == 1 else r.run_dir / f"iter_{t - 1}"
    m |= r.stage(d, "evaluate", lambda: evaluate_policy(
        r.policies.get(pi_next), r.tokenizer, r.oracle, r.splits.val, d,
        init_samples=r.run_dir / "init" / "val_samples.jsonl",
        prev_samples=prev / ("val_samples.jsonl" if t == 1 else "eval_samples.jsonl"),
        sampling=cfg.sampling, seed=stage_seed(seed, t, "evaluate")))

    def log() -> dict:
        r.tracker.log(m, t)
        return m

    return r.stage(d, "log", log)


def best_iterate(per_iteration: list[dict]) -> int:
    """The best of pi_1..pi_{T+1} on validation, as the paper (pi_1 counts 50%; earliest on a tie)."""
    return max(range(len(per_iteration) + 1),
               key=lambda t: (per_iteration[t - 1]["eval/win_rate_vs_init"] if t else 50.0, -t))


def lookahead(r: Run, iterations: int) -> dict:
    """DNO-Lookahead (Table 1): all iterations' new pairs shuffled together, one training from pi_1."""
    from dno.stages.evaluate import evaluate_policy

    d, init_val = r.run_dir / "lookahead", r.run_dir / "init" / "val_samples.jsonl"

    def pairs() -> dict:
        rows = [{k: v for k, v in p.items() if not k.startswith("ref_")}
                for t in range(1, iterations + 1) for p in read_jsonl(r.run_dir / f"iter_{t}" / "pairs.jsonl")
                if p["source_iteration"] == t]
        write_jsonl(d / "pairs.jsonl", rows)
        return {"lookahead/pairs": len(rows)}

    m = r.stage(d, "pairs", pairs)
    m |= r.stage(d, "reference", lambda: reference(r, None, d / "pairs.jsonl"), everyone=True)
    m |= r.stage(d, "train", lambda: train(r, None, d / "pairs.jsonl", d / "checkpoint",
                                           stage_seed(r.cfg.seed, iterations + 1, "train")), everyone=True)
    m |= r.stage(d, "evaluate", lambda: evaluate_policy(
        r.policies.get(d / "checkpoint"), r.tokenizer, r.oracle, r.splits.val, d, init_samples=init_val,
        prev_samples=init_val, sampling=r.cfg.sampling, seed=stage_seed(r.cfg.seed, iterations + 1, "evaluate")))
    return {k.replace("eval/", "lookahead/").replace("train/", "lookahead/train_"): v for k, v in m.items()
            if k.startswith(("eval/win_rate_vs_init", "train/loss", "lookahead/"))}


def final_stage(r: Run, label: str, policy: Path | None) -> dict:
    """`policy` (None: pi_1 itself) evaluated by `eval=` (dno-eval's code) into <run_dir>/final."""
    from dno.alpacaeval import final_evaluation

    return final_evaluation(r.cfg, r.run_dir / "final", policy=lambda: r.policies.get(policy), tokenizer=r.tokenizer,
                            oracle=r.oracle, test_prompts=r.splits.test,
                            baseline_samples=r.run_dir / "init" / "test_samples.jsonl",
                            generator=f"{r.cfg.model.name}-dno-{label}", same_as_baseline=policy is None)


def teacher_answers(r: Run) -> dict:
    """Gold answers for the iterations' prompts (init/gold.json); the data's own win if it has them."""
    prompts = [p for part in r.splits.iterations for p in part if not p.get("gold")]
    key = {"model": OmegaConf.to_container(r.cfg.model, resolve=True),
           "oracle": OmegaConf.to_container(r.cfg.oracle, resolve=True),
           "sampling": OmegaConf.to_container(r.cfg.sampling, resolve=True)}
    gold = r.teacher.gold(
        policy=lambda: r.policies.get(None), tokenizer=r.tokenizer, oracle=r.oracle, prompts=prompts,
        sampling=r.cfg.sampling, seed=stage_seed(r.cfg.seed, 0, "teacher"), cache_dir=r.cfg.cache_dir, key=key)
    write_json(r.run_dir / "init" / "gold.json", gold)
    return {"data/gold_answers": len(gold)}


def start(cfg: DictConfig) -> Run:
    """Everything before iteration 1: checks, tokenizer, pi_1's validation and test answers, gold answers."""
    r = prepare(cfg)
    from dno.policy import load_tokenizer

    r.tokenizer = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    r.policies = Policies(cfg, r.tokenizer, r.accelerator.device)
    init, seed = r.run_dir / "init", cfg.seed
    r.stage(init, "val_samples", lambda: r.sample(None, r.splits.val, init / "val_samples.jsonl", 1,
                                                  stage_seed(seed, 0, "val"), "pi_1 validation"), everyone=True)
    r.stage(init, "test_samples", lambda: r.sample(None, r.splits.test, init / "test_samples.jsonl", 1,
                                                   stage_seed(seed, 0, "test"), "pi_1 test"), everyone=True)
    r.stage(init, "gold", lambda: teacher_answers(r))
    gold = read_json(init / "gold.json")
    for t, part in enumerate(r.splits.iterations, start=1):
        r.splits.iterations[t - 1] = [{**p, "gold": gold[p["id"]]} if p["id"] in gold else p for p in part]
    return r


def run(cfg: DictConfig) -> dict:
    r = start(cfg)
    T = cfg.schedule.iterations
    per_iteration = [iteration(r, t) for t in range(1, T + 1)]
    if cfg.schedule.lookahead:
        lookahead_metrics = lookahead(r, T)
    if not r.main:  # the final evaluation, the summary and W&B belong to the main process
        r.accelerator.wait_for_everyone()
        return {}
    if cfg.schedule.lookahead:
        summary = {**lookahead_metrics, "final/model": "lookahead", "final/best_iteration": T}
        summary |= final_stage(r, "lookahead", r.run_dir / "lookahead" / "checkpoint")
    else:
        best = best_iterate(per_iteration)
        summary = {"final/model": f"pi_{best + 1}", "final/best_iteration": best}
        summary |= final_stage(r, f"pi_{best + 1}", r.checkpoint(best))
    summary["final/iterations"] = T
    r.tracker.summary(summary)
    r.tracker.finish()
    print(results_table(per_iteration, summary))
    r.accelerator.wait_for_everyone()
    return summary


def results_table(per_iteration: list[dict], summary: dict) -> str:
    rows = ["| iter | WR vs pi_1 (val) | WR vs prev (val) | pairs | student score | len (chars) |",
            "|---|---|---|---|---|---|"]
    for t, m in enumerate(per_iteration, start=1):
        rows.append(f"| {t} | {m['eval/win_rate_vs_init']:.1f} | {m['eval/win_rate_vs_prev']:.1f} | "
                    f"{m['pairs/total']} | {m.get('data/student_score_mean', float('nan')):.2f} | "
                    f"{m['eval/avg_length']:.0f} |")
    rows.append(f"\nFinal ({summary['final/model']} vs {summary['alpaca_eval/baseline']}, "
                f"n={summary['alpaca_eval/n_total']}, judge {summary['alpaca_eval/annotator']}): "
                f"win-rate {summary['alpaca_eval/win_rate']:.1f}, "
                f"LC win-rate {summary['alpaca_eval/lc_win_rate']:.1f}, "
                f"length {summary['alpaca_eval/avg_length']:.0f} chars")
    return "\n".join(rows)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"dno-run: config error: {e}", file=sys.stderr)
        sys.exit(2)
    except (BudgetExceeded, OracleError, GenerationError) as e:  # a re-run resumes (paid judgements are cached)
        log.error("%s", e)
        print(f"dno-run: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
