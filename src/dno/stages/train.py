"""Stage 5: the policy update of Eq. 13 from pi_t's weights, on accelerate.

Micro-batches are formed by length; each optimizer step averages the loss over the pairs of its
effective batch (micro-batch x accumulation x processes), and steps are shuffled with the seed.
With N processes a step's micro-batches are dealt round robin, so N processes with accumulation
A take the same steps as one process with accumulation N x A.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from dno.distributed import gather
from dno.losses import Loss, PairLogps
from dno.policy import sequence_logps
from dno.records import read_pairs, replace_dir
from dno.stages.reference import encode_pairs, length_batches, pair_batch


def train_policy(model, tokenizer, pairs_path: Path, loss_fn: Loss, *, accelerator, optim, epochs: int,
                 micro_batch_size: int, grad_accum: int, max_length: int, seed: int) -> dict:
    pairs = read_pairs(pairs_path)
    if not loss_fn.needs_rejected:  # SFT on positives: each distinct positive once
        pairs = list({(p["instruction"], p["chosen"]): p for p in pairs}.values())
    if not pairs:
        return {"train/pairs": 0, "train/steps": 0}
    encoded = encode_pairs(tokenizer, pairs, max_length)
    micro = length_batches(encoded, micro_batch_size)
    world, rank = accelerator.num_processes, accelerator.process_index
    steps = [micro[i : i + grad_accum * world] for i in range(0, len(micro), grad_accum * world)]
    total_steps = len(steps) * epochs
    optimizer, scheduler = _optimizer(model, optim, total_steps, accelerator)
    deepspeed = _configure_deepspeed(accelerator, micro_batch_size, grad_accum, optim.max_grad_norm)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    rng = random.Random(seed)
    # per pair: reference log-probs of pi_t (zeros without a reference) and r_t of both responses
    ref_logps = torch.tensor([[p.get("ref_chosen_logps", 0.0), p.get("ref_rejected_logps", 0.0)] for p in pairs])
    win_probs = torch.tensor([[p["chosen_win_prob"], p["rejected_win_prob"]] for p in pairs])
    # Each process runs its share of a step's micro-batches. DDP averages gradients over processes
    # and DeepSpeed divides by its accumulation steps, so the loss is scaled back to the step's mean.
    scale = world * (grad_accum if deepspeed else 1)
    sums: Counter = Counter()
    first: Counter = Counter()  # the first step's, where the policy is still its reference: log 2 for DPO-like losses
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="training", unit="step", leave=False,
               disable=not accelerator.is_local_main_process)
    for epoch in range(epochs):
        rng.shuffle(steps)
        for i, step in enumerate(steps):
            n_step = sum(map(len, step))
            work = [(idx, 1.0) for idx in step[rank::world]]
            if world > 1 or deepspeed:  # same number of backward passes everywhere: zero-weight fillers
                work += [(step[0], 0.0)] * (grad_accum - len(work))
            for j, (idx, weight) in enumerate(work):
                sync = j == len(work) - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    m = _micro_step(model, loss_fn, encoded, idx, ref_logps, win_probs, weight * scale / n_step,
                                    accelerator, tokenizer)
                if weight:
                    sums.update(m)
                    if epoch == i == 0:
                        first.update(m)
            if not deepspeed:
                accelerator.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.update()
            bar.set_postfix(loss=f"{sums['loss'] / max(sums['pairs'], 1):.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    return _summary(accelerator, sums, seconds, first) | {"train/pairs": len(pairs), "train/steps": total_steps,
                                                   "train/trainable_params": n_trainable}


def _optimizer(model, optim, total_steps: int, accelerator):
    """AdamW and the learning-rate schedule of `optim` (the schedule's lr, scheduler, warmup, weight decay)."""
    # fused: one kernel per step instead of a loop over tensors (3x faster on CPU); not for sharded parameters
    fused = accelerator.distributed_type.value in ("NO", "MULTI_CPU", "MULTI_GPU")
    trainable = [p for p in model.parameters() if p.requires_grad]  # a LoRA adapter's, or every parameter
    optimizer = torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None)
    warmup = math.ceil(optim.warmup_ratio * total_steps)
    # not passed to prepare(): accelerate would step it once per process and step
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    return optimizer, scheduler


def _summary(accelerator, sums: Counter, seconds: float, first: Counter) -> dict:
    """The update's statistics over every process's pairs."""
    gathered = gather(accelerator, (dict(sums), dict(first)))
    per_process = [c for c, _ in gathered]
    total, first_total = Counter(), Counter()
    for c, f in gathered:
        total.update(c)
        first_total.update(f)
    n = total["pairs"]
    return {
        "train/loss": total["loss"] / n, "train/first_step_loss": first_total["loss"] / first_total["pairs"],
        "train/reward_accuracy": total["acc"] / n,
        "train/implicit_margin": total["margin"] / n, "train/processes": accelerator.num_processes,
        "train/pairs_per_process": [c.get("pairs", 0) for c in per_process],
        "time/train_tokens_per_s": total["tokens"] / seconds,
    }


def _configure_deepspeed(accelerator, micro_batch_size: int, grad_accum: int, max_grad_norm: float) -> bool:
    """DeepSpeed reads batch sizes and clipping from its own config: fill them from the schedule."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return False
    plugin.deepspeed_config.update(
        train_micro_batch_size_per_gpu=micro_batch_size, gradient_accumulation_steps=grad_accum,
        train_batch_size=micro_batch_size * grad_accum * accelerator.num_processes, gradient_clipping=max_grad_norm)
    return True


def _micro_step(model, loss_fn, encoded, idx, ref_logps, win_probs, scale, accelerator, tokenizer) -> dict:
    """Forward and backward of one micro-batch; its summed loss is multiplied by `scale`."""
    batch = pair_batch(encoded, idx, tokenizer.pad_token_id, with_rejected=loss_fn.needs_rejected)
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    logps = sequence_logps(model, batch)
    n_tokens = batch["loss_mask"][:, 1:].sum(-1).float()
    b = len(idx)
    ref, win = ref_logps[idx].to(logps.device), win_probs[idx].to(logps.device)
    inputs = PairLogps(
        policy_chosen_logps=logps[:b],
        policy_rejected_logps=logps[b:] if loss_fn.needs_rejected else torch.zeros_like(logps[:b]),
        ref_chosen_logps=ref[:, 0], ref_rejected_logps=ref[:, 1],
        chosen_win_prob=win[:, 0], rejected_win_prob=win[:, 1], chosen_n_tokens=n_tokens[:b])
    losses = loss_fn(inputs)
    accelerator.backward(losses.sum() * scale)
    h = inputs.h().detach()
    return {"loss": float(losses.detach().sum()), "acc": float((h > 0).sum()), "margin": float(h.sum()),
            "tokens": int(batch["attention_mask"].sum()), "pairs": b}


def save_checkpoint(model, tokenizer, out: Path, accelerator) -> None:
    """Write pi_{t+1} in HF format, atomically (a directory renamed into place). Every process
    takes part: under FSDP or ZeRO-3 the full weights are gathered from all of them."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        def build(tmp: Path) -> None:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)

        replace_dir(out, build)
    accelerator.wait_for_everyone()
