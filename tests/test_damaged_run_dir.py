"""A DONE marker whose output is missing or cut short (deleted by hand, a partial copy) is not taken as
done: the stage is redone with a warning (a damaged run through dno-run: tests/test_cluster_accidents.py)."""

from __future__ import annotations

import logging

from dno.records import read_jsonl, run_stage, stage_done, write_json, write_jsonl


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
