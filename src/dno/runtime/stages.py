"""Resumable stages: a stage writes its outputs, then its marker (`StageDir.marker`) holding its metrics.

The marker is written last and atomically, so its presence means the stage finished; a re-run of
the same command skips every marked stage whose outputs are whole and reads its metrics back from
the marker. Under N processes (`accelerator`), only the main process writes markers; see
`run_stage`.
"""

from __future__ import annotations

import contextvars
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from dno.runtime.commit import commit
from dno.runtime.files import read_json, readable, write_json
from dno.runtime.layout import StageDir, bill_name

log = logging.getLogger(__name__)
_RUNNING: contextvars.ContextVar = contextvars.ContextVar("running_stage", default=None)


def running_stage() -> tuple[StageDir, str] | None:
    """The stage whose function is running in this thread (its folder and name), for what it leaves behind
    besides its outputs (a Batch API journal)."""
    return _RUNNING.get()


def bill_stage() -> tuple[str, int | None]:
    """The running stage as the judge's bill names it (`dno.oracles.ledger`), with its iteration: `judge` and
    `validation` of iteration t, `lookahead`, `teacher` (iteration 0), `final/<benchmark>` (the iteration whose
    iterate dno-eval run_dir=RUN evaluates, else None); `other` outside a stage."""
    running = running_stage()
    if running is None:
        return "other", None
    directory, name = running
    return bill_name(directory, name)


def stage_seed(seed: int, iteration: int, stage: str) -> int:
    """A seed per (run seed, iteration, stage): a resumed stage draws what it would have drawn."""
    return zlib.crc32(f"{seed}/{iteration}/{stage}".encode()) % (2**31)


def read_marker(marker: Path) -> dict:
    """A stage's metrics from its marker (without the `_commit` that produced it)."""
    return {k: v for k, v in read_json(marker).items() if not k.startswith("_")}


def stage_done(directory: StageDir, name: str, outputs: tuple[Path, ...] = ()) -> bool:
    """The stage's marker exists and parses, and so does every output it names; a marker whose outputs
    were deleted or cut short (by hand, a partial copy) is not done (a warning says why)."""
    marker = directory.marker(name)
    if not marker.exists():
        return False
    broken = [o.name for o in outputs if not readable(o)]
    try:
        read_json(marker)
        marker_ok = True
    except ValueError:
        marker_ok = False
    if not marker_ok or broken:
        log.warning("%s is marked done but %s missing or unreadable: the stage is redone", marker,
                    ", ".join(broken) + (" is" if len(broken) == 1 else " are") if broken else "the marker is")
        return False
    return True


def _run_here(directory: StageDir, name: str, fn: Callable[[], dict | None], outputs: tuple[Path, ...]) -> dict:
    """Run `fn` unless the stage is done; return the stage's metrics either way."""
    marker = directory.marker(name)
    if stage_done(directory, name, outputs):
        log.info("skip %s/%s (done)", directory.name, name)
        return read_marker(marker)
    if marker.exists():  # damaged: redone, and so are the stages of this directory that came after it
        since = marker.stat().st_mtime
        later = [m for m in directory.markers() if m != marker and m.stat().st_mtime >= since]
        for m in [marker, *later]:
            m.unlink(missing_ok=True)
        if later:
            log.warning("%s/%s is redone, and so are %s", directory.name, name, ", ".join(m.name for m in later))
    log.info("%s/%s: start", directory.name, name)
    start = time.perf_counter()
    token = _RUNNING.set((directory, name))
    try:
        metrics = dict(fn() or {})
    finally:
        _RUNNING.reset(token)
    metrics[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
    write_json(marker, {**metrics, "_commit": commit()})
    log.info("%s/%s: done in %.1f s", directory.name, name, metrics[f"time/{name}_s"])
    return metrics


def run_stage(directory: StageDir, name: str, fn: Callable[[], dict | None], outputs: tuple[Path, ...] = (), *,
              accelerator=None, everyone: bool = False) -> dict:
    """Run `fn` as the stage `name` of `directory` unless it is done (marker and `outputs` whole); return the
    stage's metrics either way. The marker also records the commit of the code that ran it (`_commit`).

    Under N processes: everyone=False, only the main process runs `fn` while the others wait;
    everyone=True, every process runs `fn` (it shards and gathers itself) and the main one marks it done."""
    if accelerator is None or accelerator.num_processes == 1:
        return _run_here(directory, name, fn, outputs)
    done = stage_done(directory, name, outputs)  # every process decides before the main one may redo it
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        metrics = _run_here(directory, name, fn, outputs)
    elif everyone and not done:
        fn()
    accelerator.wait_for_everyone()
    return metrics if accelerator.is_main_process else read_marker(directory.marker(name))
