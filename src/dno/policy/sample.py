"""Sampling answers from a policy in process (`Sampler`), by one of two decoding strategies.

`sampling.sampler=shared_prefill` (the default; `dno` is its old name): each prompt's K samples share
one prefill whose KV cache is repeated K times, prompts are batched by length (less left padding),
finished samples leave the batch, the cache is allocated once at its final length, and sample k of
prompt i draws from its own generator seeded by `row_seed(seed, i, k)`, so a sample does not depend on
the batch, the order or the process that draws it. `sampling.sampler=generate`: transformers'
`model.generate` per batch, seeded per batch. Both sample from softmax(logits / temperature) restricted
to the `top_k` most likely tokens (None or 0: all; 50 is generate's default), then to the smallest head
of those holding `top_p` of their mass (transformers' TopPLogitsWarper).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from dno.policy.load import prompt_ids
from dno.runtime.distributed import gather, gather_by_index, shard
from dno.runtime.precision import autocast

SHARED_PREFILL, GENERATE = "shared_prefill", "generate"
SAMPLERS = (SHARED_PREFILL, GENERATE)
OLD_NAMES = {"dno": SHARED_PREFILL}  # sampling.sampler=dno: the name before it named its strategy


@dataclass(frozen=True)
class SamplingOptions:
    """How every answer is drawn: the config's `sampling:` (iterations, validation, the final stage).

    Attributes:
        max_new_tokens: the longest answer, in tokens.
        temperature: softmax temperature (the paper: 0.7); 0 decodes greedily (MT-Bench's categories ask for it).
        top_p: nucleus sampling's mass.
        top_k: sample among the k most likely tokens (None or 0: all).
        batch_size: sequences per batch: a memory knob (samples of shared_prefill do not depend on it).
        sampler: the decoding strategy, shared_prefill or generate (see the module docstring).
    """

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int | None = 50
    batch_size: int = 128
    sampler: str = SHARED_PREFILL

    def __post_init__(self) -> None:
        object.__setattr__(self, "sampler", OLD_NAMES.get(self.sampler, self.sampler))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampling.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be at least 0 (0: greedy), got {self.temperature}")

    @classmethod
    def of(cls, sampling, **changes) -> SamplingOptions:
        """From a `sampling:` config (and `changes`, e.g. a benchmark's longer answers)."""
        keys = ("max_new_tokens", "temperature", "top_p", "top_k", "batch_size", "sampler")
        return replace(cls(**{k: sampling[k] for k in keys if k in sampling}), **changes)

    def prompts_per_batch(self, n: int) -> int:
        """Prompts per batch: `batch_size` sequences, n per prompt."""
        return max(1, self.batch_size // n)


@dataclass(frozen=True)
class DecodeOptions:
    """What `decode` needs beyond the prompts and generators; `drop_frac` and `static_cache` are levers
    that experiments/sampler_levers.py switches one at a time."""

    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int | None
    pad_id: int
    eos_id: int
    drop_frac: float = 0.25  # finished rows leave once they are this share of the batch (above 1: never)
    static_cache: bool = True  # a KV cache allocated once at its final length, not copied at every step


def row_seed(seed: int, prompt: int, sample: int) -> int:
    """The seed of one sample: its draws depend on (seed, prompt index, sample index) alone, not on the
    batch, the order or the process that draws it."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt}/{sample}".encode()).digest()[:8], "big") >> 1


class Sampler:
    """Answers of one model in process; with an `accelerator`, each process samples its shard of the
    batches and the main process gets all of them (the others get None)."""

    def __init__(self, model, tokenizer, options: SamplingOptions, accelerator=None) -> None:
        self.model, self.tokenizer, self.options, self.accelerator = model, tokenizer, options, accelerator

    def decode_options(self) -> DecodeOptions:
        o = self.options
        return DecodeOptions(o.max_new_tokens, o.temperature, o.top_p, o.top_k, self.tokenizer.pad_token_id,
                             self.tokenizer.eos_token_id)

    def sample(self, prompts: list[list[dict]], *, n: int, seed: int,
               desc: str = "sampling") -> tuple[list[list[str]], int] | None:
        """`n` answers per prompt (a messages list), in order, and the number of generated tokens (up to and
        including EOS), on the main process; None on the others."""
        per_batch = self.options.prompts_per_batch(n)
        starts = shard(len(prompts), self.accelerator, per_batch) if self.accelerator else \
            list(range(0, len(prompts), per_batch))
        mine, texts, n_tokens = self.sample_shard(prompts, starts, n=n, seed=seed, desc=desc)
        if self.accelerator is None:
            return texts, n_tokens
        n_tokens = sum(gather(self.accelerator, n_tokens))
        by_index = gather_by_index(self.accelerator, dict(zip(mine, texts, strict=True)))
        return None if by_index is None else ([by_index[i] for i in range(len(prompts))], n_tokens)

    @torch.no_grad()
    def sample_shard(self, prompts: list[list[dict]], starts: list[int], *, n: int, seed: int,
             desc: str = "sampling") -> tuple[list[int], list[list[str]], int]:
        """The answers to the prompts of the batches that begin at `starts` (a process's shard: see
        dno.runtime.distributed.shard): their indices, their answers and the tokens generated."""
        self.model.eval()
        encoded = [prompt_ids(self.tokenizer, p) for p in prompts]
        per_batch = self.options.prompts_per_batch(n)
        mine = [i for s in starts for i in range(s, min(s + per_batch, len(encoded)))]
        draw_rows = self._generate if self.options.sampler == GENERATE else self._shared_prefill
        with autocast():  # the run's mixed precision (train.mixed_precision)
            rows = draw_rows(encoded, starts, mine, n=n, seed=seed, desc=desc)
        return mine, *self._texts([rows[i] for i in mine])

    def _generate(self, encoded, starts, mine, *, n, seed, desc) -> dict[int, list[list[int]]]:
        """transformers' generate, one call per batch of prompts, seeded by the batch's start."""
        o, tok, rows = self.options, self.tokenizer, {}
        device = next(self.model.parameters()).device
        per_batch = o.prompts_per_batch(n)
        for start in tqdm(starts, desc=desc, unit="batch", leave=False):
            chunk = list(range(start, min(start + per_batch, len(encoded))))
            ids, mask = left_padded([encoded[i] for i in chunk], tok.pad_token_id)
            torch.manual_seed(seed + start)
            how = dict(do_sample=True, temperature=o.temperature, top_p=o.top_p, top_k=o.top_k or 0) \
                if o.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            gen = self.model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), **how, max_new_tokens=o.max_new_tokens,
                num_return_sequences=n, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )[:, ids.shape[1]:].cpu().tolist()
            for j, i in enumerate(chunk):
                rows[i] = gen[j * n:(j + 1) * n]
        return rows

    def _shared_prefill(self, encoded, starts, mine, *, n, seed, desc) -> dict[int, list[list[int]]]:
        """`decode` over this process's prompts batched by length, a generator per sample."""
        per_batch, options, rows = self.options.prompts_per_batch(n), self.decode_options(), {}
        order = sorted(mine, key=lambda i: len(encoded[i]))  # batches of similar lengths: less left padding
        for b in tqdm(range(0, len(order), per_batch), desc=desc, unit="batch", leave=False):
            chunk = order[b:b + per_batch]
            generators = [torch.Generator().manual_seed(row_seed(seed, i, k)) for i in chunk for k in range(n)]
            out = decode(self.model, [encoded[i] for i in chunk], generators, options)
            for j, i in enumerate(chunk):
                rows[i] = out[j * n:(j + 1) * n]
        return rows

    def _texts(self, rows: list[list[list[int]]]) -> tuple[list[list[str]], int]:
        """Each prompt's token rows as texts cut at EOS, and the number of tokens up to and including EOS."""
        eos, texts, n_tokens = self.tokenizer.eos_token_id, [], 0
        for group in rows:
            answers = []
            for row in group:
                length = row.index(eos) + 1 if eos in row else len(row)
                n_tokens += length
                answers.append(self.tokenizer.decode(row[:length], skip_special_tokens=True).strip())
            texts.append(answers)
        return texts, n_tokens


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()  # a sampler never needs gradients: without this, a caller's loop keeps every step's graph
def decode(model, prompts: list[list[int]], generators: list[torch.Generator], o: DecodeOptions) -> list[list[int]]:
    """len(generators) // len(prompts) samples of each prompt (rows prompt-major, one generator per row): one
    prefill of the prompts whose KV cache is repeated for each sample, then one token per step for the samples
    still running; finished ones leave the batch (their cache rows dropped) once they are `o.drop_frac` of it.

    o.static_cache: the KV cache is allocated once at its final length (transformers' StaticCache), where
    a DynamicCache copies all of it at every step to append one position (a fifth of the time here)."""
    n = len(generators) // len(prompts)
    device = next(model.parameters()).device
    ids, mask = left_padded(prompts, o.pad_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache, mask = _cache(model, mask, ids.shape[1], o)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    select_rows(cache, torch.arange(len(prompts), device=device).repeat_interleave(n))
    logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    position = positions[:, -1].repeat_interleave(n) + 1  # where each row's next token goes
    present = torch.arange(len(generators), device=device)  # the rows in the batch (and the cache)
    running = torch.ones(len(generators), dtype=torch.bool, device=device)  # of the present rows
    out: list[list[int]] = [[] for _ in generators]
    for step in range(o.max_new_tokens):
        tokens = torch.full((len(present),), o.pad_id, dtype=torch.long, device=device)
        live = running.nonzero().squeeze(1)
        drawn = draw(logits[live], [generators[r] for r in present[live].tolist()], o)
        tokens[live] = drawn
        for r, t in zip(present[live].tolist(), drawn.tolist(), strict=True):
            out[r].append(t)
        running &= tokens != o.eos_id
        if step == o.max_new_tokens - 1 or not running.any():
            break
        if (~running).sum() >= o.drop_frac * len(present):  # enough of the batch finished: drop those rows
            keep = running.nonzero().squeeze(1)
            select_rows(cache, keep)
            present, running, tokens, mask, position = (x[keep] for x in (present, running, tokens, mask, position))
        if o.static_cache:
            mask[:, ids.shape[1] + step] = 1
        else:
            mask = torch.cat([mask, mask.new_ones(len(present), 1)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position[:, None], cache=cache,
                       use_cache=True).logits[:, -1]
        position = position + 1
    return out


def _cache(model, mask: torch.Tensor, width: int, o: DecodeOptions):
    """The KV cache of a decode, and the attention mask to go with it (a static cache's opens as it fills)."""
    from transformers import DynamicCache, StaticCache

    if not o.static_cache:
        return DynamicCache(config=model.config), mask
    cache = StaticCache(config=model.config, max_cache_len=width + o.max_new_tokens)
    return cache, torch.cat([mask, mask.new_zeros(len(mask), o.max_new_tokens)], dim=1)


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) the batch rows `index` of every layer of a KV cache, dynamic or static (transformers'
    DynamicLayer.batch_select_indices, which its StaticLayer lacks)."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys, layer.values = layer.keys[index], layer.values[index]


def draw(logits: torch.Tensor, generators: list[torch.Generator], o: DecodeOptions) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) over the top_k tokens, cut to the smallest
    head holding top_p of their mass (the token that crosses top_p is kept), by inverse CDF with one
    uniform number from each row's generator. Temperature 0: the most likely token (the generators unused)."""
    if o.temperature == 0:
        return logits.argmax(dim=-1)
    vocab, top_k, top_p = logits.shape[-1], o.top_k, o.top_p
    if top_k and top_k < vocab:
        top, index = logits.topk(top_k, dim=-1)  # sorted, most likely first (temperature keeps the order)
        probs = torch.softmax(top.float() / o.temperature, dim=-1)
    else:
        scaled = logits.float() / o.temperature
        probs = torch.softmax(scaled, dim=-1)
        if top_p < 1.0:  # the head holding top_p is nearly always in the first 256: sort only those
            probs, index = probs.topk(min(256, vocab), dim=-1)
            if (probs.sum(-1) < top_p).any():
                probs, index = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
        else:
            index = None
    if top_p < 1.0:
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    cdf = probs.cumsum(-1)
    u = torch.tensor([torch.rand((), generator=g).item() for g in generators], device=cdf.device)
    choice = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp(max=cdf.shape[-1] - 1)
    return choice.squeeze(1) if index is None else index.gather(1, choice).squeeze(1)
