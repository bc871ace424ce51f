"""One owner per run directory: a second process is refused naming the holder; a killed holder leaves
no lock. Two dno-runs on one directory: tests/test_cluster_accidents.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from dno.runtime.lock import acquire, release

TAKE = ("import sys, time; from dno.runtime.lock import acquire; acquire(sys.argv[1]); print('held', flush=True); "
        "time.sleep(60)")


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    acquire(tmp_path)
    try:
        proc = subprocess.run([sys.executable, "-c", TAKE, str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "ConfigError" in proc.stderr
        assert f"is in use by PID {os.getpid()} on " in proc.stderr and "hydra.run.dir" in proc.stderr
        acquire(tmp_path)  # the holder itself may ask again
    finally:
        release(tmp_path)


def test_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", TAKE, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(Exception, match=f"PID {holder.pid}"):
        acquire(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    acquire(tmp_path)  # at once: the kernel released it with the process
    release(tmp_path)
