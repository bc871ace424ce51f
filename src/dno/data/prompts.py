"""Any prompt set through `datasets` (`data=prompts`): a local file or a hub dataset, fields mapped.

    dno-run data=prompts data.path=experiments/examples/prompts.jsonl
    dno-run data=prompts data.path=my/hub-dataset data.split=train data.prompt_field=messages

`path` is a `.json`/`.jsonl`/`.csv`/`.parquet` file, a directory written by `save_to_disk`, or a
hub dataset id (with `name`, `split`, `revision`). `prompt_field` holds a string or a chat
`messages` list ([{role, content}, ...]: an optional system turn, then one user turn; the system
turn is kept and goes to the chat template). `id_field` is optional (a stable hash of the prompt
otherwise); `teacher_field` (the issue's `gold_field`: one name, `teacher`, in this code) holds the
teacher's answer as a string, or as a messages list whose last assistant turn is the answer.
Duplicate prompts are dropped and counted; prompts too long for the model are dropped later, when
the tokenizer is known (`drop_too_long`, called by `dno.run.Run.build`).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from dno.data import chat_prompt

log = logging.getLogger(__name__)
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class Records(list):
    """The prompt records, and how many duplicate prompts were dropped while reading them."""

    def __init__(self, records: list[dict], duplicates: int = 0) -> None:
        super().__init__(records)
        self.duplicates = duplicates


def _dataset(path: str, name: str | None, split: str, revision: str | None):
    from datasets import load_dataset, load_from_disk

    local = Path(path)
    saved = local.is_dir() and any((local / f).exists() for f in ("dataset_info.json", "dataset_dict.json"))
    if local.is_file() and local.suffix not in BUILDERS:
        raise ValueError(f"data.path={path}: not a file this loader reads (.json, .jsonl, .csv, .parquet, or a "
                         f"directory written by save_to_disk)")
    if not local.exists() and local.suffix in BUILDERS:
        raise ValueError(f"data.path={path} does not exist")
    try:
        if saved:
            ds = load_from_disk(str(local))
            return ds[split] if hasattr(ds, "keys") else ds
        if local.is_file():
            return load_dataset(BUILDERS[local.suffix], data_files=str(local), split="train")
        return load_dataset(path, name, split=split, revision=revision)  # a hub dataset id or a dataset folder
    except Exception as e:  # datasets' and pyarrow's parse errors name neither our key nor always the file
        raise ValueError(f"data.path={path}: could not be read as {BUILDERS.get(local.suffix, 'a dataset')} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None


def _turns(value, where: str) -> tuple[str | None, str]:
    """(system, user text) of a prompt given as a string or as a messages list."""
    if isinstance(value, str):
        return None, value
    if not (isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)):
        raise ValueError(f"{where}: expected a string or a list of {{role, content}} messages, got {value!r:.120}")
    system = [m["content"] for m in value if m["role"] == "system"]
    users = [m["content"] for m in value if m["role"] == "user"]
    if len(users) != 1 or len(system) > 1 or any(m["role"] not in ("system", "user") for m in value):
        raise ValueError(f"{where}: a prompt is an optional system turn and one user turn; multi-turn "
                         f"prompts are not supported (roles: {[m['role'] for m in value]})")
    return (system[0] if system else None), users[0]


def _teacher(value, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    answers = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
    if not answers:
        raise ValueError(f"{where}: the teacher's answer is a messages list without an assistant turn")
    return answers[-1]


def load_prompts(path: str, name: str | None = None, split: str = "train", revision: str | None = None,
                 num_prompts: int | None = None, prompt_field: str = "prompt", id_field: str | None = None,
                 teacher_field: str | None = None) -> Records:
    """Records {"id", "instruction", "system" (when given), "teacher"}, duplicates dropped."""
    ds = _dataset(path, name, split, revision)
    for key, field in (("prompt_field", prompt_field), ("id_field", id_field), ("teacher_field", teacher_field)):
        if field is not None and field not in ds.column_names:
            raise ValueError(f"data.{key}={field!r} is not a field of {path} (fields: {ds.column_names})")
    records, seen, duplicates = [], set(), 0
    for i, row in enumerate(ds):
        where = f"{path}, row {i + 1}, field {prompt_field!r}"
        system, instruction = _turns(row[prompt_field], where)
        if not (instruction or "").strip():
            raise ValueError(f"{where}: the prompt is empty")
        key = (system, instruction)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        pid = str(row[id_field]) if id_field else hashlib.sha1(repr(key).encode()).hexdigest()[:16]
        record = {"id": pid, "instruction": instruction,
                  "teacher": _teacher(row[teacher_field], f"{path}, row {i + 1}, field {teacher_field!r}")
                  if teacher_field else None}
        if system:
            record["system"] = system
        records.append(record)
        if num_prompts is not None and len(records) == num_prompts:
            break
    if duplicates:
        log.info("data: %d duplicate prompts dropped from %s", duplicates, path)
    return Records(records, duplicates)


def drop_too_long(records: list[dict], tokenizer, max_prompt_tokens: int) -> tuple[list[dict], dict]:
    """The records whose chat-templated prompt fits in `max_prompt_tokens`, and the data statistics
    (`data/dropped_too_long`, `data/duplicates`) for the log and W&B."""
    from dno.policy import prompt_ids

    duplicates = getattr(records, "duplicates", 0)
    kept = [r for r in records if len(prompt_ids(tokenizer, chat_prompt(r))) <= max_prompt_tokens]
    stats = {"data/dropped_too_long": len(records) - len(kept), "data/duplicates": duplicates}
    if stats["data/dropped_too_long"]:
        log.info("data: %d prompts longer than %d tokens dropped", stats["data/dropped_too_long"], max_prompt_tokens)
    return kept, stats
