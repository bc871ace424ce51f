"""Stage 5: the policy update of Eq. 13 from pi_t's weights, on accelerate.

Micro-batches are formed by length; each optimizer step averages the loss over the pairs of its
effective batch (micro-batch x accumulation x processes), and steps are shuffled with the seed.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from dno.policy import sequence_logps
from dno.records import read_jsonl
from dno.stages.reference import encode_pairs, length_batches, pair_batch


def train_policy(model, tokenizer, pairs_path: Path, loss_fn, *, accelerator, optim, epochs: int,
                 micro_batch_size: int, grad_accum: int, max_length: int, seed: int) -> dict:
    pairs = read_jsonl(pairs_path)
    if not loss_fn.needs_rejected:  # SFT on positives: each distinct positive once
        pairs = list({(p["instruction"], p["chosen"]): p for p in pairs}.values())
    if not pairs:
        return {"train/pairs": 0, "train/steps": 0}
    encoded = encode_pairs(tokenizer, pairs, max_length)
    micro = length_batches(encoded, micro_batch_size)
    steps = [micro[i : i + grad_accum] for i in range(0, len(micro), grad_accum)]
    total_steps = len(steps) * epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)
    warmup = math.ceil(optim.warmup_ratio * total_steps)
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    rng = random.Random(seed)
    fixed = {
        "ref": torch.tensor([[p.get("ref_logp_chosen", 0.0), p.get("ref_logp_rejected", 0.0)] for p in pairs]),
        "win": torch.tensor([[p["chosen_win_rate"], p["rejected_win_rate"]] for p in pairs]),
    }
    sums: Counter = Counter()
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc="training", unit="step", leave=False)
    for _ in range(epochs):
        rng.shuffle(steps)
        for step in steps:
            n_step = sum(map(len, step))
            for idx in step:
                sums.update(_micro_step(model, loss_fn, encoded, idx, fixed, n_step, accelerator, tokenizer))
            accelerator.clip_grad_norm_(model.parameters(), optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            bar.update()
            bar.set_postfix(loss=f"{sums['loss'] / sums['pairs']:.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    accelerator.free_memory()
    n = sums["pairs"]
    return {
        "train/loss": sums["loss"] / n, "train/reward_accuracy": sums["acc"] / n,
        "train/implicit_margin": sums["margin"] / n, "train/pairs": len(pairs), "train/steps": total_steps,
        "time/train_tokens_per_s": sums["tokens"] / seconds,
    }


def _micro_step(model, loss_fn, encoded, idx, fixed, n_step, accelerator, tokenizer) -> dict:
    """Forward and backward of one micro-batch; its loss weighs len(idx) / n_step of the step's mean."""
    batch = pair_batch(encoded, idx, tokenizer.pad_token_id, with_rejected=loss_fn.needs_rejected)
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    logps = sequence_logps(model, batch)
    n_tokens = batch["loss_mask"][:, 1:].sum(-1).float()
    b = len(idx)
    chosen = logps[:b]
    rejected = logps[b:] if loss_fn.needs_rejected else torch.zeros_like(chosen)
    r, w = fixed["ref"][idx].to(logps.device), fixed["win"][idx].to(logps.device)
    losses = loss_fn(chosen, rejected, r[:, 0], r[:, 1], win_rate_1=w[:, 0], win_rate_2=w[:, 1],
                     n_tokens_1=n_tokens[:b])
    accelerator.backward(losses.sum() / n_step)
    h = ((chosen - r[:, 0]) - (rejected - r[:, 1])).detach()
    return {"loss": float(losses.detach().sum()), "acc": float((h > 0).sum()), "margin": float(h.sum()),
            "tokens": int(batch["attention_mask"].sum()), "pairs": b}


def save_checkpoint(model, tokenizer, out: Path, accelerator) -> None:
    """Write pi_{t+1} in HF format, atomically (a directory renamed into place)."""
    if accelerator.is_main_process:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        accelerator.unwrap_model(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    accelerator.wait_for_everyone()
