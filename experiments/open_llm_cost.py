"""What the Open LLM Leaderboard (eval=open_llm) costs on this machine, to plan a run: lm-eval's own six task
configs with the leaderboard's shots, on 100 stand-in items per task whose lengths follow the real datasets'
(the real items are on the hub, out of reach here), answered by the configured model (the offline default:
SmolLM2-135M-Instruct). Prints a markdown table: seconds per 100 items, and the hours the full task would take
at that rate.

    .venv/bin/python experiments/open_llm_cost.py [items=100] [model=...] > results/open_llm_cost.md
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import lm_eval

from dno.runtime.provenance import cpu_name

TASKS = Path(lm_eval.__file__).parent / "tasks"
# task: (the real YAML, splits, shots, metric, items in the full evaluation split)
SIX = {
    "arc_challenge": ("arc/arc_challenge.yaml", ("train", "validation", "test"), 25, "acc_norm", 1172),
    "hellaswag": ("hellaswag/hellaswag.yaml", ("train", "validation"), 10, "acc_norm", 10042),
    "mmlu": ("mmlu/default/_default_template_yaml", ("dev", "test"), 5, "acc", 14042),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", ("validation",), 0, "acc", 817),
    "winogrande": ("winogrande/default.yaml", ("train", "validation"), 5, "acc", 1267),
    "gsm8k": ("gsm8k/gsm8k.yaml", ("train", "test"), 5, "exact_match,strict-match", 1319),
}
WORDS = ("the water of a small town river flows past old mills and green fields where farmers grow wheat and "
         "children play near the bridge while birds sing in tall trees every morning").split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def item(task: str, i: int, rng: random.Random) -> dict:
    """One stand-in item in the task's real schema, its lengths about the real dataset's means."""
    k = rng.randrange(4)
    if task == "arc_challenge":
        return {"id": str(i), "question": text(rng, 22) + "?", "choices": {"text": [text(rng, 5) for _ in range(4)],
                "label": list("ABCD")}, "answerKey": "ABCD"[k]}
    if task == "hellaswag":
        return {"ind": i, "activity_label": "Cooking", "ctx_a": text(rng, 30), "ctx_b": text(rng, 6),
                "ctx": "", "endings": [text(rng, 20) for _ in range(4)], "source_id": "x", "split": "val",
                "split_type": "indomain", "label": str(k)}
    if task == "mmlu":
        return {"question": text(rng, 50) + "?", "subject": "x", "choices": [text(rng, 10) for _ in range(4)],
                "answer": k}
    if task == "truthfulqa_mc2":
        choices = [text(rng, 12) for _ in range(8)]
        return {"question": text(rng, 11) + "?", "mc1_targets": {"choices": choices[:4], "labels": [1, 0, 0, 0]},
                "mc2_targets": {"choices": choices, "labels": [1, 1, 1, 0, 0, 0, 0, 0]}}
    if task == "winogrande":
        return {"sentence": text(rng, 10) + " _ " + text(rng, 10) + ".", "option1": text(rng, 1),
                "option2": text(rng, 1), "answer": str(1 + k % 2)}
    return {"question": text(rng, 45) + "?", "answer": text(rng, 55) + f"\n#### {i}"}


def main(items: int = 100, model_override: str | None = None) -> str:
    from hydra import compose, initialize_config_dir
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from dno.policy.load import load_model, load_tokenizer
    from dno.runtime.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=[f"model={model_override}"] if model_override else [])
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tokenizer).eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8)  # conf/eval/open_llm.yaml's
    rng = random.Random(0)
    folder = Path(tempfile.mkdtemp(prefix="open_llm_cost_"))
    for task, (base, splits, shots, _, _) in SIX.items():
        lines = [f"include: {TASKS / base}", f"task: {task}_standin", "dataset_path: json", "dataset_name: null",
                 "dataset_kwargs:", "  data_files:"]
        for split in splits:
            rows = [item(task, i, rng) for i in range(max(items, shots + 5))]  # a few-shot split holds the shots
            (folder / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            lines.append(f"    {split}: {folder / f'{task}.{split}.jsonl'}")
        (folder / f"{task}.yaml").write_text("\n".join(lines) + "\n")
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    rows, total = [], 0.0
    for task, (_, _, shots, _, full) in SIX.items():
        start = time.perf_counter()
        lm_eval.simple_evaluate(model=lm, tasks=[f"{task}_standin"], num_fewshot=shots, task_manager=manager,
                                limit=items, bootstrap_iters=0)
        seconds = (time.perf_counter() - start) * 100 / items
        total += seconds * full / 100
        rows.append(f"| {task} | {shots} | {seconds:.0f} | {full} | {seconds * full / 100 / 3600:.1f} |")
    return "\n".join([
        "# What the Open LLM Leaderboard costs here (experiments/open_llm_cost.py)", "",
        f"lm-eval {lm_eval.__version__}, the leaderboard's six task configs and shots on {items} stand-in items per "
        f"task (lengths about the real datasets'), model `{cfg.model.name}` ({cfg.model.dtype}), batch size 8, "
        f"on {cpu_name()} ({os.cpu_count()} CPUs, as they were: see results/LOG.md for what else ran).", "",
        "| task | shots | seconds per 100 items | items in the full task | hours for the full task |",
        "|---|---|---|---|---|", *rows, "",
        f"All six at these rates: about {total / 3600:.1f} hours per model evaluated.", ""])


if __name__ == "__main__":
    args = dict(a.split("=", 1) for a in sys.argv[1:])
    print(main(int(args.get("items", 100)), args.get("model")), end="")
