"""Stage 1: K answers per prompt from pi_t (Algorithm 2, step 2)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from dno.data import Prompt
from dno.data.constraints import words
from dno.stages.records import Samples, write_rows


def sample_responses(sampler, prompts: list[Prompt], out: Path, *, k: int, seed: int, desc: str = "sampling") -> dict:
    """Write `out` (one `Samples` row per prompt) and return its statistics.

    `sampler`: a `dno.policy.sample.Sampler` (in process: with N processes every process must call this,
    each samples its shard) or a `dno.policy.server.ServerSampler` (the main process asks a server for all).
    The file is written once everything is in: a failure leaves no half-written samples."""
    start = time.perf_counter()
    drawn = sampler.sample([p.messages for p in prompts], n=k, seed=seed, desc=desc)
    if drawn is None:  # not the main process
        return {}
    responses, n_tokens = drawn
    seconds = time.perf_counter() - start
    write_rows(out, [Samples(p, r) for p, r in zip(prompts, responses, strict=True)])
    lengths = [len(words(text)) for group in responses for text in group]
    return {
        "data/student_len_words_mean": statistics.fmean(lengths),
        "data/student_len_words_std": statistics.pstdev(lengths),
        "time/sample_tokens_per_s": n_tokens / seconds,
        "data/prompts": len(prompts),
    }
