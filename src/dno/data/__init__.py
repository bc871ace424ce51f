"""Prompt sources. Each returns records {"id", "instruction", "teacher", ...}; `teacher` (the
teacher's answer to the prompt) may be None, and a record may carry a `system` turn. The helpers
below are the one place that knows which fields make up a prompt."""

from __future__ import annotations


def chat_prompt(record: dict) -> list[dict]:
    """The messages the chat template gets for a prompt record (samples and pairs rows included):
    its system turn if it has one, then its instruction."""
    system = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    return [*system, {"role": "user", "content": record["instruction"]}]


def prompt_fields(record: dict) -> dict:
    """The fields that make up a prompt, carried from a prompt record into the rows built from it."""
    return {"instruction": record["instruction"], **({"system": record["system"]} if record.get("system") else {})}
