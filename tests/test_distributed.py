"""The loop under `accelerate launch` with 2 CPU processes (gloo) equals 1 process with the same
effective batch: samples, pairs, reference log-probs and every checkpoint's parameters; so do two machines
(simulated on loopback: two launches with --num_machines 2), and a machine that dies stops the other at once."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from dno.policy.server import free_port
from dno.runtime.config import ConfigError, grad_accumulation, validate
from dno.stages.records import PairRow, read_rows
from helpers import DDP, REPO, make_cfg, run


def launch(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    return run(["accelerate", "launch", "--config_file", REPO / "conf/accelerate/cpu_ddp.yaml", "--num_processes",
                processes, "--main_process_port", free_port(), "-m", "dno.apps.run", *args], check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, submitit_sweep) -> tuple[Path, Path]:
    """(1 process: the sweep's seed-0 job, 2 processes under accelerate launch), same config."""
    two = tmp_path_factory.mktemp("ddp") / "two"
    proc = launch(*DDP, f"hydra.run.dir={two}")  # the README's command
    assert proc.returncode == 0, proc.stderr[-4000:]
    return submitit_sweep / "0", two


@pytest.mark.slow
def test_submitit_local_sweep_runs_both_jobs(submitit_sweep):
    jobs = sorted(p for p in submitit_sweep.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, seed in zip(jobs, (0, 1), strict=True):
        assert (job / ".hydra" / "overrides.yaml").read_text().count(f"seed={seed}") == 1
        assert [json.loads(x)["iteration"] for x in (job / "metrics.jsonl").read_text().splitlines()] == [1, 2]
        summary = json.loads((job / "summary.json").read_text())
        assert summary["final/iterations"] == 2 and summary["alpaca_eval/n_total"] == 8
    assert (jobs[0] / "iter_1" / "samples.jsonl").read_text() != (jobs[1] / "iter_1" / "samples.jsonl").read_text()
    logs = list((submitit_sweep / ".submitit").glob("*/*_0_log.out"))
    assert len(logs) >= 2  # a submitit job per point (test_readme re-runs the sweep: it resumes)


@pytest.mark.slow
def test_two_processes_really_ran(runs):
    _, two = runs
    for t in (1, 2):
        train = json.loads((two / f"iter_{t}" / "DONE.train").read_text())
        assert train["train/processes"] == 2
        shares = train["train/pairs_per_process"]
        assert len(shares) == 2 and min(shares) > 0 and sum(shares) == train["train/pairs"]


def machine(rank: int, port: int, run_dir: Path) -> subprocess.Popen:
    """Machine `rank` of two (one process each), meeting machine 0 on 127.0.0.1:`port`: the README's command. Its
    stderr goes to a file beside the run (a pipe nobody reads while the other machine is waited for could fill)."""
    log = run_dir.parent / f"machine_{rank}.{time.time_ns()}.err"
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/accelerate"), "launch", "--config_file", str(REPO / "conf/accelerate/cpu_ddp.yaml"),
         "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip",
         "127.0.0.1", "--main_process_port", str(port), "-m", "dno.apps.run", *DDP, f"hydra.run.dir={run_dir}"],
        cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
        start_new_session=True)
    proc.log = log
    return proc


def finish(m: subprocess.Popen, timeout: float) -> str:
    """Wait for a machine; its stderr."""
    m.wait(timeout=timeout)
    return m.log.read_text()


def kill_tree(m: subprocess.Popen) -> None:
    """A machine gone: its launcher and its workers (torchrun starts each in its own session)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        launcher = psutil.Process(m.pid)
        for p in [*launcher.children(recursive=True), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


@pytest.fixture
def machines():
    """The machines a test starts; whatever is left of them is killed when it ends, passed or failed."""
    started: list[subprocess.Popen] = []
    yield started
    for m in started:
        kill_tree(m)


@pytest.mark.slow
@pytest.mark.cluster  # make test-cluster
def test_two_machines_on_loopback_match_one_process(runs, tmp_path, machines):
    port = free_port()
    machines += [machine(rank, port, tmp_path / "two") for rank in (0, 1)]
    for m in machines:
        err = finish(m, 600)
        assert m.returncode == 0, err[-3000:]
    same_iterations(runs[0], tmp_path / "two")
    train = json.loads((tmp_path / "two" / "iter_1" / "DONE.train").read_text())
    assert train["train/processes"] == 2 and min(train["train/pairs_per_process"]) > 0


@pytest.mark.slow
@pytest.mark.cluster
def test_a_machine_that_dies_stops_the_other_at_once_and_both_resume(runs, tmp_path, machines):
    run_dir, port = tmp_path / "run", free_port()
    first, second = (machine(rank, port, run_dir) for rank in (0, 1))
    machines += [first, second]
    deadline = time.time() + 300
    while not (run_dir / "iter_1" / "DONE.sample").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    kill_tree(second)  # machine 1 is gone (power, a node failure): its launcher and its worker
    killed = time.time()
    second.wait()
    err = finish(first, 120)  # not the 720 minutes of train.process_timeout_min
    assert time.time() - killed < 60, time.time() - killed
    assert "dno-run: another process of this run is gone (" in err, err[-3000:]
    assert "start the same command again on every machine" in err and first.returncode != 0  # (torchrun's code)
    port = free_port()
    again = [machine(rank, port, run_dir) for rank in (0, 1)]  # the same command on both: it resumes
    machines += again
    for m in again:
        err = finish(m, 600)
        assert m.returncode == 0, err[-3000:]
    assert "skip iter_1/sample (done)" in (run_dir / "run.log").read_text()
    same_iterations(runs[0], run_dir)


@pytest.mark.slow
def test_two_processes_match_one(runs):
    same_iterations(*runs)


def same_iterations(one: Path, two: Path) -> None:
    """Runs `one` and `two` drew the same samples, made the same pairs and reached the same weights."""
    runs = (one, two)
    for f in ("init/val_samples.jsonl", "init/test_samples.jsonl", "iter_1/samples.jsonl", "iter_2/samples.jsonl"):
        assert (one / f).read_text() == (two / f).read_text(), f
    for t in (1, 2):
        a, b = (read_rows(d / f"iter_{t}" / "pairs.jsonl", PairRow) for d in runs)
        assert len(a) == len(b) > 0
        for p, q in zip(a, b, strict=True):
            assert (p.chosen, p.rejected) == (q.chosen, q.rejected)
            assert p.ref_chosen_logps == pytest.approx(q.ref_chosen_logps, abs=1e-5)
        wa = load_file(one / f"iter_{t}" / "checkpoint" / "model.safetensors")
        wb = load_file(two / f"iter_{t}" / "checkpoint" / "model.safetensors")
        assert sorted(wa) == sorted(wb)
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)
    # and training changed the weights: equality is not two copies of pi_1
    w1 = load_file(one / "iter_1" / "checkpoint" / "model.safetensors")
    w2 = load_file(one / "iter_2" / "checkpoint" / "model.safetensors")
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) > 1e-4


@pytest.mark.slow
def test_main_process_writes_once(runs):
    _, two = runs
    rows = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2]
    a, b = (json.loads((d / "summary.json").read_text()) for d in runs)
    assert b["alpaca_eval/win_rate"] == a["alpaca_eval/win_rate"]
    assert len(list((two / "wandb").glob("offline-run-*"))) == 1  # one W&B run, not one per process


def test_effective_batch_is_checked_against_the_processes():
    cfg = make_cfg(*DDP)  # effective batch 4
    assert grad_accumulation(cfg, 1) == 2 and grad_accumulation(cfg, 2) == 1
    with pytest.raises(ConfigError, match=r"effective_batch_size=4 is not a multiple of train.micro_batch_size=2 x 4"):
        validate(cfg, 4)


@pytest.mark.slow
def test_processes_must_agree_on_the_run_dir(tmp_path):
    proc = launch(*DDP, "logger=none", f"hydra.run.dir={tmp_path}/" + "${oc.env:RANK}")
    assert proc.returncode != 0
    assert "resolved different run directories" in proc.stderr and "hydra.run.dir=" in proc.stderr
    assert not list(tmp_path.glob("*/init"))  # failed before sampling anything


def test_slurm_preset_composes_with_the_plugin():
    cfg = make_cfg("hydra/launcher=slurm", "hydra.launcher.partition=gpu", return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (8, 8, 1)
    assert launcher.max_num_timeout > 0  # a job out of time is requeued: the run resumes from its markers
