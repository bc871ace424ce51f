"""FSDP on a machine without a GPU. PyTorch's FSDP2 (`fully_shard`) runs on CPU over gloo and gives one process's
update (tests/fsdp_step.py); Accelerate 1.15 shards only on accelerators, so an FSDP accelerate config launched
on CPU would silently train as DDP: dno stops it before any compute with a config error naming the CPU config."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from dno.policy.server import free_port
from helpers import DDP, REPO, run

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # make test-cluster


def test_torch_fsdp2_on_cpu_gives_one_process_update(tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "fsdp.safetensors"
    run([str(REPO / ".venv/bin/python"), "tests/fsdp_step.py", one])
    sharded = run([str(REPO / ".venv/bin/torchrun"), "--nproc_per_node", 2, "--master_port", free_port(),
                   "tests/fsdp_step.py", two], env={"OMP_NUM_THREADS": "1"})
    assert "DTensor" in sharded.stdout  # the parameters were sharded, not replicated
    a, b = load_file(one), load_file(two)
    assert sorted(a) == sorted(b)
    for k in a:  # fp32 sums in another order; Adam's first step (g / |g|) magnifies them where g is near 0
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    initial = {k: v for k, v in __import__("helpers").tiny_llama(1000).state_dict().items()}
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 1e-3  # the step moved the weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the FSDP config is what runs")
def test_an_fsdp_config_without_a_gpu_stops_before_compute(tmp_path):
    proc = run(["accelerate", "launch", "--config_file", REPO / "conf/accelerate/fsdp.yaml", "--num_processes", 2,
                "--mixed_precision", "no", "--main_process_port", free_port(), "-m", "dno.apps.run", *DDP,
                "logger=none", f"hydra.run.dir={tmp_path}"], check=False)
    assert proc.returncode != 0
    assert "asks for FSDP (distributed_type: FSDP), but this machine has no CUDA GPU" in proc.stderr
    assert "Use --config_file conf/accelerate/cpu_ddp.yaml here" in proc.stderr  # (torchrun then reports the exit)
    assert not (tmp_path / "init").exists()
