"""The judge's bill, measured: the smoke schedule judged by the scripted judge server on 127.0.0.1 (the tests'
stand-in for an OpenAI-compatible API, billed at GPT-4-Turbo's list price), paid directly and through the Batch
API; the plan made before the run against what was paid; and the README's plan of the paper's setting.

    .venv/bin/python experiments/judge_bill.py [out=outputs/judge_bill] > results/judge_bill.md
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from judge_server import JudgeServer  # noqa: E402 - the tests' scripted judge

ITERATIONS = int(os.environ.get("ITERATIONS", "3"))  # a test runs 2
SMOKE = ["model=tiny_random", "schedule=smoke", f"schedule.iterations={ITERATIONS}", "oracle=openai_listwise",
         "oracle.model=scripted-judge", "oracle.api_key_env=null", "oracle.price_input_per_1m=10",
         "oracle.price_output_per_1m=30", "logger=none"]
PAPER = ["plan=true", "model=mistral_7b_instruct", "schedule=paper", "oracle=openai_listwise", "schedule.iterations=6",
         "plan_inputs.prompts_per_iteration=100000", "plan_inputs.instruction_chars=600",
         "plan_inputs.answer_chars=2800", "plan_inputs.teacher_share=1", "plan_inputs.pairs_per_prompt=3",
         "plan_inputs.bench=results/bench.json"]


def dno_run(*args: str) -> float:
    start = time.time()
    subprocess.run([str(REPO / ".venv" / "bin" / "dno-run"), *args], cwd=REPO, check=True, capture_output=True,
                   env={"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    return time.time() - start


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def main(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with JudgeServer() as server:
        judge = [f"oracle.base_url={server.url}"]
        dno_run(*SMOKE, *judge, "plan=true", f"hydra.run.dir={out / 'plan'}")
        seconds = {mode: dno_run(*SMOKE, *judge, f"oracle.cache_path={out / mode}.sqlite",
                                 f"hydra.run.dir={out / mode}",
                                 *(["oracle.batch=true", "oracle.batch_poll_s=0.05"] if mode == "batch" else []))
                   for mode in ("direct", "batch")}
    plan = json.loads((out / "plan" / "plan.json").read_text())
    direct, batch = metrics(out / "direct"), metrics(out / "batch")
    paid = {m: sum(r["oracle/usd"] for r in rows) for m, rows in (("direct", direct), ("batch", batch))}
    planned = plan["total"]["judge_usd"]
    left = direct[0]["plan/remaining_judge_usd"]
    paid_left = sum(r["oracle/usd"] for r in direct[1:])
    dno_run(*PAPER, f"hydra.run.dir={out / 'paper'}")
    paper = json.loads((out / "paper" / "plan.json").read_text())
    lines = [
        "# The judge's bill (experiments/judge_bill.py)", "",
        f"The smoke schedule with {ITERATIONS} iterations (6 prompts x 4 samples each), the listwise judge played by "
        "the scripted judge server on 127.0.0.1 and billed at GPT-4-Turbo's list price ($10 and $30 per million "
        "prompt and completion tokens, the server's own token counts): once with direct calls, once through the "
        "Batch API (`oracle.batch=true`), each with a fresh judge cache.", "",
        f"| | judge stage USD ({ITERATIONS} iterations) | batch requests | wall time |", "|---|---|---|---|",
        f"| direct | {paid['direct']:.4f} | 0 | {seconds['direct']:.0f} s |",
        f"| Batch API | {paid['batch']:.4f} | {sum(r.get('oracle/batch_requests', 0) for r in batch)} | "
        f"{seconds['batch']:.0f} s |", "",
        f"Batch / direct: **{paid['batch'] / paid['direct']:.3f}** (the first question of the run settles the "
        "structured-output form directly, at full price; every other one costs half).", "",
        "## The plan against what was paid", "",
        f"Planned before the run (`plan=true`, from the judge's template): ${planned:.4f} for the judge stage; paid "
        f"${paid['direct']:.4f}: the plan is off by **{(planned - paid['direct']) / paid['direct']:+.0%}**. The "
        "scripted judge writes a few words per candidate where the plan assumes a 100-word justification "
        f"({plan['estimates']['judge_tokens_per_request']['value'][1]:.0f} completion tokens per request planned, "
        f"{direct[0]['oracle/completion_tokens'] / direct[0]['oracle/requests']:.0f} measured).",
        f"After iteration 1 the remaining iterations are planned again from what it measured "
        f"(`plan/remaining_judge_usd`): ${left:.4f} planned for iterations 2-{ITERATIONS}, ${paid_left:.4f} paid: "
        "off by "
        f"**{(left - paid_left) / paid_left:+.0%}**.", "",
        "## The paper's setting, planned", "",
        f"`dno-run {shlex.join(PAPER)}`: DNO-More-Data's size (6 iterations of 100k prompts, K=5 plus the "
        "teacher's answer, answers of about 2,800 characters as Table 4's lengths), GPT-4-Turbo as the listwise "
        "judge:", "",
        f"- judge per iteration: {paper['iterations'][0]['judge_prompt_tokens'] / 1e6:.0f}M prompt and "
        f"{paper['iterations'][0]['judge_completion_tokens'] / 1e6:.0f}M completion tokens, "
        f"**${paper['iterations'][0]['judge_usd']:,.0f}** direct, **${paper['iterations'][0]['judge_usd_batch']:,.0f}"
        f"** through the Batch API;",
        f"- all 6 iterations: **${paper['total']['judge_usd']:,.0f}** direct, "
        f"**${paper['total']['judge_usd_batch']:,.0f}** batch, plus ${paper['total']['validation_usd']:,.0f} of "
        "validation judging;",
        f"- hours: {paper['hours_from']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    print(main(Path(args.get("out", "outputs/judge_bill"))), end="")
