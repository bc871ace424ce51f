"""dno-bench's report as markdown (`bench.md`): the machine's limit, each stage against its baseline
and the limit, the judge's costs and one iteration's stage times, from the dict `dno.bench.run_bench`
writes as `bench.json`."""

from __future__ import annotations


def _f(x, spec: str = ".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(r: dict) -> str:
    m, smp, ref, upd, trl = r["machine"], r["sampling"], r["reference"], r["update"], r.get("trl")
    gf = lambda x: f"{x / 1e9:.1f} GFLOP/s"  # noqa: E731
    rows = [f"# dno-bench: {r['model']}, schedule {r['schedule']}, {r['parameters'] / 1e6:.1f}M parameters", "",
            f"Machine limit: {gf(m['flops'])} ({m['dtype']} {m['size']}x{m['size']} matmul on {m['device']}, "
            f"{m['threads']} threads; the better of {gf(m['flops_start'])} at the start and {gf(m['flops_end'])} "
            "at the end).", "",
            "| stage | ours | baseline | ours / baseline | achieved FLOP/s | of limit | padding | peak memory |",
            "|---|---|---|---|---|---|---|---|"]
    for shape in smp:
        for sampler in ("dno", "generate"):
            mark = " (configured)" if sampler == shape["sampler"] else ""
            tps = shape[f"{sampler}_tokens_per_s"]
            rows.append(f"| sampling, sampler={sampler}{mark} (tokens/s, {shape['prompts']} prompts x {shape['k']}) | "
                        f"{tps:.1f} | {shape['bare_tokens_per_s']:.1f} (bare generate) | "
                        f"{tps / shape['bare_tokens_per_s']:.2f} | {gf(2 * r['parameters'] * tps)} | "
                        f"{2 * r['parameters'] * tps / m['flops']:.0%} | | "
                        + (f"{shape['peak_mb']:.0f} MB |" if mark else "|"))
    for name, part, key in (("reference log-probs", ref, "reference"), ("update", upd, "update")):
        base = f"{trl[f'{key}_tokens_per_s']:.1f} (TRL DPOTrainer)" if trl else f"n/a ({r.get('trl_note')})"
        ratio = _f(trl[f"{key}_ratio"], ".2f") if trl else "n/a"
        trl_mb = f" (TRL {trl[f'{key}_peak_mb']:.0f} MB)" if trl else ""
        rows.append(f"| {name} (tokens/s, {part['pairs']} pairs) | {part['tokens_per_s']:.1f} | {base} | {ratio} | "
                    f"{gf(part['flops'])} | {part['flops_frac']:.0%} | {part['padding_frac']:.0%} | "
                    f"{part['peak_mb']:.0f} MB{trl_mb} |")
    if r.get("update_lora"):
        lo = r["update_lora"]
        rows.append(f"| update, LoRA r={lo['r']} (tokens/s, {upd['pairs']} pairs) | {lo['tokens_per_s']:.1f} | "
                    f"{upd['tokens_per_s']:.1f} (full update) | {lo['ratio_to_full']:.2f} | | | | "
                    f"{lo['peak_mb']:.0f} MB |")
    j = r["judge"]
    rows += ["", f"Update: {upd['steps']} optimizer steps, {upd['models_resident']} model(s) resident "
             f"(TRL: {trl['models_resident'] if trl else 'n/a'}). Model FLOP/s, as in MFU: 2N per reference token and "
             "6N per trained token (N parameters, attention not counted), tokens being the non-padding prompt + "
             "response tokens, and 2N per generated token when sampling (the prompts' prefill not counted); dno "
             "skips the output projection over a micro-batch's shared prompt positions, so the hardware does less "
             "than this count in the update."
             + "".join(f" Sampling {x['prompts']} prompts x {x['k']}: sampler=dno {x['dno_to_generate']:.2f}x "
                       "sampler=generate." for x in smp)
             + (f" LoRA trains {r['update_lora']['trainable_params'] / 1e6:.2f}M of the {r['parameters'] / 1e6:.1f}M "
                "parameters (a fresh adapter on pi_1, model.lora.r)." if r.get("update_lora") else ""),
             "", f"Judge ({j['oracle']}): {j['calls_per_prompt']:.2f} calls and {j['tokens_per_prompt']:.0f} tokens "
             f"per prompt, {j['seconds']:.2f} s for {j['prompts']} prompts; cache hit rate on a repeat: "
             f"{_f(j['repeat_cache_hit_rate'], '.0%')}."]
    if "iteration" in r:
        it = r["iteration"]
        names = ("sample", "judge", "pairs", "reference", "train", "evaluate")
        rows += ["", "One iteration of dno-run (seconds):", "",
                 "| before iteration 1 | " + " | ".join(names) + " | iteration |",
                 "|---" * (len(names) + 2) + "|",
                 f"| {it['init_s']:.1f} | " + " | ".join(f"{it[f'{n}_s']:.1f}" for n in names)
                 + f" | {it['iteration_s']:.1f} |"]
    return "\n".join(rows) + "\n"
