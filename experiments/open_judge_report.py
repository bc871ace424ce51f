"""The table of experiments/open_judge.sh: one row per structured-output mode, from its run directory.

    .venv/bin/python experiments/open_judge_report.py OUT "json_schema json_object ..." SERVER_URL > REPORT
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from dno.runtime.files import read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, read_rows


def row(run: Path) -> str:
    ended = json.loads((run / "ended.json").read_text())
    d = RunDir(run)
    metrics = read_jsonl(d.metrics) if d.metrics.exists() else []
    judged = [r for t in range(1, len(metrics) + 1) for r in read_rows(d.iteration(t).judgements, Judged)]
    forms = Counter(r.judgement.detail.get("structured_output", "?") for r in judged)
    seconds = sum(m.get("time/judge_s", 0.0) for m in metrics)
    agreement = json.loads((run / "agreement.json").read_text() or "{}")
    if ended["exit"] == 0:
        summary = json.loads((run / "summary.json").read_text())
        how = (f"finished: test WR {summary['alpaca_eval/win_rate']:.1f} on {summary['alpaca_eval/n_total']} "
               "valid annotations")
    else:
        errors = [line for line in (run.parent / f"{run.name}.log").read_text().splitlines()
                  if line.startswith("dno-run:")]
        how = f"exit {ended['exit']}: " + (errors[-1].removeprefix("dno-run: ")[:160] if errors else "see the log")
    invalid = " / ".join(f"{m['oracle/invalid_frac']:.2f}" for m in metrics) or "-"
    n_judged = " / ".join(str(m.get("eval/n_judged", "-")) for m in metrics) or "-"
    compared = agreement.get("decided_pairs", 0) - agreement.get("abstained", 0)
    agree = (f"{100 * agreement['agreement']:.0f}% of {compared} ({agreement['abstained']} rules ties)"
             if compared > 0 else "- (no pair compared)")
    asked = ", ".join(f"{form} x{n}" for form, n in forms.most_common()) or "-"
    return (f"| {run.name} | {asked} | {invalid} | {n_judged} | "
            f"{seconds / max(len(judged), 1):.2f} | {agree} | {ended['seconds']} | {how.replace('|', '/')} |")


def main(out: str, modes: str, server: str) -> None:
    print(f"# An open-model judge per structured-output mode\n\nThe smoke loop (model=tiny_random, schedule=smoke) "
          f"judged by the server at {server}, with max_invalid_frac=1.0 so that every mode runs through. "
          "Invalid fraction and validation prompts judged validly (eval/n_judged) per iteration; judge seconds "
          "per prompt over the iterations' judging; agreement: the rules oracle's preference on the same side as "
          "the judge's, over the candidate pairs the judge decided in iteration 1 and the rules oracle did not "
          "score as a tie.\n")
    print("| mode | asked as (prompts) | invalid frac | eval/n_judged | judge s/prompt | agreement with rules "
          "| run s | how the run ended |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes.split():
        print(row(Path(out) / mode))


if __name__ == "__main__":
    main(*sys.argv[1:4])
