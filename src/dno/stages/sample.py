"""Stage 1: K responses per prompt from pi_t (Algorithm 2, step 2)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from dno.data.constraints import words
from dno.policy import generate
from dno.records import write_jsonl


def sample_responses(model, tokenizer, prompts: list[dict], out: Path, *, k: int, sampling, seed: int,
                     desc: str = "sampling") -> dict:
    """Write `out` (one row per prompt: the record plus "responses") and return its statistics."""
    start = time.perf_counter()
    responses, n_tokens = generate(
        model, tokenizer, [p["instruction"] for p in prompts], n=k,
        max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
        batch_size=sampling.batch_size, seed=seed, desc=desc,
    )
    seconds = time.perf_counter() - start
    write_jsonl(out, [{**p, "responses": r} for p, r in zip(prompts, responses, strict=True)])
    lengths = [len(words(text)) for group in responses for text in group]
    return {
        "data/student_len_words_mean": statistics.fmean(lengths),
        "data/student_len_words_std": statistics.pstdev(lengths),
        "time/sample_tokens_per_s": n_tokens / seconds,
        "data/prompts": len(prompts),
    }
