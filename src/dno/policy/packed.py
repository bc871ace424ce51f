"""Pairs laid out for one forward with less work: a prompt's chosen and rejected answers behind one copy of
the prompt (prefix sharing, arXiv 2410.20305), and several pairs in one row without padding between them
(packing), with a block mask that gives every answer exactly the context it has alone.

A pair is a block `prompt + chosen + rejected`: the rejected answer's positions restart after the prompt
and it sees the prompt and itself, never the chosen answer; blocks of one row never see each other. The
log-probs are those of the unshared, padded computation (`dno.policy.logps.collate`) up to float rounding
(tests/test_packed.py holds them to 1e-5), while the prompt's tokens are computed once instead of twice and no
padding is computed but the end of each row.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3  # what a position of a row holds


@dataclass(frozen=True)
class Block:
    """One pair (or one prompt and answer, without rejected) in a row: its answers' sequence numbers."""

    prompt: list[int]
    answers: tuple[list[int], ...]  # chosen, then rejected where there is one
    sequences: tuple[int, ...]  # the rows of the unshared layout these answers are: (j,) or (j, B + j)

    def __len__(self) -> int:
        return len(self.prompt) + sum(map(len, self.answers))


def blocks_of(encoded: list[tuple], idx: list[int], with_rejected: bool = True) -> list[Block]:
    """The pairs `idx` as blocks, numbered as `pair_batch` numbers its rows (chosen [0, B), rejected [B, 2B))."""
    b = len(idx)
    return [Block(encoded[i][0], (encoded[i][1], encoded[i][2]) if with_rejected else (encoded[i][1],),
                  (j, b + j) if with_rejected else (j,)) for j, i in enumerate(idx)]


def pack(blocks: list[Block], row_tokens: int) -> list[list[Block]]:
    """Blocks in rows of at most `row_tokens` tokens (a longer block alone in its row), first fit in order."""
    rows: list[list[Block]] = []
    room: list[int] = []
    for block in blocks:
        fit = next((r for r, left in enumerate(room) if len(block) <= left), None)
        if fit is None:
            rows.append([block])
            room.append(row_tokens - len(block))
        else:
            rows[fit].append(block)
            room[fit] -= len(block)
    return rows


def packed_batch(blocks: list[Block], pad_id: int, row_tokens: int) -> dict[str, torch.Tensor]:
    """The rows of `pack(blocks, row_tokens)` as model inputs: `input_ids` and `position_ids` (R, W), a boolean
    `attention_mask` (R, 1, W, W) (True: may attend), and the targets: for each answer token, the row and column
    of the position that predicts it (`target_rows`, `target_cols`), the token (`labels`) and the sequence of
    the unshared layout it belongs to (`target_sequences`); `n_sequences` of them, holding `unshared_tokens`
    tokens in all (the prompt counted once per answer), of which the rows compute `computed_tokens`."""
    rows = pack(blocks, row_tokens)
    width = max(sum(map(len, row)) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    segment = torch.full_like(ids, -1)  # the block of a position within its row (-1: padding)
    kind = torch.full_like(ids, PAD)
    targets: list[tuple[int, int, int, int]] = []  # (row, column that predicts, label, sequence)
    for r, row in enumerate(rows):
        col = 0
        for s, block in enumerate(row):
            col = _place(block, (r, col, s), (ids, positions, segment, kind), targets)
        segment[r, col:] = len(row) + torch.arange(width - col)  # padding: each position alone
    rr, cc, labels, seqs = map(list, zip(*targets, strict=True)) if targets else ([], [], [], [])
    return {"input_ids": ids, "position_ids": positions, "attention_mask": block_mask(segment, kind),
            "target_rows": torch.tensor(rr, dtype=torch.long), "target_cols": torch.tensor(cc, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long), "target_sequences": torch.tensor(seqs, dtype=torch.long),
            "n_sequences": torch.tensor(sum(len(b.sequences) for b in blocks)),
            "unshared_tokens": torch.tensor(sum(len(b.prompt) * len(b.answers) + len(b) - len(b.prompt)
                                                for b in blocks)),
            "computed_tokens": torch.tensor(sum(map(len, blocks)))}


def _place(block: Block, at: tuple[int, int, int], tensors: tuple, targets: list) -> int:
    """Write `block` into row r from column `col` as block number s; returns the column after it."""
    r, col, s = at
    ids, positions, segment, kind = tensors
    n_prompt = len(block.prompt)
    ids[r, col:col + n_prompt] = torch.tensor(block.prompt)
    positions[r, col:col + n_prompt] = torch.arange(n_prompt)
    kind[r, col:col + n_prompt] = PROMPT
    last_prompt, start = col + n_prompt - 1, col + n_prompt
    for answer, sequence, what in zip(block.answers, block.sequences, (CHOSEN, REJECTED), strict=False):
        n = len(answer)
        ids[r, start:start + n] = torch.tensor(answer)
        positions[r, start:start + n] = n_prompt + torch.arange(n)
        kind[r, start:start + n] = what
        # the answer's first token is predicted by the prompt's last position, each next one by the one before
        predictors = [last_prompt] + list(range(start, start + n - 1))
        targets.extend((r, c, t, sequence) for c, t in zip(predictors, answer, strict=True))
        start += n
    segment[r, col:start] = s
    return start


def block_mask(segment: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """(R, 1, W, W), True where query q may attend to key k: same block, k not after q, and not a rejected
    answer's query on its chosen answer's keys."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = segment[:, :, None] == segment[:, None, :]
    crossed = (kind[:, :, None] == REJECTED) & (kind[:, None, :] == CHOSEN)
    return (same & causal & ~crossed).unsqueeze(1)
