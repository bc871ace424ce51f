"""provenance.json (code, versions, device, config, model and prompts identities), DONE markers
with their commit, and no silent resume after a change of a key that can change results (the keys that
may change, changed on a real resume: tests/test_cluster_accidents.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess

import pytest
import torch

from dno.policy.load import model_identity
from dno.run import Run
from dno.runtime.config import ConfigError
from dno.runtime.files import read_json
from dno.runtime.layout import StageDir
from dno.runtime.provenance import HARMLESS, config_sha256, harmless
from dno.runtime.stages import read_marker, run_stage
from helpers import REPO, SMOKE, make_cfg

QUIET = [*SMOKE, "logger=none"]


def build(run_dir, *overrides: str) -> Run:
    return Run.build(make_cfg(*QUIET, *overrides), run_dir)


def test_a_run_records_its_provenance(tmp_path):
    build(tmp_path)
    p = read_json(tmp_path / "provenance.json")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert p["commit"] == head and isinstance(p["dirty"], bool)
    assert {"python", "dno", "torch", "transformers", "accelerate", "datasets", "alpaca_eval", "wandb", "openai",
            "trl", "peft"} <= set(p["versions"])
    assert p["versions"]["torch"] == torch.__version__
    assert p["device"]["kind"] == "cpu" and p["device"]["dtype"] == "float32" and p["device"]["threads"] >= 1
    assert set(p["model"]) == {"random_init_sha256", "init_seed"}  # tiny_random: the config is its identity
    assert p["prompts"]["records"] == 600 and len(p["prompts"]["sha256"]) == 64  # the builtin set
    assert p["config"]["schedule"]["lr"] == 1e-3 and p["resumes"] == []
    assert p["config_sha256"] == config_sha256(p["config"])


def test_a_changed_result_key_stops_the_resume_naming_both_values(tmp_path):
    build(tmp_path)
    before = (tmp_path / "provenance.json").read_text()
    with pytest.raises(ConfigError, match=r"schedule\.lr: 0\.001 -> 0\.002(.|\n)*resume=continue"):
        build(tmp_path, "schedule.lr=2e-3")
    with pytest.raises(ConfigError, match=r"loss\.beta: 0\.1 -> 0\.5"):
        build(tmp_path, "loss.beta=0.5")
    assert (tmp_path / "provenance.json").read_text() == before  # nothing recorded by a refused start


def test_another_generation_server_command_needs_resume_continue(tmp_path):
    server = ["generation.backend=openai_server",
              "generation.server.command='{python} -m dno.policy.serve {checkpoint}'"]
    build(tmp_path, *server[:1], server[1][:-1] + " --exit-after 2'")  # the crashing server of a first attempt
    with pytest.raises(ConfigError, match=r"generation\.server\.command: (.|\n)*resume=continue"):
        build(tmp_path, *server)
    build(tmp_path, *server, "resume=continue")


def test_resume_continue_accepts_and_records_the_change(tmp_path):
    build(tmp_path)
    build(tmp_path, "schedule.lr=2e-3", "resume=continue")
    p = read_json(tmp_path / "provenance.json")
    assert p["resumes"][-1]["accepted_changes"] == {"schedule.lr": [1e-3, 2e-3]}
    assert p["config"]["schedule"]["lr"] == 2e-3
    build(tmp_path, "schedule.lr=2e-3")  # the accepted config is now the recorded one
    assert len(read_json(tmp_path / "provenance.json")["resumes"]) == 2


def test_harmless_keys_may_change_on_a_resume(tmp_path):
    build(tmp_path)
    run = build(tmp_path, "train.process_timeout_min=5", "method=renamed", "logger=wandb", "logger.mode=disabled")
    run.tracker.finish()
    assert "accepted_changes" not in read_json(tmp_path / "provenance.json")["resumes"][-1]
    keys = ("logger.mode", "train.process_timeout_min", "cache_dir", "method", "resume", "schedule.lr",
            "sampling.batch_size", "train.micro_batch_size", "loggerx")
    assert [k for k in keys if harmless(k)] == ["logger.mode", *HARMLESS[1:5]]


def test_other_code_warns_and_is_recorded(tmp_path, caplog):
    build(tmp_path)
    p = read_json(tmp_path / "provenance.json")
    (tmp_path / "provenance.json").write_text(json.dumps({**p, "commit": "0" * 40}))
    with caplog.at_level(logging.WARNING, logger="dno.runtime.provenance"):
        build(tmp_path)
    assert "cannot be proven harmless" in caplog.text and "0000000" in caplog.text
    assert read_json(tmp_path / "provenance.json")["resumes"][-1]["other_code"] is True


def test_a_marker_records_the_commit_and_is_read_without_it(tmp_path):
    d = StageDir(tmp_path)
    assert run_stage(d, "x", lambda: {"m": 1})["m"] == 1
    marker = read_json(d.marker("x"))
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert marker["_commit"].startswith(head) and set(read_marker(d.marker("x"))) == {"m", "time/x_s"}
    assert run_stage(d, "x", lambda: {"m": 2}) == read_marker(d.marker("x"))  # skipped: read back


def test_a_local_model_file_is_identified_by_its_sha256(tmp_path):
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"weights" * 1000)
    cfg = make_cfg(*SMOKE, f"model.path={weights}")
    ident = model_identity(cfg.model, str(tmp_path / "cache"))
    assert ident == {"path": str(weights), "sha256": hashlib.sha256(b"weights" * 1000).hexdigest()}
    assert model_identity(cfg.model, str(tmp_path / "cache")) == ident  # from the cache the second time
