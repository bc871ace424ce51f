"""Mixed precision (train.mixed_precision, dno.runtime.precision): the bf16 units read off /proc/cpuinfo, `auto`
stays fp32 where there are none and says so once, a wrong value fails naming the key, and under bf16 the sampling
and the reference log-probs run in bf16 as the update does (so the first step of a DPO-like update starts at
log 2 in bf16 too). On an AVX2 machine bf16 is emulated: correct, only slower."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from dno.policy.load import load_model, load_tokenizer
from dno.policy.logps import pair_batch, sequence_logps
from dno.policy.sample import Sampler, SamplingOptions
from dno.run import Run
from dno.runtime import precision
from dno.runtime.config import ConfigError
from dno.runtime.files import read_jsonl
from helpers import SMOKE, dno_run, documented_commands, make_cfg, run

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
COOPER_LAKE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"


def test_the_bf16_unit_is_read_off_the_cpu_flags():
    assert precision.cpu_bf16_unit(AVX2) is None  # avx512f alone computes no bf16
    assert precision.cpu_bf16_unit(COOPER_LAKE) == "avx512_bf16"
    assert precision.cpu_bf16_unit(SAPPHIRE_RAPIDS) == "amx_bf16"
    assert precision.cpu_bf16_unit("model name\t: no flags line\n") is None


def test_auto_is_bf16_only_with_bf16_units_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(precision, "bf16_hardware", lambda: None)
    with caplog.at_level(logging.INFO, logger="dno.runtime.precision"):
        assert precision.resolve("auto") == "no"
    assert [r.message for r in caplog.records if "stays fp32" in r.message] != []
    monkeypatch.setattr(precision, "bf16_hardware", lambda: "amx_bf16")
    assert precision.resolve("auto") == "bf16"
    assert [precision.resolve(c) for c in (None, "no", "bf16")] == [None, "no", "bf16"]  # as given
    with pytest.raises(ConfigError, match="train.mixed_precision .*'fp16'"):
        precision.resolve("fp16")


def test_a_wrong_mixed_precision_fails_before_any_compute(tmp_path):
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        Run.build(make_cfg(*SMOKE, "train.mixed_precision=float8", "logger=none"), tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tiny():
    cfg = make_cfg("model=tiny_random")
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    return load_model(cfg.model, cfg.cache_dir, tok), tok


def test_under_bf16_sampling_and_reference_run_in_bf16(tiny, monkeypatch):
    """The same forward pass in fp32 and under the run's bf16: close, not equal (bf16 keeps 8 bits of mantissa);
    both samplers draw under bf16, the shared prefill's static KV cache included."""
    model, tok = tiny
    encoded = [([5, 6, 7, 8], [9, 10, 11, 12, 13], [14, 15, 16])]
    batch = pair_batch(encoded, [0], tok.pad_token_id)
    monkeypatch.setattr(precision, "running", lambda: "no")
    with torch.no_grad(), precision.autocast():
        fp32 = sequence_logps(model, batch)
    monkeypatch.setattr(precision, "running", lambda: "bf16")
    with torch.no_grad(), precision.autocast():
        assert model(input_ids=batch["input_ids"]).logits.dtype == torch.bfloat16
        bf16 = sequence_logps(model, batch)
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert torch.allclose(bf16, fp32, rtol=0.02), (bf16, fp32)
    prompts = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to three."}]]
    for sampler in ("shared_prefill", "generate"):
        options = SamplingOptions(max_new_tokens=6, temperature=0.7, top_p=0.95, sampler=sampler)
        texts, n_tokens = Sampler(model, tok, options).sample(prompts, n=2, seed=0)
        assert [len(t) for t in texts] == [2, 2] and 2 * 2 <= n_tokens <= 2 * 2 * 6, sampler


@pytest.mark.slow
def test_a_bf16_run_samples_references_and_updates_in_bf16(tmp_path):
    """A whole smoke iteration with train.mixed_precision=bf16: the Accelerator's precision is recorded, and the
    first step's loss is log 2 because pi_t's reference log-probs were computed in the update's precision."""
    dno_run(*SMOKE, "schedule.iterations=1", "schedule.prompts_per_iteration=2", "train.mixed_precision=bf16",
            "logger=none", f"hydra.run.dir={tmp_path}")
    device = json.loads((tmp_path / "provenance.json").read_text())["device"]
    assert device["mixed_precision"] == "bf16" and device["dtype"] == "float32"  # fp32 weights, bf16 compute
    first = read_jsonl(tmp_path / "metrics.jsonl")[0]
    assert first["train/steps"] > 0 and math.isfinite(first["train/loss"])
    # measured: log 2 to 2e-9 with the reference in bf16, 4.6e-5 off with it in fp32 against the bf16 update
    assert first["train/first_step_loss"] == pytest.approx(math.log(2), abs=1e-5)


@pytest.mark.slow
@pytest.mark.experiment
def test_the_precision_speed_script_measures_both_and_says_what_auto_picks(tmp_path):
    """The docs' tiny-model command of experiments/precision_speed.py: every row in both precisions, its ratio, and
    what `auto` decides on this machine."""
    import shlex

    command = next(line for line in documented_commands()
                   if "experiments/precision_speed.py" in line and "model=tiny_random" in line)
    out = tmp_path / "p.md"
    words = [w for w in shlex.split(command.split("#")[0]) if not w.startswith("out=")] + [f"out={out}"]
    run(words, timeout=600)
    text = out.read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0][2:].split(" (")[0] for r in rows] == ["1024 x 1024 matmul", "forward", "forward + backward",
                                                       "sampling, shared_prefill"]
    for _, fp32, bf16, ratio in rows:
        assert float(ratio.rstrip(" |")) == pytest.approx(float(bf16) / float(fp32), abs=0.006)
    auto = "bf16" if precision.bf16_hardware() else "fp32 (no bf16 units"
    assert f"`train.mixed_precision=auto` here: {auto}" in text
