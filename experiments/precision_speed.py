"""bf16 against fp32 on this machine, in one process, interleaved: what `train.mixed_precision=auto` decides from.

    .venv/bin/python experiments/precision_speed.py                     # SmolLM2-135M, 8 x 192 tokens
    .venv/bin/python experiments/precision_speed.py model=tiny_random batch=2 length=32 repeats=1 out=outputs/p.md

Measured, each in fp32 and under torch.autocast to bf16 (fp32 weights, as `train.mixed_precision=bf16` runs): a
1024 x 1024 matmul (in the dtype itself), the model's forward pass on `batch` sequences of `length` random tokens
(the reference log-probs' work), its forward and backward pass (the update's), and the in-process sampler
(`sampling.sampler=shared_prefill`, `batch` prompts x K). The rounds alternate the two precisions `repeats`
times and keep the best of each (this machine drifts). Writes OUT (default results/precision_speed.md) with the
CPU's model name and bf16 unit (dno.runtime.precision.cpu_bf16_unit: none on AVX2, where bf16 is emulated).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dno.data.splits import make_splits
from dno.policy.load import load_model, load_tokenizer
from dno.policy.sample import Sampler, SamplingOptions
from dno.reports.bench import matmul_flops
from dno.runtime.config import CONF_DIR
from dno.runtime.precision import bf16_hardware, cpu_bf16_unit
from dno.runtime.provenance import cpu_name

OURS = {"batch": 8, "length": 192, "repeats": 3, "out": "results/precision_speed.md"}


def precision(name: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()


def best_rate(fn, work: float, repeats: int) -> dict[str, float]:
    """The best work/s of `fn(precision)` for fp32 and bf16, alternating."""
    best = {"fp32": 0.0, "bf16": 0.0}
    for _ in range(repeats):
        for name in best:
            t = time.perf_counter()
            done = fn(name)
            best[name] = max(best[name], (done if done is not None else work) / (time.perf_counter() - t))
    return best


def main(argv: list[str]) -> None:
    ours = dict(OURS) | {k: v for k, v in (a.split("=", 1) for a in argv if a.split("=")[0] in OURS)}
    batch, length, repeats = int(ours["batch"]), int(ours["length"]), int(ours["repeats"])
    with initialize_config_dir(CONF_DIR, version_base=None):
        cfg = compose("config", [a for a in argv if a.split("=")[0] not in OURS])
    tok = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tok)
    torch.manual_seed(cfg.seed)
    ids = torch.randint(0, len(tok), (batch, length))
    rows = []

    def forward(name):
        with torch.no_grad(), precision(name):
            model(input_ids=ids).logits.float().sum()

    def forward_backward(name):
        model.zero_grad(set_to_none=True)
        with precision(name):
            loss = model(input_ids=ids).logits.float().logsumexp(-1).mean()
        loss.backward()

    splits = make_splits(instantiate(cfg.data)(),
                         iterations=1, per_iteration=batch, n_val=0, n_test=0, seed=cfg.split_seed)
    prompts, k = [p.messages for p in splits.iterations[0][:batch]], cfg.schedule.samples_per_prompt
    sampler = Sampler(model, tok, SamplingOptions.of(cfg.sampling))

    def sample(name):
        with precision(name):
            return sampler.sample(prompts, n=k, seed=cfg.seed)[1]

    model.eval()
    rows.append(("forward (tokens/s)", best_rate(forward, batch * length, repeats)))
    model.train()
    rows.append(("forward + backward (tokens/s)", best_rate(forward_backward, batch * length, repeats)))
    model.eval()
    rows.append((f"sampling, shared_prefill (tokens/s, {batch} prompts x {k})", best_rate(sample, 0, repeats)))
    matmul = {name: max(matmul_flops(1024, dtype, seconds=1.0)["flops"] for _ in range(repeats)) / 1e9
              for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    rows.insert(0, ("1024 x 1024 matmul (GFLOP/s, in the dtype itself)", matmul))
    unit = cpu_bf16_unit()
    decided = "bf16" if bf16_hardware() else "fp32 (no bf16 units: bf16 would be emulated)"
    lines = [f"# bf16 against fp32 on {cfg.model.name} (experiments/precision_speed.py)", "",
             f"CPU: {cpu_name()}; bf16 unit: {unit or 'none (no amx_bf16 or avx512_bf16 flag)'}; "
             f"{torch.get_num_threads()} threads; torch {torch.__version__}. {batch} sequences x {length} tokens; "
             f"best of {repeats} alternating rounds. `train.mixed_precision=auto` here: {decided}.", "",
             "| measured | fp32 | bf16 autocast | bf16 / fp32 |", "|---|---|---|---|"]
    lines += [f"| {what} | {r['fp32']:.1f} | {r['bf16']:.1f} | {r['bf16'] / r['fp32']:.2f} |" for what, r in rows]
    out = Path(ours["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
