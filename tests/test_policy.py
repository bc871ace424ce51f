"""Log-probabilities, batching and loading of policies, on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from dno.data import Prompt
from dno.policy.load import load_model, load_tokenizer, prompt_ids, response_ids
from dno.policy.logps import collate, encode_pairs, length_batches, pair_batch, sequence_logps
from dno.policy.sample import Sampler, SamplingOptions
from dno.stages.records import PairRow
from helpers import make_cfg


def pair(i: int, instruction: str, chosen: str, rejected: str) -> PairRow:
    return PairRow(Prompt.of(str(i), instruction), chosen, rejected, 1.0, 0.0, "student_over_student", 1)


@pytest.fixture(scope="module")
def tiny():
    cfg = make_cfg("model=tiny_random")
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    return load_model(cfg.model, cfg.cache_dir, tok), tok, cfg


def test_sequence_logps_is_the_sum_over_response_tokens(tiny):
    model, tok, _ = tiny
    p, r = prompt_ids(tok, "Describe the sea."), response_ids(tok, "It is blue.", 64)
    assert r[-1] == tok.eos_token_id
    batch = collate([(p, r)], tok.pad_token_id)
    with torch.no_grad():
        got = sequence_logps(model, batch)
        logits = model(torch.tensor([p + r])).logits[0]
    expected = sum(torch.log_softmax(logits[len(p) + i - 1], -1)[tok_id] for i, tok_id in enumerate(r))
    assert got.shape == (1,) and torch.allclose(got, expected.reshape(1), atol=1e-4)


def test_right_padding_does_not_change_a_sequence(tiny):
    model, tok, _ = tiny
    short = (prompt_ids(tok, "Hi."), response_ids(tok, "Hello.", 64))
    long = (prompt_ids(tok, "Describe a long walk in the mountains."), response_ids(tok, "It was long " * 8, 64))
    with torch.no_grad():
        alone = sequence_logps(model, collate([short], tok.pad_token_id))
        padded = sequence_logps(model, collate([short, long], tok.pad_token_id))[:1]
    assert torch.allclose(alone, padded, atol=1e-4)


def test_pair_batches_hold_chosen_then_rejected_and_cover_every_pair(tiny):
    _, tok, _ = tiny
    pairs = [pair(i, f"Say {i}.", "yes " * (i + 1), "no") for i in range(5)]
    enc = encode_pairs(tok, pairs, max_length=64)
    batches = length_batches(enc, 2)
    assert sorted(i for b in batches for i in b) == list(range(5)) and [len(b) for b in batches] == [2, 2, 1]
    batch = pair_batch(enc, batches[0], tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    assert int(batch["loss_mask"][0].sum()) == len(enc[batches[0][0]][1])
    assert int(batch["loss_mask"][2].sum()) == len(enc[batches[0][0]][2])


def test_responses_are_cut_to_max_length(tiny):
    _, tok, _ = tiny
    pairs = [pair(0, "Talk.", "word " * 200, "no")]
    (prompt, chosen, _), = encode_pairs(tok, pairs, max_length=64)
    assert len(prompt) + len(chosen) == 64 and chosen[-1] == tok.eos_token_id


def test_sampling_is_seeded(tiny):
    model, tok, _ = tiny
    sampler = Sampler(model, tok, SamplingOptions(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=4))
    prompts = [Prompt.of("a", "Hi.").messages, Prompt.of("b", "Describe the sea.").messages]
    a, n_a = sampler.sample(prompts, n=2, seed=3)
    b, _ = sampler.sample(prompts, n=2, seed=3)
    assert a == b and [len(x) for x in a] == [2, 2] and 0 < n_a <= 4 * 6


def test_random_model_is_the_same_every_time(tiny):
    model, tok, cfg = tiny
    again = load_model(cfg.model, cfg.cache_dir, tok)
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
