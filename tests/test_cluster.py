"""A real SLURM cluster (experiments/local_slurm.sh up: slurmctld, slurmd and munge on this machine): the README's
sweep through real sbatch (hydra/launcher=slurm_cpu), `scontrol requeue` during iteration 2, a job reaching its
time limit, `scancel --signal=TERM`, the run directory's lock while a job holds it. Skipped when `sinfo` does not
answer; `make test-cluster` (and .ci/run) bring the cluster up and run these."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dno.runtime.config import ConfigError
from dno.runtime.files import read_json
from dno.runtime.layout import RunDir
from dno.runtime.lock import acquire
from dno.runtime.signals import PREEMPTED_EXIT
from helpers import REPO, dno_run, program, run
from judge_server import JudgeServer


def cluster_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and bool(proc.stdout.strip())


# make test-cluster sets DNO_REQUIRE_CLUSTER=1: there a cluster that does not answer fails the tests, not skips them
REQUIRED = os.environ.get("DNO_REQUIRE_CLUSTER") == "1"
pytestmark = [pytest.mark.cluster, pytest.mark.slow,
              pytest.mark.skipif(not REQUIRED and not cluster_up(),
                                 reason="no SLURM cluster answers (experiments/local_slurm.sh up)")]
SMOKE_RUN = ["model=tiny_random", "schedule=smoke", "logger=none"]


def launch(sweep: Path, *extra: str) -> subprocess.Popen:
    """dno-run -m on the cluster (its jobs through sbatch), in the background: it returns when they end."""
    argv = [program("dno-run"), "-m", "seed=0", *SMOKE_RUN, "hydra/launcher=slurm_cpu", f"hydra.sweep.dir={sweep}",
            *extra]
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert path.exists(), f"{path} never appeared"


def test_the_cluster_answers():
    assert cluster_up(), "sinfo does not answer: is SLURM_CONF exported (experiments/local_slurm.sh up prints it)?"


def job_id() -> str:
    """The one job pending or running (a job of an earlier test may still be completing)."""
    jobs = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert len(jobs) == 1, jobs
    return jobs[0]


def start_now(job: str, proc: subprocess.Popen) -> None:
    """A requeued job waits before it may start again; the test lets it start now."""
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if state == "RUNNING":
            return
        if state == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], capture_output=True)
        time.sleep(0.5)


def without_times(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("undisturbed") / "run"
    dno_run(*SMOKE_RUN, "seed=0", f"hydra.run.dir={run_dir}")
    return read_json(RunDir(run_dir).summary)


def test_the_readme_sweep_through_sbatch_and_its_tables(tmp_path, undisturbed):
    sweep = tmp_path / "sweep"
    dno_run("-m", "seed=0,1", *SMOKE_RUN, "hydra/launcher=slurm_cpu", f"hydra.sweep.dir={sweep}", timeout=900)
    jobs = sorted(p for p in sweep.iterdir() if RunDir(p).summary.exists())
    assert [p.name for p in jobs] == ["0", "1"]
    assert without_times(read_json(RunDir(jobs[0]).summary)) == without_times(undisturbed)  # as without SLURM
    submitted = list(sweep.glob(".submitit/*/*_submission.sh"))
    assert submitted and "#SBATCH --partition=cpu" in submitted[0].read_text()  # through real sbatch
    run(["dno-tables", f"runs={sweep}", f"out={tmp_path / 'tables'}", "bootstrap.lc_samples=3"])
    assert "(2 seeds)" in (tmp_path / "tables" / "table1.md").read_text()


def test_a_requeue_during_iteration_2_resumes_to_the_same_result_and_the_lock_holds_meanwhile(tmp_path, undisturbed):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    run_dir = sweep / "0"
    wait_for(RunDir(run_dir).iteration(2).marker("sample"), proc)
    with pytest.raises(ConfigError, match=r"is in use by PID (\d+) on "):  # dno-run's own check, while the job runs
        acquire(run_dir)
    holder = json.loads(RunDir(run_dir).lock.read_text())["pid"]
    assert "submitit" in Path(f"/proc/{holder}/cmdline").read_text()  # the job's process holds it
    job = job_id()
    subprocess.run(["scontrol", "requeue", job], check=True)
    start_now(job, proc)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert without_times(read_json(RunDir(run_dir).summary)) == without_times(undisturbed)
    log = (run_dir / "run.log").read_text()
    assert "stopped by SIGTERM" in log and "skip iter_1/train (done)" in log  # resumed, not redone


def test_a_job_at_its_time_limit_is_requeued_by_submitit_and_resumes(tmp_path):
    """A judge that answers in 1 s, one question at a time, makes the run outlast its first 40 s (a 1-minute limit,
    SIGUSR2 20 s before it) however fast the machine: the time limit always lands inside the run."""
    with JudgeServer(latency=1.0) as server:
        judge = ["oracle=openai_listwise", f"oracle.base_url={server.url}", "oracle.api_key_env=null",
                 "oracle.model=scripted-judge", "oracle.max_concurrency=1"]
        reference = tmp_path / "reference"
        dno_run(*SMOKE_RUN, "seed=0", *judge, f"oracle.cache_path={tmp_path / 'ref.sqlite'}",
                f"hydra.run.dir={reference}", timeout=600)
        sweep = tmp_path / "sweep"
        proc = launch(sweep, *judge, f"oracle.cache_path={tmp_path / 'judge.sqlite'}", "hydra.launcher.timeout_min=1",
                      "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=6")
        job = None
        deadline = time.time() + 900
        while proc.poll() is None and time.time() < deadline:  # the job requeued by its own timeout: start it now
            ids = subprocess.run(["squeue", "-h", "-t", "PD,R", "-o", "%i %T"], capture_output=True,
                             text=True).stdout.split()
            if len(ids) == 2 and ids[1] == "PENDING" and job is not None:
                start_now(ids[0], proc)
            job = ids[0] if ids else job
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out[-3000:]
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    assert "Requeued job" in logs or "requeue" in logs.lower()  # submitit's checkpoint-and-requeue on SIGUSR2
    paid = ("oracle/", "plan/")  # what each attempt paid: a question in flight at the signal is asked again
    summary, alone = ({k: v for k, v in without_times(read_json(RunDir(d).summary)).items() if not k.startswith(paid)}
                      for d in (sweep / "0", reference))
    assert summary == alone and summary["final/iterations"] == 2


def test_scancel_signal_term_ends_the_run_with_exit_4_and_it_resumes(tmp_path, undisturbed):
    sweep = tmp_path / "sweep"
    proc = launch(sweep)
    run_dir = sweep / "0"
    wait_for(RunDir(run_dir).iteration(1).marker("sample"), proc)
    job = job_id()
    subprocess.run(["scancel", "--signal=TERM", job], check=True)
    proc.communicate(timeout=300)
    log = (run_dir / "run.log").read_text()
    assert "stopped by SIGTERM" in log and not RunDir(run_dir).summary.exists()
    outcome = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    exit_code = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job, "-o", "ExitCode"], capture_output=True,
                               text=True).stdout.split()
    assert exit_code == [f"{PREEMPTED_EXIT}:0"], (exit_code, outcome[-2000:])  # the job ended with dno's exit 4
    dno_run(*SMOKE_RUN, "seed=0", f"hydra.run.dir={run_dir}")  # the same run, resumed (here without SLURM)
    assert without_times(read_json(RunDir(run_dir).summary)) == without_times(undisturbed)
    assert json.loads(RunDir(run_dir).provenance.read_text())["resumes"]
