"""Stage 1: K responses per prompt from pi_t (Algorithm 2, step 2)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from dno.data import chat_prompt
from dno.data.constraints import words
from dno.distributed import gather, gather_by_index, shard
from dno.policy import generate, sampling_batch, sampling_options
from dno.records import write_jsonl


def sample_responses(model, tokenizer, prompts: list[dict], out: Path, *, k: int, sampling, seed: int,
                     desc: str = "sampling", accelerator=None, server=None) -> dict:
    """Write `out` (one row per prompt: the record plus "responses") and return its statistics.

    In process, each of N processes samples its shard of the batches (every process must call
    this); through `server` (an OpenAI-compatible generation server) the main process asks for all.
    The file is written once everything is in: a failure leaves no half-written samples."""
    start = time.perf_counter()
    if server is not None:
        responses, n_tokens = server.sample(tokenizer, [chat_prompt(p) for p in prompts], n=k, sampling=sampling,
                                            seed=seed, desc=desc)
    else:
        per_batch = sampling_batch(sampling.batch_size, k)
        starts = shard(len(prompts), accelerator, per_batch) if accelerator else None
        mine, n_tokens = generate(model, tokenizer, [chat_prompt(p) for p in prompts], n=k, seed=seed, desc=desc,
                                  starts=starts, **sampling_options(sampling))
        indices = range(len(prompts)) if starts is None else \
            [i for s in starts for i in range(s, min(s + per_batch, len(prompts)))]
        n_tokens = sum(gather(accelerator, n_tokens))
        by_index = gather_by_index(accelerator, dict(zip(indices, mine, strict=True)))
        if by_index is None:  # not the main process
            return {}
        responses = [by_index[i] for i in range(len(prompts))]
    seconds = time.perf_counter() - start
    write_jsonl(out, [{**p, "responses": r} for p, r in zip(prompts, responses, strict=True)])
    lengths = [len(words(text)) for group in responses for text in group]
    return {
        "data/student_len_words_mean": statistics.fmean(lengths),
        "data/student_len_words_std": statistics.pstdev(lengths),
        "time/sample_tokens_per_s": n_tokens / seconds,
        "data/prompts": len(prompts),
    }
