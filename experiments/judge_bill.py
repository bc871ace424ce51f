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
         "plan_inputs.bench=results/bench.json", "eval=[alpaca_eval2]"]


def dno_run(*args: str) -> float:
    start = time.time()
    subprocess.run([str(REPO / ".venv" / "bin" / "dno-run"), *args], cwd=REPO, check=True, capture_output=True,
                   env={"WANDB_MODE": "offline", "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    return time.time() - start


def read(path: Path):
    return json.loads(path.read_text())


def ledger(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "ledger.jsonl").read_text().splitlines()]


def invoice(server: JudgeServer, price: tuple[float, float]) -> tuple[int, float, int, float]:
    """What the server would invoice: its 200 answers (direct, then through batches at half the price)."""
    def usd(body: dict) -> float:
        usage = server.answer(body, None)[1]["usage"]
        return (usage["prompt_tokens"] * price[0] + usage["completion_tokens"] * price[1]) / 1e6

    answered = [r["body"] for r in server.requests if r["fault"] is None and server.answer(r["body"], None)[0] == 200]
    return (len(answered), sum(map(usd, answered)), len(server.batch_answered),
            sum(usd(b) / 2 for b in server.batch_answered))


STAGES = ("judge", "validation", "final/local")


def main(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    seconds, invoices = {}, {}
    for mode in ("direct", "batch"):
        with JudgeServer() as server:
            judge = [f"oracle.base_url={server.url}", f"oracle.cache_path={out / mode}.sqlite"]
            if mode == "direct":
                dno_run(*SMOKE, *judge, "plan=true", f"hydra.run.dir={out / 'plan'}")
            seconds[mode] = dno_run(*SMOKE, *judge, f"hydra.run.dir={out / mode}",
                                    *(["oracle.batch=true", "oracle.batch_poll_s=0.05"] if mode == "batch" else []))
            invoices[mode] = invoice(server, (10.0, 30.0))
    plan = read(out / "plan" / "plan.json")
    summary = {m: read(out / m / "summary.json") for m in ("direct", "batch")}
    rows = {m: ledger(out / m) for m in ("direct", "batch")}
    direct_metrics = [json.loads(line) for line in (out / "direct" / "metrics.jsonl").read_text().splitlines()]
    dno_run(*PAPER, f"hydra.run.dir={out / 'paper'}")
    paper = read(out / "paper" / "plan.json")
    lines = [
        "# The judge's bill (experiments/judge_bill.py)", "",
        f"The smoke schedule with {ITERATIONS} iterations (6 prompts x 4 samples each, 6 validation and 8 test "
        "prompts), the listwise judge played by the scripted judge server on 127.0.0.1 and billed at GPT-4-Turbo's "
        "price ($10 and $30 per million prompt and completion tokens, the server's own token counts): once with "
        "direct calls, once through the Batch API (`oracle.batch=true`), each with a fresh judge cache. Every figure "
        "below is read from the run's ledger (`ledger.jsonl`, summed into summary.json's `cost/*`).", "",
        "| stage | direct: requests | direct: USD | batch: requests | batch: USD |", "|---|---|---|---|---|"]
    for stage in STAGES:
        cells = [f"{summary[m].get(f'cost/{stage}/requests', 0)} | {summary[m].get(f'cost/{stage}/usd', 0.0):.4f}"
                 for m in ("direct", "batch")]
        lines.append(f"| {stage} | {cells[0]} | {cells[1]} |")
    lines.append(f"| **total** | {summary['direct']['cost/total_requests']} | "
                 f"{summary['direct']['cost/total_usd']:.4f} | {summary['batch']['cost/total_requests']} | "
                 f"{summary['batch']['cost/total_usd']:.4f} |")
    n_direct, usd_direct, _, _ = invoices["direct"]
    nb_direct, usdb_direct, nb_batch, usdb_batch = invoices["batch"]
    paid = {m: summary[m]["cost/total_usd"] for m in ("direct", "batch")}
    sent = summary["direct"]["cost/total_requests"]
    ratio = paid["batch"] / paid["direct"]
    to_the_cent = round(paid["direct"], 2) == round(usd_direct, 2) and \
        round(paid["batch"], 2) == round(usdb_direct + usdb_batch, 2)
    later = sum(r["usd"] for r in rows["direct"] if r["stage"] == "judge" and r["iteration"] > 1)
    replanned = direct_metrics[0]["plan/remaining_judge_usd"]
    total = plan["total"]
    lines += [
        "", f"What the server would invoice for the same answers: direct run {n_direct} requests, ${usd_direct:.4f}; "
        f"batch run {nb_direct} direct and {nb_batch} batched requests, ${usdb_direct + usdb_batch:.4f}. "
        f"The ledgers' totals equal them to the cent: **{to_the_cent}**.",
        "", f"Batch / direct, the whole bill: **{ratio:.3f}** (the first question of the run settles the "
        "structured-output form directly, at full price; every other one costs half). Wall time: "
        f"{seconds['direct']:.0f} s direct, {seconds['batch']:.0f} s batch.", "",
        "## The plan against what was paid", "",
        f"Planned before the run (`plan=true`): **{total['requests']}** paid judge requests (judge "
        f"{total['judge_requests']}, validation {total['validation_requests']}, final {total['final_requests']}); "
        f"the run sent **{sent}**: off by **{(total['requests'] - sent) / sent:+.0%}**.",
        f"In dollars the plan said ${total['usd']:.4f} and the run paid ${paid['direct']:.4f}: off by "
        f"**{(total['usd'] - paid['direct']) / paid['direct']:+.0%}**. The scripted judge writes a "
        "few words per candidate where the plan assumes a 100-word justification "
        f"({plan['estimates']['judge_tokens_per_request']['value'][1]:.0f} completion tokens per request planned, "
        f"{direct_metrics[0]['oracle/completion_tokens'] / direct_metrics[0]['oracle/requests']:.0f} measured).",
        f"After iteration 1 the remaining iterations are planned again from what it measured "
        f"(`plan/remaining_judge_usd`): ${replanned:.4f} planned for the judge stage of iterations 2-{ITERATIONS}, "
        f"${later:.4f} paid: off by **{(replanned - later) / later:+.0%}**.", "",
        "## The paper's setting, planned", "",
        f"`dno-run {shlex.join(PAPER)}`: DNO-More-Data's size (6 iterations of 100k prompts, K=5 plus the "
        "teacher's answer, answers of about 2,800 characters as Table 4's lengths), GPT-4-Turbo as the listwise "
        "judge, AlpacaEval 2.0 (805 annotations by gpt-4-1106-preview) as the final stage:", "",
        f"- judge per iteration: {paper['iterations'][0]['judge_prompt_tokens'] / 1e6:.0f}M prompt and "
        f"{paper['iterations'][0]['judge_completion_tokens'] / 1e6:.0f}M completion tokens, "
        f"**${paper['iterations'][0]['judge_usd']:,.0f}** direct, **${paper['iterations'][0]['judge_usd_batch']:,.0f}"
        f"** through the Batch API;",
        f"- all 6 iterations: **${paper['total']['judge_usd']:,.0f}** direct, "
        f"**${paper['total']['judge_usd_batch']:,.0f}** batch, plus ${paper['total']['validation_usd']:,.0f} of "
        f"validation judging and ${paper['total']['final_usd']:,.2f} for AlpacaEval 2.0's annotations;",
        f"- the whole run: **{paper['total']['requests']:,}** judge requests, **${paper['total']['usd']:,.0f}** "
        "direct;",
        f"- hours: {paper['hours_from']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    print(main(Path(args.get("out", "outputs/judge_bill"))), end="")
