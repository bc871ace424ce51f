"""The command-line apps: thin Hydra entry points over the library (pyproject.toml's scripts).

    dno-run    dno.apps.run     the algorithm (dno.loop) on a run (dno.run.Run)
    dno-eval   dno.apps.eval    the final stage on a checkpoint (dno.loop, dno.stages.final)
    dno-bench  dno.apps.bench   where an iteration's time goes (dno.bench)
    dno-tables dno.apps.tables  the paper's tables from run records (dno.tables)
    dno-nash   dno.apps.nash    DNO on exact tabular games (dno.nash)

Each app reads its config, calls one library function and turns its errors into exit codes:
2 for a bad config (nothing computed), 3 for a judge, server or evaluation that failed (the same
command resumes). No library module imports an app.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from dno.alpacaeval import EvalError
from dno.config import ConfigError
from dno.generation import GenerationError
from dno.oracles.api import BudgetExceeded, OracleError

log = logging.getLogger("dno")
RESUMABLE = (BudgetExceeded, OracleError, GenerationError, EvalError)


def job() -> tuple[Path, str | None, str]:
    """This Hydra job's output directory, its sweep (the W&B group) and its name."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    return run_dir, hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None, hc.job.override_dirname or run_dir.name


def exit_codes(app: str, fn: Callable[[], object]):
    """Run `fn`; a ConfigError exits 2, a resumable failure exits 3, each with one line on stderr."""
    try:
        return fn()
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"{app}: config error: {e}", file=sys.stderr)
        sys.exit(2)
    except RESUMABLE as e:  # a re-run resumes (paid judgements are cached)
        log.error("%s", e)
        print(f"{app}: {e}", file=sys.stderr)
        sys.exit(3)
