"""Shared helpers: compose configs like dno-run does, and run dno-run as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dno.run import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
DNO_RUN = str(Path(sys.executable).with_name("dno-run"))
SMOKE = ["model=tiny_random", "schedule=smoke", "oracle.concise_max_words=8"]
SWEEP = ["-m", "model=tiny_random", "schedule=smoke", "loss=dno_prct", "oracle=rules", "seed=0,1"]  # as the README
# The README's 2-process command (and its submitit sweep): effective batch 4 = 2 processes x micro 2
# (one process: accumulation 2); sampling batches of 2 prompts, so the 6 prompts make 3 batches to share.
DDP = ["model=tiny_random", "schedule=smoke", "train.micro_batch_size=2", "sampling.batch_size=8"]
SUBMITIT = ["-m", *DDP, "seed=0,1", "hydra/launcher=submitit_local"]


def make_cfg(*overrides: str, return_hydra_config: bool = False, config_name: str = "config"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def dno_run(*args: str, cwd: Path | None = None, check: bool = True, timeout: int = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run([DNO_RUN, *args], cwd=cwd or REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dno-run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One uninterrupted smoke run, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    dno_run(*SMOKE, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="session")
def submitit_sweep(tmp_path_factory) -> Path:
    """The README's two-job sweep (seed 0, 1) through Hydra's submitit_local launcher: each job a subprocess."""
    sweep = tmp_path_factory.mktemp("submitit") / "sweep"
    dno_run(*SUBMITIT, f"hydra.sweep.dir={sweep}")
    return sweep


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> list[Path]:
    """The README's two-job multirun, run once; its job directories (seed 0, seed 1)."""
    sweep = tmp_path_factory.mktemp("sweep") / "sweep"
    dno_run(*SWEEP, f"hydra.sweep.dir={sweep}")
    return sorted((p for p in sweep.iterdir() if (p / "summary.json").exists()), key=lambda p: p.name)
