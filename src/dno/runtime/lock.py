"""One owner per run directory: an OS lock (flock) on its lock file (`RunDir.lock`), taken when a run starts.

The kernel releases the lock when its process dies, so a killed run never leaves a stale lock: the
same command resumes at once. A second process that finds the lock held stops before any model loads
(ConfigError: exit 2), naming the holder (PID, host, start time) written into the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from dno.runtime.config import ConfigError
from dno.runtime.layout import RunDir

_held: dict[str, int] = {}  # run directory -> this process's open descriptor of its lock


def acquire(run_dir: Path) -> None:
    """Take the run directory's lock for this process (again: a no-op), or raise ConfigError naming the holder."""
    path = RunDir(Path(run_dir).resolve()).lock
    if str(path) in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace")
        os.close(fd)
        try:
            h = json.loads(holder)
            who = f"PID {h['pid']} on {h['host']}, started {h['started']}"
        except (ValueError, KeyError):
            who = "another process"
        raise ConfigError(f"{run_dir} is in use by {who}: one process owns a run directory. Wait for it to "
                          f"finish (then this command resumes what is left), stop it, or give another "
                          f"hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
    _held[str(path)] = fd  # open until the process ends: the kernel releases the lock then


def release(run_dir: Path) -> None:
    fd = _held.pop(str(RunDir(Path(run_dir).resolve()).lock), None)
    if fd is not None:
        os.close(fd)
