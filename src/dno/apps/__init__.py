"""The command-line apps: thin Hydra entry points over the library (pyproject.toml's scripts).

    dno-run    dno.apps.run     the algorithm (dno.loop) on a run (dno.run.Run)
    dno-eval   dno.apps.eval    the final stage on a checkpoint or a run's iterates (dno.final)
    dno-bench  dno.apps.bench   where an iteration's time goes (dno.reports.bench)
    dno-tables dno.apps.tables  the paper's tables from run records (dno.reports.tables)
    dno-nash   dno.apps.nash    DNO on exact tabular games (dno.nash)
    dno-export dno.apps.export  a run's per-iteration data as a Hugging Face dataset (dno.reports.export)
    dno-report dno.apps.report  a sweep as one W&B Report (dno.reports.wandb_report)

Each app reads its config, calls one library function and turns its errors into exit codes:
2 for a bad config (nothing computed), 3 for a judge, server or evaluation that failed (the same
command resumes), 4 when SIGTERM or Ctrl-C stopped it (the same command resumes). Hydra's own refusal of a
command line (an unknown option or key) exits 1 before an app starts, and a SIGKILL shows 137
(docs/guides/resume.md's table). No library module imports an app.
An app imports the library when it runs, not when it starts, so that `--help`, `--cfg job` and a misspelt
config group answer in about a second, not after the model libraries' eight.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from dno.oracles.api import BudgetExceeded, OracleError
from dno.runtime.config import ConfigError
from dno.runtime.files import is_disk_full
from dno.runtime.signals import PREEMPTED_EXIT, Preempted, preemptible
from dno.runtime.tracking import Launch

log = logging.getLogger("dno")


def resumable() -> tuple[type[Exception], ...]:
    """The failures the same command resumes from (paid judgements are cached). Their modules load the model
    libraries, so they are imported when a failure is being sorted, not when an app starts."""
    from dno.benchmarks.base import EvalError
    from dno.policy.server import GenerationError

    return BudgetExceeded, OracleError, GenerationError, EvalError


class Job(NamedTuple):
    dir: Path  # Hydra's output directory: the run directory
    launch: Launch  # the sweep (W&B group), the job's name, the app, Hydra's choices and overrides


def job(app: str, cfg=None) -> Job:
    """This Hydra job of `app` (dno-run, dno-eval, ...), as the library needs it. A multirun's W&B group is the
    config's `sweep_name`, else the sweep directory's own name (its absolute path goes into W&B's `sweep_dir`)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    sweep = hc.mode == RunMode.MULTIRUN
    group = ((cfg.get("sweep_name") if cfg is not None else None) or Path(hc.sweep.dir).name) if sweep else None
    return Job(run_dir, Launch(group, hc.job.override_dirname or run_dir.name, app, dict(hc.runtime.choices),
                               tuple(hc.overrides.task), str(Path(hc.sweep.dir).resolve()) if sweep else None))


def lost_peer(e: BaseException) -> bool:
    """The collective failed because a peer process is gone (its socket closed or reset: gloo and NCCL's TCP
    transport say so), not because of this process's own work or setup (a port in use, a CUDA error)."""
    text = str(e)
    return "Connection closed by peer" in text or "Connection reset by peer" in text


def exit_codes(app: str, fn: Callable[[], object]):
    """Run `fn`; a ConfigError exits 2, a resumable failure exits 3, SIGTERM or Ctrl-C exits 4 (the same
    command resumes), each with one line on stderr."""
    try:
        with preemptible():
            return fn()
    except Preempted as e:
        log.warning("%s: the same command resumes from the unfinished stage", e)
        print(f"{app}: {e}: the same command resumes from the unfinished stage", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT)
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"{app}: config error: {e}", file=sys.stderr)
        sys.exit(2)
    except resumable() as e:  # a re-run resumes (paid judgements are cached)
        log.error("%s", e)
        print(f"{app}: {e}", file=sys.stderr)
        sys.exit(3)
    except Exception as e:
        if lost_peer(e):  # a process of this run (on this machine or another) died: this one stops at once
            log.error("another process of this run is gone: %s", e)
            first = (str(e).splitlines() or [""])[0][:300]
            print(f"{app}: another process of this run is gone ({first}); every finished stage is intact: start the "
                  "same command again on every machine to resume", file=sys.stderr)
            sys.exit(3)
        if not is_disk_full(e):
            raise
        log.error("a write failed for lack of space: %s", e)
        print(f"{app}: a write failed for lack of space ({e}); every finished file is intact: free space, then "
              "the same command resumes from the unfinished stage", file=sys.stderr)
        sys.exit(3)


class TrialFailed(RuntimeError):
    """A search trial whose run stopped (exit 2: a bad point; 3: a judge, server or evaluation failure) or has no
    objective: the sweeper records the trial as failed and goes on (hydra_plugins.dno_search.optuna_sweeper)."""


def trial_result(cfg, run_dir: Path, fn: Callable[[], object]) -> float | None:
    """dno-run's return value. In a search trial (`search.trial`, set by the sweeper): the objective of the finished
    run (`search.objective`, dno.runtime.search.objective_value); its stops as TrialFailed, but for SIGTERM or Ctrl-C
    (exit 4), which stop the whole sweep (the same command resumes it). Elsewhere `fn`'s exits stand, and None."""
    from dno.runtime.search import DEFAULT_OBJECTIVE, objective_value

    trial = OmegaConf.select(cfg, "search.trial", default=None)
    if trial is None:
        fn()
        return None
    try:
        fn()
    except SystemExit as e:
        if e.code == PREEMPTED_EXIT:
            raise
        why = {2: "a bad config or point", 3: "a judge, server or evaluation failure"}.get(e.code, "an error")
        raise TrialFailed(f"trial {trial}: dno-run exited {e.code}, {why}: the reason is in its log in {run_dir}") \
            from None
    key = OmegaConf.select(cfg, "search.objective", default=None) or DEFAULT_OBJECTIVE
    value = objective_value(run_dir, key)
    if value is None:
        raise TrialFailed(f"trial {trial}: the run has no value of the objective {key} (search.objective)")
    return value


GROUPS_SPELLED_AS_KEYS = ("generation.server",)  # config groups whose option users also write with a dot


def groups_spelled_as_keys(argv: list[str]) -> list[str]:
    """`generation.server=vllm_cpu` is read as the config group choice `generation/server=vllm_cpu` when the value
    names one of the group's files (conf/generation/server/vllm_cpu.yaml); any other value is left to Hydra."""
    from dno.runtime.config import CONF_DIR

    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        group = Path(CONF_DIR) / key.replace(".", "/")
        if eq and key in GROUPS_SPELLED_AS_KEYS and all((group / f"{v}.yaml").exists() for v in value.split(",")):
            arg = f"{key.replace('.', '/')}={value}"  # one option, or a sweep over options (-m)
        out.append(arg)
    return out
