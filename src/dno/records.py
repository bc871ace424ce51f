"""Files of the run directory: JSON and JSON-lines written atomically, and stage markers.

Every stage of an iteration writes its outputs, then `DONE.<stage>` holding the stage's metrics.
A marker is written last and atomically, so its presence means the stage finished; a re-run of
the same command skips every marked stage and reads its metrics back from the marker.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from dno.commit import commit

log = logging.getLogger(__name__)


DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def is_disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space (no space left, file too large, quota), wherever it was raised:
    an OSError, or a library's own error that carries the OS error's text (safetensors, SQLite)."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in DISK_ERRNOS:
            return True
        text = str(seen)
        if any(s in text for s in ("os error 27", "os error 28", "os error 122", "No space left on device",
                                   "File too large", "database or disk is full")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def write_text(path: Path, text: str) -> None:
    """`text` into `path` atomically: the previous file stays whole if the write fails (a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_dir(out: Path, build: Callable[[Path], object]) -> None:
    """`build(tmp)` fills a directory next to `out`, which then replaces `out` by a rename: a failed build
    (a full disk, a kill) leaves no half-written directory, and an `out` left by an unfinished stage
    that is being redone is replaced."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by a process killed while building
    try:
        build(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def stage_seed(seed: int, iteration: int, stage: str) -> int:
    """A seed per (run seed, iteration, stage): a resumed stage draws what it would have drawn."""
    return zlib.crc32(f"{seed}/{iteration}/{stage}".encode()) % (2**31)


def read_marker(marker: Path) -> dict:
    """A stage's metrics from its DONE marker (without the `_commit` that produced it)."""
    return {k: v for k, v in read_json(marker).items() if not k.startswith("_")}


def readable(path: Path) -> bool:
    """Whether a stage's output is there and whole: JSON and JSON-lines parse, a checkpoint or adapter
    directory has its config and the headers of its safetensors files."""
    try:
        if path.is_dir():
            from safetensors import safe_open

            files = list(path.glob("*.safetensors"))
            for f in files:
                with safe_open(f, "pt") as st:
                    st.keys()
            return bool(files) and all(readable(j) for j in path.glob("*config.json"))
        if path.suffix == ".jsonl":
            read_jsonl(path)
        elif path.suffix == ".json":
            read_json(path)
        return path.exists()
    except Exception:  # noqa: BLE001 - unreadable for any reason is not done
        return False


def stage_done(directory: Path, name: str, outputs: tuple[str, ...] = ()) -> bool:
    """The stage's marker exists and parses, and so does every output it names; a marker whose outputs
    were deleted or cut short (by hand, a partial copy) is not done (a warning says why)."""
    marker = Path(directory) / f"DONE.{name}"
    if not marker.exists():
        return False
    broken = [o for o in outputs if not readable(Path(directory) / o)]
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


def run_stage(directory: Path, name: str, fn: Callable[[], dict | None], outputs: tuple[str, ...] = ()) -> dict:
    """Run `fn` unless the stage is done (`directory/DONE.<name>`, with its `outputs` readable); return
    the stage's metrics either way. The marker also records the commit of the code that ran it (`_commit`)."""
    marker = Path(directory) / f"DONE.{name}"
    if stage_done(directory, name, outputs):
        log.info("skip %s/%s (done)", Path(directory).name, name)
        return read_marker(marker)
    if marker.exists():  # damaged: redone, and so are the stages of this directory that came after it
        since = marker.stat().st_mtime
        later = [m for m in Path(directory).glob("DONE.*") if m != marker and m.stat().st_mtime >= since]
        for m in [marker, *later]:
            m.unlink(missing_ok=True)
        if later:
            log.warning("%s/%s is redone, and so are %s", Path(directory).name, name,
                        ", ".join(sorted(m.name for m in later)))
    log.info("%s/%s: start", Path(directory).name, name)
    start = time.perf_counter()
    metrics = dict(fn() or {})
    metrics[f"time/{name}_s"] = round(time.perf_counter() - start, 3)
    write_json(marker, {**metrics, "_commit": commit()})
    log.info("%s/%s: done in %.1f s", Path(directory).name, name, metrics[f"time/{name}_s"])
    return metrics


# Format versions of the per-iteration files. Version 1 (before the names followed the paper's
# symbols) is read by renaming its fields; a newer version than this code knows is an error.
# Samples files carry no version: their one renamed field (`gold`) is renamed whenever they are read.
PAIRS_VERSION = JUDGEMENTS_VERSION = 2
_V1_RENAMES = {"chosen_win_rate": "chosen_win_prob", "rejected_win_rate": "rejected_win_prob",
               "ref_logp_chosen": "ref_chosen_logps", "ref_logp_rejected": "ref_rejected_logps",
               "win_rates": "win_probs", "gold": "teacher"}


def _read_versioned(path: Path, current: int) -> list[dict]:
    rows = []
    for i, row in enumerate(read_jsonl(path), start=1):
        version = row.get("version", 1)
        if version == 1:
            row = {_V1_RENAMES.get(k, k): v for k, v in row.items()} | {"version": current}
        elif version != current:
            raise ValueError(f"{path}, row {i}: format version {version!r}, but this code reads versions 1 to "
                             f"{current}: update dno, or re-run the stage in a new run directory")
        rows.append(row)
    return rows


def read_pairs(path: Path) -> list[dict]:
    """A pairs.jsonl file (any known version) with today's field names."""
    return _read_versioned(path, PAIRS_VERSION)


def read_samples(path: Path) -> list[dict]:
    """A samples.jsonl file, its prompts' teacher answers under `teacher` (`gold` in older files)."""
    return [{"teacher" if k == "gold" else k: v for k, v in row.items()} for row in read_jsonl(path)]


def read_judgements(path: Path) -> list[dict]:
    """A judgements.jsonl file (any known version) with today's field names."""
    return _read_versioned(path, JUDGEMENTS_VERSION)
