"""The update's, the reference pass's and the sampler's levers one at a time, in one process on the same inputs.

    .venv/bin/python experiments/update_levers.py compile=1            # SmolLM2-135M: dno-bench's 32 pairs
    .venv/bin/python experiments/update_levers.py prompts=2 sampling_prompts=2 repeats=1 model=tiny_random \
        schedule=smoke out=outputs/update_levers.md                    # the tests' (seconds)

dno-bench's pairs in the run's micro-batches; the layout rows take turns micro-batch by micro-batch, `repeats`
times, each row's time the sum of its best turns (the machine's drift hits every row alike). Tokens are counted as
the unshared layout has them (6N or 2N model FLOPs each); "computed" is what a layout runs. Then the whole update
(`train_policy`), the sampler (`sampling_prompts` x K; int8's speed and the shift of its samples) and, with
`compile=1`, regional torch.compile with its compilation timed. Writes OUT (what follows its `NOTES` line is
kept) and the same figures as JSON beside it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dno.data.splits import make_splits
from dno.policy.fuse import fused_projections
from dno.policy.load import load_model, load_tokenizer
from dno.policy.logps import (
    PADDED,
    SHARED,
    batch_logps,
    computed_tokens,
    encode_pairs,
    length_batches,
    make_batch,
    pair_batch,
    unshared_tokens,
)
from dno.policy.packed import blocks_of, packed_batch
from dno.policy.sample import DecodeOptions, Sampler, SamplingOptions, draw
from dno.reports.bench import bare_generate, bench_pairs, machine_limit
from dno.reports.update_levers_report import markdown
from dno.runtime.config import CONF_DIR
from dno.runtime.files import write_keeping_notes
from dno.runtime.provenance import cpu_name
from dno.stages.records import write_rows

OURS = {"prompts": "16", "sampling_prompts": "32", "repeats": "2", "compile": "0", "out": "results/update_levers.md"}


def kv_cache_forward(model, batch: dict) -> torch.Tensor:
    """`sequence_logps` before issue 43: the same, but the forward also builds a KV cache nobody reads."""
    first = int(batch["loss_mask"].float().argmax(-1).min())
    start, width = max(first - 1, 0), batch["input_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=width - start).logits[:, :-1].float()
    labels, mask = batch["input_ids"][:, start + 1:], batch["loss_mask"][:, start + 1:].float()
    return ((logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)) * mask).sum(-1)


def layouts(enc: list[tuple], pad: int, max_length: int) -> list[tuple[str, bool, object]]:
    """(row name, kept, idx -> (batch, logps function)) for every layout lever, before to now, then tried."""
    return [
        ("padded rows, a KV cache built in every forward (before this issue)", True,
         lambda idx: (pair_batch(enc, idx, pad), kv_cache_forward)),
        ("+ no KV cache in the forward (`use_cache=False`)", True,
         lambda idx: (make_batch(enc, idx, pad, PADDED), batch_logps)),
        ("+ prefix sharing: a pair's answers behind one copy of its prompt, a row per pair", True,
         lambda idx: (packed_batch(blocks_of(enc, idx), pad, row_tokens=1), batch_logps)),
        ("+ packing: pairs share rows no wider than the longest (= `layout=shared`)", True,
         lambda idx: (make_batch(enc, idx, pad, SHARED), batch_logps)),
        (f"packing into rows of model.max_length ({max_length})", False,
         lambda idx: (packed_batch(blocks_of(enc, idx), pad, row_tokens=max_length), batch_logps)),
    ]


def time_layouts(model, rows: list, micro: list[list[int]], repeats: int, train: bool) -> list[dict]:
    """Each row over every micro-batch, rows taking turns per micro-batch; the sum of each one's best turns."""
    best = [[float("inf")] * len(micro) for _ in rows]
    counts = [{"tokens": 0, "computed": 0, "area": 0} for _ in rows]
    model.train(train)
    for m, idx in enumerate(micro):
        for rep in range(repeats):
            for r, (_, _, build) in enumerate(rows):
                batch, logps_of = build(idx)
                with contextlib.nullcontext() if train else torch.no_grad():
                    t = time.perf_counter()
                    logps = logps_of(model, batch)
                    if train:
                        logps.sum().backward()
                    best[r][m] = min(best[r][m], time.perf_counter() - t)
                if rep == 0:
                    counts[r]["tokens"] += unshared_tokens(batch)
                    counts[r]["computed"] += computed_tokens(batch)
                    counts[r]["area"] += int(batch["input_ids"].numel())
        model.zero_grad(set_to_none=True)
    return [{"lever": name, "kept": kept, "seconds": sum(b), **c}
            for (name, kept, _), b, c in zip(rows, best, counts, strict=True)]


def compiled_rows(model, enc: list[tuple], micro: list[list[int]], pad: int, repeats: int) -> list[dict]:
    """Regional torch.compile (each decoder layer, dynamic shapes, one graph for all layers) against eager, in the
    update (train) and the reference pass: the first compiled pass over every micro-batch, whose extra time over
    an eager pass is the compilation, then the two taking turns per micro-batch."""
    layers = list(model.model.layers)
    for layer in layers:
        layer.compile(dynamic=True)
    compiled = [layer._compiled_call_impl for layer in layers]

    def row(name: str, on: bool) -> tuple:
        def build(idx):
            for layer, fn in zip(layers, compiled, strict=True):
                layer._compiled_call_impl = fn if on else None
            return make_batch(enc, idx, pad, SHARED), batch_logps
        return name, True, build

    eager, first = row("`layout=shared`, eager", False), row("+ regional torch.compile", True)
    out = []
    for train in (True, False):
        eager_s = time_layouts(model, [eager], micro, 1, train)[0]["seconds"]
        t = time.perf_counter()
        time_layouts(model, [first], micro, 1, train)
        compile_s = time.perf_counter() - t - eager_s
        out += [r | {"part": "update" if train else "reference", "compile_s": compile_s}
                for r in time_layouts(model, [eager, first], micro, repeats, train)]
    for layer in layers:
        layer._compiled_call_impl = None
    return out


def optimizer_rows(model, repeats: int, steps: int = 3) -> list[dict]:
    """One AdamW step over every parameter, three implementations taking turns (the best of each)."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    kinds = {"AdamW, a loop over tensors (foreach=False)": dict(foreach=False),
             "AdamW, foreach (multi-tensor, torch's default)": dict(foreach=True),
             "AdamW, fused (one kernel; dno since issue 8)": dict(fused=True)}
    saved = [p.detach().clone() for p in params]
    best = dict.fromkeys(kinds, float("inf"))
    optimizers = {name: torch.optim.AdamW(params, lr=1e-7, **kw) for name, kw in kinds.items()}
    for _ in range(repeats * steps):
        for name, opt in optimizers.items():
            t = time.perf_counter()
            opt.step()
            best[name] = min(best[name], time.perf_counter() - t)
    with torch.no_grad():
        for p, s in zip(params, saved, strict=True):
            p.copy_(s)
            p.grad = None
    return [{"lever": name, "seconds": s} for name, s in best.items()]


def whole_updates(cfg, model, tok, pairs_path: Path, repeats: int) -> list[dict]:
    """`train_policy` from pi_1's weights in each layout, and with micro-batches twice as large (half the
    accumulation: the same steps) where the accumulation allows, alternating; the best wall time of each."""
    from dno.run import train_options
    from dno.runtime.distributed import make_accelerator
    from dno.stages.train import train_policy

    options = replace(train_options(cfg, 1), seed=cfg.seed)
    variants = [replace(options, layout=PADDED), replace(options, layout=SHARED)]
    if options.grad_accum % 2 == 0:
        variants.append(replace(options, micro_batch_size=2 * options.micro_batch_size,
                                grad_accum=options.grad_accum // 2))
    accelerator = make_accelerator(cfg.train.process_timeout_min, cfg.train.get("mixed_precision"))
    objective, start = instantiate(cfg.loss).objective, copy.deepcopy(model.state_dict())
    best = [{"seconds": float("inf")} for _ in variants]
    for _ in range(repeats):
        for i, o in enumerate(variants):
            model.load_state_dict(start)
            t = time.perf_counter()
            stats = train_policy(model, tok, pairs_path, objective, o, accelerator)
            secs = time.perf_counter() - t
            if secs < best[i]["seconds"]:
                best[i] = {"layout": o.layout, "micro_batch_size": o.micro_batch_size, "seconds": secs,
                           "loss": stats["train/loss"], "steps": stats["train/steps"]}
    model.load_state_dict(start)
    return best


def int8_copy(model):
    """A fused copy of `model` whose linear layers (the output layer included) compute in int8: weights quantised
    per output channel once, activations per call (PyTorch's `quantize_dynamic`, fbgemm's kernels on x86)."""
    from torch import nn
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from dno.policy.fuse import fuse

    twin = copy.deepcopy(model).eval()
    fuse(twin)
    return quantize_dynamic(twin, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def sampler_rows(cfg, model, tok, instructions: list, repeats: int) -> tuple[list[dict], dict]:
    """Bare generate, the sampler as it is, with fused projections, and an int8 copy, taking turns; the best
    tokens/s of each, and the samples of each (from the same seeds) for the shift."""
    k, options = cfg.schedule.samples_per_prompt, SamplingOptions.of(cfg.sampling)
    quantised = int8_copy(model)

    def ours(m, fused: bool = False):
        def run():
            with fused_projections(m) if fused else contextlib.nullcontext():
                return Sampler(m, tok, options).sample(instructions, n=k, seed=cfg.seed)
        return run

    rows = [("bare `model.generate` (transformers), the same batch size", True,
             lambda: ([], bare_generate(model, tok, instructions, n=k, sampling=options, seed=cfg.seed))),
            ("`sampler=shared_prefill` (as it is)", True, ours(model)),
            ("fused q/k/v and gate/up projections (dno.policy.fuse)", False, ours(model, fused=True)),
            ("an int8 copy (dynamic quantisation of every linear layer)", False, ours(quantised))]
    best, samples = {}, {}
    bare_generate(model, tok, instructions[:1], n=1, sampling=options, seed=0)  # warm-up
    for _ in range(repeats):
        for name, _, fn in rows:
            t = time.perf_counter()
            texts, n_tokens = fn()
            best[name] = max(best.get(name, 0.0), n_tokens / (time.perf_counter() - t))
            samples[name] = texts
    table = [{"lever": name, "kept": kept, "tokens_per_s": best[name]} for name, kept, _ in rows]
    fp32, int8 = samples[rows[1][0]], samples[rows[3][0]]
    shift = {"same_samples": sum(a == b for x, y in zip(fp32, int8, strict=True) for a, b in zip(x, y, strict=True))
             / sum(map(len, fp32)), "fused_same_as_before": samples[rows[2][0]] == fp32,
             "kl_per_token": kl_per_token(model, quantised, tok, instructions, fp32),
             "chars_fp32": _mean_chars(fp32), "chars_int8": _mean_chars(int8)}
    return table, shift


def _mean_chars(texts: list[list[str]]) -> float:
    flat = [t for group in texts for t in group]
    return sum(map(len, flat)) / len(flat)


@torch.no_grad()
def kl_per_token(model, quantised, tok, instructions: list, samples: list[list[str]]) -> float:
    """Mean KL(fp32 || int8) of the next-token distributions along the fp32 model's own samples."""
    from dno.policy.load import prompt_ids, response_ids

    total, n = 0.0, 0
    for messages, answers in zip(instructions, samples, strict=True):
        prompt = prompt_ids(tok, messages)
        for answer in answers:
            ids = torch.tensor([prompt + response_ids(tok, answer, 10**6)])
            p = model(ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
            q = quantised(ids).logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
            total, n = total + float((p.exp() * (p - q)).sum()), n + len(p)
    return total / n


def draw_rows(model, tok, cfg, rows: int = 128, repeats: int = 20) -> list[dict]:
    """One sampling step's draw over `rows` rows: top-k first (dno's `draw`) against a full-vocabulary sort."""
    from dno.policy.load import prompt_ids

    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids(tok, [{"role": "user", "content": "Hi."}])])).logits[:, -1]
    logits = logits.repeat(rows, 1) + torch.randn(rows, logits.shape[-1])
    s = cfg.sampling
    o = DecodeOptions(s.max_new_tokens, s.temperature, s.top_p, s.top_k, tok.pad_token_id, tok.eos_token_id)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]

    def full_sort():
        probs, index = torch.softmax(logits / o.temperature, -1).sort(-1, descending=True)
        probs = probs * (torch.arange(probs.shape[-1]) < (o.top_k or probs.shape[-1]))
        probs = probs * ((probs.cumsum(-1) - probs) < o.top_p * probs.sum(-1, keepdim=True))
        u = torch.stack([torch.rand((), generator=g) for g in generators])
        cdf = probs.cumsum(-1)
        return index.gather(1, torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).clamp(max=cdf.shape[-1] - 1))

    best = {"top-k first (dno's `draw` since issue 17)": float("inf"), "a full-vocabulary sort per step": float("inf")}
    fns = dict(zip(best, (lambda: draw(logits, generators, o), full_sort), strict=True))
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return [{"lever": name, "seconds": secs, "rows": rows} for name, secs in best.items()]


def main(argv: list[str]) -> dict:
    ours = dict(OURS) | {k: v for k, v in (a.split("=", 1) for a in argv if a.split("=")[0] in OURS)}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[a for a in argv if a.split("=")[0] not in OURS])
    repeats, out, began = int(ours["repeats"]), Path(ours["out"]), time.perf_counter()
    torch.manual_seed(cfg.seed)
    s, k = cfg.schedule, cfg.schedule.samples_per_prompt
    prompts = make_splits(instantiate(cfg.data)(), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                          n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed).iterations[0]
    tok = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tok)
    n_params = sum(p.numel() for p in model.parameters())
    load = [os.getloadavg()[0]]
    limit = machine_limit(2048 if n_params > 1e7 else 256)
    instructions, n = [p.messages for p in prompts], min(int(ours["prompts"]), len(prompts))
    texts, _ = Sampler(model, tok, SamplingOptions.of(cfg.sampling)).sample(instructions[:n], n=k, seed=cfg.seed)
    pairs = bench_pairs(prompts[:n], texts)
    enc = encode_pairs(tok, pairs, cfg.model.max_length)
    micro, pad = length_batches(enc, cfg.train.micro_batch_size), tok.pad_token_id
    rows = layouts(enc, pad, cfg.model.max_length)
    report = {"model": cfg.model.name, "parameters": n_params, "pairs": len(pairs), "micro_batches": len(micro),
              "micro_batch_size": cfg.train.micro_batch_size, "threads": torch.get_num_threads(), "cpu": cpu_name(),
              "command": " ".join(["experiments/update_levers.py", *argv]), "repeats": repeats}
    report["update"] = time_layouts(model, rows, micro, repeats, train=True)
    report["reference"] = time_layouts(model, rows, micro, repeats, train=False)
    report["optimizer"] = optimizer_rows(model, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        write_rows(Path(tmp) / "pairs.jsonl", pairs)
        report["whole_update"] = whole_updates(cfg, model, tok, Path(tmp) / "pairs.jsonl", repeats)
    sampled = instructions[:min(int(ours["sampling_prompts"]), len(instructions))]
    report["sampler"], report["int8_shift"] = sampler_rows(cfg, model, tok, sampled, repeats)
    report["sampling_prompts"], report["k"] = len(sampled), k
    report["draw"] = draw_rows(model, tok, cfg)
    if ours["compile"] == "1":
        report["compile"] = compiled_rows(model, enc, micro, pad, repeats)
    end = machine_limit(2048 if n_params > 1e7 else 256)
    load.append(os.getloadavg()[0])
    report |= {"limit_flops": max(limit["flops"], end["flops"]), "limit_dtype": limit["dtype"],
               "fp32_limit_flops": max(limit["fp32_flops"], end["fp32_flops"]), "load": load,
               "wall_s": time.perf_counter() - began}
    write_keeping_notes(out, markdown(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
