"""A DONE marker whose output is missing or cut short (deleted by hand, a partial copy) is not taken as
done: the stage is redone with a warning, and the run ends as an undamaged one, never a KeyError later."""

from __future__ import annotations

import logging
import shutil

import pytest

from dno.records import read_jsonl, run_stage, stage_done, write_json, write_jsonl
from helpers import SMOKE, dno_run


def test_a_marker_with_a_missing_or_cut_output_is_redone(tmp_path, caplog):
    calls = []

    def stage():
        calls.append(1)
        write_jsonl(tmp_path / "out.jsonl", [{"a": 1}, {"a": 2}])
        return {"rows": 2}

    assert run_stage(tmp_path, "s", stage, outputs=("out.jsonl",))["rows"] == 2
    assert run_stage(tmp_path, "s", stage, outputs=("out.jsonl",))["rows"] == 2 and len(calls) == 1
    (tmp_path / "out.jsonl").write_text('{"a": 1}\n{"a"')  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="dno.records"):
        assert not stage_done(tmp_path, "s", ("out.jsonl",))
    assert "DONE.s is marked done but out.jsonl is missing or unreadable" in caplog.text
    run_stage(tmp_path, "s", stage, outputs=("out.jsonl",))
    assert len(calls) == 2 and read_jsonl(tmp_path / "out.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "out.jsonl").unlink()
    run_stage(tmp_path, "s", stage, outputs=("out.jsonl",))
    assert len(calls) == 3
    (tmp_path / "DONE.s").write_text('{"rows": ')  # the marker itself cut short
    run_stage(tmp_path, "s", stage, outputs=("out.jsonl",))
    assert len(calls) == 4


def test_a_checkpoint_with_a_cut_weights_file_is_not_done(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    save_file({"w": torch.zeros(1000)}, ckpt / "model.safetensors")
    write_json(ckpt / "config.json", {"model_type": "llama"})
    write_json(tmp_path / "DONE.train", {})
    assert stage_done(tmp_path, "train", ("checkpoint",))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:40])
    assert not stage_done(tmp_path, "train", ("checkpoint",))


@pytest.mark.slow
def test_a_damaged_run_directory_is_repaired_by_the_same_command(smoke_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(smoke_run, run_dir, ignore=shutil.ignore_patterns("wandb", ".lock"))
    (run_dir / "iter_1" / "pairs.jsonl").unlink()  # deleted by hand
    weights = run_dir / "iter_2" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated by a copy
    dno_run(*SMOKE, "logger=none", f"hydra.run.dir={run_dir}")
    log = (run_dir / "run.log").read_text()
    assert "iter_1/DONE.pairs is marked done but pairs.jsonl is missing" in log
    assert "iter_2/DONE.train is marked done but checkpoint is missing" in log
    assert (run_dir / "iter_1" / "pairs.jsonl").read_text() == (smoke_run / "iter_1" / "pairs.jsonl").read_text()
    assert weights.stat().st_size == (smoke_run / "iter_2" / "checkpoint" / "model.safetensors").stat().st_size
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert strip(read_jsonl(run_dir / "metrics.jsonl")) == strip(read_jsonl(smoke_run / "metrics.jsonl"))
