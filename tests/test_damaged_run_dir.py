"""A DONE marker whose output is missing or cut short (deleted by hand, a partial copy) is not taken as
done: the stage is redone with a warning (a damaged run through dno-run: tests/test_cluster_accidents.py)."""

from __future__ import annotations

import logging

from dno.runtime.files import read_jsonl, write_json, write_jsonl
from dno.runtime.layout import StageDir
from dno.runtime.stages import run_stage, stage_done


def test_a_marker_with_a_missing_or_cut_output_is_redone(tmp_path, caplog):
    calls, d, out = [], StageDir(tmp_path), (tmp_path / "out.jsonl",)

    def stage():
        calls.append(1)
        write_jsonl(tmp_path / "out.jsonl", [{"a": 1}, {"a": 2}])
        return {"rows": 2}

    assert run_stage(d, "s", stage, out)["rows"] == 2
    assert run_stage(d, "s", stage, out)["rows"] == 2 and len(calls) == 1
    (tmp_path / "out.jsonl").write_text('{"a": 1}\n{"a"')  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="dno.runtime.stages"):
        assert not stage_done(d, "s", out)
    assert "DONE.s is marked done but out.jsonl is missing or unreadable" in caplog.text
    run_stage(d, "s", stage, out)
    assert len(calls) == 2 and read_jsonl(tmp_path / "out.jsonl") == [{"a": 1}, {"a": 2}]
    (tmp_path / "out.jsonl").unlink()
    run_stage(d, "s", stage, out)
    assert len(calls) == 3
    d.marker("s").write_text('{"rows": ')  # the marker itself cut short
    run_stage(d, "s", stage, out)
    assert len(calls) == 4


def test_a_checkpoint_with_a_cut_weights_file_is_not_done(tmp_path):
    import torch
    from safetensors.torch import save_file

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    save_file({"w": torch.zeros(1000)}, ckpt / "model.safetensors")
    write_json(ckpt / "config.json", {"model_type": "llama"})
    d = StageDir(tmp_path)
    write_json(d.marker("train"), {})
    assert stage_done(d, "train", (ckpt,))
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[:40])
    assert not stage_done(d, "train", (ckpt,))
