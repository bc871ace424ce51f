"""Running the loop under `accelerate launch` (N processes): who does what, and where they meet.

- Stages that write shared files and call the judge (judge, pairs, evaluation, logging, final)
  run on the main process; the others wait at a barrier and read the stage's marker afterwards.
- Sampling (in process), reference log-probs and the update run on every process, each on its
  shard; results are gathered to the main process, which writes the files and the marker.
- Every process must agree on the run directory (Hydra resolves `${now:}` in each process).
- Processes come from `accelerate launch` (or torchrun), or from a submitit job with
  `hydra.launcher.tasks_per_node=N` (SLURM, or submitit_local): then submitit's job environment
  gives the ranks.

With one process every helper here reduces to the plain single-process code path.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from dno.runtime.config import ConfigError


def make_accelerator(timeout_min: float, mixed_precision: str | None = None):
    """The Accelerator of a run. On a machine without CUDA every launched process joins a gloo
    group on CPU (without `cpu=True` each process of `accelerate launch` would train alone).
    `mixed_precision`: `train.mixed_precision` (dno.runtime.precision; None: accelerate's launch flag or config)."""
    import torch
    from accelerate import Accelerator, InitProcessGroupKwargs

    if os.environ.get("SUBMITIT_EXECUTOR") and "RANK" not in os.environ:
        import submitit

        # a SLURM (or submitit_local) job with tasks_per_node=N: N processes of one run
        if submitit.JobEnvironment().num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=True)  # before CUDA starts
    if not torch.cuda.is_available():
        refuse_sharding_on_cpu()
    # The main process may judge for a long time while the others wait at a barrier; a rank that died breaks the
    # others' next collective at once (gloo, NCCL with async error handling), one that hangs after this timeout.
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_min))]
    from dno.runtime.precision import resolve

    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=kwargs,
                       mixed_precision=resolve(mixed_precision))


def refuse_sharding_on_cpu() -> None:
    """An accelerate config that asks for FSDP or DeepSpeed, launched without CUDA, is a config error: Accelerate
    (1.15) shards only on accelerators and would silently train every process as plain DDP on CPU, a different
    memory profile and checkpoint path from what the config says. PyTorch's FSDP2 itself runs on CPU (gloo): see
    tests/test_fsdp.py."""
    import accelerate

    for env, name in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(env, "false").lower() == "true":
            raise ConfigError(
                f"the accelerate config asks for {name} (distributed_type: {name.upper()}), but this machine has no "
                f"CUDA GPU and accelerate {accelerate.__version__} shards only on accelerators: on CPU it would "
                f"train as plain DDP. Use --config_file conf/accelerate/cpu_ddp.yaml here; {name} is for GPUs")


def gather(accelerator, obj) -> list:
    """`obj` from every process, in rank order (a list of one with a single process)."""
    if accelerator is None or accelerator.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def gather_by_index(accelerator, mine: dict) -> dict | None:
    """Each process's {index: result} merged on the main process; None on the others."""
    if accelerator is None or accelerator.num_processes == 1:
        return mine
    merged = {i: v for part in gather(accelerator, mine) for i, v in part.items()}
    return merged if accelerator.is_main_process else None


def same_run_dir(accelerator, run_dir: Path) -> None:
    dirs = gather(accelerator, str(run_dir))
    if len(set(dirs)) > 1:
        raise ConfigError(f"the {len(dirs)} processes resolved different run directories "
                          f"({', '.join(sorted(set(dirs)))}): Hydra resolves ${{now:}} in each process; "
                          "give one, e.g. hydra.run.dir=outputs/my-run")


def shard(n: int, accelerator, chunk: int = 1) -> list[int]:
    """Start indices (of chunks of size `chunk` over range(n)) that this process handles: round robin."""
    return list(range(0, n, chunk))[accelerator.process_index :: accelerator.num_processes]
