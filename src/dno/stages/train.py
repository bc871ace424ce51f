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
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_scheduler

from dno.losses import Loss, PairLogps
from dno.policy.logps import (
    SHARED,
    answer_lengths,
    batch_logps,
    encode_pairs,
    length_batches,
    make_batch,
    unshared_tokens,
)
from dno.runtime.distributed import gather
from dno.runtime.files import replace_dir
from dno.stages.records import PairRow, read_rows


@dataclass(frozen=True)
class TrainOptions:
    """How the update runs: the schedule's optimisation settings and the batch sizes (built once per run).

    Attributes:
        lr, lr_scheduler, warmup_ratio, weight_decay, max_grad_norm: AdamW and its schedule (`schedule.*`).
        epochs: passes over an iteration's pairs (the paper: at most one).
        micro_batch_size: pairs per forward pass and process (`train.micro_batch_size`).
        grad_accum: micro-batches per optimizer step and process, so that micro-batch x accumulation x
            processes is `schedule.effective_batch_size`.
        max_length: prompt + answer tokens (`model.max_length`); answers are cut to fit.
        seed: the order of the steps (and a LoRA adapter's initialisation): one per iteration.
        layout: how a micro-batch's pairs are laid out (dno.policy.logps.LAYOUTS): `shared`, a prompt once for
            both answers and pairs packed in rows; `padded`, a padded row per answer (the unshared computation).
    """

    lr: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    epochs: int
    micro_batch_size: int
    grad_accum: int
    max_length: int
    seed: int = 0
    layout: str = SHARED


@dataclass(frozen=True)
class Trainer:
    """The model and its optimizer as accelerate prepared them, for one update."""

    model: object
    optimizer: object
    scheduler: object
    accelerator: object
    deepspeed: bool  # DeepSpeed steps, clips and divides by its accumulation itself


@dataclass(frozen=True)
class PairData:
    """An update's pairs, tokenised, with what the loss needs of each besides the policy's log-probs."""

    encoded: list[tuple]  # (prompt, chosen, rejected) token ids
    ref_logps: torch.Tensor  # (N, 2): pi_t's log-probs of chosen and rejected (zeros without a reference)
    win_probs: torch.Tensor  # (N, 2): r_t of chosen and rejected
    pad_id: int
    layout: str = SHARED  # of the micro-batches (dno.policy.logps.LAYOUTS)

    @classmethod
    def of(cls, pairs: list[PairRow], tokenizer, max_length: int) -> PairData:
        return cls(encode_pairs(tokenizer, pairs, max_length),
                   torch.tensor([[p.ref_chosen_logps or 0.0, p.ref_rejected_logps or 0.0] for p in pairs]),
                   torch.tensor([[p.chosen_win_prob, p.rejected_win_prob] for p in pairs]), tokenizer.pad_token_id)


def train_policy(model, tokenizer, pairs_path: Path, loss_fn: Loss, options: TrainOptions, accelerator) -> dict:
    """The update of `model` on the pairs of `pairs_path` with `loss_fn`; returns its statistics."""
    pairs = read_rows(pairs_path, PairRow)
    if not loss_fn.needs_rejected:  # SFT on positives: each distinct positive once
        pairs = list({(p.prompt.as_text(), p.chosen): p for p in pairs}.values())
    if not pairs:
        return {"train/pairs": 0, "train/steps": 0}
    data = PairData.of(pairs, tokenizer, options.max_length)
    micro = length_batches(data.encoded, options.micro_batch_size)
    world = accelerator.num_processes
    steps = [micro[i : i + options.grad_accum * world] for i in range(0, len(micro), options.grad_accum * world)]
    optimizer, scheduler = _optimizer(model, options, len(steps) * options.epochs, accelerator)
    deepspeed = _configure_deepspeed(accelerator, options)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    sums, first, seconds = _steps(Trainer(model, optimizer, scheduler, accelerator, deepspeed), loss_fn,
                                  replace(data, layout=options.layout), steps, options)
    accelerator.free_memory()
    return _summary(accelerator, sums, seconds, first) | {"train/pairs": len(pairs),
                                                          "train/steps": len(steps) * options.epochs,
                                                          "train/trainable_params": n_trainable}


def _steps(t: Trainer, loss_fn: Loss, data: PairData, steps: list[list[list[int]]],
           options: TrainOptions) -> tuple[Counter, Counter, float]:
    """The optimizer steps of every epoch, in an order shuffled with the seed; the summed statistics of all
    steps and of the first (where the policy is still its reference: log 2 for DPO-like losses), and the time.

    Each process runs its share of a step's micro-batches, dealt round robin, so N processes with
    accumulation A take the same steps as one process with accumulation N x A."""
    model, accelerator, deepspeed = t.model, t.accelerator, t.deepspeed
    world, rank = accelerator.num_processes, accelerator.process_index
    # DDP averages gradients over processes and DeepSpeed divides by its accumulation steps, so the loss is
    # scaled back to the step's mean
    scale = world * (options.grad_accum if deepspeed else 1)
    rng, sums, first = random.Random(options.seed), Counter(), Counter()
    start = time.perf_counter()
    bar = tqdm(total=len(steps) * options.epochs, desc="training", unit="step", leave=False,
               disable=not accelerator.is_local_main_process)
    for epoch in range(options.epochs):
        rng.shuffle(steps)
        for i, step in enumerate(steps):
            n_step = sum(map(len, step))
            work = [(idx, 1.0) for idx in step[rank::world]]
            if world > 1 or deepspeed:  # same number of backward passes everywhere: zero-weight fillers
                work += [(step[0], 0.0)] * (options.grad_accum - len(work))
            for j, (idx, weight) in enumerate(work):
                with contextlib.nullcontext() if j == len(work) - 1 else accelerator.no_sync(model):
                    m = _micro_step(model, loss_fn, data, idx, weight * scale / n_step, accelerator)
                if weight:
                    sums.update(m)
                    if epoch == i == 0:
                        first.update(m)
            if not deepspeed:
                accelerator.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            t.optimizer.step()
            t.scheduler.step()
            t.optimizer.zero_grad()
            bar.update()
            bar.set_postfix(loss=f"{sums['loss'] / max(sums['pairs'], 1):.3f}")
    bar.close()
    return sums, first, time.perf_counter() - start


def _optimizer(model, optim: TrainOptions, total_steps: int, accelerator):
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


def _configure_deepspeed(accelerator, options: TrainOptions) -> bool:
    """DeepSpeed reads batch sizes and clipping from its own config: fill them from the schedule."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return False
    micro, accumulation = options.micro_batch_size, options.grad_accum
    plugin.deepspeed_config.update(
        train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation,
        train_batch_size=micro * accumulation * accelerator.num_processes, gradient_clipping=options.max_grad_norm)
    return True


def _micro_step(model, loss_fn: Loss, data: PairData, idx: list[int], scale: float, accelerator) -> dict:
    """Forward and backward of the pairs `idx`; their summed loss is multiplied by `scale`."""
    batch = make_batch(data.encoded, idx, data.pad_id, data.layout, with_rejected=loss_fn.needs_rejected)
    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
    logps = batch_logps(model, batch)
    n_tokens = answer_lengths(batch)
    b = len(idx)
    ref, win = data.ref_logps[idx].to(logps.device), data.win_probs[idx].to(logps.device)
    inputs = PairLogps(
        policy_chosen_logps=logps[:b],
        policy_rejected_logps=logps[b:] if loss_fn.needs_rejected else torch.zeros_like(logps[:b]),
        ref_chosen_logps=ref[:, 0], ref_rejected_logps=ref[:, 1],
        chosen_win_prob=win[:, 0], rejected_win_prob=win[:, 1], chosen_n_tokens=n_tokens[:b])
    losses = loss_fn(inputs)
    accelerator.backward(losses.sum() * scale)
    h = inputs.h().detach()
    return {"loss": float(losses.detach().sum()), "acc": float((h > 0).sum()), "margin": float(h.sum()),
            "tokens": unshared_tokens(batch), "pairs": b}


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
