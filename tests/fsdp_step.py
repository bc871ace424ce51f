"""One AdamW step of the tiny random Llama on a fixed batch of 4 sequences, written as full weights to argv[1].

    python tests/fsdp_step.py OUT.safetensors                      # one process, the whole batch
    torchrun --nproc_per_node 2 tests/fsdp_step.py OUT.safetensors # FSDP2 (fully_shard) over gloo on CPU

Under torchrun each decoder layer and the root are sharded with PyTorch's FSDP2 (`fully_shard`), each process
takes its share of the batch, and FSDP2's reduce-scatter averages the gradients: the update equals one process's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny_llama  # noqa: E402


def main(out: str) -> None:
    sharded = "RANK" in os.environ
    model = tiny_llama(1000).train()
    batch = torch.randint(0, 1000, (4, 16), generator=torch.Generator().manual_seed(1))
    if sharded:
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        batch = batch[rank * len(batch) // world:(rank + 1) * len(batch) // world]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    state = model.state_dict()
    kinds = {type(v).__name__ for v in state.values()}
    full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone().contiguous()
            for k, v in state.items()}  # gathering is a collective: every rank takes part
    if not sharded or dist.get_rank() == 0:
        save_file(full, out)
        print("parameter types:", ",".join(sorted(kinds)), flush=True)
    if sharded:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
