"""dno-bench's report as markdown (`bench.md`): the machine's limit, each stage against its baseline
and the limit, the judge's costs and one iteration's stage times, from the dict
`dno.reports.bench.run_bench` writes as `bench.json`."""

from __future__ import annotations

from dno.policy.sample import SAMPLERS

STAGES = ("sample", "judge", "pairs", "reference", "train", "evaluate")


def _f(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def _gf(x: float) -> str:
    return f"{x / 1e9:.1f} GFLOP/s"


def markdown(r: dict) -> str:
    m = r["machine"]
    rows = [f"# dno-bench: {r['model']}, schedule {r['schedule']}, {r['parameters'] / 1e6:.1f}M parameters", "",
            f"Machine limit: {_gf(m['flops'])} ({m['dtype']} {m['size']}x{m['size']} matmul on {m['device']}, "
            f"{m['threads']} threads; the better of {_gf(m['flops_start'])} at the start and {_gf(m['flops_end'])} "
            f"at the end). {_precision(r)}", "",
            "| stage | ours | baseline | ours / baseline | achieved FLOP/s | of limit | padding | peak memory |",
            "|---|---|---|---|---|---|---|---|", *_sampling_rows(r), *_update_rows(r), "", _notes(r)]
    if "iteration" in r:
        it = r["iteration"]
        rows += ["", "One iteration of dno-run (seconds):", "",
                 "| before iteration 1 | " + " | ".join(STAGES) + " | iteration |", "|---" * (len(STAGES) + 2) + "|",
                 f"| {it['init_s']:.1f} | " + " | ".join(f"{it[f'{n}_s']:.1f}" for n in STAGES)
                 + f" | {it['iteration_s']:.1f} |"]
    return "\n".join(rows) + "\n"


def _precision(r: dict) -> str:
    """The dtype of the limit against fp32's, and the precision the stages ran in."""
    m, ran = r["machine"], r.get("mixed_precision", "no")
    stages = "bf16 mixed precision (fp32 weights)" if ran == "bf16" else "fp32"
    if m["dtype"] == "float32":
        return f"No bf16 units here (no AMX or AVX512-BF16, no CUDA): fp32 is this machine's best; stages in {stages}."
    return f"fp32: {_gf(m['fp32_flops'])} ({m['flops'] / m['fp32_flops']:.2f}x less); stages in {stages}."


def _sampling_rows(r: dict) -> list[str]:
    rows, m = [], r["machine"]
    for shape in r["sampling"]:
        for sampler in SAMPLERS:
            mark = " (configured)" if sampler == shape["sampler"] else ""
            tps = shape[f"{sampler}_tokens_per_s"]
            rows.append(f"| sampling, sampler={sampler}{mark} (tokens/s, {shape['prompts']} prompts x {shape['k']}) | "
                        f"{tps:.1f} | {shape['bare_tokens_per_s']:.1f} (bare generate) | "
                        f"{tps / shape['bare_tokens_per_s']:.2f} | {_gf(2 * r['parameters'] * tps)} | "
                        f"{2 * r['parameters'] * tps / m['flops']:.0%} | | "
                        + (f"{shape['peak_mb']:.0f} MB |" if mark else "|"))
    return rows


def _update_rows(r: dict) -> list[str]:
    rows, upd, trl = [], r["update"], r.get("trl")
    for name, part, key in (("reference log-probs", r["reference"], "reference"), ("update", upd, "update")):
        base = f"{trl[f'{key}_tokens_per_s']:.1f} (TRL DPOTrainer)" if trl else f"n/a ({r.get('trl_note')})"
        ratio = _f(trl[f"{key}_ratio"], ".2f") if trl else "n/a"
        trl_mb = f" (TRL {trl[f'{key}_peak_mb']:.0f} MB)" if trl else ""
        rows.append(f"| {name} (tokens/s, {part['pairs']} pairs) | {part['tokens_per_s']:.1f} | {base} | {ratio} | "
                    f"{_gf(part['flops'])} | {part['flops_frac']:.0%} | {part['padding_frac']:.0%} | "
                    f"{part['peak_mb']:.0f} MB{trl_mb} |")
    if r.get("update_lora"):
        lo = r["update_lora"]
        rows.append(f"| update, LoRA r={lo['r']} (tokens/s, {upd['pairs']} pairs) | {lo['tokens_per_s']:.1f} | "
                    f"{upd['tokens_per_s']:.1f} (full update) | {lo['ratio_to_full']:.2f} | | | | "
                    f"{lo['peak_mb']:.0f} MB |")
    return rows


def _computed(r: dict) -> str:
    """What dno's layout computes of the counted tokens, and the FLOP/s of what it computes."""
    upd, ref = r["update"], r["reference"]
    if "computed_frac" not in upd:  # a report from before issue 43
        return "dno skips the output projection over a micro-batch's shared prompt positions."
    return (f"dno's micro-batches (layout={upd['layout']}) compute {upd['computed_frac']:.0%} of these tokens (a "
            "pair's prompt once for both answers; the output projection only where an answer token is predicted): "
            f"counted by what they compute, the update runs at {_gf(upd['flops'] * upd['computed_frac'])} "
            f"({upd['flops_frac'] * upd['computed_frac']:.0%} of the limit) and the reference pass at "
            f"{_gf(ref['flops'] * ref['computed_frac'])} ({ref['flops_frac'] * ref['computed_frac']:.0%}).")


def _notes(r: dict) -> str:
    upd, trl, j = r["update"], r.get("trl"), r["judge"]
    fast, slow = SAMPLERS
    return "\n".join([
        f"Update: {upd['steps']} optimizer steps, {upd['models_resident']} model(s) resident "
        f"(TRL: {trl['models_resident'] if trl else 'n/a'}). Model FLOP/s, as in MFU: 2N per reference token and "
        "6N per trained token (N parameters, attention not counted), tokens being the non-padding prompt + "
        "response tokens (a prompt once per answer, as TRL computes them), and 2N per generated token when sampling "
        "(the prompts' prefill not counted). " + _computed(r)
        + "".join(f" Sampling {x['prompts']} prompts x {x['k']}: sampler={fast} {x[f'{fast}_to_{slow}']:.2f}x "
                  f"sampler={slow}." for x in r["sampling"])
        + (f" LoRA trains {r['update_lora']['trainable_params'] / 1e6:.2f}M of the {r['parameters'] / 1e6:.1f}M "
           "parameters (a fresh adapter on pi_1, model.lora.r)." if r.get("update_lora") else ""),
        "", f"Judge ({j['oracle']}): {j['calls_per_prompt']:.2f} calls and {j['tokens_per_prompt']:.0f} tokens "
        f"per prompt, {j['seconds']:.2f} s for {j['prompts']} prompts; cache hit rate on a repeat: "
        f"{_f(j['repeat_cache_hit_rate'], '.0%')}."])
