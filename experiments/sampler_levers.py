"""The in-process sampler's levers one at a time, in one process on the same prompts (issue 17).

    .venv/bin/python experiments/sampler_levers.py                       # SmolLM2-135M, 32 prompts x 4
    .venv/bin/python experiments/sampler_levers.py prompts=16 compile=1  # also static cache + torch.compile
    .venv/bin/python experiments/sampler_levers.py prompts=4 repeats=1 model=tiny_random schedule=smoke

Each row of the table adds one lever to the row above it, starting from transformers' `generate` in
batches of `from_batch` sequences (default 64, `sampling.batch_size` before issue 17) and ending at
`sampling.sampler=shared_prefill` (`dno.policy.sample.Sampler`; `dno` was its name when results/sampler_levers.md
was measured) in batches of `sampling.batch_size`; the rows after the
line try one more lever on top of the last kept one. Every row samples the same prompts (the first `prompts` of
iteration 1's split), K = schedule.samples_per_prompt each, with the config's temperature, top-p,
top-k and maximum length; the rows run in turn, `repeats` times, and the best tokens/s of each is
reported (this machine drifts). Tokens are generated tokens up to and including EOS; FLOP/s counts 2N
per generated token (N parameters; prefill and attention not counted). The compiled row runs last and
compiles just before it (in-process compilation took ~20 GB here, which slows whatever runs next).
Writes OUT (default
results/sampler_levers.md) and the same figures as JSON beside it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dno.data.splits import make_splits
from dno.policy.load import load_model, load_tokenizer, prompt_ids
from dno.policy.sample import DecodeOptions, Sampler, SamplingOptions, decode, row_seed
from dno.reports.bench import bare_generate, machine_limit
from dno.runtime.config import CONF_DIR

OURS = ("prompts", "repeats", "compile", "out", "from_batch")


@dataclass(frozen=True)
class Levers:
    """Which of the shared-prefill sampler's levers are on: one prefill per prompt for its K samples, prompts
    batched by length, finished rows leaving at `drop_frac` of the batch, a static cache; `batch` sequences."""

    shared_prefill: bool
    by_length: bool
    drop_frac: float
    batch: int
    static_cache: bool = False


def own_loop(model, tok, encoded: list[list[int]], cfg, levers: Levers) -> int:
    """`decode` over batches of `levers.batch` sequences, each lever switchable; returns the generated tokens."""
    k = cfg.schedule.samples_per_prompt
    s, per_batch, v = cfg.sampling, max(1, levers.batch // k), levers
    options = DecodeOptions(s.max_new_tokens, s.temperature, s.top_p, s.top_k, tok.pad_token_id, tok.eos_token_id,
                            drop_frac=v.drop_frac, static_cache=v.static_cache)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i])) if v.by_length else list(range(len(encoded)))
    n_tokens = 0
    for b in range(0, len(order), per_batch):
        chunk = order[b:b + per_batch]
        generators = [torch.Generator().manual_seed(row_seed(cfg.seed, i, j)) for i in chunk for j in range(k)]
        prompts = [encoded[i] for i in chunk]
        if not v.shared_prefill:  # K copies of each prompt, each prefilled: what generate does
            prompts = [p for p in prompts for _ in range(k)]
        rows = decode(model, prompts, generators, options)
        n_tokens += sum(r.index(tok.eos_token_id) + 1 if tok.eos_token_id in r else len(r) for r in rows)
    return n_tokens


def static_compiled(model, tok, instructions, k: int, cfg) -> int:
    """transformers' generate with a static KV cache and its forward compiled (torch.compile), which
    transformers does only on accelerators unless asked."""
    from transformers import CompileConfig

    compile_config = CompileConfig(mode="default", dynamic=False)
    compile_config._compile_all_devices = True
    return bare_generate(model, tok, instructions, n=k, sampling=SamplingOptions.of(cfg.sampling), seed=cfg.seed,
                         cache_implementation="static", compile_config=compile_config)


def main(argv: list[str]) -> dict:
    options = dict(o.split("=", 1) for o in argv if o.split("=")[0] in OURS)
    overrides = [o for o in argv if o.split("=")[0] not in OURS]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    n_prompts, repeats = int(options.get("prompts", 32)), int(options.get("repeats", 2))
    out = Path(options.get("out", "results/sampler_levers.md"))
    torch.manual_seed(cfg.seed)
    s, k = cfg.schedule, cfg.schedule.samples_per_prompt
    splits = make_splits(instantiate(cfg.data)(), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                         n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
    prompts = splits.iterations[0][:n_prompts]
    tok = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tok).eval()
    n_params = sum(p.numel() for p in model.parameters())
    instructions = [p.messages for p in prompts]
    encoded = [prompt_ids(tok, p) for p in instructions]
    before, batch = int(options.get("from_batch", 64)), cfg.sampling.batch_size
    never = math.inf

    def ours(**kw):
        return lambda: own_loop(model, tok, encoded, cfg, Levers(**kw))

    opts = SamplingOptions.of(cfg.sampling)

    def sampled(sampler: str, batch_size: int = batch) -> int:
        options = replace(opts, sampler=sampler, batch_size=batch_size)
        return Sampler(model, tok, options).sample(instructions, n=k, seed=cfg.seed)[1]

    rows = [
        (f"bare `model.generate` (transformers), batches of {before} sequences",
         lambda: bare_generate(model, tok, instructions, n=k, seed=cfg.seed,
                               sampling=replace(opts, batch_size=before))),
        ("`sampler=generate` (dno before this issue: generate per batch)", lambda: sampled("generate", before)),
        ("own decode loop (DynamicCache), each of the K copies prefilled, prompt order, no early exit",
         ours(shared_prefill=False, by_length=False, drop_frac=never, batch=before)),
        ("+ one prefill shared by a prompt's K samples (KV cache repeated)",
         ours(shared_prefill=True, by_length=False, drop_frac=never, batch=before)),
        ("+ prompts batched by length (less left padding)",
         ours(shared_prefill=True, by_length=True, drop_frac=never, batch=before)),
        ("+ finished samples leave the batch (once a quarter of it)",
         ours(shared_prefill=True, by_length=True, drop_frac=0.25, batch=before)),
        ("+ a static KV cache (allocated once, no copy per step)",
         ours(shared_prefill=True, by_length=True, drop_frac=0.25, batch=before, static_cache=True)),
        (f"+ batches of {batch} sequences (sampling.batch_size; samples do not depend on it)",
         ours(shared_prefill=True, by_length=True, drop_frac=0.25, batch=batch, static_cache=True)),
        ("= `sampler=shared_prefill` (dno.policy.sample.Sampler)", lambda: sampled("shared_prefill")),
    ]
    alternatives = [
        ("finished samples leave the batch at every step",
         ours(shared_prefill=True, by_length=True, drop_frac=1e-9, batch=batch, static_cache=True)),
        ("eager attention instead of SDPA", "eager"),
    ]
    if options.get("compile") == "1":
        def compiled():
            if not compiled.done:  # compile first (not timed)
                static_compiled(model, tok, instructions[:max(1, batch // k)], k, cfg)
                compiled.done = True
            return static_compiled(model, tok, instructions, k, cfg)

        compiled.done = False
        alternatives.append((f"bare generate, batches of {batch}, static KV cache + torch.compile "
                             "(compilation not timed)", compiled))
    default_attention = model.config._attn_implementation

    def eager():
        model.set_attn_implementation("eager")
        try:
            return sampled("shared_prefill")
        finally:
            model.set_attn_implementation(default_attention)

    table = [(name, eager if fn == "eager" else fn) for name, fn in rows + alternatives]
    bare_generate(model, tok, instructions[:1], n=1, sampling=opts, seed=0)  # warm-up
    best: dict[str, float] = {}
    tokens: dict[str, int] = {}
    start = time.perf_counter()
    for _ in range(repeats):
        for name, fn in table:
            t0 = time.perf_counter()
            n = fn()
            secs = time.perf_counter() - t0
            tokens[name] = n
            best[name] = max(best.get(name, 0.0), n / secs)
            print(f"{n / secs:8.1f} tokens/s  {name}", file=sys.stderr)
    wall = time.perf_counter() - start
    limit = machine_limit(1024 if n_params < 1e7 else 2048)
    base = best[table[0][0]]
    before = best[table[1][0]]
    report = {"model": cfg.model.name, "prompts": len(prompts), "k": k, "repeats": repeats, "parameters": n_params,
              "attention": default_attention, "threads": torch.get_num_threads(), "limit_flops": limit["flops"],
              "wall_s": wall, "rows": [{"lever": name, "kept": i < len(rows), "tokens": tokens[name],
                                        "tokens_per_s": best[name], "flops": 2 * n_params * best[name],
                                        "to_bare": best[name] / base, "to_before": best[name] / before}
                                       for i, (name, _) in enumerate(table)]}
    lines = [f"# The sampler's levers: {report['model']}, {len(prompts)} prompts x {k}", "",
             f"{n_params / 1e6:.1f}M parameters, {report['threads']} threads, attention `{default_attention}`, "
             f"temperature {cfg.sampling.temperature}, top-p {cfg.sampling.top_p}, top-k {cfg.sampling.top_k}, "
             f"at most {cfg.sampling.max_new_tokens} new tokens. Machine limit {limit['flops'] / 1e9:.1f} GFLOP/s "
             f"({limit['dtype']} matmul). Best of {repeats} interleaved runs; {wall / 60:.1f} min in all. "
             "`python experiments/sampler_levers.py " + " ".join(argv) + "`", "",
             "| lever | tokens/s | model GFLOP/s | of limit | x bare generate | x before |",
             "|---|---|---|---|---|---|"]
    for i, r in enumerate(report["rows"]):
        if i == len(rows):
            lines.append("| *tried on top of `sampler=shared_prefill`:* | | | | | |")
        lines.append(f"| {r['lever']} | {r['tokens_per_s']:.1f} | {r['flops'] / 1e9:.1f} | "
                     f"{r['flops'] / limit['flops']:.0%} | {r['to_bare']:.2f} | {r['to_before']:.2f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
