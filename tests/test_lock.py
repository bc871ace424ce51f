"""One owner per run directory: a second process is refused naming the holder; a killed holder leaves
no lock; two dno-runs on one directory: the second exits 2 and the first's results are a lone run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dno.lock import acquire, release
from dno.records import read_jsonl
from helpers import DNO_RUN, REPO, SMOKE, dno_run

TAKE = "import sys, time; from dno.lock import acquire; acquire(sys.argv[1]); print('held', flush=True); time.sleep(60)"


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


@pytest.mark.slow
def test_two_dno_runs_on_one_directory(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    first = subprocess.Popen([DNO_RUN, *SMOKE, f"hydra.run.dir={run_dir}"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run_dir / "provenance.json").exists() and time.time() < deadline:  # written after the lock
        time.sleep(0.05)
    second = dno_run(*SMOKE, f"hydra.run.dir={run_dir}", check=False)
    assert second.returncode == 2 and f"is in use by PID {first.pid} on " in second.stderr
    assert first.wait(timeout=300) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run_dir / "metrics.jsonl")) == strip(read_jsonl(smoke_run / "metrics.jsonl"))
