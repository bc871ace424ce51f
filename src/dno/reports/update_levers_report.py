"""results/update_levers.md from experiments/update_levers.py's figures (its JSON): each lever's row, its gain
over the row before this issue's levers, and its share of the machine's limit (dno-bench's)."""

from __future__ import annotations


def _table(rows: list[dict], per_token: int, r: dict, lim: float) -> list[str]:
    """Layout rows: tokens/s (unshared count), model GFLOP/s (per_token x N), of limit, computed share, padding."""
    lines = ["| lever | tokens/s | model GFLOP/s | of limit | computed / unshared tokens | padding | x before |",
             "|---|---|---|---|---|---|---|"]
    before = rows[0]["tokens"] / rows[0]["seconds"]
    for i, row in enumerate(rows):
        if not row["kept"] and rows[i - 1]["kept"]:
            lines.append("| *tried on top:* | | | | | | |")
        rate = row["tokens"] / row["seconds"]
        flops = per_token * r["parameters"] * rate
        lines.append(f"| {row['lever']} | {rate:.1f} | {flops / 1e9:.1f} | {flops / lim:.0%} | "
                     f"{row['computed'] / row['tokens']:.0%} | {1 - row['computed'] / row['area']:.0%} | "
                     f"{rate / before:.2f} |")
    return lines


def _limit_dtype(r: dict) -> str:
    """The limit's dtype (the best the machine has, as dno-bench measures it) and fp32's beside it where it differs."""
    dtype = r.get("limit_dtype", "float32")
    if dtype == "float32":
        return "float32 matmul"
    fp32 = r.get("fp32_limit_flops")
    return f"{dtype} matmul; the rows run in float32, whose limit is " + (
        f"{fp32 / 1e9:.1f} GFLOP/s" if fp32 else "not recorded in this run")


def markdown(r: dict) -> str:
    n, lim = r["parameters"], r["limit_flops"]
    lines = [f"# The update's levers: {r['model']}, {r['pairs']} pairs, and the sampler's", "",
             f"{n / 1e6:.1f}M parameters; {r['cpu']}, {r['threads']} threads, machine limit {lim / 1e9:.1f} GFLOP/s "
             f"({_limit_dtype(r)}, the better of start and end, as dno-bench's); "
             f"load average {r['load'][0]:.1f} at the start and "
             f"{r['load'][1]:.1f} at the end (the script's own threads count). {r['micro_batches']} micro-batches of "
             f"{r['micro_batch_size']} pairs; best of {r['repeats']} turns per micro-batch; {r['wall_s'] / 60:.1f} "
             f"min in all. `.venv/bin/python {r['command']}`", "",
             "## The update: forward and backward per micro-batch (6N per unshared token)", "",
             *_table(r["update"], 6, r, lim), "",
             "## The reference log-probs: forward per micro-batch (2N per unshared token)", "",
             *_table(r["reference"], 2, r, lim), "", "## The whole update (`train_policy`, AdamW included)", "",
             "| layout | seconds | tokens/s | model GFLOP/s | of limit | loss | x padded |", "|---" * 7 + "|"]
    padded = r["whole_update"][0]["seconds"]
    for w in r["whole_update"]:
        rate = r["update"][0]["tokens"] / w["seconds"]
        lines.append(f"| `layout={w['layout']}`, micro-batches of {w['micro_batch_size']} pairs | {w['seconds']:.1f} | "
                     f"{rate:.1f} | {6 * n * rate / 1e9:.1f} | "
                     f"{6 * n * rate / lim:.0%} | {w['loss']:.6f} | {padded / w['seconds']:.2f} |")
    loop = r["optimizer"][0]["seconds"]
    lines += ["", "| one AdamW step over every parameter | seconds | x loop |", "|---|---|---|",
              *[f"| {o['lever']} | {o['seconds']:.3f} | {loop / o['seconds']:.2f} |" for o in r["optimizer"]]]
    return "\n".join(lines + _sampler_lines(r) + _compile_lines(r)) + "\n"


def _sampler_lines(r: dict) -> list[str]:
    n, lim, rows, shift = r["parameters"], r["limit_flops"], r["sampler"], r["int8_shift"]
    lines = ["", f"## The sampler: {r['sampling_prompts']} prompts x {r['k']} (2N per generated token)", "",
             "| lever | tokens/s | model GFLOP/s | of limit | x bare generate | x before |", "|---" * 6 + "|"]
    for i, s in enumerate(rows):
        rate = s["tokens_per_s"]
        if not s["kept"] and rows[i - 1]["kept"]:
            lines.append("| *tried on top:* | | | | | |")
        lines.append(f"| {s['lever']} | {rate:.1f} | {2 * n * rate / 1e9:.1f} | {2 * n * rate / lim:.0%} | "
                     f"{rate / rows[0]['tokens_per_s']:.2f} | {rate / rows[1]['tokens_per_s']:.2f} |")
    same = "the same" if shift["fused_same_as_before"] else "not the same"
    return lines + ["", f"The int8 copy's samples: {shift['same_samples']:.0%} the same as fp32's from the same seeds, "
                    f"a KL divergence of {shift['kl_per_token']:.3f} nats per token from the fp32 model along its "
                    f"samples, {shift['chars_int8']:.0f} characters on average against {shift['chars_fp32']:.0f}. "
                    f"Fused projections: {same} samples as the sampler's.", "", "| one sampling step's draw | ms |",
                    "|---|---|", *[f"| {d['lever']}, {d['rows']} rows | {d['seconds'] * 1e3:.1f} |" for d in r["draw"]]]


def _compile_lines(r: dict) -> list[str]:
    if "compile" not in r:
        return []
    eager = {c["part"]: c["seconds"] for c in r["compile"] if "eager" in c["lever"]}
    return ["", "## Regional torch.compile (`layout=shared`)", "",
            "| pass | row | seconds | x eager | compilation (s) |", "|---|---|---|---|---|",
            *[f"| {c['part']} | {c['lever']} | {c['seconds']:.1f} | {eager[c['part']] / c['seconds']:.2f} | "
              f"{c['compile_s']:.0f} |" for c in r["compile"]]]
