"""LoRA updates (peft): a fresh adapter on pi_t for each iteration, merged into pi_{t+1}.

DNO's reference policy is pi_t, so an adapter lives for one update only: it is trained on top of
pi_t's weights, saved on its own (`iter_<t>/adapter/`, loadable with `PeftModel.from_pretrained`
on pi_t) and merged, so that pi_{t+1} is a full checkpoint like full fine-tuning's (vLLM and
dno-eval load it unchanged). `model.lora.r: 0` (the default) is full fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from dno.runtime.files import replace_dir


def lora_enabled(model_cfg) -> bool:
    lora = model_cfg.get("lora")
    return bool(lora) and (lora.get("r") or 0) > 0


def add_adapter(model, lora_cfg, seed: int):
    """`model` with a fresh LoRA adapter (B = 0: the wrapped model is still pi_t); only the adapter trains.

    The adapter's A matrices are drawn from `seed`, so a redone update starts from the same adapter."""
    from peft import LoraConfig, get_peft_model

    target = lora_cfg.get("target_modules", "all-linear")
    config = LoraConfig(r=int(lora_cfg.r), lora_alpha=lora_cfg.get("alpha", 16),
                        lora_dropout=lora_cfg.get("dropout", 0.0), task_type="CAUSAL_LM",
                        target_modules=target if isinstance(target, str) else list(target))
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def save_and_merge(peft_model, out: Path, accelerator, base: str):
    """Write the adapter to `out` (main process, atomically) and return the merged plain model."""
    if accelerator.is_main_process:
        peft_model.peft_config["default"].base_model_name_or_path = base  # pi_t: what the adapter applies to
        # embeddings are not trained: no hub lookup for them
        replace_dir(out, lambda tmp: peft_model.save_pretrained(tmp, save_embedding_layers=False))
    return peft_model.merge_and_unload()
