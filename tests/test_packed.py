"""Prefix sharing and packing (dno.policy.packed, layout=shared) give the log-probs and gradients of the
unshared, padded computation: to 1e-9 in float64 (with SDPA's math kernel: the CPU flash kernel rounds
differently at every sequence length, in float64 too), and in float32 to float32's own rounding, 1e-5 plus 1e-6
of the value (sums of 40 tokens reach -190 here, where one float32 step is 1.5e-5: the unshared computation of a
pair alone and in a batch differ by as much)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from dno.policy import packed
from dno.policy.logps import (
    PADDED,
    SHARED,
    answer_lengths,
    batch_logps,
    length_batches,
    make_batch,
    pair_batch,
    sequence_logps,
    unshared_tokens,
)
from dno.policy.packed import CHOSEN, PROMPT, REJECTED, Block, block_mask, blocks_of, pack, packed_batch
from helpers import tiny_llama

VOCAB, PAD, EOS = 97, 0, 1


def encoded_pairs(lengths: list[tuple[int, int, int]], seed: int = 0) -> list[tuple]:
    """(prompt, chosen, rejected) token ids of the given lengths, answers ending with EOS."""
    rng = random.Random(seed)

    def ids(n: int) -> list[int]:
        return [rng.randrange(2, VOCAB) for _ in range(n)]

    return [(ids(p), ids(c - 1) + [EOS], ids(r - 1) + [EOS]) for p, c, r in lengths]


# prompts of 1 to 30 tokens, answers of 1 (EOS alone) to 40, rejected longer or shorter than chosen
EDGES = [(1, 1, 1), (30, 40, 2), (5, 1, 37), (12, 9, 9), (3, 25, 24), (17, 2, 1), (8, 16, 3), (2, 40, 40)]


@pytest.fixture(scope="module")
def model():
    return tiny_llama(VOCAB, initializer_range=0.3)  # sharper than the default init: a leak would show


def unshared(model, encoded, idx, with_rejected=True):
    return sequence_logps(model, pair_batch(encoded, idx, PAD, with_rejected))


@pytest.mark.parametrize("micro_batch", [1, 3, 8])
def test_shared_log_probs_equal_the_unshared_computation_float32(model, micro_batch):
    encoded = encoded_pairs(EDGES)
    with torch.no_grad():
        for idx in length_batches(encoded, micro_batch):
            ours = batch_logps(model, make_batch(encoded, idx, PAD, SHARED))
            torch.testing.assert_close(ours, unshared(model, encoded, idx), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_log_probs_and_gradients_equal_the_unshared_float64(attention):
    """In float64, but for what Llama computes in float32 whatever the model's dtype (RMSNorm's variance, eager
    attention's softmax): the log-probs to 1e-9 under SDPA (1e-5 under eager), each parameter's gradient to 1e-6
    of its norm."""
    model = tiny_llama(VOCAB, initializer_range=0.3).double()
    model.set_attn_implementation(attention)
    encoded = encoded_pairs(EDGES, seed=1)
    idx = list(range(len(encoded)))
    grads = []
    with sdpa_kernel(SDPBackend.MATH):
        for logps_of in (lambda: unshared(model, encoded, idx), lambda: batch_logps(model, make_batch(
                encoded, idx, PAD, SHARED))):
            model.zero_grad()
            logps = logps_of()
            (logps * torch.linspace(-1, 1, len(logps), dtype=logps.dtype)).sum().backward()
            grads.append((logps.detach(), [p.grad.clone() for p in model.parameters()]))
    (a, ga), (b, gb) = grads
    torch.testing.assert_close(b, a, rtol=0, atol=1e-9 if attention == "sdpa" else 1e-5)
    for x, y in zip(ga, gb, strict=True):
        assert (y - x).norm() <= 1e-6 * x.norm()


def test_the_test_would_see_a_rejected_answer_that_sees_its_chosen(model, monkeypatch):
    encoded = encoded_pairs(EDGES[:3])
    with torch.no_grad():
        right = batch_logps(model, make_batch(encoded, [0, 1, 2], PAD, SHARED))
        # a mask that lets the rejected answers see their chosen answers, as a prompt's continuation would
        monkeypatch.setattr(packed, "block_mask", lambda segment, kind: block_mask(
            segment, torch.where(kind == REJECTED, PROMPT, kind)))
        wrong = batch_logps(model, make_batch(encoded, [0, 1, 2], PAD, SHARED))
    assert (right - wrong)[3:].abs().max() > 1e-2  # the rejected answers' log-probs move by far more than 1e-5
    torch.testing.assert_close(right[:3], wrong[:3], rtol=0, atol=0)  # the chosen ones do not move


def test_without_rejected_answers_only_chosen_are_scored(model):
    encoded = encoded_pairs(EDGES)
    idx = [0, 1, 2, 3]
    with torch.no_grad():
        ours = batch_logps(model, make_batch(encoded, idx, PAD, SHARED, with_rejected=False))
        torch.testing.assert_close(ours, unshared(model, encoded, idx, with_rejected=False), rtol=1e-6, atol=1e-5)
    assert ours.shape == (4,)
    shared, padded = (make_batch(encoded, [0, 1, 2], PAD, layout, with_rejected=False) for layout in (SHARED, PADDED))
    assert unshared_tokens(shared) == unshared_tokens(padded) == (1 + 1) + (30 + 40) + (5 + 1)  # a prompt per answer


def test_answer_lengths_and_tokens_are_the_unshared_layouts():
    encoded = encoded_pairs(EDGES)
    idx = [2, 0, 5]
    shared, padded = make_batch(encoded, idx, PAD, SHARED), make_batch(encoded, idx, PAD, PADDED)
    assert answer_lengths(shared).tolist() == answer_lengths(padded).tolist() == [1, 1, 2, 37, 1, 1]
    assert unshared_tokens(shared) == unshared_tokens(padded) == 2 * (5 + 1 + 17) + 1 + 1 + 2 + 37 + 1 + 1
    assert shared["input_ids"].numel() < padded["input_ids"].numel()
    every = make_batch(encoded, list(range(len(EDGES))), PAD, SHARED)  # rows as wide as the longest pair: 2 + 40 + 40
    assert every["input_ids"].shape[1] == max(p + c + r for p, c, r in EDGES) == 82


def test_pairs_are_packed_first_fit_in_rows_no_wider_than_the_longest():
    blocks = [Block([2] * n, ([1],), (i,)) for i, n in enumerate([9, 3, 5, 2, 4])]  # 10, 4, 6, 3, 5 tokens
    rows = pack(blocks, row_tokens=10)
    assert [[len(b) for b in row] for row in rows] == [[10], [4, 6], [3, 5]]
    assert pack(blocks, row_tokens=3) == [[b] for b in blocks]  # longer than a row: alone in its own
    batch = packed_batch(blocks, PAD, row_tokens=10)
    assert batch["input_ids"].shape == (3, 10) and (batch["input_ids"][2, 8:] == PAD).all()


def test_the_block_mask_of_one_pair():
    # prompt of 2, chosen of 2, rejected of 2, then one padding position
    segment = torch.tensor([[0, 0, 0, 0, 0, 0, 1]])
    kind = torch.tensor([[PROMPT, PROMPT, CHOSEN, CHOSEN, REJECTED, REJECTED, 3]])
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 0, 0],  # rejected: the prompt and itself, never the chosen answer
        [1, 1, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],  # padding: itself only (no row without a key, no NaN)
    ], dtype=torch.bool)
    assert torch.equal(block_mask(segment, kind)[0, 0], expected)


def test_positions_restart_after_the_prompt_for_the_rejected_answer():
    (block,) = blocks_of([([5, 6, 7], [8, 1], [9, 9, 1])], [0])
    batch = packed_batch([block], PAD, row_tokens=len(block))
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]
    # the first token of each answer is predicted by the prompt's last position (column 2)
    assert batch["target_cols"].tolist() == [2, 3, 2, 5, 6] and batch["labels"].tolist() == [8, 1, 9, 9, 1]
    assert batch["target_sequences"].tolist() == [0, 0, 1, 1, 1]


def test_an_update_takes_the_same_steps_in_either_layout(tmp_path):
    """Reference log-probs, then train_policy from the same weights on the same pairs, in each layout: log 2 at the
    first step (the reference and the update agree), and the same statistics and weights in both layouts."""
    from accelerate import Accelerator

    from dno.data import Prompt
    from dno.losses import DNOPrctLoss
    from dno.policy.load import load_tokenizer
    from dno.stages.records import PairRow, write_rows
    from dno.stages.reference import reference_logps
    from dno.stages.train import TrainOptions, train_policy
    from helpers import make_cfg

    cfg = make_cfg("model=tiny_random")
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    pairs = [PairRow(Prompt.of(str(i), "Say something " * (i % 4 + 1)), "yes " * (i % 5 + 1), f"no {i}" * (i % 3 + 1),
                     1.0, 0.0, "student_over_student", 1) for i in range(10)]
    options = TrainOptions(1e-3, "constant", 0.0, 0.0, 1.0, 1, micro_batch_size=3, grad_accum=2, max_length=64)
    out = {}
    for layout in (PADDED, SHARED):
        path = tmp_path / f"{layout}.jsonl"
        write_rows(path, pairs)
        model = tiny_llama(len(tok), initializer_range=0.1)
        reference_logps(model, tok, path, replace(options, layout=layout))
        stats = train_policy(model, tok, path, DNOPrctLoss(beta=0.1), replace(options, layout=layout),
                             Accelerator(cpu=True))
        out[layout] = stats, torch.cat([p.detach().flatten() for p in model.parameters()])
    (s_pad, w_pad), (s_shared, w_shared) = out[PADDED], out[SHARED]
    assert s_shared["train/first_step_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert s_shared["train/loss"] == pytest.approx(s_pad["train/loss"], abs=1e-5)
    assert s_shared["train/implicit_margin"] == pytest.approx(s_pad["train/implicit_margin"], abs=1e-4)
    torch.testing.assert_close(w_shared, w_pad, rtol=0, atol=1e-5)
