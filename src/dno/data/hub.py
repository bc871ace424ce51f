"""Prompt sets from the Hugging Face hub, for users who can reach it (not used by tests or CI)."""

from __future__ import annotations


def load_ultrafeedback(
    path: str = "HuggingFaceH4/ultrafeedback_binarized",
    split: str = "train_prefs",
    revision: str | None = None,
    num_prompts: int | None = None,
) -> list[dict]:
    """UltraFeedback prompts, as in Section 5.1 of arXiv 2404.03715.

    The teacher answer is the highest-rated UltraFeedback completion (the paper used GPT-4-Turbo
    answers, which were not released).
    """
    from datasets import load_dataset

    ds = load_dataset(path, split=split, revision=revision)
    if num_prompts is not None:
        ds = ds.select(range(min(num_prompts, len(ds))))
    records = []
    for row in ds:
        teacher = row["chosen"][-1]["content"] if row.get("chosen") else None
        records.append({"id": str(row["prompt_id"]), "instruction": row["prompt"], "teacher": teacher})
    return records
