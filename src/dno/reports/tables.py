"""The paper's tables and plots from runs, beside the published numbers (the library of dno-tables).

    dno-tables runs=multirun/table1/offline-default out=results
    dno-tables runs='outputs/*' out=/tmp/tables
    dno-tables wandb=ENTITY/PROJECT group=GROUP out=results     # online: runs through the W&B API

`runs` is a run directory, a sweep directory (its runs are the subdirectories with metrics.jsonl),
a glob (quoted: runs='outputs/*'), or a list of these (runs=[DIR1,DIR2]). Offline, everything is read from the runs' own
files (.hydra/config.yaml, metrics.jsonl, summary.json). Writes into `out`:
- table1.md: the paper's Table 1 rows (results/paper/table1.csv), public AlpacaEval 2.0 rows from
  alpaca_eval's leaderboard, and one row per run, each labelled with its judge and baseline;
- table2.md: the data dynamics per iteration (Table 2) from the runs' logged statistics;
- table4.md, when a run has more than 3 iterations (Table 4's layout);
- comparison.md, when runs have final annotations: rows over seeds with intervals and paired
  differences (dno.reports.stats);
- win_rate.png (validation win-rate and LC win-rate against pi_1 per iteration) and length.png
  (average answer length per iteration, the paper's length growth).
Reading the runs is dno.reports.run_records; comparison.md and the evaluation-only noise are dno.reports.comparison.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from dno.reports.comparison import comparison
from dno.reports.intervals import NOT_EVALUATED, fmt, interval, with_interval
from dno.reports.plots import plots
from dno.reports.run_records import RunRecord, find_runs, read_run, row_label, seed_group, seed_rows
from dno.runtime.config import ConfigError

PAPER_DIR = Path(__file__).resolve().parents[3] / "results" / "paper"
PUBLIC_ROWS = ("SPPO-Mistral7B-PairRM", "Snorkel-Mistral-PairRM-DPO", "Meta-Llama-3-8B-Instruct",
               "Mistral-7B-Instruct-v0.2", "gpt4_1106_preview")


def _iteration_label(model: str | None) -> str:
    """pi_{t+1} is the policy after iteration t ("It t"); pi_1 is the start ("It 0")."""
    if model and model.startswith("pi_"):
        return f"It {int(model[3:]) - 1}"
    return model or "-"




def table1(runs: list[RunRecord], paper_dir: Path) -> str:
    import pandas as pd

    lines = ["# Table 1: AlpacaEval-style and MT-Bench results", "",
             "Published rows are AlpacaEval 2.0 against GPT-4-Turbo, judged by GPT-4-Turbo, and MT-Bench judged by "
             "GPT-4. Rows of this repository's runs name their own judge and baseline: a local oracle's numbers are "
             "not GPT-4-Turbo numbers and are comparable only with each other. Runs that differ only in `seed` are "
             "one row: the mean over seeds with a 95% interval (a bootstrap over seeds and test prompts or questions, "
             "as comparison.md's); a single run's win-rate is ± its standard error over prompts, its MT-Bench average "
             "has the interval over questions alone.", "",
             "| source | method | iteration | LC WR | WR | length (chars) | MT-Bench 1st turn | MT-Bench 2nd turn "
             "| MT-Bench avg | judge | baseline |", "|---" * 11 + "|"]
    for r in pd.read_csv(paper_dir / "table1.csv").to_dict("records"):
        lines.append(f"| paper | {r['method']} | {r['iteration']} | {fmt(r['lc_win_rate'], 2)} | "
                     f"{fmt(r['win_rate'], 2)} | {r['avg_length']} | {fmt(r['mt_bench_1'], 2)} | "
                     f"{fmt(r['mt_bench_2'], 2)} | {fmt(r['mt_bench_avg'], 2)} | GPT-4-Turbo | GPT-4-Turbo |")
    from dno.benchmarks.alpaca_eval2 import package_leaderboard

    board = package_leaderboard()
    for name in PUBLIC_ROWS:
        if name in board.index:
            b = board.loc[name]
            lines.append(f"| AlpacaEval 2.0 leaderboard | {name} | - | {b['length_controlled_winrate']:.2f} | "
                         f"{b['win_rate']:.2f} | {int(b['avg_length'])} | - | - | - | GPT-4-Turbo | GPT-4-Turbo |")
    lines += [_table1_row(row) for row in seed_rows(runs)]
    return "\n".join(lines) + "\n"


def _pooled(row: list[RunRecord], key: str, digits: int = 1) -> str:
    values = [r.get(key) for r in row if r.get(key) is not None]
    return fmt(float(np.mean(values)), digits) if values else "-"


def _table1_row(row: list[RunRecord]) -> str:
    """One configuration's runs (its seeds) as one row of Table 1; a benchmark no seed ran says so."""
    first = row[0]
    names = ", ".join(f"`{Path(r.name).name}`" for r in row)
    source = f"run {names}" if len(row) == 1 else f"runs {names} ({len(row)} seeds)"
    alpaca = [NOT_EVALUATED] * 3
    if any(r.get("alpaca_eval/win_rate") is not None for r in row):
        se, pooled = first.get("alpaca_eval/standard_error"), interval(row, "alpaca_eval") if len(row) > 1 else None
        wr = (with_interval(pooled, 1) if pooled else _pooled(row, "alpaca_eval/win_rate") +
              (f" ± {se:.1f}" if se is not None and len(row) == 1 else ""))
        alpaca = [_pooled(row, "alpaca_eval/lc_win_rate"), wr, _pooled(row, "alpaca_eval/avg_length", 0)]
    mt_bench = [NOT_EVALUATED] * 3
    if any(r.get("mt_bench/avg") is not None for r in row):
        pooled = interval(row, "mt_bench")
        mt_bench = [_pooled(row, "mt_bench/turn1", 2), _pooled(row, "mt_bench/turn2", 2),
                    with_interval(pooled, 2) if pooled else _pooled(row, "mt_bench/avg", 2)]
    return (f"| {source} | {row_label(row)} | {_iteration_label(first.get('final/model'))} | {' | '.join(alpaca)} | "
            f"{' | '.join(mt_bench)} | {first.judge} | {first.get('alpaca_eval/baseline', 'pi_1')} |")


def _judge_and_evaluator(run: RunRecord) -> tuple[str, str]:
    """What produced a row's numbers: the judge (oracle and its settings) and the evaluator (annotator,
    baseline and the alpaca_eval version)."""
    config = run.provenance.get("config", {})
    oracle = config.get("oracle")
    judge = f"{run.judge} {json.dumps(oracle, sort_keys=True)}" if oracle else run.judge
    evaluator = (f"{run.get('alpaca_eval/annotator', run.judge)} vs {run.get('alpaca_eval/baseline', 'pi_1')}, "
                 f"alpaca_eval {run.provenance.get('versions', {}).get('alpaca_eval', '?')}")
    return judge, evaluator


def provenance_section(runs: list[RunRecord]) -> str:
    """Under each table: the code, versions, device and judge every run came from; rows whose judge or
    evaluator differs from the others' (the most common) are flagged."""
    if not runs:
        return ""
    keys = [_judge_and_evaluator(r) for r in runs]
    usual = [Counter(k[i] for k in keys).most_common(1)[0][0] for i in (0, 1)]
    lines = ["", "## Provenance of the runs' rows", "",
             "| run | commit | torch | transformers | alpaca_eval | device | judge | flag |", "|---" * 8 + "|"]
    for run, (judge, evaluator) in zip(runs, keys, strict=True):
        p, v = run.provenance, run.provenance.get("versions", {})
        device = p.get("device", {})
        where = f"{device.get('gpu') or device.get('cpu', '?')} ({device.get('dtype', '?')})" if device else "-"
        commit = (p.get("commit") or "-")[:10] + (" (dirty)" if p.get("dirty") else "")
        flags = [what for what, mine, common in (("judge differs", judge, usual[0]),
                                                 ("evaluator differs", evaluator, usual[1])) if mine != common]
        if not p:
            flags.append("no provenance (run before it was recorded)")
        lines.append(f"| `{Path(run.name).name}` | {commit} | {v.get('torch', '-')} | {v.get('transformers', '-')} | "
                     f"{v.get('alpaca_eval', '-')} | {where} | {run.judge} | {'; '.join(flags) or '-'} |")
    return "\n".join(lines) + "\n"


def table2(runs: list[RunRecord], paper_dir: Path) -> str:
    import pandas as pd

    head = ["| source | row | iteration | inputs | student len (words) | best-of-n student WR | avg # student wins | "
            "student score | teacher score | T≻S | S≻T | S≻S |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    lines = ["# Table 2: training-data dynamics per iteration", "",
             "Iteration t holds pi_t's samples (It 0 is the initial policy's). Scores are the run's judge's "
             "(the rules oracle scores 0 to 6; GPT-4-Turbo's rubric 1 to 6). Pair counts are new pairs, "
             "without replay.", "", *head]
    for r in pd.read_csv(paper_dir / "table2.csv", dtype=str).to_dict("records"):
        lines.append(f"| paper | {r['row']} | {r['iteration']} | {r['inputs']} | {r['student_len_words']} | "
                     f"{r['best_of_n_win_rate']}% | {r['avg_student_wins']} | {r['student_score']} | "
                     f"{r['teacher_score']} | {r['teacher_over_student']} | {r['student_over_teacher']} | "
                     f"{r['student_over_student']} |")
    for run in runs:
        for m in run.metrics:
            if "iteration" not in m or "pairs/new" not in m:
                continue
            length = (f"{fmt(m.get('data/student_len_words_mean'), 0)}"
                      f"±{fmt(m.get('data/student_len_words_std'), 0)}")
            lines.append(f"| run `{Path(run.name).name}` | {run.label} | {m['iteration'] - 1} | "
                         f"{m.get('data/prompts', '-')} | "
                         f"{length} | {fmt(m.get('data/best_of_n_win_rate'))}% | "
                         f"{fmt(m.get('data/avg_student_wins'), 2)} | {fmt(m.get('data/student_score_mean'), 2)} | "
                         f"{fmt(m.get('data/teacher_score_mean'), 2)} | {m.get('pairs/teacher_over_student', '-')} | "
                         f"{m.get('pairs/student_over_teacher', '-')} | {m.get('pairs/student_over_student', '-')} |")
    return "\n".join(lines) + "\n"


def table4(runs: list[RunRecord], paper_dir: Path) -> str:
    import pandas as pd

    lines = ["# Table 4: DNO over more iterations", "",
             "Published: AlpacaEval 2.0 and MT-Bench (GPT-4) per iteration. Runs: validation win-rate and LC "
             "win-rate of pi_{t+1} against pi_1 under the run's judge, per iteration; MT-Bench of each iterate "
             "where `dno-eval run_dir=RUN eval=[mt_bench]` evaluated them (It 0 is pi_1).", "",
             "| source | model | LC WR | WR | length (chars) | MT-Bench 1st turn | MT-Bench 2nd turn | MT-Bench avg |",
             "|---" * 8 + "|"]
    for r in pd.read_csv(paper_dir / "table4.csv").to_dict("records"):
        lines.append(f"| paper | {r['model']} | {r['lc_win_rate']:.2f} | {r['win_rate']:.2f} | {r['avg_length']} | "
                     f"{fmt(r['mt_bench_1'], 2)} | {fmt(r['mt_bench_2'], 2)} | {fmt(r['mt_bench_avg'], 2)} |")
    for run in runs:
        name = f"run `{Path(run.name).name}` ({run.label}, {run.judge})"
        if 1 in run.iterates:
            lines.append(f"| {name} | It0 (pi_1) | - | - | - | {_mt_bench_cells(run.iterates[1])} |")
        for m in run.metrics:
            lines.append(f"| {name} | It{m['iteration']} | "
                         f"{fmt(m.get('eval/lc_win_rate_vs_init'))} | {fmt(m.get('eval/win_rate_vs_init'))} | "
                         f"{fmt(m.get('eval/avg_length'), 0)} | "
                         f"{_mt_bench_cells(run.iterates.get(m['iteration'] + 1, {}))} |")
    return "\n".join(lines) + "\n"


def _mt_bench_cells(summary: dict) -> str:
    if summary.get("mt_bench/avg") is None:
        return " | ".join([NOT_EVALUATED] * 3)
    return " | ".join(fmt(summary[f"mt_bench/{k}"], 2) for k in ("turn1", "turn2", "avg"))


TABLE3_TASKS = ("arc_challenge", "gsm8k", "hellaswag", "mmlu", "truthfulqa_mc2", "winogrande")


def table3(runs: list[RunRecord], paper_dir: Path) -> str:
    """Table 3: the Open LLM Leaderboard's tasks per model, the paper's rows, then each run's evaluated iterates
    (`dno-eval run_dir=RUN eval=[open_llm]`) or its final model; a task a run did not evaluate says so."""
    import pandas as pd

    lines = ["# Table 3: Open LLM Leaderboard (lm-evaluation-harness)", "",
             "Published rows: the paper's (fractions). Runs: lm-eval on each evaluated iterate (It 0 is pi_1) or "
             "on the final model, with the tasks' shots and metrics of `eval.open_llm.tasks` (the leaderboard's by "
             "default; a run with `limit` or local stand-in tasks is not comparable with the paper's).", "",
             "| source | model | " + " | ".join(TABLE3_TASKS) + " | avg | other tasks |", "|---" * 10 + "|"]
    for r in pd.read_csv(paper_dir / "table3.csv", dtype=str).to_dict("records"):
        lines.append(f"| paper | {r['model']} | " + " | ".join(r[t] for t in TABLE3_TASKS) + f" | {r['avg']} | - |")
    for run in runs:
        evaluated = {t: s for t, s in run.iterates.items() if "open_llm/avg" in s}
        if not evaluated and "open_llm/avg" in run.summary:
            evaluated = {None: run.summary}
        for t, summary in sorted(evaluated.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
            model = _iteration_label(run.summary.get("final/model")) + " (final)" if t is None else f"It {t - 1}"
            lines.append(f"| run `{Path(run.name).name}` ({run.label}) | {model} | {_open_llm_cells(summary)} |")
    return "\n".join(lines) + "\n"


def _open_llm_cells(summary: dict) -> str:
    scores = {k.split("/", 1)[1]: v for k, v in summary.items()
              if k.startswith("open_llm/") and isinstance(v, float) and k != "open_llm/avg"}
    cells = [f"{scores[t]:.3f}" if t in scores else NOT_EVALUATED for t in TABLE3_TASKS]
    other = ", ".join(f"{t} {v:.3f}" for t, v in scores.items() if t not in TABLE3_TASKS) or "-"
    return " | ".join(cells) + f" | {summary['open_llm/avg']:.3f} | {other}"


def pulled_records(pulled: list[dict]) -> list[RunRecord]:
    """Run records of runs read through the W&B API (dno.runtime.tracking.pull_runs)."""
    records = []
    for r in pulled:
        config = r["provenance"]["config"]
        fields = {k: v for k, v in r.items() if k not in ("id", "group", "axes")}
        records.append(RunRecord(**fields, seed=config.get("seed"), group=seed_group(config, r["name"])))
    return records


def write_tables_of(runs, wandb: str | None, group: str | None, out: Path, paper_dir: Path = PAPER_DIR,
                    stats: dict | None = None) -> list[Path]:
    """dno-tables: the tables of run directories (`runs`: a path, glob or list) or of W&B runs (`wandb`,
    `group`) into `out`; `stats`: compare_to and the bootstrap's samples, lc_samples, seed."""
    if wandb:
        from dno.runtime.tracking import pull_runs

        return write_tables(pulled_records(pull_runs(wandb, group)), out, paper_dir, stats)
    if not runs:
        raise ConfigError("give runs=PATH_OR_GLOB (or wandb=ENTITY/PROJECT group=GROUP)")
    return write_tables([read_run(p) for p in find_runs(runs)], out, paper_dir, stats)


def write_tables(runs: list[RunRecord], out: Path, paper_dir: Path = PAPER_DIR,
                 stats: dict | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in (("table1.md", table1), ("table2.md", table2)):
        (out / name).write_text(make(runs, paper_dir) + provenance_section(runs))
        written.append(out / name)
    if any("open_llm/avg" in r.summary or any("open_llm/avg" in s for s in r.iterates.values()) for r in runs):
        (out / "table3.md").write_text(table3(runs, paper_dir) + provenance_section(runs))
        written.append(out / "table3.md")
    long = [r for r in runs if len(r.metrics) > 3 or any("mt_bench/avg" in s for s in r.iterates.values())]
    if long:
        (out / "table4.md").write_text(table4(long, paper_dir) + provenance_section(long))
        written.append(out / "table4.md")
    if any(r.annotations or r.mt_bench_ratings for r in runs):  # per-prompt results: intervals, paired differences
        stats = {"compare_to": None, "samples": 1000, "lc_samples": 40, "seed": 0, **(stats or {})}
        (out / "comparison.md").write_text(comparison(runs, **stats))
        written.append(out / "comparison.md")
    return written + plots(runs, out)
