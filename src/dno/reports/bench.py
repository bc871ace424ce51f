"""dno-bench: where an iteration's time goes, against the machine's limit and against TRL.

    dno-bench                                   # the offline default (SmolLM2-135M, demo schedule)
    dno-bench model=tiny_random schedule=smoke  # seconds

On fixed, seeded inputs, in one process on one machine (so that ratios hold on a noisy machine):
1. the machine's limit: matmul FLOP/s in the best dtype it has (bf16 on a GPU or a CPU with AMX/AVX512-BF16,
   else fp32), with fp32's beside it;
2. sampling: tokens/s and model FLOP/s (2N per generated token) of both samplers (sampling.sampler=dno,
   =generate) against a bare batched `model.generate`, same prompts and settings, at bench.prompts x K
   and at an iteration's prompts x K;
3. reference log-probs and the update: non-padding tokens/s, achieved FLOP/s (2N per reference
   token, 6N per trained token, N the parameters) and its fraction of the matmul FLOP/s, padding,
   peak memory (RSS on CPU, max allocated on GPU), models resident during the update;
4. TRL's DPOTrainer on the identical pairs (precomputed reference log-probs, same micro-batch,
   accumulation, max length, sigmoid loss, beta, learning rate): tokens/s, peak memory, ratios;
5. the judge: calls and tokens per prompt, cache hit rate on a repeat;
6. one whole iteration of the loop: time per stage.
Writes bench.json and bench.md into the output directory, whose `fixed/` holds the fixed samples and
pairs of the measurements and whose run directory (init/, iter_1/) the iteration of step 6.
"""

from __future__ import annotations

import gc
import logging
import resource
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from dno.data import Prompt
from dno.pairs import STUDENT_OVER_STUDENT
from dno.policy.sample import SAMPLERS, Sampler, SamplingOptions
from dno.reports.bench_report import markdown
from dno.runtime.files import write_json
from dno.runtime.layout import IterationDir
from dno.runtime.precision import autocast, bf16_hardware, running
from dno.stages.records import PairRow, Samples, read_rows, write_rows

log = logging.getLogger("dno.bench")
BENCH_JSON, BENCH_MD = "bench.json", "bench.md"  # dno-bench's report, beside the run directory of its iteration


def reset_peak_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:  # Linux: reset the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_dtype() -> torch.dtype:
    """The fastest dtype this machine computes in: bf16 on a GPU or a CPU with bf16 units (AMX, AVX512-BF16),
    fp32 elsewhere (on AVX2, bf16 is emulated and slower than fp32)."""
    return torch.bfloat16 if bf16_hardware() else torch.float32


def machine_limit(size: int) -> dict:
    """The limit in the best dtype the machine has, with fp32's beside it (`fp32_flops`) where that differs."""
    best = matmul_flops(size, best_dtype())
    fp32 = best["flops"] if best["dtype"] == "float32" else matmul_flops(size, torch.float32)["flops"]
    return best | {"fp32_flops": fp32}


def matmul_flops(size: int, dtype: torch.dtype, seconds: float = 2.0) -> dict:
    """Best FLOP/s of size x size matmuls in `dtype`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync()
        t = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = max(best, 2 * size**3 / (time.perf_counter() - t))
    return {"device": device, "dtype": str(dtype).removeprefix("torch."), "size": size, "flops": best,
            "threads": torch.get_num_threads()}


@torch.no_grad()
def bare_generate(model, tokenizer, prompts: list[list[dict]], *, n: int, sampling: SamplingOptions, seed: int,
                  **extra) -> int:
    """The baseline: model.generate on left-padded batches of the same size, tokens counted to EOS; `extra`
    goes to generate as it is (a cache implementation, a compile config)."""
    from dno.policy.load import prompt_ids

    encoded = [prompt_ids(tokenizer, s) for s in prompts]
    per_batch, n_tokens = sampling.prompts_per_batch(n), 0
    for start in range(0, len(encoded), per_batch):
        enc = tokenizer.pad({"input_ids": encoded[start : start + per_batch]}, padding_side="left",
                            return_tensors="pt")
        torch.manual_seed(seed + start)
        with autocast():  # the same precision as the samplers'
            out = model.generate(**enc.to(model.device), do_sample=True, temperature=sampling.temperature,
                                 top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, num_return_sequences=n,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **extra)
        gen = out[:, enc["input_ids"].shape[1] :]
        done = (gen == tokenizer.eos_token_id).int().cumsum(-1)
        n_tokens += int(((done == 0) | ((done == 1) & (gen == tokenizer.eos_token_id))).sum())
    return n_tokens


def timed(fn):
    reset_peak_memory()
    sync()
    t = time.perf_counter()
    result = fn()
    sync()
    return result, time.perf_counter() - t, peak_memory_mb()


def token_counts(tokenizer, pairs: list[PairRow], micro_batch_size: int, max_length: int, layout: str = "shared"
                 ) -> dict:
    """The pairs' tokens as the unshared layout has them (a prompt once per answer, no padding: what throughput is
    counted in), the share of them that `layout`'s micro-batches compute, and their padding."""
    from dno.policy.logps import computed_tokens, encode_pairs, length_batches, make_batch, unshared_tokens

    enc = encode_pairs(tokenizer, pairs, max_length)
    batches = [make_batch(enc, idx, tokenizer.pad_token_id, layout) for idx in length_batches(enc, micro_batch_size)]
    tokens, computed = sum(map(unshared_tokens, batches)), sum(map(computed_tokens, batches))
    return {"tokens": tokens, "computed_frac": computed / tokens,
            "padding_frac": 1 - computed / sum(int(b["input_ids"].numel()) for b in batches)}


def live_models() -> int:
    from transformers import PreTrainedModel

    gc.collect()
    with warnings.catch_warnings():  # isinstance on some lazily imported modules warns
        warnings.simplefilter("ignore")
        models = [o for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    inner = {id(m) for o in models for m in o.modules() if m is not o}  # e.g. LlamaModel inside *ForCausalLM
    return sum(id(o) not in inner for o in models)


def bench_pairs(prompts: list[Prompt], responses: list[list[str]]) -> list[PairRow]:
    """Fixed pairs from the samples: (response 0 over 1), (2 over 3), ... per prompt."""
    return [PairRow(p, rs[i], rs[i + 1], 1.0, 0.0, STUDENT_OVER_STUDENT, 1)
            for p, rs in zip(prompts, responses, strict=True) for i in range(0, len(rs) - 1, 2)]


def trl_update(cfg, tokenizer, pairs: list[PairRow], out: Path, beta: float) -> dict | None:
    """TRL's DPOTrainer on the same pairs from pi_1's weights; None when TRL is not installed."""
    try:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer
    except ImportError:
        log.warning("TRL is not installed (pip install -e '.[bench]'): no TRL comparison")
        return None
    from dno.policy.load import load_model
    from dno.runtime.config import grad_accumulation

    s = cfg.schedule
    model = load_model(cfg.model, cfg.cache_dir, tokenizer)
    template = [tokenizer.apply_chat_template(p.prompt.messages, tokenize=False, add_generation_prompt=True)
                for p in pairs]
    data = Dataset.from_list([{"prompt": t, "chosen": p.chosen, "rejected": p.rejected}
                              for t, p in zip(template, pairs, strict=True)])
    args = DPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=cfg.train.micro_batch_size,
        gradient_accumulation_steps=grad_accumulation(cfg, 1), learning_rate=s.lr, num_train_epochs=s.epochs,
        lr_scheduler_type=s.lr_scheduler, warmup_steps=float(s.warmup_ratio),  # < 1: a ratio
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm, beta=beta, loss_type=["sigmoid"], max_length=cfg.model.max_length,
        precompute_ref_log_probs=True, report_to=[], save_strategy="no", logging_steps=10**6, seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),  # the same precision as ours: bf16 autocast where the run has it
        bf16=running() == "bf16" or (torch.cuda.is_available() and cfg.model.dtype == "bfloat16"),
        dataloader_num_workers=0, disable_tqdm=True)
    trainer, init_s, init_mb = timed(lambda: DPOTrainer(model=model, args=args, train_dataset=data,
                                                        processing_class=tokenizer))
    ds = trainer.train_dataset
    tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"],
                                                                   ds["rejected_ids"], strict=True))
    resident = live_models()
    _, train_s, train_mb = timed(trainer.train)
    trainer = model = None  # noqa: F841 (freed before the next measurement)
    gc.collect()
    return {"reference_s": init_s, "reference_tokens_per_s": tokens / init_s, "reference_peak_mb": init_mb,
            "update_s": train_s, "update_tokens_per_s": tokens * s.epochs / train_s, "update_peak_mb": train_mb,
            "tokens": tokens, "models_resident": resident}


def judge_costs(oracle, d: IterationDir) -> dict:
    """Judge d's samples twice: calls and tokens per prompt, then the cache hit rate of the repeat."""
    from dno.stages.judge import judge_samples

    n = len(read_rows(d.samples, Samples))
    first, s1, _ = timed(lambda: judge_samples(oracle, d.samples, d.judgements))
    again, _, _ = timed(lambda: judge_samples(oracle, d.samples, d.judgements))
    asked = again.get("oracle/requests", 0) + again.get("oracle/cache_hits", 0)
    return {"oracle": type(oracle).__name__, "prompts": n, "seconds": s1,
            "calls_per_prompt": first.get("oracle/requests", 0) / n,
            "tokens_per_prompt": (first.get("oracle/prompt_tokens", 0) + first.get("oracle/completion_tokens", 0)) / n,
            "usd_per_prompt": first.get("oracle/usd", 0) / n,
            "repeat_cache_hit_rate": again.get("oracle/cache_hits", 0) / asked if asked else None}


def iteration_times(cfg: DictConfig, run_dir: Path, loss_choice: str = "?") -> dict:
    """One iteration of dno-run (its own code, its own markers) in `run_dir`: seconds per stage."""
    from dno.loop import initial, iteration
    from dno.run import Run
    from dno.runtime.stages import read_marker
    from dno.runtime.tracking import Launch

    t0 = time.perf_counter()
    run = Run.build(cfg, run_dir, Launch(job_type="dno-bench", choices={"loss": loss_choice}))
    initial(run)
    before = time.perf_counter() - t0
    d = run.dir.iteration(1)
    iteration(run, 1)
    stages = {name: read_marker(d.marker(name))[f"time/{name}_s"]
              for name in ("sample", "judge", "pairs", "reference", "train", "evaluate")}
    return {"init_s": before, **{f"{k}_s": v for k, v in stages.items()},
            "iteration_s": sum(stages.values()), "pairs": read_marker(d.marker("pairs")).get("pairs/total")}


def measure_sampling(cfg: DictConfig, model, tok, prompts: list[list[dict]], n_params: int
                     ) -> tuple[list[list[str]], list[dict]]:
    """Both samplers (sampling.sampler=shared_prefill and =generate) and a bare batched `generate` at each shape
    (bench.prompts, then bench.sampling_prompts; x K samples), interleaved, best of each: the machine's
    drift hits all alike. Returns the configured sampler's samples of the first shape and the report's
    `sampling` part (one entry per shape; `ours`: the configured sampler; FLOP/s: 2N per generated token)."""
    b, k, options = cfg.bench, cfg.schedule.samples_per_prompt, SamplingOptions.of(cfg.sampling)
    ours, (fast, slow) = options.sampler, SAMPLERS
    bare_generate(model, tok, prompts[:1], n=1, sampling=options, seed=0)  # warm-up
    shapes, first = [], None
    for n in dict.fromkeys(min(int(p), len(prompts)) for p in (b.prompts, *b.sampling_prompts)):
        best, peak = dict.fromkeys((*SAMPLERS, "bare"), 0.0), {}
        for _ in range(b.sampling_repeats):
            for name in SAMPLERS:
                sampler = Sampler(model, tok, replace(options, sampler=name))
                (responses, n_tok), secs, peak[name] = timed(lambda: sampler.sample(  # noqa: B023
                    prompts[:n], n=k, seed=cfg.seed, desc=f"bench: sampler={name}"))  # noqa: B023
                best[name] = max(best[name], n_tok / secs)
                if name == ours and first is None:
                    first = responses
            n_tok, secs, _ = timed(lambda: bare_generate(model, tok, prompts[:n], n=k,  # noqa: B023
                                                         sampling=options, seed=cfg.seed))
            best["bare"] = max(best["bare"], n_tok / secs)
        shapes.append({"prompts": n, "k": k, "repeats": b.sampling_repeats, "sampler": ours,
                       "ours_tokens_per_s": best[ours], "bare_tokens_per_s": best["bare"],
                       "ratio": best[ours] / best["bare"],
                       **{f"{name}_tokens_per_s": best[name] for name in SAMPLERS},
                       f"{fast}_to_{slow}": best[fast] / best[slow],
                       "flops": 2 * n_params * best[ours], "peak_mb": peak[ours]})
    return first, shapes


def measure_ours(cfg: DictConfig, tok, prompts: list[Prompt], out: IterationDir, objective) -> tuple[dict, list]:
    """Sampling, reference log-probs and the update with dno's own code, on one loaded model (freed on
    return). Returns the report's parts and the pairs (TRL's input); writes out's samples (the judge's) and
    pairs."""
    from dno.policy.load import load_model
    from dno.run import train_options
    from dno.runtime.distributed import make_accelerator
    from dno.stages.reference import reference_logps
    from dno.stages.train import train_policy

    options = replace(train_options(cfg, 1), seed=cfg.seed)
    accelerator = make_accelerator(cfg.train.process_timeout_min, cfg.train.get("mixed_precision"))
    model = load_model(cfg.model, cfg.cache_dir, tok).to(accelerator.device)
    n_params = sum(p.numel() for p in model.parameters())  # shared (tied) tensors counted once
    responses, sampling = measure_sampling(cfg, model, tok, [p.messages for p in prompts], n_params)
    prompts = prompts[: cfg.bench.prompts]
    pairs = bench_pairs(prompts, responses)
    write_rows(out.pairs, pairs)
    write_rows(out.samples, [Samples(p, r) for p, r in zip(prompts, responses, strict=True)])
    counts = token_counts(tok, pairs, options.micro_batch_size, options.max_length, options.layout)
    _, ref_s, ref_mb = timed(lambda: reference_logps(model, tok, out.pairs, options))
    resident = live_models()
    stats, upd_s, upd_mb = timed(lambda: train_policy(model, tok, out.pairs, objective, options, accelerator))
    tokens, trained = counts["tokens"], counts["tokens"] * options.epochs
    padding, computed = counts["padding_frac"], counts["computed_frac"]
    model = None  # freed before the LoRA row loads a fresh pi_1
    full = {"tokens": trained, "tokens_per_s": trained / upd_s}
    lora = measure_lora(cfg, tok, out.pairs, objective, (options, accelerator), full) if cfg.bench.lora_r else None
    return {
        "sampling": sampling, "parameters": n_params, "mixed_precision": running(),
        "reference": {"pairs": len(pairs), "tokens": tokens, "tokens_per_s": tokens / ref_s,
                      "flops": 2 * n_params * tokens / ref_s, "peak_mb": ref_mb, "padding_frac": padding,
                      "computed_frac": computed, "layout": options.layout},
        "update": {"pairs": len(pairs), "tokens": trained, "tokens_per_s": trained / upd_s,
                   "flops": 6 * n_params * trained / upd_s, "peak_mb": upd_mb, "models_resident": resident,
                   "steps": stats["train/steps"], "loss": stats["train/loss"], "padding_frac": padding,
                   "computed_frac": computed, "layout": options.layout,
                   "trainable_params": stats["train/trainable_params"]},
        "update_lora": lora,
    }, pairs


def measure_lora(cfg: DictConfig, tok, pairs_path: Path, objective, training: tuple, full: dict) -> dict:
    """The same update (`full`: its trained tokens and tokens/s) with a LoRA adapter of rank bench.lora_r on a
    fresh pi_1 (what model.lora.r does); `training`: the update's options and accelerator."""
    from omegaconf import OmegaConf

    from dno.policy.load import load_model
    from dno.policy.lora import add_adapter
    from dno.stages.train import train_policy

    options, accelerator = training
    lora = OmegaConf.merge(cfg.model.get("lora") or {}, {"r": cfg.bench.lora_r})
    model = add_adapter(load_model(cfg.model, cfg.cache_dir, tok).to(accelerator.device), lora, cfg.seed)
    stats, secs, mb = timed(lambda: train_policy(model, tok, pairs_path, objective, options, accelerator))
    return {"r": int(lora.r), "tokens_per_s": full["tokens"] / secs, "peak_mb": mb, "loss": stats["train/loss"],
            "trainable_params": stats["train/trainable_params"],
            "ratio_to_full": full["tokens"] / secs / full["tokens_per_s"]}


def run_bench(cfg: DictConfig, out: Path, choices: dict | None = None) -> dict:
    """Every measurement into `out` (bench.json, bench.md); `choices`: the config groups' options."""
    from hydra.utils import instantiate

    from dno.data.splits import make_splits
    from dno.policy.load import load_tokenizer
    from dno.runtime.config import validate

    validate(cfg)
    b, s = cfg.bench, cfg.schedule
    torch.manual_seed(cfg.seed)
    choices = choices or {}
    report: dict = {"model": cfg.model.name, "schedule": choices.get("schedule"),
                    "machine": machine_limit(b.matmul_size)}
    splits = make_splits(instantiate(cfg.data)(), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                         n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
    prompts = splits.iterations[0]  # bench.prompts of them for the pairs, all for sampling's larger shape
    tok = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    variant = instantiate(cfg.loss)
    fixed = IterationDir(out / "fixed")  # the fixed pairs of the update's measurement
    ours, pairs = measure_ours(cfg, tok, prompts, fixed, variant.objective)
    report |= ours
    gc.collect()  # our model is gone before TRL loads its copy
    if b.trl:
        trl = trl_update(cfg, tok, pairs, out, variant.beta or 0.1)  # SFT has no eta: TRL's DPO at 0.1
        if trl:
            trl["update_ratio"] = report["update"]["tokens_per_s"] / trl["update_tokens_per_s"]
            trl["reference_ratio"] = report["reference"]["tokens_per_s"] / trl["reference_tokens_per_s"]
        report["trl"] = trl
    if not report.get("trl"):  # why the report has no TRL row
        report["trl_note"] = "TRL not installed" if b.trl else "bench.trl=false"
    report["judge"] = judge_costs(instantiate(cfg.oracle), fixed)
    if b.iteration:
        report["iteration"] = iteration_times(cfg, out, choices.get("loss", "?"))
    # the limit again at the end: on a machine that drifts, the better of the two is what it can do
    start, end = report["machine"]["flops"], matmul_flops(b.matmul_size, best_dtype())["flops"]
    report["machine"] |= {"flops_start": start, "flops_end": end, "flops": max(start, end)}
    for part in (*report["sampling"], report["reference"], report["update"]):
        part["flops_frac"] = part["flops"] / report["machine"]["flops"]
    write_json(out / BENCH_JSON, report)
    (out / BENCH_MD).write_text(markdown(report))
    return report
