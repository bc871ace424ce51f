"""DNO-Prct (Algorithm 2 of arXiv 2404.03715), iteration by iteration, resumable.

`train_dno(run)` is what dno-run does: pi_1's validation and test answers and the teacher's
answers (`initial`), then T iterations of sample -> judge -> pairs -> reference log-probs ->
update -> evaluate -> log, then the final stage on the best iterate (dno.final: every benchmark of
`eval=[...]`). Each stage writes files into the run directory (dno.runtime.layout) and a marker when it is
done; re-running with the same run directory skips every finished stage.

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
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from dno.data import Prompt
from dno.final import final_stage, headline
from dno.oracles.ledger import cost_metrics, read_ledger
from dno.plan import plan_metrics
from dno.run import Run
from dno.runtime.files import read_json, write_json
from dno.runtime.layout import IterationDir, RunDir
from dno.runtime.signals import Preempted
from dno.stages.evaluate import evaluate_policy
from dno.stages.judge import JudgeLimits, judge_samples
from dno.stages.make_pairs import make_pairs
from dno.stages.records import Judged, PairRow, read_rows, write_rows
from dno.teacher import TeacherCache

log = logging.getLogger(__name__)


def iteration(run: Run, t: int) -> dict:
    """Algorithm 2, iteration t: from pi_t's samples to pi_{t+1}, evaluated and logged."""
    d, pi_t, pi_next = run.dir.iteration(t), run.checkpoint(t - 1), run.checkpoint(t)

    # step 2: K answers per prompt of this iteration's fresh prompts, sampled from pi_t
    m = run.stage(d, "sample", lambda: sample(run, pi_t, t), (d.samples,), everyone=not run.served)

    # step 3: the oracle judges each prompt's answers (and the teacher's); r_t(x, y) of each. With a router
    # (router=distilled), a student trained on the judge's verdicts so far answers where it is sure
    if run.router.routes(t):
        m |= run.stage(d, "student", lambda: run.router.train(run.dir, t, run.seed(t, "student")))
    m |= run.stage(d, "judge", lambda: judge(run, d, t), (d.judgements,))

    # step 4: the variant's pair rule (the paper's: large margins), plus replay of earlier iterations' pairs
    m |= run.stage(d, "pairs", lambda: pairs(run, t), (d.pairs,))

    # step 5: pi_t's log-probs of every pair (Eq. 13's reference), then the update from pi_t: pi_{t+1}
    m |= run.stage(d, "reference", lambda: reference(run, pi_t, d.pairs), (d.pairs,), everyone=True)
    m |= run.stage(d, "train", lambda: update(run, pi_t, d, run.seed(t, "train")), (d.checkpoint,), everyone=True)

    # pi_{t+1} against pi_1 and pi_t on the validation prompts: the best iterate is chosen by these
    m |= run.stage(d, "evaluate", lambda: validate(run, pi_next, d, run.dir.validation_samples(t),
                                                    run.seed(t, "evaluate")), (d.eval_samples, d.eval_judgements))

    # metrics.jsonl and W&B, with the iteration's answers as a Table and its pairs as an artifact
    return run.stage(d, "log", lambda: log_iteration(run, t, m))


def sample(run: Run, policy: Path | None, t: int) -> dict:
    """Step 2 of iteration t: K answers per prompt from `policy`, in process or on a generation server."""
    prompts, k, seed = with_teacher(run, run.splits.iterations[t - 1]), run.cfg.schedule.samples_per_prompt, \
        run.seed(t, "sample")
    d = run.dir.iteration(t)
    if run.served:
        return run.sample_with_server(policy, prompts, d, k, seed)
    from dno.stages.sample import sample_responses

    return sample_responses(run.sampler(policy), prompts, d.samples, k=k, seed=seed)


def judge(run: Run, d: IterationDir, t: int) -> dict:
    """Step 3: the oracle's judgements of d's samples (through the router from iteration 2 on, when there is
    one); stops (OracleError) on a judge that is down or cannot judge (`max_failed_frac`, `max_invalid_frac`)."""
    limits = JudgeLimits(run.cfg.max_failed_frac, run.cfg.max_invalid_frac)
    if run.router.routes(t):
        from dno.stages.route import RoutedJudge, routed_judgements

        return routed_judgements(RoutedJudge(run.router, run.oracle, limits, run.seed(t, "route")), d, t)
    return judge_samples(run.oracle, d.samples, d.judgements, limits)


def pairs(run: Run, t: int) -> dict:
    """Step 4 of iteration t: the variant's pairs and replay, at most `schedule.max_pairs_per_prompt` per prompt."""
    return make_pairs(run.dir, t, run.variant, run.cfg.schedule.max_pairs_per_prompt, run.seed(t, "pairs"))


def reference(run: Run, policy: Path | None, pairs: Path) -> dict:
    """Reference log-probs of the pairs under `policy` (pi_t), when the objective has a reference."""
    if not run.variant.objective.needs_reference:
        return {}
    from dno.stages.reference import reference_logps

    return reference_logps(run.policies.get(policy), run.tokenizer, pairs, run.train, run.accelerator)


def update(run: Run, start: Path | None, d: IterationDir, seed: int) -> dict:
    """The update from `start`'s weights on d's pairs, saved to d's checkpoint (Algorithm 2, step 5)."""
    from dno.policy.lora import add_adapter, lora_enabled, save_and_merge
    from dno.stages.train import save_checkpoint, train_policy

    cfg = run.cfg
    model = run.policies.get(start)
    if lora_enabled(cfg.model):  # a fresh adapter on pi_t, merged into pi_{t+1} (dno.policy.lora)
        model = add_adapter(model, cfg.model.lora, seed)
    stats = train_policy(model, run.tokenizer, d.pairs, run.variant.objective, replace(run.train, seed=seed),
                         run.accelerator)
    if lora_enabled(cfg.model):
        base = str(start) if start is not None else (cfg.model.path or cfg.model.name)
        run.policies.model = model = save_and_merge(model, d.adapter, run.accelerator, base)
    save_checkpoint(model, run.tokenizer, d.checkpoint, run.accelerator)
    if run.accelerator.num_processes == 1:
        run.policies.path = d.checkpoint  # the model in memory is now the trained one
    else:  # wrapped (and under FSDP sharded) for training: read the saved weights back when needed
        run.policies.release()
    return stats


def validate(run: Run, policy: Path, d: IterationDir, previous: Path, seed: int) -> dict:
    """`policy` against pi_1 and against the policy whose validation answers are `previous`."""
    return evaluate_policy(run.sampler(policy, sharded=False), run.oracle, run.splits.val, d,
                           (run.dir.init.val_samples, previous), seed)


def log_iteration(run: Run, t: int, metrics: dict) -> dict:
    """The iteration's metrics to metrics.jsonl and W&B (with what reading the prompt set dropped, once)."""
    d = run.dir.iteration(t)
    metrics = metrics | (run.data_stats if t == 1 else {}) | plan_metrics(run.plan, t, metrics) | \
        iteration_bill(run, t)
    run.tracker.table(f"samples/{d.name}", sample_table(d.judgements), t)
    if d.routing.exists():  # the audit slice: the student's and the judge's verdicts side by side
        from dno.stages.route import audit_table

        run.tracker.table(f"router_audit/{d.name}", audit_table(d.routing), t)
    run.tracker.artifact("pairs", d.pairs, alias=d.name, metadata={"iteration": t, "pairs": metrics.get("pairs/total")})
    run.tracker.log(metrics, t)
    return metrics


def iteration_bill(run: Run, t: int) -> dict:
    """What iteration t paid its judges, from the run's ledger: `cost/judge/*`, `cost/validation/*` (and at t = 1
    the teacher's, paid before it), `cost/total_usd` the iteration's."""
    rows = [r for r in read_ledger(run.dir.ledger) if r.get("iteration") == t or (t == 1 and r.get("iteration") == 0)]
    return cost_metrics(rows)


def run_bill(run_dir) -> dict:
    """The whole run's judge bill from its ledger: `cost/<stage>/*`, `cost/total_usd`; and `oracle/usd`, whose W&B
    summary was the last iteration's, as the training judge's total."""
    bill = cost_metrics(read_ledger(RunDir(run_dir).ledger))
    return bill | {"oracle/usd": bill.get("cost/judge/usd", 0.0)}


def router_summary(per_iteration: list[dict]) -> dict:
    """With a router: the paid share over the routed iterations, the dollars not paid, and the last iteration's
    router/* (summary.json and the W&B summary)."""
    routed = [m for m in per_iteration if "router/paid_share" in m]
    if not routed:
        return {}
    last = {k: v for k, v in routed[-1].items() if k.startswith("router/")}
    return last | {"router/mean_paid_share": sum(m["router/paid_share"] for m in routed) / len(routed),
                   "cost/router_saved_usd": sum(m.get("cost/router_saved_usd", 0.0) for m in routed)}


def sample_table(judgements: Path) -> list[dict]:
    """An iteration's answers as rows to read in W&B: one per candidate, with the judge's view."""
    rows = []
    for j in read_rows(judgements, Judged):
        scores, win_probs = j.judgement.scores or [], j.win_probs or []
        for k, text in enumerate(j.candidates):
            rows.append({"prompt_id": j.prompt.id, "prompt": j.prompt.as_text(), "k": k, "response": text,
                         "teacher": j.is_teacher(k), "score": scores[k] if k < len(scores) else None,
                         "win_prob": win_probs[k] if k < len(win_probs) else None,
                         "judge_status": j.judgement.status})
    return rows


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
    d = run.dir.lookahead

    def all_pairs() -> dict:
        rows = [p.with_reference(None, None) for t in range(1, iterations + 1)
                for p in read_rows(run.dir.iteration(t).pairs, PairRow) if p.source_iteration == t]
        write_rows(d.pairs, rows)
        return {"lookahead/pairs": len(rows)}

    m = run.stage(d, "pairs", all_pairs, (d.pairs,))
    m |= run.stage(d, "reference", lambda: reference(run, None, d.pairs), (d.pairs,), everyone=True)
    m |= run.stage(d, "train", lambda: update(run, None, d, run.seed(iterations + 1, "train")), (d.checkpoint,),
                   everyone=True)
    m |= run.stage(d, "evaluate", lambda: validate(run, d.checkpoint, d, run.dir.init.val_samples,
                                                    run.seed(iterations + 1, "evaluate")),
                   (d.eval_samples, d.eval_judgements))
    return {k.replace("eval/", "lookahead/").replace("train/", "lookahead/train_"): v for k, v in m.items()
            if k.startswith(("eval/win_rate_vs_init", "train/loss", "lookahead/"))}


def teacher_answers(run: Run) -> dict:
    """Teacher answers for the iterations' prompts (init/teacher.json) where the data has none."""
    prompts = [p for part in run.splits.iterations for p in part if not p.teacher]
    key = {"model": OmegaConf.to_container(run.cfg.model, resolve=True),
           "oracle": OmegaConf.to_container(run.cfg.oracle, resolve=True),
           "sampling": OmegaConf.to_container(run.cfg.sampling, resolve=True)}
    answers = run.teacher.answers(prompts, sampler=lambda: run.sampler(None, sharded=False), oracle=run.oracle,
                                  seed=run.seed(0, "teacher"), cache=TeacherCache(Path(run.cfg.cache_dir) / "teachers",
                                                                                  key))
    write_json(run.dir.init.teacher, answers)
    return {"data/teacher_answers": len(answers)}


def initial(run: Run) -> None:
    """Everything before iteration 1: pi_1's validation and test answers, the teacher's answers."""
    init = run.dir.init
    run.stage(init, "val_samples", lambda: pi_1_answers(run, run.splits.val, init.val_samples, "val"),
              (init.val_samples,), everyone=True)
    run.stage(init, "test_samples", lambda: pi_1_answers(run, run.splits.test, init.test_samples, "test"),
              (init.test_samples,), everyone=True)
    run.stage(init, "teacher", lambda: teacher_answers(run), (init.teacher,))


def pi_1_answers(run: Run, prompts: list[Prompt], out: Path, split: str) -> dict:
    """One answer of pi_1 per prompt of the validation or test split (every process samples its share)."""
    from dno.stages.sample import sample_responses

    return sample_responses(run.sampler(None), prompts, out, k=1, seed=run.seed(0, split),
                            desc=f"pi_1 {'validation' if split == 'val' else split}")


def with_teacher(run: Run, prompts: list[Prompt]) -> list[Prompt]:
    """`prompts` with the teacher's answers of init/teacher.json where the data had none."""
    answers = read_json(run.dir.init.teacher)
    return [p.with_teacher(answers[p.id]) if p.id in answers else p for p in prompts]


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
        summary |= final_stage(run, "lookahead", run.dir.lookahead.checkpoint)
    else:
        best = best_iterate(per_iteration)
        summary = {"final/model": f"pi_{best + 1}", "final/best_iteration": best}
        summary |= final_stage(run, f"pi_{best + 1}", run.checkpoint(best))
    summary["final/iterations"] = T
    summary |= run_bill(run.run_dir) | router_summary(per_iteration)
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
    rows += ["", f"Final: {summary['final/model']}", *headline(summary)]
    if summary.get("cost/total_requests"):
        rows.append(f"Judge bill: ${summary['cost/total_usd']:,.4f} for {summary['cost/total_requests']} paid requests "
                    "(the run's ledger)")
    return "\n".join(rows)
