"""SIGTERM and Ctrl-C stop a run with exit 4 and one line; the running stage stays unfinished; the W&B
run is marked preempted; the same command resumes to an uninterrupted run's results."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from dno.records import read_json, read_jsonl
from dno.signals import PREEMPTED_EXIT, Preempted, preemptible
from helpers import DNO_RUN, REPO, SMOKE, dno_run, wandb_records


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_preempted_and_the_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with pytest.raises(Preempted, match=f"stopped by {signal.Signals(signum).name}"), preemptible():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # interrupted at once
    assert signal.getsignal(signum) is before
    assert not issubclass(Preempted, Exception)  # no `except Exception` on the way swallows it


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_same_command_resumes(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [DNO_RUN, *SMOKE, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run_dir / "iter_1" / "DONE.judge").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT
    lines = [line for line in err.splitlines() if line.startswith("dno-run:")]
    assert lines == ["dno-run: stopped by SIGTERM: the same command resumes from the unfinished stage"]
    assert "Traceback" not in err and not (run_dir / "summary.json").exists()
    assert not (run_dir / "iter_2" / "DONE.log").exists()
    records = wandb_records(run_dir)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "preempting" in kinds and [r.exit.exit_code for r in records if r.HasField("exit")] == [PREEMPTED_EXIT]
    run_id = read_json(run_dir / "wandb_run.json")["id"]

    dno_run(*SMOKE, f"hydra.run.dir={run_dir}")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run_dir / "metrics.jsonl")) == strip(read_jsonl(smoke_run / "metrics.jsonl"))
    assert read_json(run_dir / "wandb_run.json")["id"] == run_id  # the requeue resumed the same W&B run
    exits = [r.exit.exit_code for r in wandb_records(run_dir) if r.HasField("exit")]
    assert exits == [PREEMPTED_EXIT, 0]
