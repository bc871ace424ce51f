"""Metrics to Weights & Biases and to the run's own files, in one small logger.

The run's metrics file (`RunDir.metrics`) gets one JSON object per log call, always with "iteration";
it is what later commands read back, since an offline W&B run keeps its data only in a binary log. The
summary file (`RunDir.summary`) holds the final metrics. Only this module imports wandb.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dno.runtime.files import read_json, read_jsonl, write_json, write_jsonl
from dno.runtime.layout import RunDir
from dno.runtime.signals import PREEMPTED_EXIT

log = logging.getLogger(__name__)
SECRET_KEY = re.compile(r"(api_key|token|secret|password)$", re.IGNORECASE)


def redact(obj):
    """The config as logged to W&B: values of keys that look like secrets are dropped."""
    if isinstance(obj, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


@dataclass(frozen=True)
class Launch:
    """What started a run, as W&B groups and filters runs: the sweep (group), the job's name, the app (job type),
    Hydra's chosen option per config group and the command line's overrides."""

    group: str | None = None  # a multirun's name: `sweep_name`, else its directory's own name
    name: str | None = None  # the job's overrides, or the run directory's name
    job_type: str = "dno-run"  # dno-run, dno-eval, dno-bench
    choices: dict = field(default_factory=dict)  # e.g. {"loss": "dno_prct", "model": "tiny_random"}
    overrides: tuple[str, ...] = ()
    sweep_dir: str | None = None  # a multirun's directory, absolute


AXES = ("method", "model", "oracle", "loss", "schedule", "data", "teacher", "benchmarks", "seed", "experiment",
        "overrides", "trial")  # trial: a search trial's number (search_axes), absent elsewhere


def comparison_axes(config: dict, launch: Launch) -> dict:
    """The keys a user groups and filters runs by in W&B, plain and top-level: the method (the variant's name),
    the option chosen in each config group (the model's name, the oracle's class without Hydra), the benchmarks,
    the seed, the experiment and the overrides that define the run (dno-report groups a sweep's runs by those that
    differ between them: `varied_keys`)."""
    choices = launch.choices

    def chosen(group: str, fallback) -> str:
        return str(choices.get(group) or fallback)

    return {"method": config.get("method") or chosen("loss", "?"),
            "model": chosen("model", config.get("model", {}).get("name")),
            "oracle": chosen("oracle", str(config.get("oracle", {}).get("_target_", "?")).rsplit(".", 1)[-1]),
            "loss": chosen("loss", "?"), "schedule": chosen("schedule", "?"), "data": chosen("data", "?"),
            "teacher": chosen("teacher", "?"), "benchmarks": ",".join(config.get("eval") or {}),
            "seed": config.get("seed"), "experiment": choices.get("experiment"),
            "overrides": " ".join(launch.overrides)} | search_axes(config)


def search_axes(config: dict) -> dict:
    """A search trial's number and parameters (`search.trial`, `search.params`, set by hydra/sweeper=optuna) as
    plain W&B config keys `trial` and `params`; nothing for a run that is not a trial."""
    search = config.get("search") or {}
    if search.get("trial") is None:
        return {}
    return {"trial": search["trial"], "params": dict(search.get("params") or {})}


def override_values(overrides) -> dict[str, str]:
    """Hydra's command-line overrides (`key=value` strings, or the `overrides` axis: them joined by spaces) as
    {key: value}; `+`, `++` and `~` are dropped from a key, Hydra's own `hydra.*` and `hydra/*` left out."""
    out = {}
    for o in overrides.split() if isinstance(overrides, str) else overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key and not key.startswith(("hydra.", "hydra/")):
            out[key] = value
    return out


def varied_keys(overrides: list[dict]) -> list[str]:
    """What a sweep varied: the override keys (`override_values` of each run) whose value is not the same in every
    run, a key some runs lack counting as a value of its own; `seed` left out (seeds are repeats, pooled)."""
    keys = dict.fromkeys(k for o in overrides for k in o if k != "seed")
    return [k for k in keys if len({o.get(k) for o in overrides}) > 1]


class NullSink:
    """logger=none: metrics go only to the run directory. W&B's settings that an experiment adds (`logger.tags`)
    are accepted and have nowhere to go."""

    def __init__(self, **wandb_settings) -> None:
        pass

    def start(self, run: RunDir, config: dict, launch: Launch) -> None:
        pass

    def log(self, metrics: dict, iteration: int) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def table(self, key: str, rows: list[dict], iteration: int | None) -> None:
        pass

    def preempted(self) -> None:
        pass

    def artifact(self, name: str, path: Path, *, alias: str, metadata: dict) -> None:
        pass

    def finish(self) -> None:
        pass


class WandbSink(NullSink):
    """`logger=wandb`: a W&B run per DNO run; re-running the same run directory resumes the same W&B run id.

    Args:
        mode: offline (default here), online or disabled.
        project, entity: where the run goes (entity None: your default).
        group: None groups a multirun's jobs by its sweep directory.
        name: None names a run by its command-line overrides.
        tags: experiments add theirs (table1, the row).
    """

    def __init__(self, mode: str = "offline", project: str = "dno", entity: str | None = None,
                 group: str | None = None, name: str | None = None, tags: list[str] | None = None) -> None:
        self.settings = dict(mode=mode, project=project, entity=entity, group=group, name=name,
                             tags=list(tags or []))
        self.run = None

    def start(self, run: RunDir, config: dict, launch: Launch) -> None:
        """The W&B config: the comparison axes (`comparison_axes`) top-level, the composed config under `cfg`, the
        provenance under `provenance`."""
        import wandb

        id_file = run.wandb_run
        run_id = read_json(id_file)["id"] if id_file.exists() else uuid.uuid4().hex[:8]
        s = self.settings
        experiment = launch.choices.get("experiment")
        tags = [*s["tags"], *([f"experiment:{experiment}"] if experiment else [])]
        self.run = wandb.init(
            mode=s["mode"], project=s["project"], entity=s["entity"], group=s["group"] or launch.group,
            name=s["name"] or launch.name or run.path.name, tags=tags, job_type=launch.job_type,
            config=config, dir=str(run.path), id=run_id, resume="allow", reinit="finish_previous",
        )
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")
        write_json(id_file, {"id": run_id, "group": self.run.group, "name": self.run.name,
                             "project": s["project"], "mode": s["mode"]})

    def log(self, metrics: dict, iteration: int) -> None:
        self.run.log({**metrics, "iteration": iteration})

    def summary(self, metrics: dict) -> None:
        self.run.summary.update(metrics)

    def table(self, key: str, rows: list[dict], iteration: int | None) -> None:
        import wandb

        columns = list(rows[0]) if rows else []
        table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
        self.run.log({key: table, **({} if iteration is None else {"iteration": iteration})})

    def preempted(self) -> None:
        """Marked preempted in W&B (a requeue resumes this run id from `RunDir.wandb_run`), then closed."""
        if self.run is not None:
            self.run.mark_preempting()
            self.run.finish(exit_code=PREEMPTED_EXIT)
            self.run = None

    def artifact(self, name: str, path: Path, *, alias: str, metadata: dict) -> None:
        """A dataset artifact of this run that points at `path` (by reference: nothing is uploaded)."""
        import wandb

        artifact = wandb.Artifact(f"{name}-{self.run.id}", type="dataset", metadata=metadata)
        artifact.add_reference(Path(path).resolve().as_uri(), checksum=True)
        self.run.log_artifact(artifact, aliases=[alias])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def finite(metrics: dict, where: str) -> dict:
    """`metrics` without NaN or infinite values (a statistic over no judgement is missing, never NaN, in
    the metrics file, the summary and W&B), with a warning naming what was left out."""
    dropped = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if dropped:
        log.warning("%s: not logged, no value (nothing to compute it from): %s", where, ", ".join(dropped))
    return {k: v for k, v in metrics.items() if k not in dropped}


class Tracker:
    """enabled=False (the other processes of a multi-process run): nothing is written anywhere."""

    def __init__(self, run: RunDir, sink: NullSink, enabled: bool = True) -> None:
        self.run = run
        self.sink = sink if enabled else NullSink()
        self.path = run.metrics
        self.enabled = enabled
        self.search: dict | None = None  # a search trial's `search` config (hydra/sweeper=optuna)

    def start(self, config: dict, launch: Launch, logged_iterations: set[int]) -> None:
        """Keep only the lines of iterations whose logging finished (a crash can leave one extra)."""
        if not self.enabled:
            return
        search = (config.get("cfg") or {}).get("search") or {}
        self.search = search if search.get("trial") is not None else None
        if self.path.exists():
            write_jsonl(self.path, [r for r in read_jsonl(self.path) if r["iteration"] in logged_iterations])
        self.sink.start(self.run, config, launch)

    def log(self, metrics: dict, iteration: int) -> None:
        if not self.enabled:
            return
        metrics = finite(metrics, f"iteration {iteration}")
        row = {"iteration": iteration, **metrics}
        logged = read_jsonl(self.path) if self.path.exists() else []
        if any(r["iteration"] == iteration for r in logged):  # a redone log stage (a damaged run dir) replaces its line
            write_jsonl(self.path, [r for r in logged if r["iteration"] != iteration])
        size = self.path.stat().st_size if self.path.exists() else 0
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError:  # a full disk: back to the last whole line
            os.truncate(self.path, size)
            raise
        self.sink.log(metrics, iteration)

    def summary(self, metrics: dict) -> None:
        if not self.enabled:
            return
        if self.search:  # a search trial: its number and objective beside the final metrics (parallel coordinates)
            metrics = {**metrics, **self.search_summary(metrics)}
        metrics = finite(metrics, "summary")
        write_json(self.run.summary, metrics)
        self.sink.summary(metrics)

    def search_summary(self, summary: dict) -> dict:
        """`search/trial` and `search/objective`: the value the trial returns to the sweeper (search.objective's,
        dno.runtime.search.objective_value), from the summary being written and the metrics file."""
        from dno.runtime.search import DEFAULT_OBJECTIVE, objective_value

        key = self.search.get("objective") or DEFAULT_OBJECTIVE
        value = objective_value(self.run.path, key, summary)
        return {"search/trial": self.search["trial"], **({"search/objective": value} if value is not None else {})}

    def table(self, key: str, rows: list[dict], iteration: int | None = None) -> None:
        """Rows to read (samples, answers) as a W&B Table under `key`; the run directory has them already."""
        if self.enabled:
            self.sink.table(key, rows, iteration)

    def artifact(self, name: str, path: Path, *, alias: str, metadata: dict) -> None:
        if self.enabled:
            self.sink.artifact(name, path, alias=alias, metadata=metadata)

    def preempted(self) -> None:
        if self.enabled:
            self.sink.preempted()

    def finish(self) -> None:
        self.sink.finish()


def publish_ready() -> None:
    """Publishing to W&B (dno-report publish=true): a key and the W&B server reachable, checked before anything
    else runs (a ConfigError naming what is missing)."""
    import socket
    from urllib.parse import urlsplit

    import wandb

    from dno.runtime.config import ConfigError

    key = os.environ.get("WANDB_API_KEY")
    if not key:
        try:
            key = wandb.Api().api_key
        except Exception:  # noqa: BLE001 - no key configured, in whichever way wandb says it
            key = None
    if not key:
        raise ConfigError("publish=true needs a W&B API key: set WANDB_API_KEY or run `wandb login` (without "
                          "publish=true the report's specification is written offline, report.json)")
    url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"publish=true: the W&B server {url.hostname} cannot be reached ({e}); without "
                          "publish=true the report's specification is written offline, report.json") from None


def default_entity() -> str:
    """The logged-in user's default W&B entity."""
    import wandb

    return wandb.Api().default_entity


def pull_runs(project: str, group: str | None) -> list[dict]:
    """Runs of an online W&B project (and group) as dno-tables records: config, summary, history."""
    import wandb

    records = []
    for run in wandb.Api().runs(project, filters={"group": group} if group else None):
        config = dict(run.config)
        composed = config.get("cfg") or config  # runs logged before the comparison axes kept it top-level
        history = [dict(row) for row in run.scan_history() if row.get("iteration") is not None]
        records.append({"id": run.id, "group": run.group, "axes": {k: config.get(k) for k in AXES},
                        "name": run.name, "label": config.get("method") or run.name,
                        "judge": run.summary.get("alpaca_eval/annotator")
                        or str((composed.get("oracle") or {}).get("_target_", "?")).rsplit(".", 1)[-1],
                        "summary": dict(run.summary), "metrics": history,
                        "provenance": {**(config.get("provenance") or {}), "config": composed}})
    return records
