"""Log-probabilities of answers under a policy: pairs tokenised through the chat template, batched by
length, and one forward per micro-batch (`batch_logps`), shared by the reference stage and the update so that
the two agree exactly.

A micro-batch is laid out one of two ways (`LAYOUTS`): `shared` (the default) puts a pair's two answers behind
one copy of its prompt and packs pairs into rows no wider than the longest (dno.policy.packed); `padded` is
the unshared computation, a right-padded row per answer (`pair_batch`, `sequence_logps`). Both give the
same log-probs up to float rounding (tests/test_packed.py); `shared` computes fewer tokens
(results/update_levers.md)."""

from __future__ import annotations

import contextlib

import torch

from dno.policy.load import prompt_ids, response_ids
from dno.policy.packed import blocks_of, packed_batch

SHARED, PADDED = "shared", "padded"
LAYOUTS = (SHARED, PADDED)


def encode_pairs(tokenizer, pairs: list, max_length: int) -> list[tuple]:
    """(prompt, chosen, rejected) token ids per pair (rows with `.prompt`, `.chosen`, `.rejected`: the run's
    `PairRow`s); answers end with EOS and are cut to fit `max_length`."""
    encoded = []
    for p in pairs:
        prompt = prompt_ids(tokenizer, p.prompt.messages)
        room = max_length - len(prompt)
        if room < 2:
            raise ValueError(f"prompt {p.prompt.id} has {len(prompt)} tokens, over model.max_length={max_length}")
        encoded.append((prompt, response_ids(tokenizer, p.chosen, room), response_ids(tokenizer, p.rejected, room)))
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


def make_batch(encoded: list[tuple], idx: list[int], pad_id: int, layout: str = SHARED,
               with_rejected: bool = True) -> dict[str, torch.Tensor]:
    """The pairs `idx` as one micro-batch in `layout` (`batch_logps` and `answer_lengths` read either)."""
    if layout == PADDED:
        return pair_batch(encoded, idx, pad_id, with_rejected)
    if layout != SHARED:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    blocks = blocks_of(encoded, idx, with_rejected)
    return packed_batch(blocks, pad_id, row_tokens=max(map(len, blocks)))


def batch_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log pi(y_i | x, y_<i) over each answer's tokens, chosen answers [0, B) then rejected [B, 2B), for
    either layout. Shape: (2B,), or (B,) without rejected answers."""
    return packed_logps(model, batch) if "target_rows" in batch else sequence_logps(model, batch)


def answer_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each answer's number of tokens, in `batch_logps`' order. Shape: (2B,) or (B,)."""
    if "target_rows" in batch:
        return torch.bincount(batch["target_sequences"], minlength=int(batch["n_sequences"])).float()
    return batch["loss_mask"][:, 1:].sum(-1).float()


def unshared_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The micro-batch's prompt + answer tokens as the unshared layout has them (no padding; a prompt once per
    answer): what throughput is counted in, whichever layout computed it."""
    return int(batch["unshared_tokens"]) if "unshared_tokens" in batch else int(batch["attention_mask"].sum())


def computed_tokens(batch: dict[str, torch.Tensor]) -> int:
    """The positions the micro-batch's rows really compute, padding excluded (a shared prompt once)."""
    return int(batch["computed_tokens"]) if "computed_tokens" in batch else int(batch["attention_mask"].sum())


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt + response) ids with a mask over the response tokens."""
    width = max(len(p) + len(r) for p, r in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss_mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(sequences):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attn[i, : len(p) + len(r)] = 1
        loss_mask[i, len(p) : len(p) + len(r)] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log pi(y_i | x, y_<i) over response tokens. Shape: (B,).

    The one forward used both for reference log-probs and for training, so the two agree exactly.
    """
    # Logits only from the first position that predicts a response token: the vocabulary-sized
    # projection and log-softmax over the micro-batch's shared prompt positions are skipped.
    first = int(batch["loss_mask"].float().argmax(-1).min()) if batch["loss_mask"].any() else 1
    start = max(first - 1, 0)
    width = batch["input_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=width - start, use_cache=False).logits[:, :-1]
    labels = batch["input_ids"][:, start + 1 :]
    mask = batch["loss_mask"][:, start + 1 :].float()
    logits = at_least_fp32(logits)
    # gather - logsumexp: one vocabulary-sized temporary instead of log_softmax's full copy
    logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (logps * mask).sum(-1)


def packed_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`sequence_logps` of a `dno.policy.packed.packed_batch`: the same sums, in the unshared layout's order
    (chosen [0, B), rejected [B, 2B)). Shape: (2B,), or (B,) without rejected answers.

    The vocabulary-sized projection runs on the answer tokens' predicting positions only (not on the prompt
    or the padding): a hook gives the output layer those rows of the last hidden states."""
    rows, cols = batch["target_rows"], batch["target_cols"]
    with _output_rows(model, rows, cols) as inner:
        logits = model(input_ids=batch["input_ids"], attention_mask=_mask_for(inner, batch["attention_mask"]),
                       position_ids=batch["position_ids"], use_cache=False).logits[0]
    logits = at_least_fp32(logits)
    labels = batch["labels"]
    logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    n = int(batch["n_sequences"])
    return torch.zeros(n, dtype=logps.dtype, device=logps.device).index_add(0, batch["target_sequences"], logps)


@contextlib.contextmanager
def _output_rows(model, rows: torch.Tensor, cols: torch.Tensor):
    """While open, the model's output layer sees only the hidden states at (rows, cols), as one row (1, M, d)."""
    inner = model
    while hasattr(inner, "module"):  # DistributedDataParallel and other wrappers
        inner = inner.module
    head = inner.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda _module, args: (args[0][rows, cols].unsqueeze(0), *args[1:]))
    try:
        yield inner
    finally:
        handle.remove()


def at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """bf16 and fp16 logits in fp32 (their log-softmax would lose the small log-probs); fp64 stays fp64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _mask_for(model, mask: torch.Tensor) -> torch.Tensor:
    """A boolean 4D mask as the model's attention takes it: boolean for SDPA, additive (0 or the dtype's lowest)
    for the others, which add it to the scores."""
    if model.config._attn_implementation == "sdpa":
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
