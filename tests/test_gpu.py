"""GPU paths: skipped without CUDA (CI has none); run them on a GPU machine with `make test`."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import DDP, run

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"), pytest.mark.slow]


def test_smoke_loop_under_accelerate_in_bf16_on_one_gpu(tmp_path):
    run(["accelerate", "launch", "--num_processes", "1", "--mixed_precision", "bf16", "-m", "dno.apps.run", *DDP,
         "model.dtype=bfloat16", "logger=none", f"hydra.run.dir={tmp_path}"], timeout=600)
    train = json.loads((tmp_path / "iter_1" / "DONE.train").read_text())
    assert train["train/processes"] == 1 and train["train/steps"] > 0 and train["time/train_tokens_per_s"] > 0
    config = json.loads((tmp_path / "iter_2" / "checkpoint" / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert json.loads((tmp_path / "summary.json").read_text())["alpaca_eval/n_total"] == 8


def test_bench_measures_the_bf16_limit_on_gpu():
    from dno.reports.bench import machine_limit

    m = machine_limit(2048)
    assert (m["device"], m["dtype"]) == ("cuda", "bfloat16") and m["flops"] > 1e12 and m["flops"] > m["fp32_flops"]
