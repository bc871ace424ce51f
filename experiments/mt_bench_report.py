"""The report of experiments/mt_bench_open_judge.sh: MT-Bench per model, the paired difference, what the judge did.

    .venv/bin/python experiments/mt_bench_report.py OUT RUN BEST_ITERATION > REPORT
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf
from scipy.stats import spearmanr

from dno.reports.stats import paired_difference
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Samples, read_rows

MODELS = tuple(os.environ.get("MODELS", "pi_1 final").split())  # what the script evaluated


def ratings(out: Path, model: str) -> dict[str, float]:
    return {f"{r['question_id']}/{r['turn']}": r["rating"] for r in judged(out, model) if r["rating"] is not None}


def answer_lengths(out: Path, model: str) -> dict[str, int]:
    d = RunDir(out / model).final.benchmark("mt_bench")
    first = {f"{s.prompt.id}/1": len(s.responses[0]) for s in read_rows(d.model_samples, Samples)}
    return first | {f"{s.prompt.id}/2": len(s.responses[0]) for s in read_rows(d.second_turn_samples, Samples)}


def judged(out: Path, model: str) -> list[dict]:
    path = RunDir(out / model).final.benchmark("mt_bench").judgements
    return read_jsonl(path) if path.exists() else []


def mean(rows: list[dict], turn: int | None = None) -> str:
    values = [r["rating"] for r in rows if r["rating"] is not None and turn in (None, r["turn"])]
    return f"{sum(values) / len(values):.2f}" if values else "- (no valid rating)"


def main(out: Path, run: str, best: str) -> str:
    walls = {m: json.loads((out / m / "wall.json").read_text()) for m in MODELS}
    for m in MODELS:  # the stages' own times (a resumed evaluation's wall time holds only its last part)
        d = RunDir(out / m).final.benchmark("mt_bench")
        stages = [read_json(d.marker(s)).get(f"time/{s}_s", 0) for s in ("turn1", "turn2", "judge")
                  if d.marker(s).exists()]
        walls[m]["seconds"] = max(walls[m]["seconds"], round(sum(stages)))
    rows = {m: judged(out, m) for m in MODELS}
    cfg = OmegaConf.load(RunDir(out / "pi_1").hydra_config).eval.mt_bench
    recorded = next((read_json(RunDir(out / m).provenance).get("benchmarks", {}).get("mt_bench", {})
                     for m in MODELS if RunDir(out / m).provenance.exists()), {})
    source = {"mt_bench/source": f"{cfg.source} {cfg.wheel if cfg.source == 'wheel' else ''}".strip(),
              "mt_bench/judge": f"{cfg.judge_model}@{cfg.base_url}", **recorded}
    lines = ["# MT-Bench with an open judge (experiments/mt_bench_open_judge.sh)", "",
             f"The demo run `{run}`: pi_1 (SmolLM2-135M-Instruct)"
             f"{f' and its final model (`{best}/checkpoint`)' if 'final' in MODELS else ' only (MODELS=pi_1)'}, on "
             f"{len(rows['pi_1']) // 2} MT-Bench questions ({source.get('mt_bench/source', '?')}), judged by "
             f"`{source.get('mt_bench/judge', '?')}` (SmolLM2-135M-Instruct Q4_1 on llama.cpp) with FastChat's "
             "prompts.", "",
             "| model | turn 1 | turn 2 | average | valid ratings | invalid | exit | wall time |",
             "|---|---|---|---|---|---|---|---|"]
    for m in MODELS:
        r, w = rows[m], walls[m]
        valid = sum(x["rating"] is not None for x in r)
        wall = f"{w['seconds'] // 60} min {w['seconds'] % 60} s"
        cells = (f"{mean(r, 1)} | {mean(r, 2)} | {mean(r)} | {valid} of {len(r)} | {1 - valid / len(r):.1%}" if r
                 else "no judgements | | | |")
        lines.append(f"| {m} | {cells} | {w['exit']} | {wall} |")
    a, b = ratings(out, "final"), ratings(out, "pi_1")
    if set(a) & set(b):
        d = paired_difference([a], [b], samples=2000, scale=1.0)
        lines += ["", f"Final minus pi_1 on the {d['prompts']} turns both have a valid rating for: {d['diff']:+.2f} "
                      f"[{d['lo']:+.2f}, {d['hi']:+.2f}] (paired bootstrap over turns, 95%), p = {d['p']:.3f}."]
    lines += ["", "What the judge did:", ""]
    for m in MODELS:
        r = ratings(out, m)
        endings = Counter("rating" if x["rating"] is not None else "no [[rating]]" for x in rows[m])
        line = f"- {m}: {dict(endings)}"
        if len(r) > 1:
            counts = Counter(round(v) for v in r.values())
            lengths = answer_lengths(out, m)
            rho = spearmanr([r[k] for k in r], [lengths[k] for k in r]).statistic
            top, n = counts.most_common(1)[0]
            line += (f"; ratings {dict(sorted(counts.items()))}, the most common ({top}) {n / len(r):.0%} of them; "
                     f"Spearman correlation of rating with answer length {rho:+.2f}")
        lines.append(line + ".")
        invalid = next((x for x in rows[m] if x["rating"] is None and x.get("judgment")), None)
        if invalid:
            text = " ".join(invalid["judgment"].split())
            lines.append(f"  The judge's answer to question {invalid['question_id']}, turn {invalid['turn']} "
                         f"({len(invalid['judgment'])} characters), begins: \"{text[:240]}...\"")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3]), end="")
