"""Stage 4: reference log-probs of every pair under pi_t, computed once per iteration and stored
with the pairs, so training never holds a second model (Eq. 13's pi_t)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from dno.policy.logps import batch_logps, encode_pairs, length_batches, make_batch
from dno.runtime.distributed import gather_by_index, shard
from dno.runtime.precision import autocast
from dno.stages.records import PairRow, read_rows, write_rows
from dno.stages.train import TrainOptions


@torch.no_grad()
def reference_logps(model, tokenizer, pairs_path: Path, options: TrainOptions, accelerator=None) -> dict:
    """log pi_t of both answers of every pair, in `options`' micro-batches and length. Every process computes
    its shard of the micro-batches; the main process writes the pairs."""
    pairs = read_rows(pairs_path, PairRow)
    model.eval()
    device = next(model.parameters()).device
    encoded = encode_pairs(tokenizer, pairs, options.max_length)
    batches = length_batches(encoded, options.micro_batch_size)
    if accelerator is not None:
        batches = [batches[i] for i in shard(len(batches), accelerator)]
    logps_of = {}
    for idx in tqdm(batches, desc="reference log-probs", leave=False):
        batch = make_batch(encoded, idx, tokenizer.pad_token_id, options.layout)  # the update's layout and batches
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():  # the run's mixed precision, as the update's forward passes
            logps = batch_logps(model, batch).cpu()
        logps_of |= {i: (float(logps[j]), float(logps[len(idx) + j])) for j, i in enumerate(idx)}
    logps_of = gather_by_index(accelerator, logps_of)
    if logps_of is None:  # not the main process
        return {}
    write_rows(pairs_path, [p.with_reference(*logps_of[i]) for i, p in enumerate(pairs)])
    return {}
