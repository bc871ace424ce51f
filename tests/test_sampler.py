"""The shared-prefill sampler (sampling.sampler=shared_prefill) draws from the distribution transformers' generate
draws from, and each sample depends on (seed, prompt, sample index) only: not on the batch, the order or the
process."""

from __future__ import annotations

import pytest
import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from dno.policy.load import load_model, load_tokenizer
from dno.policy.sample import DecodeOptions, Sampler, SamplingOptions, decode, row_seed
from helpers import make_cfg, tiny_llama

SETTINGS = [dict(temperature=0.7, top_p=0.95, top_k=8), dict(temperature=1.0, top_p=0.6, top_k=0),
            dict(temperature=1.3, top_p=1.0, top_k=0)]
PROMPT = [3, 1, 4, 1, 5, 9, 2, 6]


@pytest.fixture(scope="module")
def small_vocab():
    """A random Llama over 24 tokens, its logits spread wide enough that the settings above cut its
    distribution: every two-token sequence is a cell that 4000 samples can test."""
    return tiny_llama(24, hidden_size=32, intermediate_size=64, tie_word_embeddings=False, initializer_range=0.3,
                      pad_token_id=0)


def options(max_new_tokens: int, temperature: float, top_p: float, top_k: int, pad_id: int = 0, eos_id: int = -1,
            **levers) -> DecodeOptions:
    return DecodeOptions(max_new_tokens, temperature, top_p, top_k, pad_id, eos_id, **levers)


@pytest.fixture(scope="module")
def tiny():
    cfg = make_cfg("model=tiny_random")
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    return load_model(cfg.model, cfg.cache_dir, tok), tok


def transformers_probs(model, ids: list[int], temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """The next-token distribution of transformers' sampling: its own warpers, in generate's order."""
    scores = model(input_ids=torch.tensor([ids])).logits[:, -1].float()
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, -1)[0]


def chi_square_p(counts: dict, expected: dict) -> float:
    """Pearson's test of observed counts against expected counts (cells under 5 expected are pooled)."""
    from scipy.stats import chi2

    big = [k for k, e in expected.items() if e >= 5]
    observed = [counts.get(k, 0) for k in big] + [sum(v for k, v in counts.items() if k not in big)]
    wanted = [expected[k] for k in big] + [sum(e for k, e in expected.items() if k not in big)]
    stat = sum((o - e) ** 2 / e for o, e in zip(observed, wanted, strict=True) if e > 0)
    return float(chi2.sf(stat, len(big)))


@torch.no_grad()
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "T{temperature} p{top_p} k{top_k}".format(**s))
def test_two_token_sequences_follow_transformers_distribution(small_vocab, settings):
    """4000 samples of two tokens against P(t1) P(t2 | t1) from transformers' warpers: no token outside the
    allowed set, and Pearson's test does not reject (the seeds are fixed: the test is deterministic)."""
    model, n = small_vocab, 4000
    generators = [torch.Generator().manual_seed(row_seed(7, 0, k)) for k in range(n)]
    rows = decode(model, [PROMPT], generators, options(2, **settings))
    first = transformers_probs(model, PROMPT, **settings)
    allowed = first.nonzero().squeeze(1).tolist()
    assert {r[0] for r in rows} <= set(allowed) and 1 < len(allowed)
    assert len(allowed) == 24 if settings["top_p"] == 1.0 and not settings["top_k"] else len(allowed) < 24
    expected, counts = {}, {}
    for t1 in allowed:
        second = transformers_probs(model, [*PROMPT, t1], **settings)
        assert {r[1] for r in rows if r[0] == t1} <= set(second.nonzero().squeeze(1).tolist())
        for t2 in second.nonzero().squeeze(1).tolist():
            expected[(t1, t2)] = n * float(first[t1] * second[t2])
    for r in rows:
        counts[tuple(r)] = counts.get(tuple(r), 0) + 1
    assert len(counts) > 5 and chi_square_p(counts, expected) > 1e-3
    out = model.generate(input_ids=torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
                         do_sample=True, max_new_tokens=1, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=0, **settings)  # the warpers are what generate applies
    assert torch.allclose(torch.softmax(out.scores[0][0].float(), -1), first, atol=1e-6)


def test_a_planted_difference_is_rejected(small_vocab):
    """The test above can fail: samples at temperature 1 tested against temperature 0.8 are rejected."""
    generators = [torch.Generator().manual_seed(row_seed(7, 0, k)) for k in range(4000)]
    rows = decode(small_vocab, [PROMPT], generators, options(1, temperature=1.0, top_p=1.0, top_k=0))
    probs = transformers_probs(small_vocab, PROMPT, temperature=0.8, top_p=1.0, top_k=0)
    counts = {}
    for r in rows:
        counts[r[0]] = counts.get(r[0], 0) + 1
    assert chi_square_p(counts, {t: 4000 * float(p) for t, p in enumerate(probs)}) < 1e-6


def test_a_sample_depends_on_seed_prompt_and_index_only(tiny):
    model, tok = tiny
    prompts = [[{"role": "user", "content": f"Question {i}" + " and more" * (i % 4)}] for i in range(10)]
    opts = SamplingOptions(max_new_tokens=10, temperature=1.0, top_p=0.9, batch_size=8, sampler="shared_prefill")

    def sample(these, batch_size=8, seed=5):
        return Sampler(model, tok, SamplingOptions(**{**opts.__dict__, "batch_size": batch_size})).sample(
            these, n=4, seed=seed)

    base, n_tokens = sample(prompts)
    assert sample(prompts, batch_size=40)[0] == base  # one batch instead of five
    mine, texts, _ = Sampler(model, tok, opts).sample_shard(prompts, [2, 6], n=4, seed=5)  # a process's shard
    assert mine == [2, 3, 6, 7] and texts == base[2:4] + base[6:8]
    twice = sample([prompts[0], prompts[0]])[0]  # the index is in the seed:
    assert twice[0] == base[0] and twice[1] != twice[0]  # a prompt given twice is sampled twice, independently
    other = sample(prompts, seed=6)[0]
    assert other != base and len({r for group in base for r in group}) > 30  # samples differ from each other
    assert 0 < n_tokens <= 10 * 4 * 10


def test_finished_samples_leave_the_batch_and_end_with_eos(small_vocab):
    """A token made the end of sequence: samples stop at it (kept), the others run to the limit, and
    dropping finished rows from the batch does not change the samples still running."""
    settings = dict(temperature=1.0, top_p=1.0, top_k=0)
    never = decode(small_vocab, [PROMPT, PROMPT[:5]], [torch.Generator().manual_seed(k) for k in range(64)],
                   options(8, **settings))
    eos = max(range(24), key=lambda t: sum(r.count(t) for r in never))  # the most frequent token
    rows = decode(small_vocab, [PROMPT, PROMPT[:5]], [torch.Generator().manual_seed(k) for k in range(64)],
                  options(8, **settings, eos_id=eos))
    for r, full in zip(rows, never, strict=True):
        cut = full.index(eos) + 1 if eos in full else len(full)
        assert r == full[:cut]  # the same draws up to the end: nothing else changed for the rows still running
    assert sum(len(r) < 8 for r in rows) >= 16  # enough rows finished early for the batch to shrink


def test_the_generate_sampler_is_kept_and_the_old_name_of_shared_prefill_is_read(tiny):
    model, tok = tiny
    sampler = Sampler(model, tok, SamplingOptions(max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=4,
                                                  sampler="generate"))
    prompts = [[{"role": "user", "content": "Hi."}], [{"role": "user", "content": "Describe the sea."}]]
    a, n_a = sampler.sample(prompts, n=2, seed=3)
    assert a == sampler.sample(prompts, n=2, seed=3)[0] and 0 < n_a <= 24
    with pytest.raises(ValueError, match="sampling.sampler must be one of shared_prefill, generate"):
        SamplingOptions(6, 1.0, 1.0, sampler="vllm")
    assert SamplingOptions(6, 1.0, 1.0, sampler="dno").sampler == "shared_prefill"  # its name until 2026-12
    assert SamplingOptions(6, 1.0, 1.0).sampler == SamplingOptions.of(make_cfg().sampling).sampler  # one default


def test_static_and_dynamic_caches_draw_the_same_samples(small_vocab):
    """The static KV cache (allocated once at its final length) changes where keys live, not what is
    drawn: the same generators give the same tokens as with transformers' DynamicCache, finished rows
    dropped at every step, once a quarter of the batch, or never."""
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 15]]

    def run(**kw):
        generators = [torch.Generator().manual_seed(row_seed(3, i, k)) for i in range(3) for k in range(4)]
        return decode(small_vocab, prompts, generators, options(12, 1.0, 0.9, 20, eos_id=1, **kw))

    for drop_frac in (1e-9, 0.25, 2.0):
        static = run(static_cache=True, drop_frac=drop_frac)
        assert static == run(static_cache=False, drop_frac=drop_frac)
        assert len(static) == 12 and all(1 <= len(r) <= 12 for r in static)
    finished = [r for r in static if r[-1] == 1]
    assert 3 <= len(finished) < 12 and min(map(len, finished)) < 6  # rows did leave the batch early
    assert run(drop_frac=2.0) == run(drop_frac=1e-9)  # dropping finished rows changes nothing drawn


@pytest.mark.parametrize("sampler", ["shared_prefill", "generate"])
@torch.no_grad()
def test_three_sampling_jobs_merged_are_one_jobs_file_byte_for_byte(tiny, tmp_path, sampler):
    """An iteration's sampling split into shards (N processes, a SLURM array, N servers), each its own job with its
    own loaded model, merged by prompt index: the samples file is one job's, byte for byte, because each sample's
    random stream is (seed, prompt index, sample index) (shared_prefill) or the batch's start (generate)."""
    from dno.data import Prompt
    from dno.stages.records import Samples, write_rows

    model, tok = tiny
    prompts = [Prompt(f"p{i}", [{"role": "user", "content": f"Question {i}" + " and more" * (i % 3)}])
               for i in range(11)]
    opts = SamplingOptions(max_new_tokens=12, temperature=1.0, top_p=0.95, batch_size=8, sampler=sampler)
    messages = [p.messages for p in prompts]
    one, _ = Sampler(model, tok, opts).sample(messages, n=4, seed=9)
    write_rows(tmp_path / "one.jsonl", [Samples(p, r) for p, r in zip(prompts, one, strict=True)])
    starts = list(range(0, len(prompts), opts.prompts_per_batch(4)))
    merged: dict[int, list[str]] = {}
    for job in range(3):  # job j of 3 takes every third batch, as dno.runtime.distributed.shard assigns them
        fresh = load_model(make_cfg("model=tiny_random").model, make_cfg().cache_dir, tok)
        mine, texts, _ = Sampler(fresh, tok, opts).sample_shard(messages, starts[job::3], n=4, seed=9)
        assert not set(mine) & set(merged)
        merged.update(zip(mine, texts, strict=True))
    write_rows(tmp_path / "merged.jsonl", [Samples(p, merged[i]) for i, p in enumerate(prompts)])
    assert len(starts) >= 3 and (tmp_path / "merged.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
