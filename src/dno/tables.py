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
  differences (dno.stats);
- win_rate.png (validation win-rate and LC win-rate against pi_1 per iteration) and length.png
  (average answer length per iteration, the paper's length growth).
Reading the runs is dno.run_records.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from dno.config import ConfigError
from dno.run_records import RunRecord, find_runs, read_run

PAPER_DIR = Path(__file__).resolve().parents[2] / "results" / "paper"
PUBLIC_ROWS = ("SPPO-Mistral7B-PairRM", "Snorkel-Mistral-PairRM-DPO", "Meta-Llama-3-8B-Instruct",
               "Mistral-7B-Instruct-v0.2", "gpt4_1106_preview")


def _fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _iteration_label(model: str | None) -> str:
    """pi_{t+1} is the policy after iteration t ("It t"); pi_1 is the start ("It 0")."""
    if model and model.startswith("pi_"):
        return f"It {int(model[3:]) - 1}"
    return model or "-"


def table1(runs: list[RunRecord], paper_dir: Path) -> str:
    import pandas as pd

    lines = ["# Table 1: AlpacaEval-style results", "",
             "Published rows are AlpacaEval 2.0 against GPT-4-Turbo, judged by GPT-4-Turbo. Rows of this "
             "repository's runs name their own judge and baseline: a local oracle's numbers are not "
             "GPT-4-Turbo numbers and are comparable only with each other.", "",
             "| source | method | iteration | LC WR | WR | length (chars) | judge | baseline |",
             "|---|---|---|---|---|---|---|---|"]
    for r in pd.read_csv(paper_dir / "table1.csv").to_dict("records"):
        lines.append(f"| paper | {r['method']} | {r['iteration']} | {_fmt(r['lc_win_rate'], 2)} | "
                     f"{_fmt(r['win_rate'], 2)} | {r['avg_length']} | GPT-4-Turbo | GPT-4-Turbo |")
    from dno.alpacaeval import package_leaderboard

    board = package_leaderboard()
    for name in PUBLIC_ROWS:
        if name in board.index:
            b = board.loc[name]
            lines.append(f"| AlpacaEval 2.0 leaderboard | {name} | - | {b['length_controlled_winrate']:.2f} | "
                         f"{b['win_rate']:.2f} | {int(b['avg_length'])} | GPT-4-Turbo | GPT-4-Turbo |")
    for run in runs:
        se = run.get("alpaca_eval/standard_error")
        wr = _fmt(run.get("alpaca_eval/win_rate")) + (f" ± {se:.1f}" if se is not None else "")
        iteration = _iteration_label(run.get("final/model"))
        lines.append(f"| run `{Path(run.name).name}` | {run.label} | {iteration} | "
                     f"{_fmt(run.get('alpaca_eval/lc_win_rate'))} | {wr} | "
                     f"{_fmt(run.get('alpaca_eval/avg_length'), 0)} | {run.judge} | "
                     f"{run.get('alpaca_eval/baseline', 'pi_1')} |")
    return "\n".join(lines) + "\n"


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
            flags.append("no provenance.json (run before it was recorded)")
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
            length = (f"{_fmt(m.get('data/student_len_words_mean'), 0)}"
                      f"±{_fmt(m.get('data/student_len_words_std'), 0)}")
            lines.append(f"| run `{Path(run.name).name}` | {run.label} | {m['iteration'] - 1} | "
                         f"{m.get('data/prompts', '-')} | "
                         f"{length} | {_fmt(m.get('data/best_of_n_win_rate'))}% | "
                         f"{_fmt(m.get('data/avg_student_wins'), 2)} | {_fmt(m.get('data/student_score_mean'), 2)} | "
                         f"{_fmt(m.get('data/teacher_score_mean'), 2)} | {m.get('pairs/teacher_over_student', '-')} | "
                         f"{m.get('pairs/student_over_teacher', '-')} | {m.get('pairs/student_over_student', '-')} |")
    return "\n".join(lines) + "\n"


def table4(runs: list[RunRecord], paper_dir: Path) -> str:
    import pandas as pd

    lines = ["# Table 4: DNO over more iterations", "",
             "Published: AlpacaEval 2.0 per iteration. Runs: validation win-rate and LC win-rate of "
             "pi_{t+1} against pi_1 under the run's judge, per iteration.", "",
             "| source | model | LC WR | WR | length (chars) |", "|---|---|---|---|---|"]
    for r in pd.read_csv(paper_dir / "table4.csv").to_dict("records"):
        lines.append(f"| paper | {r['model']} | {r['lc_win_rate']:.2f} | {r['win_rate']:.2f} | {r['avg_length']} |")
    for run in runs:
        for m in run.metrics:
            lines.append(f"| run `{Path(run.name).name}` ({run.label}, {run.judge}) | It{m['iteration']} | "
                         f"{_fmt(m.get('eval/lc_win_rate_vs_init'))} | {_fmt(m.get('eval/win_rate_vs_init'))} | "
                         f"{_fmt(m.get('eval/avg_length'), 0)} |")
    return "\n".join(lines) + "\n"


def seed_rows(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs grouped into rows (same config but the seed), in the order of their first run."""
    rows: dict[str, list[RunRecord]] = {}
    for run in runs:
        rows.setdefault(run.group, []).append(run)
    return list(rows.values())


def row_label(row: list[RunRecord]) -> str:
    return re.sub(r"\s*\bseed=\S+", "", row[0].label).strip() or row[0].label


def comparison(runs: list[RunRecord], *, compare_to: str | None, samples: int, lc_samples: int, seed: int) -> str:
    """comparison.md: each row's seeds pooled (mean, 95% interval, number of seeds) and its paired win-rate
    difference with the reference row (see dno.stats)."""
    from dno.metrics import length_controlled
    from dno.stats import outcomes, paired_difference, seed_interval, win_rate

    rows = seed_rows(runs)
    labels = [row_label(r) for r in rows]
    if compare_to is not None and compare_to not in labels:
        raise ConfigError(f"compare_to={compare_to!r} is not a row; the rows are: {', '.join(labels)}")
    ref = labels.index(compare_to) if compare_to else (labels.index("DNO") if "DNO" in labels else 0)
    all_seeds = sorted({r.seed for r in runs if r.seed is not None})
    notes, judged = [], []
    for label, row in zip(labels, rows, strict=True):
        done = [r for r in row if r.annotations]
        judged.append(done)
        missing = sorted(set(all_seeds) - {r.seed for r in row})
        unfinished = [f"seed {r.seed} ({Path(r.name).name})" for r in row if not r.annotations]
        if missing:
            notes.append(f"- {label}: no run with seed {', '.join(map(str, missing))} (other rows have it)")
        if unfinished:
            notes.append(f"- {label}: {', '.join(unfinished)} has no final annotations (unfinished?): left out")
    per_seed = [[outcomes(r.annotations) for r in done] for done in judged]
    lines = ["# Rows over seeds, with 95% intervals and paired differences", "",
             f"Each row pools the runs that differ only in `seed`. Intervals: a bootstrap over seeds and, within "
             f"each drawn seed, over test prompts ({samples} draws for the win-rate, percentiles; {lc_samples} for "
             f"the length-controlled win-rate, whose GLM is refitted per draw: mean ± 1.96 sd). Δ: the row's "
             f"win-rate minus "
             f"{labels[ref]}'s on the same test prompts, paired bootstrap ({samples} draws) with a two-sided "
             "p-value; * marks a difference whose interval excludes 0.", "",
             f"| method | seeds | WR [95% CI] | LC WR [95% CI] | ΔWR vs {labels[ref]} [95% CI] | p |",
             "|---|---|---|---|---|---|"]
    for k, (label, done) in enumerate(zip(labels, judged, strict=True)):
        if not done:
            lines.append(f"| {label} | 0 | - | - | - | - |")
            continue
        wr = seed_interval([np.array(list(o.values())) for o in per_seed[k]], win_rate, samples=samples, seed=seed)
        with warnings.catch_warnings():  # scikit-learn's notices, once per GLM fit
            warnings.simplefilter("ignore")
            lc = seed_interval([[a for a in r.annotations if a.get("preference") is not None] for r in done],
                               lambda a: length_controlled(a)["lc_win_rate"], samples=lc_samples, seed=seed,
                               normal=True)
        delta = p = "-"
        if k != ref and judged[ref]:
            d = paired_difference(per_seed[k], per_seed[ref], samples=samples, seed=seed)
            mark = " *" if d["lo"] > 0 or d["hi"] < 0 else ""
            delta, p = f"{d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}]{mark}", f"{d['p']:.3f}"
        lines.append(f"| {label} | {wr['seeds']} | {wr['mean']:.1f} [{wr['lo']:.1f}, {wr['hi']:.1f}] | "
                     f"{lc['mean']:.1f} [{lc['lo']:.1f}, {lc['hi']:.1f}] | {delta} | {p} |")
    if notes:
        lines += ["", "Missing or unfinished seeds:", *notes]
    return "\n".join(lines) + "\n"


def eval_noise(sweep: Path, checkpoint: str) -> str:
    """The evaluation-only noise: one checkpoint evaluated by a dno-eval multirun over `seed` (the sampling
    seed of its answers and of pi_1's baseline answers; the test prompts and the judge stay the same)."""
    from omegaconf import OmegaConf

    rows = []
    for job in sorted(Path(sweep).iterdir(), key=lambda p: p.name):
        summary, config = job / "summary.json", job / ".hydra" / "config.yaml"
        if summary.exists() and config.exists():
            rows.append((OmegaConf.load(config).seed, json.loads(summary.read_text())))
    if not rows:
        raise ConfigError(f"{sweep}: no evaluation with a summary.json")
    lines = ["", "## Evaluation-only noise", "",
             f"The same checkpoint (`{checkpoint}`) evaluated {len(rows)} times on the same test prompts by the "
             "same judge; only the sampling seed of its answers and of pi_1's baseline answers changes.", "",
             "| sampling seed | WR | SE (prompts) | LC WR | length | n |", "|---|---|---|---|---|---|"]
    for seed, s in sorted(rows, key=lambda r: r[0]):
        lines.append(f"| {seed} | {s['alpaca_eval/win_rate']:.1f} | {s['alpaca_eval/standard_error']:.1f} | "
                     f"{s['alpaca_eval/lc_win_rate']:.1f} | {s['alpaca_eval/avg_length']:.0f} | "
                     f"{s['alpaca_eval/n_total']} |")
    wr, lc = (np.array([s[key] for _, s in rows]) for key in ("alpaca_eval/win_rate", "alpaca_eval/lc_win_rate"))
    def sd(x: np.ndarray) -> float:
        return float(x.std(ddof=1)) if len(x) > 1 else float("nan")

    lines += ["", f"Across sampling seeds: WR {wr.mean():.1f} (sd {_fmt(sd(wr))}), LC WR {lc.mean():.1f} "
                  f"(sd {_fmt(sd(lc))}); the mean standard error over prompts within one evaluation is "
                  f"{np.mean([s['alpaca_eval/standard_error'] for _, s in rows]):.1f}."]
    return "\n".join(lines) + "\n"


def plots(runs: list[RunRecord], out: Path) -> list[Path]:
    """win_rate.png and length.png per iteration; a row with several seeds is drawn as its mean across
    seeds with a shaded 95% interval (mean ± t(n-1) x the standard error across seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats as st

    def series(run: RunRecord, key: str, start: float | None) -> tuple[list[int], list[float]]:
        return ([0] + [m["iteration"] for m in run.metrics],
                [math.nan if start is None else start] + [m.get(key, math.nan) for m in run.metrics])

    def draw(ax, key: str, start) -> None:
        for k, row in enumerate(seed_rows(runs)):
            color = f"C{k % 10}"
            if len(row) == 1:
                ax.plot(*series(row[0], key, start(row[0])), "o-", color=color, label=row[0].label)
                continue
            curves = [series(r, key, start(r)) for r in row]
            n = min(len(x) for x, _ in curves)
            ys = np.array([y[:n] for _, y in curves], dtype=float)
            mean = np.nanmean(ys, 0)
            half = st.t.ppf(0.975, len(row) - 1) * np.nanstd(ys, 0, ddof=1) / math.sqrt(len(row))
            x = curves[0][0][:n]
            ax.plot(x, mean, "o-", color=color, label=f"{row_label(row)} (mean of {len(row)} seeds)")
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, lw=0)

    xlabel = "iteration t (the policy after it, pi_{t+1}; 0 = pi_1)"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "eval/win_rate_vs_init", "win-rate vs pi_1"),
                           (axes[1], "eval/lc_win_rate_vs_init", "length-controlled win-rate vs pi_1")):
        draw(ax, key, lambda r: 50.0)
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{title} (validation)")
        ax.set_xlabel(xlabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    judges = sorted({r.judge for r in runs})
    fig.suptitle(f"Per iteration, judged by {', '.join(judges)}", fontsize=10)
    fig.tight_layout()
    paths = [out / "win_rate.png", out / "length.png"]
    fig.savefig(paths[0], dpi=120, bbox_inches="tight")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    draw(ax, "eval/avg_length", lambda r: r.init_length)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("average answer length (chars)")
    ax.set_title("Answer length per iteration (validation)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


def write_tables_of(runs, wandb: str | None, group: str | None, out: Path, paper_dir: Path = PAPER_DIR,
                    stats: dict | None = None) -> list[Path]:
    """dno-tables: the tables of run directories (`runs`: a path, glob or list) or of W&B runs (`wandb`,
    `group`) into `out`; `stats`: compare_to and the bootstrap's samples, lc_samples, seed."""
    if wandb:
        from dno.tracking import pull_runs

        return write_tables([RunRecord(**r) for r in pull_runs(wandb, group)], out, paper_dir, stats)
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
    long = [r for r in runs if len(r.metrics) > 3]
    if long:
        (out / "table4.md").write_text(table4(long, paper_dir) + provenance_section(long))
        written.append(out / "table4.md")
    if any(r.annotations for r in runs):  # per-prompt annotations: the rows' intervals and paired differences
        stats = {"compare_to": None, "samples": 1000, "lc_samples": 40, "seed": 0, **(stats or {})}
        (out / "comparison.md").write_text(comparison(runs, **stats))
        written.append(out / "comparison.md")
    return written + plots(runs, out)
