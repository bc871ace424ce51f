"""Files of the run directory: JSON and JSON-lines written atomically, and stage markers.

Every stage of an iteration writes its outputs, then `DONE.<stage>` holding the stage's metrics.
A marker is written last and atomically, so its presence means the stage finished; a re-run of
the same command skips every marked stage and reads its metrics back from the marker.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    _atomic_write(Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    _atomic_write(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_stage(directory: Path, name: str, fn: Callable[[], dict | None]) -> dict:
    """Run `fn` unless `directory/DONE.<name>` exists; return the stage's metrics either way."""
    marker = Path(directory) / f"DONE.{name}"
    if marker.exists():
        log.info("skip %s/%s (done)", Path(directory).name, name)
        return read_json(marker)
    log.info("%s/%s: start", Path(directory).name, name)
    start = time.perf_counter()
    metrics = dict(fn() or {})
    metrics[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
    write_json(marker, metrics)
    log.info("%s/%s: done in %.1f s", Path(directory).name, name, metrics[f"time/{name}_s"])
    return metrics
