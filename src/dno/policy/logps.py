"""Log-probabilities of answers under a policy: pairs tokenised through the chat template, batched by
length, and one forward per micro-batch (`sequence_logps`), shared by the reference stage and the
update so that the two agree exactly."""

from __future__ import annotations

import torch

from dno.policy.load import prompt_ids, response_ids


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
                   logits_to_keep=width - start).logits[:, :-1]
    labels = batch["input_ids"][:, start + 1 :]
    mask = batch["loss_mask"][:, start + 1 :].float()
    logits = logits.float()
    # gather - logsumexp: one vocabulary-sized temporary instead of log_softmax's full copy
    logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (logps * mask).sum(-1)
