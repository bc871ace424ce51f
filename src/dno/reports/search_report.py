"""What dno-report adds for a search sweep (hydra/sweeper=optuna search=dno): a parallel-coordinates panel of every
trial's parameters and objective, and a table of the trials sorted by the objective (dno.reports.wandb_report).

    dno-report runs=multirun/search hydra.run.dir=outputs/search-report

The trials come from the sweep's study (`study.db`: every trial, failed and unfinished ones included, with the
space and the objective's name) or, where the directory has none (runs copied out of the sweep), from the trials' own
records: `search.trial` and `search.params` in their config, `search/objective` in their summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dno.runtime.search import DEFAULT_OBJECTIVE, load_study, trial_rows
from dno.runtime.tracking import AXES

SEARCH_GROUPING = "trial"  # a search's runs are grouped by trial: each trial its own line, bar and column


@dataclass(frozen=True)
class Search:
    objective: str  # search.objective: what each trial returned to the sweeper
    direction: str  # maximize or minimize
    space: dict[str, str]  # key: its spec, as the sweep searched it
    rows: list[dict]  # the trials, best first (dno.runtime.search.trial_rows)
    source: str  # where the trials were read: the study file, or the runs' records


def search_of(runs: list, sweep: Path | None) -> Search | None:
    """The search of a sweep directory (its study) or of search trials' runs (ReportRun, dno.reports.wandb_report);
    None when these runs are not a search."""
    study = load_study(sweep) if sweep is not None else None
    if study is not None:
        attrs = study.user_attrs
        return Search(attrs.get("objective", DEFAULT_OBJECTIVE), study.direction.name.lower(), dict(attrs.get(
            "space", {})), trial_rows(study), f"the study {Path(sweep) / 'study.db'}")
    trials = [r for r in runs if r.axes.get("trial") is not None]
    if not trials:
        return None
    search = trials[0].config.get("search") or {}
    rows = [{"trial": r.axes["trial"], "params": dict((r.config.get("search") or {}).get("params") or {}),
             "value": r.record.summary.get("search/objective"), "error": None,
             "state": "COMPLETE" if "search/objective" in r.record.summary else "UNFINISHED"} for r in trials]
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0.0), r["trial"]))
    keys = dict.fromkeys(k for r in rows for k in r["params"])
    return Search(search.get("objective") or DEFAULT_OBJECTIVE, "maximize", dict.fromkeys(keys, "?"), rows,
                  "the runs' records (no study file)")


def column(key: str) -> str:
    """A search key's W&B config key: a comparison axis is top-level (`loss`), any other key is under `cfg`."""
    return key if key in AXES else f"cfg.{key}"


def trials_table(search: Search, names: dict[int, str]) -> str:
    """The trials, best first: rank, number, state, objective, each parameter, the W&B run (`names`: by trial)."""
    keys = list(search.space)
    run = ["run"] if names else []
    lines = [f"Trials sorted by `{search.objective}` ({search.direction}; from {search.source}):", "",
             "| rank | trial | state | " + " | ".join([search.objective, *keys, *run]) + " |",
             "|" + "---|" * (4 + len(keys) + len(run))]
    for rank, r in enumerate(search.rows, start=1):
        value = "-" if r["value"] is None else f"{r['value']:.2f}"
        params = [_fmt(r["params"].get(k)) for k in keys]
        state = r["state"].lower() + (f" ({r['error'].splitlines()[0][:80]})" if r.get("error") else "")
        lines.append(f"| {rank if r['value'] is not None else '-'} | {r['trial']} | {state} | {value} | "
                     + " | ".join(params + ([names.get(r["trial"], "-")] if names else [])) + " |")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


def search_blocks(search: Search, runs: list, runset) -> list:
    """The report's search section: the parallel-coordinates panel (each parameter, then the objective; log axes
    where the space is log-scaled) over `runset`, and the trials table."""
    import wandb_workspaces.reports.v2 as wr

    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(column(k)), display_name=k,
                                                log=True if "log" in spec else None)
               for k, spec in search.space.items()]
    columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("search/objective"),
                                                    display_name=search.objective))
    names = {r.axes["trial"]: Path(r.record.name).name for r in runs if r.axes.get("trial") is not None}
    return [wr.H2(f"Search: {len(search.rows)} trials over {', '.join(search.space)}"),
            wr.PanelGrid(runsets=[runset], panels=[wr.ParallelCoordinatesPlot(
                title=f"Trials: parameters and {search.objective}", columns=columns)]),
            wr.MarkdownBlock(trials_table(search, names))]


def described(search: Search) -> dict:
    """report_check.json's account of the search: the objective, the space, the parallel coordinates' columns and
    the trials in the table's order."""
    return {"objective": search.objective, "direction": search.direction, "space": search.space,
            "source": search.source, "parallel_coordinates": [*(column(k) for k in search.space), "search/objective"],
            "trials": [{k: r[k] for k in ("trial", "state", "value", "params")} for r in search.rows]}


def best_overrides(sweep: Path) -> list[str]:
    """The best trial's parameters as command-line overrides (experiments/search.sh runs them again with fresh
    seeds)."""
    from dno.runtime.search import override

    study = load_study(sweep)
    if study is None or not any(t.state.name == "COMPLETE" for t in study.trials):
        raise SystemExit(f"{sweep}: no study with a finished trial")
    return [override(k, v) for k, v in study.best_trial.params.items()]


def search_results(trials: Path, compared: str, chosen: str = "search best", reference: str = "default") -> str:
    """results/search.md's body: the trials (from the study), the chosen point against trial 0's, and the verdict
    of the fresh seeds on the test prompts (`compared`: their run directories; rows `chosen` and `reference`, by
    `method`): the paired win-rate difference with its 95% interval, said plainly when it includes 0."""
    from dno.reports.run_records import find_runs, read_run, row_label, seed_rows
    from dno.reports.stats import outcomes, paired_difference

    study = load_study(trials)
    search = search_of([], trials)
    best = study.best_trial
    first = study.trials[0]
    lines = [trials_table(search, {}), "",
             f"**Chosen point:** trial {best.number}, {search.objective} {best.value:.2f} on the validation prompts "
             f"(trial 0, the offline default: {_fmt(first.value)}): "
             + ", ".join(f"`{k}={_fmt(v)}`" for k, v in best.params.items()) + "."]
    rows = {row_label(r): r for r in seed_rows([read_run(p) for p in find_runs(compared)])}
    if best.number == first.number:
        lines += ["", "**Verdict:** the default itself was the best trial: the search found nothing better."]
    elif chosen in rows and reference in rows:
        d = paired_difference([outcomes(r.annotations) for r in rows[chosen] if r.annotations],
                              [outcomes(r.annotations) for r in rows[reference] if r.annotations], samples=1000)
        verdict = ("beats" if d["lo"] > 0 else "loses to" if d["hi"] < 0 else "is not distinguishable from")
        seeds = f"{len(rows[chosen])} fresh seed{'s' if len(rows[chosen]) > 1 else ''}"
        lines += ["", f"**Verdict:** on {d['prompts']} test prompts with {seeds} each, the "
                      f"chosen point {verdict} the default: ΔWR {d['diff']:+.1f} [{d['lo']:+.1f}, {d['hi']:+.1f}] "
                      f"(95%, paired bootstrap; p {d['p']:.3f})"
                      + ("; the search found nothing better than the default." if d["lo"] <= 0 else ".")]
    return "\n".join(lines) + "\n"
