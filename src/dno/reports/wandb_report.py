"""dno-report: a sweep as one W&B Report, built in code with wandb-workspaces (`wandb_workspaces.reports.v2`).

    dno-report runs=multirun/table1_seeds/offline-default          # offline: report.json, the spec W&B would get
    dno-report runs=multirun/table1_seeds/offline-default publish=true entity=my-team

The report: a header (the sweep's command, commit, versions, judge, the groups), per-iteration line plots with a
line per group and its seeds as mean and band (win-rates, LC win-rate, length, pairs by type, training loss), the
final benchmarks per group as bar charts beside the paper's numbers, a run comparer of the config differences,
dno-tables' markdown (Table 1, Table 2, the seed comparison), and the runs' sample tables. Its runset names the
runs by their W&B ids (from each run directory's `wandb_run.json`).

The groups are what the sweep varied: the command-line overrides whose value differs between its runs
(dno.runtime.tracking.varied_keys; seeds are pooled as repeats), so `-m loss.beta=0.05,0.1 seed=0,1,2` gives two
groups of three runs; runs that vary nothing but the seed are grouped by `method`. `group_by=KEY` (or a list)
chooses instead: a comparison axis (`method`, `model`, `loss`, ...: plain top-level W&B config keys) or any key of
the composed config (`loss.beta`: W&B's `cfg.loss.beta`). The title and the header name each group's values.

A search sweep (hydra/sweeper=optuna) is grouped by trial, and its report opens with a parallel-coordinates panel
of the trials' parameters and objective and a table of the trials sorted by the objective (dno.reports.search_report).

A panel draws only metrics the runs logged: a metric no run has is left out and reported, one only some runs
have is reported; so is a run directory without a W&B run (logger=none) or without a summary (unfinished).
Offline, the report's full specification goes to `report.json` (what `Report.save()` would send); with
`publish=true` it is saved to W&B and its URL printed. `workspace=true` also writes (or saves) a W&B
workspace with the same panels, a section per stage.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from dno.reports.run_records import RunRecord, find_runs, read_run, row_label
from dno.reports.search_report import SEARCH_GROUPING, described, search_blocks, search_of
from dno.runtime.config import ConfigError
from dno.runtime.files import read_json, write_json, write_text
from dno.runtime.layout import RunDir
from dno.runtime.tracking import (
    AXES,
    Launch,
    comparison_axes,
    default_entity,
    override_values,
    publish_ready,
    varied_keys,
)

PER_ITERATION = (
    ("Win-rate vs pi_1 (validation, %)", ("eval/win_rate_vs_init",)),
    ("Win-rate vs pi_t (validation, %)", ("eval/win_rate_vs_prev",)),
    ("LC win-rate vs pi_1 (validation, %)", ("eval/lc_win_rate_vs_init",)),
    ("Answer length (chars)", ("eval/avg_length",)),
    ("Pairs by type", ("pairs/teacher_over_student", "pairs/student_over_teacher", "pairs/student_over_student")),
    ("Training loss", ("train/loss",)),
)
FINAL = (
    ("AlpacaEval-style (final, %)", ("alpaca_eval/lc_win_rate", "alpaca_eval/win_rate")),
    ("MT-Bench (final, 1-10)", ("mt_bench/avg", "mt_bench/turn1", "mt_bench/turn2")),
    ("Arena-Hard-Auto (final, %)", ("arena_hard/score",)),
    ("Open LLM Leaderboard (final)", ("open_llm/avg",)),
)
SECTIONS = ("eval", "data", "pairs", "train", "time")  # the workspace's sections, by metric prefix
NO_SWEEP = ("method",)  # the grouping of runs that vary nothing but the seed


@dataclass(frozen=True)
class ReportRun:
    record: RunRecord
    wandb: dict  # the run directory's wandb_run.json: id, group, name, project, mode
    axes: dict  # the run's plain W&B config keys (dno.runtime.tracking.comparison_axes): method, model, ...
    config: dict  # the composed config (W&B's `cfg`)
    overrides: dict  # its command line's overrides, {key: value} (dno.runtime.tracking.override_values)


def local_run(path: Path, record: RunRecord, wandb: dict) -> ReportRun:
    """A run directory's ReportRun: the comparison axes it logged to W&B recomputed from its Hydra records (the
    same function), its config and its overrides."""
    run = RunDir(path)
    config = OmegaConf.to_container(OmegaConf.load(run.hydra_config)) if run.hydra_config.exists() else {}
    config = config or record.provenance.get("config", {})
    settings = OmegaConf.load(run.hydra_settings) if run.hydra_settings.exists() else None
    choices = dict(settings.hydra.runtime.choices) if settings else {}
    overrides = tuple(settings.hydra.overrides.task) if settings else ()
    axes = comparison_axes(config, Launch(choices=choices, overrides=overrides))
    return ReportRun(record, wandb, axes, config, override_values(overrides))


MISSING = object()


def lookup(config: dict, key: str):
    """The value of a dotted key in a nested config, MISSING where there is none."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


@dataclass(frozen=True)
class Grouping:
    """The keys a report groups its runs by: comparison axes or keys of the composed config."""

    keys: tuple[str, ...]
    varied: bool  # the keys are what the runs' overrides vary (else group_by= or the fallback, method)

    def value(self, run: ReportRun, key: str):
        """What W&B groups this run by for `key`: the axis, else the composed config's value, else the override."""
        if key in AXES:
            return run.axes.get(key)
        found = lookup(run.config, key)
        return run.overrides.get(key) if found is MISSING else found

    def label(self, run: ReportRun) -> str:
        return ", ".join(f"{k}={self.value(run, k)}" for k in self.keys)

    def wandb_keys(self) -> list[str]:
        """The W&B config keys of the runset's grouping: an axis is top-level, any other key is under `cfg`."""
        return [k if k in AXES else f"cfg.{k}" for k in self.keys]

    def groups(self, runs: list[ReportRun]) -> dict[str, list[ReportRun]]:
        out: dict[str, list[ReportRun]] = {}
        for r in runs:
            out.setdefault(self.label(r), []).append(r)
        return out

    def described(self, runs: list[ReportRun]) -> dict:
        """report_check.json's account: each run (W&B id, name, method, seed, W&B group, its group's label), the
        keys, W&B's grouping keys, and each group's runs."""
        return {"runs": [{"id": r.wandb["id"], "name": Path(r.record.name).name, "method": r.axes["method"],
                          "seed": r.record.seed, "group": r.wandb.get("group"), "label": self.label(r)} for r in runs],
                "group_by": list(self.keys), "wandb_groupby": self.wandb_keys(),
                "groups": {label: [Path(r.record.name).name for r in rs] for label, rs in self.groups(runs).items()}}


def grouping(runs: list[ReportRun], group_by) -> Grouping:
    """`group_by` (a key, comma-separated keys or a list) checked against the runs, else what their overrides vary,
    else `method`; a key that is neither an axis nor in any run's config is a ConfigError naming it."""
    if not group_by:
        keys = tuple(varied_keys([r.overrides for r in runs]))
        return Grouping(keys, True) if keys else Grouping(NO_SWEEP, False)
    keys = tuple(k.strip() for k in (group_by.split(",") if isinstance(group_by, str) else group_by) if k.strip())
    unknown = [k for k in keys if k not in AXES and all(lookup(r.config, k) is MISSING and k not in r.overrides
                                                       for r in runs)]
    if unknown or not keys:
        raise ConfigError(f"group_by={group_by}: {', '.join(unknown) or 'no key'} is neither a comparison axis "
                          f"({', '.join(AXES)}) nor a config key of these runs (e.g. loss.beta)")
    return Grouping(keys, False)


@dataclass(frozen=True)
class Built:
    report: object  # wandb_workspaces.reports.v2.Report
    check: dict  # the runs named, what was left out and why


def report_runs_online(project: str, group: str | None) -> tuple[list[ReportRun], list[str]]:
    """The runs of a W&B project (and group) through the W&B API, as dno-tables reads them."""
    from dno.reports.tables import pulled_records
    from dno.runtime.tracking import pull_runs

    pulled = pull_runs(project, group)
    records = pulled_records(pulled)
    return [ReportRun(rec, {"id": r["id"], "group": r["group"], "project": project.split("/")[-1]},
                      {k: r["axes"].get(k) for k in AXES}, r["provenance"]["config"],
                      override_values(r["axes"].get("overrides") or ""))
            for rec, r in zip(records, pulled, strict=True)], []


def report_runs(runs) -> tuple[list[ReportRun], list[str]]:
    """The runs of `runs` (a sweep directory, glob or list) that have a W&B run, and notes on those left out."""
    found, notes = [], []
    for path in find_runs(runs):
        run = RunDir(path)
        if not run.wandb_run.exists():
            notes.append(f"{path}: no W&B run (logger=none?): not in the report")
            continue
        if not run.summary.exists():
            notes.append(f"{path}: no summary (unfinished?): its per-iteration metrics are drawn, no final ones")
        found.append(local_run(path, read_run(path), read_json(run.wandb_run)))
    if not found:
        raise ConfigError(f"runs={runs}: no run with a W&B run to report")
    return found, notes


def logged_keys(runs: list[ReportRun]) -> tuple[dict, dict]:
    """Per-iteration keys (from the metrics file, what W&B's history holds) and summary keys, by run name."""
    history = {r.record.name: {k for m in r.record.metrics for k in m} for r in runs}
    summary = {r.record.name: set(r.record.summary) for r in runs}
    return history, summary


def kept(panels, keys: dict, notes: list[str]) -> list[tuple[str, list[str]]]:
    """The panels' metrics that some run logged; a metric no run has is left out, one some runs lack noted."""
    out = []
    for title, metrics in panels:
        present = []
        for m in metrics:
            having = [name for name, ks in keys.items() if m in ks]
            if not having:
                notes.append(f"{m}: logged by no run: left out of '{title}'")
            else:
                present.append(m)
                if len(having) < len(keys):
                    missing = sorted(Path(n).name for n in keys if n not in having)
                    notes.append(f"{m}: not logged by {', '.join(missing)}")
        if present:
            out.append((title, present))
    return out


def header(runs: list[ReportRun], sweep: Path | None, by: Grouping) -> str:
    """The sweep's command, commit, versions, judges and groups, from Hydra's records and the runs' provenance."""
    command = "(runs from several commands)"
    multirun = sweep / "multirun.yaml" if sweep else None
    if multirun and multirun.exists():
        task = OmegaConf.load(multirun).hydra.overrides.task
        command = "dno-run -m " + " ".join(task)
    elif len(runs) == 1 and RunDir(runs[0].record.path).hydra_overrides.exists():
        command = "dno-run " + " ".join(OmegaConf.load(RunDir(runs[0].record.path).hydra_overrides))
    provs = [r.record.provenance for r in runs]
    commits = sorted({(p.get("commit") or "?")[:10] + (" (dirty)" if p.get("dirty") else "") for p in provs})
    versions = provs[0].get("versions", {})
    judges = sorted({r.record.judge for r in runs})
    why = "what the sweep varied" if by.varied else "group_by" if by.keys != NO_SWEEP else "the runs vary only the seed"
    groups = [f"- `{label}`: {len(rs)} run(s), seed {', '.join(str(r.record.seed) for r in rs)}"
              for label, rs in by.groups(runs).items()]
    return "\n".join([
        f"**Command:** `{command}`", "",
        f"**Runs:** {len(runs)}; **commit:** {', '.join(commits)}; **judge:** {', '.join(judges)}", "",
        f"**Groups** (a line or bar each, its seeds pooled as mean and standard error), by "
        f"{', '.join(by.keys)} ({why}):", "", *groups, "",
        "**Versions:** " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))])


def paper_reference(runs: list[ReportRun], paper_dir: Path) -> str:
    """The paper's Table 1 rows of the methods in the report (by method name), as the bar charts' reference."""
    import pandas as pd

    paper = pd.read_csv(paper_dir / "table1.csv")
    methods = {row_label([r.record]) for r in runs}
    rows = [r for r in paper.to_dict("records") if r["method"] in methods]
    if not rows:
        return "The paper's Table 1 has no row of these methods."
    lines = ["The paper's numbers for these methods (AlpacaEval 2.0 vs GPT-4-Turbo, MT-Bench by GPT-4; not the "
             "same judge or scale as a local run's):", "", "| method | iteration | LC WR | WR | MT-Bench avg |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['iteration']} | {r['lc_win_rate']} | {r['win_rate']} | {r['mt_bench_avg']} |"
              for r in rows]
    return "\n".join(lines)


def build_report(runs: list[ReportRun], tables: dict[str, str], options: dict) -> Built:
    """The Report of `runs`; `tables`: dno-tables' markdown by file name; `options`: entity, project, title,
    paper_dir, sweep (the sweep directory or None), notes (runs already left out), grouping (a Grouping), search (a
    search sweep's trials, dno.reports.search_report, or None)."""
    import wandb_workspaces.reports.v2 as wr

    notes = list(options.get("notes", []))
    history, summary = logged_keys(runs)
    lines = kept(PER_ITERATION, history, notes)
    ran = {b for r in runs for b in (r.axes.get("benchmarks") or "").split(",") if b}
    prefixes = {"alpaca_eval" if b in ("local", "alpaca_eval2") else b for b in ran}
    bars = kept([(title, metrics) for title, metrics in FINAL if metrics[0].split("/")[0] in prefixes], summary, notes)
    ids = [r.wandb["id"] for r in runs]
    groups = sorted({r.wandb.get("group") or "" for r in runs})
    filters = f"Metric('ID') in {ids!r}"
    by = options["grouping"]
    runset = wr.Runset(name=groups[0] if len(groups) == 1 and groups[0] else "runs", filters=filters,
                       groupby=[f"config.{k}" for k in by.wandb_keys()])
    per_iteration = [wr.LinePlot(title=title, x="iteration", y=list(metrics), groupby_aggfunc="mean",
                                 groupby_rangefunc="stderr") for title, metrics in lines]
    final = [wr.BarPlot(title=title, metrics=[wr.SummaryMetric(m) for m in metrics], groupby_aggfunc="mean",
                        groupby_rangefunc="stderr") for title, metrics in bars]
    samples = sorted({f"samples/iter_{m['iteration']}" for r in runs for m in r.record.metrics} |
                     ({"eval/answers"} if any(r.record.annotations for r in runs) else set()))
    entity, project = options["entity"], options["project"]
    links = [f"[{Path(r.record.name).name}](https://wandb.ai/{entity}/{project}/runs/{r.wandb['id']}) "
             f"({by.label(r)}, seed {r.record.seed})" for r in runs]
    keys = ", ".join(by.keys)
    search = options.get("search")  # a search sweep: its trials' parallel coordinates and table first
    blocks = [
        wr.H1(options["title"]), wr.MarkdownBlock(header(runs, options.get("sweep"), by)),
        *(search_blocks(search, runs, runset) if search else []),
        wr.H2(f"Per iteration, grouped by {keys} (mean and standard error over seeds)"),
        wr.PanelGrid(runsets=[runset], panels=per_iteration),
        wr.H2(f"Final benchmarks, grouped by {keys}"), wr.PanelGrid(runsets=[runset], panels=final),
        wr.MarkdownBlock(paper_reference(runs, options["paper_dir"])),
        wr.H2("What differs between the runs"),
        wr.PanelGrid(runsets=[runset], panels=[wr.RunComparer(diff_only="split")]),
        *[block for name in ("table1.md", "table2.md", "comparison.md") if name in tables
          for block in (wr.H2(name), wr.MarkdownBlock(tables[name]))],
        wr.H2("Samples"), wr.MarkdownBlock("Each run's samples per iteration and its final answers are W&B Tables "
                                           "of the run: " + "; ".join(links)),
        wr.PanelGrid(runsets=[runset], panels=[wr.WeavePanelSummaryTable(table_name=t) for t in samples]),
    ]
    if notes:
        blocks.insert(2, wr.MarkdownBlock("**Left out or incomplete:**\n\n" + "\n".join(f"- {n}" for n in notes)))
    report = wr.Report(project=project, entity=entity, title=options["title"], blocks=blocks, width="fluid")
    check = {**by.described(runs), "per_iteration": dict(lines), "final": dict(bars), "sample_tables": samples,
             "notes": notes} | ({"search": described(search)} if search else {})
    return Built(report, check)


def workspace(runs: list[ReportRun], options: dict):
    """A W&B workspace of the project: a section per stage (eval, data, pairs, train, time) of line plots of
    every per-iteration metric the runs logged, grouped as the report is."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    history, _ = logged_keys(runs)
    keys = sorted(set().union(*history.values()) - {"iteration"})
    sections = [ws.Section(name=prefix, is_open=prefix == "eval", panels=[
        wr.LinePlot(title=k, x="iteration", y=[k], groupby_aggfunc="mean", groupby_rangefunc="stderr")
        for k in keys if k.split("/", 1)[0] == prefix]) for prefix in SECTIONS]
    name = "".join(" " if unicodedata.category(c)[0] == "S" else c for c in options["title"])  # W&B refuses symbols
    return ws.Workspace(entity=options["entity"], project=options["project"], name=" ".join(name.split())[:60],
                        sections=[s for s in sections if s.panels],
                        runset_settings=ws.RunsetSettings(groupby=[ws.Config(k)
                                                                   for k in options["grouping"].wandb_keys()]))


def spec(obj) -> dict:
    """What wandb-workspaces would send for a report or workspace (its model, as JSON)."""
    return json.loads(obj._to_model().model_dump_json(by_alias=True, exclude_none=True))


def make_report(cfg, out: Path) -> dict:
    """dno-report: the report of `cfg.runs` into `out` (report.json, report_check.json, tables/); published with
    `cfg.publish`. Returns what was written (and the URL when published)."""
    from dno.reports.tables import PAPER_DIR, write_tables

    if cfg.publish:
        publish_ready()
    if cfg.wandb:
        runs, notes = report_runs_online(cfg.wandb, cfg.group)
    elif cfg.runs:
        runs, notes = report_runs(cfg.runs)
    else:
        raise ConfigError("give runs=SWEEP_DIR_OR_GLOB (the runs' directories) or wandb=ENTITY/PROJECT group=GROUP")
    projects = sorted({r.wandb.get("project", "dno") for r in runs})
    if len(projects) > 1 and not cfg.project:
        raise ConfigError(f"the runs log to several W&B projects ({', '.join(projects)}): choose one with project=")
    entity = cfg.entity or (cfg.wandb.split("/")[0] if cfg.wandb else default_entity() if cfg.publish
                            else "YOUR-ENTITY")
    sweep = Path(cfg.runs) if isinstance(cfg.runs, str) and Path(cfg.runs).is_dir() and not RunDir(
        Path(cfg.runs)).metrics.exists() else None
    if cfg.wandb and cfg.group:
        sweep = Path(cfg.group)
    search = search_of(runs, sweep)  # a search sweep (hydra/sweeper=optuna): grouped by trial unless group_by says
    by = grouping(runs, cfg.group_by or (SEARCH_GROUPING if search else None))  # a key of no run stops here
    labels = f"{len(search.rows)} trials over {', '.join(search.space)}" if search else " vs ".join(by.groups(runs))
    written = write_tables([r.record for r in runs], out / "tables", PAPER_DIR, {"lc_samples": cfg.lc_samples})
    tables = {p.name: p.read_text() for p in written if p.suffix == ".md"}
    options = {"entity": entity, "project": cfg.project or projects[0], "notes": notes, "sweep": sweep,
               "title": cfg.title or f"DNO: {sweep.name if sweep else 'runs'}: {labels}", "paper_dir": PAPER_DIR,
               "grouping": by, "search": search}
    built = build_report(runs, tables, options)
    write_json(out / "report.json", spec(built.report))
    write_json(out / "report_check.json", built.check)
    result = {"report": str(out / "report.json"), "check": str(out / "report_check.json"),
              "notes": built.check["notes"]}
    if cfg.workspace:
        view = workspace(runs, options)
        write_json(out / "workspace.json", spec(view))
        result["workspace"] = str(out / "workspace.json")
    if cfg.publish:
        built.report.save(draft=cfg.draft)
        result["url"] = built.report.url
        write_text(out / "url.txt", built.report.url + "\n")
        if cfg.workspace:
            view.save()
            result["workspace_url"] = view.url
    return result

