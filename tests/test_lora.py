"""LoRA updates (model.lora.r > 0): a fresh adapter on pi_t, trained alone, merged into pi_{t+1}.

In process on tiny_random (fast); the loop under dno-run, 2 processes and a kill is in the slow test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from dno.data import Prompt
from dno.loop import update
from dno.policy.load import load_model
from dno.policy.logps import encode_pairs, pair_batch, sequence_logps
from dno.policy.server import free_port
from dno.run import Run
from dno.runtime.config import ConfigError
from dno.stages.records import PairRow, read_rows, write_rows
from helpers import DDP, LORA_RUN, REPO, SMOKE, dno_run, make_cfg, program

LORA = LORA_RUN[len(DDP):]  # model.lora.r=4 model.lora.alpha=8 logger=none
PROMPTS = ["Name a colour.", "Say hello.", "Count to three.", "Name a fruit.", "Give a number.", "Say yes."]


def pairs_file(path: Path) -> Path:
    write_rows(path, [PairRow(Prompt.of(str(i), p), f"Answer {i}: fine.", "no " * (i + 1), 0.9, 0.1,
                              "student_over_student", 1, ref_chosen_logps=-40.0, ref_rejected_logps=-30.0)
                      for i, p in enumerate(PROMPTS)])
    return path


@pytest.fixture(scope="module")
def lora_update(tmp_path_factory):
    """pi_1 -> pi_2 by one LoRA update on six hand-written pairs: (run, pi_1's weights, stats)."""
    d = tmp_path_factory.mktemp("lora")
    run = Run.build(make_cfg(*SMOKE, *LORA), d / "run")
    before = {k: v.clone() for k, v in run.policies.get(None).state_dict().items()}
    pairs_file(run.dir.iteration(1).pairs)
    stats = update(run, None, run.dir.iteration(1), seed=3)
    return run, before, stats


def logps(model, tokenizer, rows: list[PairRow]) -> torch.Tensor:
    encoded = encode_pairs(tokenizer, rows, 256)
    with torch.no_grad():
        return sequence_logps(model.eval(), pair_batch(encoded, list(range(len(rows))), tokenizer.pad_token_id,
                                                       with_rejected=True))


def test_only_the_adapter_trains(lora_update):
    run, before, stats = lora_update
    after = load_file(run.run_dir / "iter_1" / "checkpoint" / "model.safetensors")
    adapter = load_file(run.run_dir / "iter_1" / "adapter" / "adapter_model.safetensors")
    # r=4 on the 7 linear layers of each of 2 blocks: r x (in + out) per layer
    h, ffn, kv = 64, 128, 32
    per_block = 4 * ((h + h) * 2 + (h + kv) * 2 + (h + ffn) * 2 + (ffn + h))
    assert stats["train/trainable_params"] == 2 * per_block == sum(v.numel() for v in adapter.values())
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    # merged: every target layer moved; embeddings and norms are pi_1's to the bit
    assert changed == {k for k in after if k.endswith(tuple(f"{t}.weight" for t in targets))}
    assert len(changed) == 14


def test_merged_checkpoint_is_base_plus_adapter(lora_update):
    run, _, _ = lora_update
    rows = read_rows(run.dir.iteration(1).pairs, PairRow)
    ckpt = str(run.run_dir / "iter_1" / "checkpoint")
    merged = load_model(run.cfg.model, run.cfg.cache_dir, run.tokenizer, path=ckpt)
    pi_1 = load_model(run.cfg.model, run.cfg.cache_dir, run.tokenizer)
    base = logps(pi_1, run.tokenizer, rows)
    with_adapter = logps(PeftModel.from_pretrained(pi_1, run.run_dir / "iter_1" / "adapter"), run.tokenizer, rows)
    torch.testing.assert_close(logps(merged, run.tokenizer, rows), with_adapter, rtol=1e-5, atol=1e-5)
    assert float((with_adapter - base).abs().max()) > 1e-2  # the adapter is not the zero update
    config = json.loads((run.run_dir / "iter_1" / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (4, 8, "tiny-random-llama")


def test_the_model_in_memory_is_the_merged_checkpoint(lora_update):
    run, _, _ = lora_update
    assert run.policies.path == run.run_dir / "iter_1" / "checkpoint"
    assert not any("lora" in name for name, _ in run.policies.model.named_parameters())


@pytest.mark.parametrize("override,key", [("model.lora.r=-1", "model.lora.r"), ("model.lora.r=2.5", "model.lora.r"),
                                          ("model.lora.dropout=1.5", "model.lora.dropout")])
def test_bad_lora_values_are_config_errors(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key):
        Run.build(make_cfg(*SMOKE, "logger=none", override), tmp_path)


def test_lora_is_off_by_default():
    assert make_cfg().model.lora.r == 0 and make_cfg("model=tiny_random").model.lora.r == 0


@pytest.mark.slow
@pytest.mark.cluster  # two processes killed and resumed: make test-cluster
def test_lora_loop_two_processes_killed_and_resumed_equal_one(tmp_path):
    """dno-run with LoRA: 1 process uninterrupted vs 2 processes killed in iteration 2's update and
    resumed; every checkpoint and adapter agrees, and pi_2 differs from pi_1."""
    one, two = tmp_path / "one", tmp_path / "two"
    dno_run(*LORA_RUN, f"hydra.run.dir={one}")  # the README's command
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [program("accelerate"), "launch", "--config_file",
           str(REPO / "conf/accelerate/cpu_ddp.yaml"), "--num_processes", "2", "--main_process_port", str(free_port()),
           "-m", "dno.apps.run", *LORA_RUN, f"hydra.run.dir={two}"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while not (two / "iter_2" / "DONE.reference").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (two / "iter_2" / "DONE.train").exists(), "the kill came after the update: it proves nothing"
    resumed = subprocess.run(cmd[:-1] + [f"hydra.run.dir={two}"], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    for t in (1, 2):
        train = json.loads((two / f"iter_{t}" / "DONE.train").read_text())
        assert train["train/processes"] == 2 and train["train/trainable_params"] < 20_000
        for f in ("checkpoint/model.safetensors", "adapter/adapter_model.safetensors"):
            a, b = load_file(one / f"iter_{t}" / f), load_file(two / f"iter_{t}" / f)
            assert sorted(a) == sorted(b)
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    w1, w2 = (load_file(one / f"iter_{t}" / "checkpoint" / "model.safetensors") for t in (1, 2))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) > 1e-4
