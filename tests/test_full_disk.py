"""A full disk, made real with a file-size limit (SIGXFSZ is ignored by Python, so writes fail with
EFBIG): every file keeps its previous state, the run stops with exit 3 and a clear line, and the same
command resumes once space is back (a run on a full disk: tests/test_cluster_accidents.py)."""

from __future__ import annotations

import errno
import sqlite3
import subprocess
import sys

from dno.runtime.files import is_disk_full, read_jsonl

LIMITED = "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY)); "


def test_a_failed_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("old\n")
    code = LIMITED + "from dno.runtime.files import write_text; write_text(sys.argv[1], 'x' * 100_000)"
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]


def test_a_failed_metrics_append_leaves_whole_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"iteration": 1, "a": 1}\n')
    code = LIMITED + ("from dno.runtime.tracking import NullSink, Tracker; from dno.runtime.layout import RunDir; "
                      "t = Tracker(RunDir(sys.argv[1]), NullSink()); "
                      "t.log({'big': 'x' * 100_000}, 2)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"iteration": 1, "a": 1}]


def test_disk_full_errors_are_recognised_wherever_raised():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EFBIG, "File too large"))
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: File too large (os error 27)"))  # safetensors
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise ValueError("saving failed") from e
    except ValueError as chained:
        assert is_disk_full(chained)
    assert not is_disk_full(OSError(errno.ENOENT, "No such file")) and not is_disk_full(ValueError("bad"))
