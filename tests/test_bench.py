"""dno-bench on the tiny model: every field of the report, with values that hang together."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dno.data import Prompt
from dno.policy.load import load_tokenizer
from dno.reports.bench import bench_pairs, matmul_flops, token_counts
from dno.runtime.layout import IterationDir
from dno.runtime.precision import bf16_hardware
from dno.stages.records import Samples, read_rows, write_rows
from helpers import SMOKE, make_cfg, run


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, Path]:
    """experiments/bench.sh (dno-bench, then the table copied to REPORT) on the tiny model."""
    out = tmp_path_factory.mktemp("bench")
    env = {"BENCH_DIR": str(out / "run"), "REPORT": str(out / "bench.md")}
    run(["experiments/bench.sh", *SMOKE, "bench.prompts=4", "bench.matmul_size=256"], env=env)
    assert (out / "bench.md").read_text() == (out / "run" / "bench.md").read_text()
    assert json.loads((out / "bench.json").read_text()) == json.loads((out / "run" / "bench.json").read_text())
    return json.loads((out / "bench.json").read_text()), out / "run"


@pytest.mark.slow
def test_report_fields(report):
    r, out = report
    best = "bfloat16" if bf16_hardware() else "float32"  # the machine's best dtype, fp32's limit beside it
    assert r["machine"]["device"] == "cpu" and r["machine"]["dtype"] == best and r["machine"]["flops"] > 1e8
    assert r["machine"]["fp32_flops"] > 1e8 and r["mixed_precision"] == "no"  # the run's default: accelerate's
    # bench.prompts=4, then an iteration's 6 prompts (schedule=smoke), K=4 each
    assert [(s["prompts"], s["k"], s["repeats"]) for s in r["sampling"]] == [(4, 4, 2), (6, 4, 2)]
    for s in r["sampling"]:
        assert s["sampler"] == "shared_prefill" and s["ours_tokens_per_s"] == s["shared_prefill_tokens_per_s"]
        assert s["generate_tokens_per_s"] > 0 and s["bare_tokens_per_s"] > 0
        assert s["ratio"] == pytest.approx(s["ours_tokens_per_s"] / s["bare_tokens_per_s"])
        assert s["shared_prefill_to_generate"] == pytest.approx(s["shared_prefill_tokens_per_s"]
                                                                / s["generate_tokens_per_s"])
        assert s["flops"] == pytest.approx(2 * r["parameters"] * s["ours_tokens_per_s"])
        assert s["flops_frac"] == pytest.approx(s["flops"] / r["machine"]["flops"])
    samples = read_rows(IterationDir(out / "fixed").samples, Samples)
    assert len(samples) == 4 and all(len(x.responses) == 4 for x in samples)  # the pairs' prompts: bench.prompts
    for part, per_token in (("reference", 2), ("update", 6)):
        p = r[part]
        assert p["pairs"] == 8  # K=4 samples -> 2 fixed pairs per prompt
        assert p["flops"] == pytest.approx(per_token * r["parameters"] * p["tokens_per_s"])
        assert p["flops_frac"] == pytest.approx(p["flops"] / r["machine"]["flops"])
        assert 0 <= p["padding_frac"] < 1 and p["peak_mb"] > 50
    assert r["machine"]["flops"] == max(r["machine"]["flops_start"], r["machine"]["flops_end"])
    assert r["update"]["models_resident"] == 1  # reference log-probs are stored, not a second model
    assert r["update"]["steps"] == 2  # 8 pairs, effective batch 4
    lo = r["update_lora"]  # bench.lora_r=16: the same update through a fresh adapter
    assert lo["r"] == 16 and 0 < lo["trainable_params"] < r["update"]["trainable_params"] == r["parameters"]
    assert lo["ratio_to_full"] == pytest.approx(lo["tokens_per_s"] / r["update"]["tokens_per_s"])
    assert lo["loss"] == pytest.approx(math.log(2), abs=0.01)  # B = 0: the adapter starts at pi_1, as the full update
    trl = r["trl"]
    assert trl["update_ratio"] == pytest.approx(r["update"]["tokens_per_s"] / trl["update_tokens_per_s"])
    assert trl["tokens"] > 0 and trl["update_peak_mb"] > 50
    assert "trl_note" not in r  # measured: no note saying why it was not
    j = r["judge"]
    assert j["oracle"] == "RulesOracle" and j["calls_per_prompt"] == 0 and j["repeat_cache_hit_rate"] is None
    it = r["iteration"]
    stages = ("sample", "judge", "pairs", "reference", "train", "evaluate")
    assert it["iteration_s"] == pytest.approx(sum(it[f"{n}_s"] for n in stages))
    assert (out / "iter_1" / "checkpoint" / "config.json").exists()  # the loop's own stages ran
    md = (out / "bench.md").read_text()
    assert "| sampling, sampler=shared_prefill (configured) (tokens/s, 6 prompts x 4) |" in md
    assert "| sampling, sampler=generate (tokens/s, 4 prompts x 4) |" in md
    assert "Machine limit" in md and "TRL DPOTrainer" in md and "One iteration of dno-run" in md


def test_token_counts_by_hand():
    cfg = make_cfg(*SMOKE)
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    pairs = bench_pairs([Prompt.of("a", "Hi")], [["one two", "three", "x", "y"]])
    assert [(p.chosen, p.rejected) for p in pairs] == [("one two", "three"), ("x", "y")]
    from dno.policy.logps import encode_pairs

    enc = encode_pairs(tok, pairs, 256)
    real = sum(2 * len(p) + len(c) + len(r) for p, c, r in enc)
    c = token_counts(tok, pairs, micro_batch_size=2, max_length=256, layout="padded")
    # one micro-batch of 2 pairs = 4 rows padded to the longest prompt + response
    width = max(len(p) + max(len(x), len(y)) for p, x, y in enc)
    assert c["tokens"] == real and c["padding_frac"] == pytest.approx(1 - real / (4 * width))
    assert c["computed_frac"] == 1
    # layout=shared: each pair one block, prompt + chosen + rejected; both blocks in one row only if they fit in
    # the longer one's width (they do not: the same prompt, answers of 2 and 1 tokens + EOS each)
    shared = token_counts(tok, pairs, micro_batch_size=2, max_length=256)
    blocks = [len(p) + len(x) + len(y) for p, x, y in enc]
    assert shared["tokens"] == real and shared["computed_frac"] == pytest.approx(sum(blocks) / real)
    assert shared["padding_frac"] == pytest.approx(1 - sum(blocks) / (2 * max(blocks)))


def test_matmul_flops_is_a_rate():
    m = matmul_flops(128, torch.float32, seconds=0.2)
    assert m["size"] == 128 and m["flops"] > 1e7 and m["threads"] == torch.get_num_threads()
    assert matmul_flops(64, torch.bfloat16, seconds=0.1)["dtype"] == "bfloat16"


def test_judge_costs_of_an_api_judge_and_its_cache(tmp_path, monkeypatch):
    from dno.reports.bench import judge_costs
    from judge_server import JudgeServer
    from test_api_oracles import KEY, KEY_ENV, listwise

    monkeypatch.setenv(KEY_ENV, KEY)
    d = IterationDir(tmp_path)
    write_rows(d.samples, [Samples(Prompt.of(f"p{i}", f"Say {i}."), ["a b", "c", f"{i}", "d e f"]) for i in range(3)])
    with JudgeServer() as server:
        costs = judge_costs(listwise(server, tmp_path), d)
        assert len(server.requests) == 3  # the repeat was answered from the cache
    assert costs["calls_per_prompt"] == 1.0 and costs["tokens_per_prompt"] > 0
    assert costs["repeat_cache_hit_rate"] == 1.0 and costs["oracle"] == "OpenAIListwiseOracle"
