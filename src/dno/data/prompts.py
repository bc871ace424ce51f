"""Any prompt set through `datasets` (`data=prompts`): a local file or a hub dataset, fields mapped.

    dno-run data=prompts data.path=experiments/examples/prompts.jsonl
    dno-run data=prompts data.path=my/hub-dataset data.split=train data.prompt_field=messages
    dno-run data=prompts data.path=chats.jsonl data.prompt_field=messages data.teacher_field=messages

`path` is a `.json`/`.jsonl`/`.csv`/`.parquet` file, a directory written by `save_to_disk`, or a
hub dataset id (with `name`, `split`, `revision`). `prompt_field` holds a string or a chat
`messages` list ([{role, content}, ...]): an optional system turn, then user and assistant turns.
A messages list that ends with an assistant turn (the hub's most common chat format) is a prompt of
every turn before that last assistant turn, and with `teacher_field` naming the same field, that
turn is the teacher's answer. A prompt with earlier turns (user, assistant, user) goes whole
through the chat template. `id_field` is optional (a stable hash of the prompt otherwise);
`teacher_field` holds the teacher's answer as a string, or as a messages list whose last assistant
turn is the answer. Duplicate prompts are dropped and counted; prompts too long for the model are
dropped later, when the tokenizer is known (`drop_too_long`, called by `dno.run.Run.build`).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from dno.data import Prompt

log = logging.getLogger(__name__)
BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class Records(list):
    """The prompts, and how many duplicate prompts were dropped while reading them."""

    def __init__(self, records: list[Prompt], duplicates: int = 0) -> None:
        super().__init__(records)
        self.duplicates = duplicates


@dataclass(frozen=True)
class PromptFile:
    """`data=prompts`: where the prompts are and which fields hold what (the config keys of these names)."""

    path: str  # a .json/.jsonl/.csv/.parquet file, a save_to_disk directory, or a hub dataset id
    name: str | None = None  # the hub dataset's config name
    split: str = "train"  # the split to read (a local file has one: train)
    revision: str | None = None  # a hub commit, for exact reproduction
    num_prompts: int | None = None  # at most this many distinct prompts (None: all)
    prompt_field: str = "prompt"  # a string, or a messages list
    id_field: str | None = None  # None: a stable hash of the prompt
    teacher_field: str | None = None  # the teacher's answer: a string, or a messages list's last assistant turn

    def __call__(self) -> Records:
        """The prompts, duplicates dropped."""
        ds = _dataset(self.path, self.name, self.split, self.revision)
        for key in ("prompt_field", "id_field", "teacher_field"):
            if getattr(self, key) is not None and getattr(self, key) not in ds.column_names:
                raise ValueError(f"data.{key}={getattr(self, key)!r} is not a field of {self.path} "
                                 f"(fields: {ds.column_names})")
        records, seen, duplicates = [], set(), 0
        for i, row in enumerate(ds):
            prompt = self.prompt(row, f"{self.path}, row {i + 1}")
            key = tuple((m["role"], m["content"]) for m in prompt.messages)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            records.append(prompt)
            if self.num_prompts is not None and len(records) == self.num_prompts:
                break
        if duplicates:
            log.info("data: %d duplicate prompts dropped from %s", duplicates, self.path)
        return Records(records, duplicates)

    def prompt(self, row: dict, where: str) -> Prompt:
        messages, answer = _turns(row[self.prompt_field], f"{where}, field {self.prompt_field!r}")
        if not messages[-1]["content"].strip():
            raise ValueError(f"{where}, field {self.prompt_field!r}: the prompt is empty")
        teacher = None
        if self.teacher_field == self.prompt_field:
            teacher = answer
        elif self.teacher_field:
            teacher = _teacher(row[self.teacher_field], f"{where}, field {self.teacher_field!r}")
        pid = str(row[self.id_field]) if self.id_field else _hash_id(messages)
        return Prompt(pid, messages, teacher=teacher or None)


def _hash_id(messages: list[dict]) -> str:
    """A stable id of a prompt: of (system, instruction) for one user turn (the ids of earlier versions), else
    of the whole conversation."""
    prompt = Prompt("?", messages)
    key = (prompt.system, prompt.instruction) if len(prompt.turns) == 1 else [(m["role"], m["content"])
                                                                               for m in messages]
    return hashlib.sha1(repr(key).encode()).hexdigest()[:16]


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


def _turns(value, where: str) -> tuple[list[dict], str | None]:
    """(prompt messages, the answer that followed them or None) of a string or a messages list: a list that
    ends with an assistant turn is the prompt of the turns before it, and that turn its answer."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}], None
    if not (isinstance(value, list) and value
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)):
        raise ValueError(f"{where}: expected a string or a list of {{role, content}} messages, got {value!r:.120}")
    messages = [{"role": m["role"], "content": m["content"]} for m in value]
    answer = messages.pop()["content"] if messages[-1]["role"] == "assistant" else None
    roles = [m["role"] for m in messages]
    if not roles or roles[-1] != "user" or any(r not in ("system", "user", "assistant") for r in roles) \
            or "system" in roles[1:]:
        raise ValueError(f"{where}: a prompt is an optional system turn, then user and assistant turns ending with "
                         f"a user turn (and its answer, when the list ends with one); roles: "
                         f"{[m['role'] for m in value]}")
    return messages, answer


def _teacher(value, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    answers = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
    if not answers:
        raise ValueError(f"{where}: the teacher's answer is a messages list without an assistant turn")
    return answers[-1]


def drop_too_long(records: list[Prompt], tokenizer, max_prompt_tokens: int) -> tuple[list[Prompt], dict]:
    """The records whose chat-templated prompt fits in `max_prompt_tokens`, and the data statistics
    (`data/dropped_too_long`, `data/duplicates`) for the log and W&B."""
    duplicates = getattr(records, "duplicates", 0)
    kept = [r for r in records if len(prompt_ids(tokenizer, r.messages)) <= max_prompt_tokens]
    stats = {"data/dropped_too_long": len(records) - len(kept), "data/duplicates": duplicates}
    if stats["data/dropped_too_long"]:
        log.info("data: %d prompts longer than %d tokens dropped", stats["data/dropped_too_long"], max_prompt_tokens)
    return kept, stats


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of the chat-templated prompt: a user instruction, or a list of messages."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
