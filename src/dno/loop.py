"""DNO-Prct (Algorithm 2 of arXiv 2404.03715), iteration by iteration, resumable.

`train_dno(run)` is what dno-run does: pi_1's validation and test answers and the teacher's
answers (`initial`), then T iterations of sample -> judge -> pairs -> reference log-probs ->
update -> evaluate -> log, then the final stage on the best iterate. Each stage writes files under
<run_dir>/iter_<t>/ and a DONE.<stage> marker; re-running with the same run directory skips every
finished stage. `evaluate_checkpoint` is dno-eval: the final stage alone, on any checkpoint.

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
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dno.config import ConfigError
from dno.records import read_json, read_judgements, read_pairs, write_json, write_jsonl
from dno.run import Run
from dno.signals import Preempted
from dno.stages.evaluate import evaluate_policy
from dno.stages.final import final_evaluation
from dno.stages.judge import judge_samples
from dno.stages.make_pairs import make_pairs

log = logging.getLogger(__name__)


def reference(run: Run, policy: Path | None, pairs: Path) -> dict:
    """Reference log-probs of the pairs under `policy` (pi_t), when the objective has a reference."""
    if not run.variant.objective.needs_reference:
        return {}
    from dno.stages.reference import reference_logps

    return reference_logps(run.policies.get(policy), run.tokenizer, pairs,
                           micro_batch_size=run.cfg.train.micro_batch_size,
                           max_length=run.cfg.model.max_length, accelerator=run.accelerator)


def update(run: Run, start: Path | None, pairs: Path, out: Path, seed: int) -> dict:
    """The update from `start`'s weights on `pairs`, saved to `out` (Algorithm 2, step 5)."""
    from dno.adapters import add_adapter, lora_enabled, save_and_merge
    from dno.stages.train import save_checkpoint, train_policy

    cfg, s = run.cfg, run.cfg.schedule
    model = run.policies.get(start)
    if lora_enabled(cfg.model):  # a fresh adapter on pi_t, merged into pi_{t+1} (dno.adapters)
        model = add_adapter(model, cfg.model.lora, seed)
    stats = train_policy(model, run.tokenizer, pairs, run.variant.objective,
                         accelerator=run.accelerator, optim=s, epochs=s.epochs,
                         micro_batch_size=cfg.train.micro_batch_size, grad_accum=run.grad_accum,
                         max_length=cfg.model.max_length, seed=seed)
    if lora_enabled(cfg.model):
        base = str(start) if start is not None else (cfg.model.path or cfg.model.name)
        run.policies.model = model = save_and_merge(model, out.parent / "adapter", run.accelerator, base)
    save_checkpoint(model, run.tokenizer, out, run.accelerator)
    if run.accelerator.num_processes == 1:
        run.policies.path = out  # the model in memory is now the trained one
    else:  # wrapped (and under FSDP sharded) for training: read the saved weights back when needed
        run.policies.release()
    return stats


def iteration(run: Run, t: int) -> dict:
    """Algorithm 2, one iteration: sample, judge, pairs, reference log-probs, update, evaluate, log."""
    cfg, s, v = run.cfg, run.cfg.schedule, run.variant
    d, pi_t, pi_next = run.run_dir / f"iter_{t}", run.checkpoint(t - 1), run.checkpoint(t)
    prompts, server = with_teacher(run, run.splits.iterations[t - 1]), cfg.generation.backend == "openai_server"
    sample = run.sample_with_server if server else run.sample
    m = run.stage(d, "sample", lambda: sample(pi_t, prompts, d / "samples.jsonl", s.samples_per_prompt,
                                              run.seed(t, "sample")), everyone=not server,
                   outputs=("samples.jsonl",))
    m |= run.stage(d, "judge", lambda: judge_samples(run.oracle, d / "samples.jsonl", d / "judgements.jsonl",
                                                     cfg.max_failed_frac, cfg.max_invalid_frac),
                   outputs=("judgements.jsonl",))
    m |= run.stage(d, "pairs", lambda: make_pairs(
        d / "judgements.jsonl", d / "pairs.jsonl", rule=v.pairs, cap=s.max_pairs_per_prompt, iteration=t,
        earlier=[run.run_dir / f"iter_{t - 1 - k}" / "pairs.jsonl" for k in range(min(t - 1, len(v.replay)))],
        replay_fractions=list(v.replay), seed=run.seed(t, "pairs")), outputs=("pairs.jsonl",))
    m |= run.stage(d, "reference", lambda: reference(run, pi_t, d / "pairs.jsonl"), everyone=True,
                   outputs=("pairs.jsonl",))
    m |= run.stage(d, "train", lambda: update(run, pi_t, d / "pairs.jsonl", pi_next, run.seed(t, "train")),
                   everyone=True, outputs=("checkpoint",))
    prev = run.run_dir / "init" if t == 1 else run.run_dir / f"iter_{t - 1}"
    m |= run.stage(d, "evaluate", lambda: evaluate_policy(
        run.policies.get(pi_next), run.tokenizer, run.oracle, run.splits.val, d,
        init_samples=run.run_dir / "init" / "val_samples.jsonl",
        prev_samples=prev / ("val_samples.jsonl" if t == 1 else "eval_samples.jsonl"),
        sampling=cfg.sampling, seed=run.seed(t, "evaluate")), outputs=("eval_samples.jsonl", "eval_judgements.jsonl"))

    def log() -> dict:
        metrics = m | (run.data_stats if t == 1 else {})  # what reading the prompt set dropped, once
        run.tracker.table(f"samples/iter_{t}", sample_table(d / "judgements.jsonl"), t)
        run.tracker.artifact("pairs", d / "pairs.jsonl", alias=f"iter_{t}",
                             metadata={"iteration": t, "pairs": metrics.get("pairs/total")})
        run.tracker.log(metrics, t)
        return metrics

    return run.stage(d, "log", log)


def sample_table(judgements: Path) -> list[dict]:
    """An iteration's responses as rows to read in W&B: one per response, with the judge's view."""
    rows = []
    for j in read_judgements(judgements):
        scores, win_probs = j["judgement"].get("scores") or [], j.get("win_probs") or []
        for k, response in enumerate(j["responses"]):
            rows.append({"prompt_id": j["id"], "prompt": j["instruction"], "k": k, "response": response,
                         "score": scores[k] if k < len(scores) else None,
                         "win_prob": win_probs[k] if k < len(win_probs) else None,
                         "judge_status": j["judgement"]["status"]})
    return rows


def log_answers(tracker, final_dir: Path) -> None:
    """The final stage's answers beside the baseline's, with the judge's preference, as a W&B Table."""
    annotations = final_dir / "annotations.json"
    if annotations.exists():
        tracker.table("eval/answers", [{k: a.get(k) for k in ("instruction", "generator_1", "output_1",
                                                              "generator_2", "output_2", "preference")}
                                       for a in read_json(annotations)])


def best_iterate(per_iteration: list[dict]) -> int:
    """The best of pi_1..pi_{T+1} on validation, as the paper (pi_1 counts 50%; earliest on a tie). An
    iterate whose validation the judge never judged validly is not a candidate (and is named)."""
    unjudged = [t for t, m in enumerate(per_iteration, start=1) if "eval/win_rate_vs_init" not in m]
    if unjudged:
        log.warning("no valid validation judgement of %s: not candidates for the final model",
                    ", ".join(f"pi_{t + 1}" for t in unjudged))
    return max((t for t in range(len(per_iteration) + 1) if t not in unjudged),
               key=lambda t: (per_iteration[t - 1]["eval/win_rate_vs_init"] if t else 50.0, -t))


def lookahead(run: Run, iterations: int) -> dict:
    """DNO-Lookahead (Table 1): all iterations' new pairs shuffled together, one training from pi_1."""
    d, init_val = run.run_dir / "lookahead", run.run_dir / "init" / "val_samples.jsonl"

    def pairs() -> dict:
        rows = [{k: v for k, v in p.items() if not k.startswith("ref_")}
                for t in range(1, iterations + 1) for p in read_pairs(run.run_dir / f"iter_{t}" / "pairs.jsonl")
                if p["source_iteration"] == t]
        write_jsonl(d / "pairs.jsonl", rows)
        return {"lookahead/pairs": len(rows)}

    m = run.stage(d, "pairs", pairs, outputs=("pairs.jsonl",))
    m |= run.stage(d, "reference", lambda: reference(run, None, d / "pairs.jsonl"), everyone=True,
                   outputs=("pairs.jsonl",))
    m |= run.stage(d, "train", lambda: update(run, None, d / "pairs.jsonl", d / "checkpoint",
                                              run.seed(iterations + 1, "train")), everyone=True,
                   outputs=("checkpoint",))
    m |= run.stage(d, "evaluate", lambda: evaluate_policy(
        run.policies.get(d / "checkpoint"), run.tokenizer, run.oracle, run.splits.val, d, init_samples=init_val,
        prev_samples=init_val, sampling=run.cfg.sampling, seed=run.seed(iterations + 1, "evaluate")),
        outputs=("eval_samples.jsonl", "eval_judgements.jsonl"))
    return {k.replace("eval/", "lookahead/").replace("train/", "lookahead/train_"): v for k, v in m.items()
            if k.startswith(("eval/win_rate_vs_init", "train/loss", "lookahead/"))}


def final_stage(run: Run, label: str, policy: Path | None) -> dict:
    """`policy` (None: pi_1 itself) evaluated by `eval=` (dno-eval's code) into <run_dir>/final."""
    return final_evaluation(run.cfg, run.run_dir / "final", policy=lambda: run.policies.get(policy),
                            tokenizer=run.tokenizer, oracle=run.oracle, test_prompts=run.splits.test,
                            baseline_samples=run.run_dir / "init" / "test_samples.jsonl",
                            generator=f"{run.cfg.model.name}-dno-{label}", same_as_baseline=policy is None)


def teacher_answers(run: Run) -> dict:
    """Teacher answers for the iterations' prompts (init/teacher.json); the data's own win if it has them."""
    prompts = [p for part in run.splits.iterations for p in part if not p.get("teacher")]
    key = {"model": OmegaConf.to_container(run.cfg.model, resolve=True),
           "oracle": OmegaConf.to_container(run.cfg.oracle, resolve=True),
           "sampling": OmegaConf.to_container(run.cfg.sampling, resolve=True)}
    answers = run.teacher.answers(
        policy=lambda: run.policies.get(None), tokenizer=run.tokenizer, oracle=run.oracle, prompts=prompts,
        sampling=run.cfg.sampling, seed=run.seed(0, "teacher"), cache_dir=run.cfg.cache_dir, key=key)
    write_json(run.run_dir / "init" / "teacher.json", answers)
    return {"data/teacher_answers": len(answers)}


def initial(run: Run) -> None:
    """Everything before iteration 1: pi_1's validation and test answers, the teacher's answers."""
    init = run.run_dir / "init"
    run.stage(init, "val_samples", lambda: run.sample(None, run.splits.val, init / "val_samples.jsonl", 1,
                                                      run.seed(0, "val"), "pi_1 validation"), everyone=True,
              outputs=("val_samples.jsonl",))
    run.stage(init, "test_samples", lambda: run.sample(None, run.splits.test, init / "test_samples.jsonl", 1,
                                                       run.seed(0, "test"), "pi_1 test"), everyone=True,
              outputs=("test_samples.jsonl",))
    run.stage(init, "teacher", lambda: teacher_answers(run), outputs=("teacher.json",))


def with_teacher(run: Run, prompts: list[dict]) -> list[dict]:
    """`prompts` with the teacher's answers of init/teacher.json where the data had none."""
    answers = read_json(run.run_dir / "init" / "teacher.json")
    return [{**p, "teacher": answers[p["id"]]} if p["id"] in answers else p for p in prompts]


def train_dno(run: Run) -> dict:
    """The whole algorithm: initial stages, T iterations (and Lookahead's training), the final stage."""
    try:
        return _train_dno(run)
    except Preempted:
        run.tracker.preempted()
        raise


def _train_dno(run: Run) -> dict:
    initial(run)
    T = run.cfg.schedule.iterations
    per_iteration = [iteration(run, t) for t in range(1, T + 1)]
    if run.variant.lookahead:
        lookahead_metrics = lookahead(run, T)
    if not run.main:  # the final evaluation, the summary and W&B belong to the main process
        run.accelerator.wait_for_everyone()
        return {}
    if run.variant.lookahead:
        summary = {**lookahead_metrics, "final/model": "lookahead", "final/best_iteration": T}
        summary |= final_stage(run, "lookahead", run.run_dir / "lookahead" / "checkpoint")
    else:
        best = best_iterate(per_iteration)
        summary = {"final/model": f"pi_{best + 1}", "final/best_iteration": best}
        summary |= final_stage(run, f"pi_{best + 1}", run.checkpoint(best))
    summary["final/iterations"] = T
    log_answers(run.tracker, run.run_dir / "final")
    run.tracker.summary(summary)
    run.tracker.finish()
    print(results_table(per_iteration, summary))
    run.accelerator.wait_for_everyone()
    return summary


def results_table(per_iteration: list[dict], summary: dict) -> str:
    rows = ["| iter | WR vs pi_1 (val) | WR vs prev (val) | pairs | student score | len (chars) |",
            "|---|---|---|---|---|---|"]
    for t, m in enumerate(per_iteration, start=1):
        wr_init, wr_prev = (m.get(f"eval/win_rate_vs_{k}", float("nan")) for k in ("init", "prev"))
        rows.append(f"| {t} | {wr_init:.1f} | {wr_prev:.1f} | "
                    f"{m['pairs/total']} | {m.get('data/student_score_mean', float('nan')):.2f} | "
                    f"{m['eval/avg_length']:.0f} |")
    rows.append(f"\nFinal ({summary['final/model']} vs {summary['alpaca_eval/baseline']}, "
                f"n={summary['alpaca_eval/n_total']}, judge {summary['alpaca_eval/annotator']}): "
                f"win-rate {summary['alpaca_eval/win_rate']:.1f}, "
                f"LC win-rate {summary['alpaca_eval/lc_win_rate']:.1f}, "
                f"length {summary['alpaca_eval/avg_length']:.0f} chars")
    return "\n".join(rows)


def evaluate_checkpoint(cfg: DictConfig, out: Path, *, group: str | None = None, name: str | None = None,
                        loss_choice: str = "?") -> dict:
    """dno-eval: the final stage alone, on `cfg.checkpoint` (null: the configured model itself), into `out`."""
    if cfg.checkpoint and not Path(cfg.checkpoint).exists():
        raise ConfigError(f"checkpoint={cfg.checkpoint} does not exist")
    run = Run.build(cfg, out, group=group, name=name, loss_choice=loss_choice)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    baseline = out / "baseline_samples.jsonl"
    if cfg.eval.name == "local":  # pi_1's test answers, drawn as dno-run's init/test_samples are
        run.stage(out, "baseline", lambda: run.sample(None, run.splits.test, baseline, 1, run.seed(0, "test"),
                                                      "pi_1 test"), everyone=True,
                  outputs=(baseline.name,))
    generator = f"{cfg.model.name}-{ckpt.parent.name if ckpt else 'init'}"
    summary = final_evaluation(cfg, out, policy=lambda: run.policies.get(ckpt), tokenizer=run.tokenizer,
                               oracle=run.oracle, test_prompts=run.splits.test, baseline_samples=baseline,
                               generator=cfg.get("name") or generator, same_as_baseline=ckpt is None)
    log_answers(run.tracker, out)
    run.tracker.summary(summary)
    run.tracker.finish()
    return summary
