"""Session fixtures: runs of the apps shared by the tests that only read them (all `slow`, made once for all
xdist workers); the guard that keeps `make test-fast` fast (a test not marked `slow` that starts an app fails);
a fresh accelerate state for every test (an Accelerator's state is process-wide: TRL's DPOTrainer, bf16 by
default, would otherwise leave its mixed precision to the next test of the same xdist worker; accelerate's own
tests reset it the same way)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SMOKE, SUBMITIT, SWEEP, dno_run, starts_an_app


@pytest.fixture(autouse=True)
def _apps_only_in_slow_tests(request, monkeypatch):
    if request.node.get_closest_marker("slow"):
        return
    popen = subprocess.Popen.__init__

    def refuse(self, args, *rest, **kwargs):
        if starts_an_app(args):
            raise AssertionError(f"{request.node.nodeid} starts an app ({args[0]}): mark it @pytest.mark.slow")
        popen(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    yield
    state = sys.modules.get("accelerate.state")  # nothing to reset where the test never imported accelerate
    if state is not None:
        state.AcceleratorState._reset_state(reset_partial_state=True)
        state.GradientState._reset_state()


def shared_run(tmp_path_factory, name: str, *args: str) -> Path:
    """The run (or, with -m, the sweep) of `dno-run args`, made once for all pytest-xdist workers (the xdist docs'
    recipe: a file lock in the session's common temp directory); the tests that use it only read it."""
    where, leaf = ("hydra.sweep.dir", "sweep") if "-m" in args else ("hydra.run.dir", "run")
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process (make test-cluster, -p no:xdist): its own directory
        out = tmp_path_factory.mktemp(name) / leaf
        dno_run(*args, f"{where}={out}")
        return out
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # pytest-NN/, the workers' popen-gwN/ are in it
    out = root / name / leaf
    with FileLock(root / f"{name}.lock"):
        if not (root / f"{name}.done").exists():
            dno_run(*args, f"{where}={out}")
            (root / f"{name}.done").touch()
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One uninterrupted smoke run, shared by the tests that only read it."""
    return shared_run(tmp_path_factory, "smoke", *SMOKE)


@pytest.fixture(scope="session")
def submitit_sweep(tmp_path_factory) -> Path:
    """The README's two-job sweep (seed 0, 1) through Hydra's submitit_local launcher: each job a subprocess."""
    return shared_run(tmp_path_factory, "submitit", *SUBMITIT)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> list[Path]:
    """The README's two-job multirun, run once; its job directories (seed 0, seed 1)."""
    sweep = shared_run(tmp_path_factory, "sweep", *SWEEP)
    return sorted((p for p in sweep.iterdir() if (p / "summary.json").exists()), key=lambda p: p.name)
