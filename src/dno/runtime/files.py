"""Files written atomically (a failed write leaves the previous file whole), JSON and JSON lines,
and whether a stage's output is there and whole."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

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


NOTES = "<!-- notes: written by hand after the run; the script keeps what follows this line -->"


def write_keeping_notes(path: Path, generated: str) -> None:
    """A generated report into `path`, followed by the `NOTES` line and what followed it in the file already (the
    notes written by hand after an earlier run), so that re-running the experiment rewrites only its figures."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    write_text(path, generated + "\n" + NOTES + (old.split(NOTES, 1)[1] if NOTES in old else "\n"))


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
