"""Mixed precision: which bf16 units the machine has, and the run's choice (`train.mixed_precision`).

The run's precision is its Accelerator's `mixed_precision` (accelerate's own knob, so `accelerate launch
--mixed_precision bf16` and an accelerate config file choose it too): `train.mixed_precision` null leaves it to
accelerate (its launch flag or config, else fp32), `no` and `bf16` set it, `auto` takes bf16 where the hardware
computes in bf16 (a CUDA GPU that supports it; a CPU with AMX or AVX512-BF16) and fp32 elsewhere, saying so once.
Weights and optimizer state stay in `model.dtype` (fp32 master weights on CPU); bf16 is the forward passes'
compute, through torch.autocast: the update's (accelerate wraps the prepared model), and the sampling and the
reference log-probs' (`autocast()` below: torch.autocast, as accelerate's).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)
CHOICES = (None, "no", "bf16", "auto")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo: oneDNN's bf16 paths on x86 (AMX first: faster)


def cpu_bf16_unit(cpuinfo: str | None = None) -> str | None:
    """The CPU's bf16 unit by its /proc/cpuinfo flag (amx_bf16 or avx512_bf16), None when it has none (AVX2:
    bf16 is then emulated, slower than fp32). `cpuinfo`: the file's text (default: this machine's)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = {f for line in cpuinfo.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return next((f for f in BF16_FLAGS if f in flags), None)


def bf16_hardware() -> str | None:
    """What computes bf16 here: 'cuda' (a GPU with bf16), the CPU's flag, or None."""
    import torch

    if torch.cuda.is_available():
        return "cuda" if torch.cuda.is_bf16_supported() else None
    return cpu_bf16_unit()


def resolve(choice: str | None) -> str | None:
    """The Accelerator's `mixed_precision` for `train.mixed_precision` (None: accelerate's launch flag or
    config decides)."""
    if choice not in CHOICES:
        from dno.runtime.config import ConfigError

        raise ConfigError(f"train.mixed_precision must be one of null, no, bf16, auto; got {choice!r}")
    if choice != "auto":
        return choice
    unit = bf16_hardware()
    if unit is None:
        log.info("train.mixed_precision=auto: this machine has no bf16 units (no CUDA bf16, no AMX or AVX512-BF16 "
                 "flag in /proc/cpuinfo): the run stays fp32")
        return "no"
    log.info("train.mixed_precision=auto: bf16 on %s", unit)
    return "bf16"


def running() -> str:
    """The mixed precision of this process's Accelerator ('no' before one exists)."""
    from accelerate.state import AcceleratorState

    if not AcceleratorState._shared_state:  # no Accelerator yet: asking AcceleratorState() would create one
        return "no"
    return AcceleratorState().mixed_precision


def autocast():
    """The run's mixed precision around forward passes outside the update (sampling, reference log-probs):
    torch.autocast to bf16 on the run's device, as accelerate's prepared model does in the update; nothing under
    fp32 or before an Accelerator exists."""
    if running() != "bf16":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda" if torch.cuda.is_available() else "cpu", dtype=torch.bfloat16)
