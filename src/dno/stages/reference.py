"""Stage 4: reference log-probs of every pair under pi_t, computed once per iteration and stored
with the pairs, so training never holds a second model (Eq. 13's pi_t)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from dno.data import chat_prompt
from dno.distributed import gather_by_index, shard
from dno.policy import collate, prompt_ids, response_ids, sequence_logps
from dno.records import read_pairs, write_jsonl


def encode_pairs(tokenizer, pairs: list[dict], max_length: int) -> list[tuple]:
    """(prompt, chosen, rejected) token ids per pair; responses end with EOS and are cut to fit."""
    encoded = []
    for p in pairs:
        prompt = prompt_ids(tokenizer, chat_prompt(p))
        room = max_length - len(prompt)
        if room < 2:
            raise ValueError(f"prompt {p['prompt_id']} has {len(prompt)} tokens, over model.max_length={max_length}")
        encoded.append((prompt, response_ids(tokenizer, p["chosen"], room),
                        response_ids(tokenizer, p["rejected"], room)))
    return encoded


def length_batches(encoded: list[tuple], size: int) -> list[list[int]]:
    """Pair indices in micro-batches of similar length, to limit padding."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + max(map(len, encoded[i][1:])))
    return [order[i : i + size] for i in range(0, len(order), size)]


def pair_batch(encoded: list[tuple], idx: list[int], pad_id: int, with_rejected: bool = True) -> dict:
    """Chosen sequences first, then rejected: rows [0, B) and [B, 2B) (only the first B without rejected)."""
    seqs = [(encoded[i][0], encoded[i][1]) for i in idx]
    if with_rejected:
        seqs += [(encoded[i][0], encoded[i][2]) for i in idx]
    return collate(seqs, pad_id)


@torch.no_grad()
def reference_logps(model, tokenizer, pairs_path: Path, *, micro_batch_size: int, max_length: int,
                    accelerator=None) -> dict:
    """Every process computes its shard of the micro-batches; the main process writes the pairs."""
    pairs = read_pairs(pairs_path)
    model.eval()
    device = next(model.parameters()).device
    encoded = encode_pairs(tokenizer, pairs, max_length)
    batches = length_batches(encoded, micro_batch_size)
    if accelerator is not None:
        batches = [batches[i] for i in shard(len(batches), accelerator)]
    logps_of = {}
    for idx in tqdm(batches, desc="reference log-probs", leave=False):
        batch = {k: v.to(device) for k, v in pair_batch(encoded, idx, tokenizer.pad_token_id).items()}
        logps = sequence_logps(model, batch).cpu()
        logps_of |= {i: (float(logps[j]), float(logps[len(idx) + j])) for j, i in enumerate(idx)}
    logps_of = gather_by_index(accelerator, logps_of)
    if logps_of is None:  # not the main process
        return {}
    for i, (chosen, rejected) in logps_of.items():
        pairs[i]["ref_chosen_logps"], pairs[i]["ref_rejected_logps"] = chosen, rejected
    write_jsonl(pairs_path, pairs)
    return {}
