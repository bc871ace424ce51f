"""data=prompts: any prompt set through `datasets`, with field mapping, counted drops and clear errors."""

from __future__ import annotations

import json

import pytest

from dno.data import Prompt
from dno.data.prompts import PromptFile, drop_too_long
from dno.policy.load import load_tokenizer, prompt_ids
from dno.runtime.files import read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import PairRow, read_rows
from helpers import SMOKE, TOKENIZER, dno_run, make_cfg

SYSTEM = "You answer like a pirate."
ROWS = [
    {"id": "a", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a fish."}],
     "answer": [{"role": "user", "content": "Name a fish."}, {"role": "assistant", "content": "A cod, arr."}]},
    {"id": "b", "messages": [{"role": "user", "content": "Name a bird."}], "answer": "A robin."},
    {"id": "c", "messages": [{"role": "user", "content": "Name a bird."}], "answer": None},  # a duplicate
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def load_prompts(path: str, **fields) -> list[Prompt]:
    return PromptFile(path, **fields)()


def test_messages_with_a_system_turn_an_id_and_teacher_answers_in_both_forms(tmp_path):
    records = load_prompts(str(write(tmp_path / "p.jsonl", ROWS)), prompt_field="messages", id_field="id",
                           teacher_field="answer")
    assert records == [
        Prompt.of("a", "Name a fish.", SYSTEM, teacher="A cod, arr."),
        Prompt.of("b", "Name a bird.", teacher="A robin."),
    ]
    assert records.duplicates == 1
    assert records[0].messages == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a fish."}]


CHATS = [  # the hub's most common chat format: one `messages` column that ends with the assistant's answer
    {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Name a fish."},
                  {"role": "assistant", "content": "A cod, arr."}]},
    {"messages": [{"role": "user", "content": "Name a bird."}, {"role": "assistant", "content": "A robin."},
                  {"role": "user", "content": "And another?"}, {"role": "assistant", "content": "A wren."}]},
]


def test_one_messages_column_gives_the_prompt_and_the_teachers_answer(tmp_path):
    """data.prompt_field=messages data.teacher_field=messages: every turn before the last assistant turn is the
    prompt, and that turn is the teacher's answer (issue 14's format, refused before prompts were messages)."""
    records = load_prompts(str(write(tmp_path / "chats.jsonl", CHATS)), prompt_field="messages",
                           teacher_field="messages")
    fish, bird = records
    assert (fish.system, fish.instruction, fish.teacher) == (SYSTEM, "Name a fish.", "A cod, arr.")
    assert [m["role"] for m in bird.messages] == ["user", "assistant", "user"] and bird.teacher == "A wren."
    assert bird.instruction == "And another?" and bird.system is None
    without = load_prompts(str(tmp_path / "chats.jsonl"), prompt_field="messages")  # the answer is not a teacher's
    assert [p.messages for p in without] == [p.messages for p in records] and without[0].teacher is None


def test_a_prompt_with_earlier_turns_goes_whole_through_the_chat_template(tmp_path):
    tok = load_tokenizer(TOKENIZER, make_cfg().cache_dir)
    (_, bird) = load_prompts(str(write(tmp_path / "chats.jsonl", CHATS)), prompt_field="messages",
                             teacher_field="messages")
    text = tok.decode(prompt_ids(tok, bird.messages))
    assert text.index("Name a bird.") < text.index("A robin.") < text.index("And another?")
    assert "A wren." not in text and text.rstrip().endswith("assistant")  # the model answers the last user turn
    assert "[assistant]\nA robin." in bird.as_text()  # what a judge is shown: the conversation, then the instruction


def test_every_file_format_gives_the_same_records(tmp_path):
    import pandas as pd
    from datasets import Dataset

    rows = [{"prompt": f"Say {w}.", "gold": f"{w}!"} for w in ("yes", "no", "maybe")]
    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "p.parquet")
    (tmp_path / "p.json").write_text(json.dumps(rows))
    write(tmp_path / "p.jsonl", rows)
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    expected = load_prompts(str(tmp_path / "p.jsonl"), teacher_field="gold")
    assert [r.instruction for r in expected] == ["Say yes.", "Say no.", "Say maybe."]
    # a stable hash of the prompt, the one of the versions before prompts were messages
    assert expected[0].id == load_prompts(str(tmp_path / "p.jsonl"))[0].id == "db6cbf49e9aa61a5"
    assert len({r.id for r in expected}) == 3
    for name in ("p.csv", "p.parquet", "p.json", "saved"):
        assert load_prompts(str(tmp_path / name), teacher_field="gold") == expected, name
    assert len(load_prompts(str(tmp_path / "p.jsonl"), num_prompts=2)) == 2


@pytest.mark.parametrize("rows,kwargs,message", [
    ([{"prompt": "Hi."}], {"prompt_field": "question"}, "data.prompt_field='question' is not a field of"),
    ([{"prompt": "Hi."}], {"teacher_field": "gold"}, "data.teacher_field='gold' is not a field of"),
    ([{"prompt": "Hi."}, {"prompt": "  "}], {}, "p.jsonl, row 2, field 'prompt': the prompt is empty"),
    ([{"prompt": "Hi."}, {"prompt": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                                     {"role": "user", "content": "c"}]}], {},
     "p.jsonl, row 2, field 'prompt': a prompt is an optional system turn, then user and assistant turns"),
    ([{"prompt": [{"role": "assistant", "content": "only an answer"}]}], {},
     "p.jsonl, row 1, field 'prompt': a prompt is an optional system turn"),
    ([{"prompt": "Hi.", "gold": [{"role": "user", "content": "x"}]}], {"teacher_field": "gold"},
     "p.jsonl, row 1, field 'gold': the teacher's answer is a messages list without an assistant turn"),
])
def test_bad_rows_name_the_file_row_and_field(tmp_path, rows, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_prompts(str(write(tmp_path / "p.jsonl", rows)), **kwargs)


def test_a_file_that_is_not_what_its_extension_says_is_a_clear_error(tmp_path):
    (tmp_path / "p.parquet").write_text('{"prompt": "not parquet"}\n')
    with pytest.raises(ValueError, match=r"data.path=.*p.parquet: could not be read as parquet"):
        load_prompts(str(tmp_path / "p.parquet"))
    (tmp_path / "p.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a file this loader reads"):
        load_prompts(str(tmp_path / "p.txt"))
    with pytest.raises(ValueError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"))


def test_the_chat_template_gets_the_system_turn_and_long_prompts_are_dropped():
    tok = load_tokenizer(TOKENIZER, make_cfg().cache_dir)
    text = tok.decode(prompt_ids(tok, Prompt.of("f", "Name a fish.", SYSTEM).messages))
    assert SYSTEM in text and text.index(SYSTEM) < text.index("Name a fish.")
    plain = tok.decode(prompt_ids(tok, Prompt.of("f", "Name a fish.").messages))
    assert SYSTEM not in plain
    records = [Prompt.of("s", "Hi."), Prompt.of("l", "word " * 300)]
    kept, stats = drop_too_long(records, tok, 100)
    assert [r.id for r in kept] == ["s"] and stats == {"data/dropped_too_long": 1, "data/duplicates": 0}


@pytest.mark.slow
def test_own_prompts_through_the_loop_with_counted_drops(tmp_path):
    rows = [{"id": f"q{i}", "messages": ([{"role": "system", "content": SYSTEM}] if i % 2 else [])
             + [{"role": "user", "content": f"Give one fact about the number {i}."}]} for i in range(30)]
    rows += [dict(rows[0], id="dup"), {"id": "long", "messages": [{"role": "user", "content": "word " * 400}]}]
    data = write(tmp_path / "mine.jsonl", rows)
    args = [*SMOKE, "data=prompts", f"data.path={data}", "data.prompt_field=messages", "data.id_field=id",
            "schedule.iterations=1"]
    dno_run(*args, f"hydra.run.dir={tmp_path / 'run'}")
    run = RunDir(tmp_path / "run")
    first = read_jsonl(run.metrics)[0]
    assert first["data/duplicates"] == 1 and first["data/dropped_too_long"] == 1
    pairs = read_rows(run.iteration(1).pairs, PairRow)
    systems = {p.prompt.id: p.prompt.system for p in pairs}
    assert pairs and all((s == SYSTEM) == (int(pid[1:]) % 2 == 1) for pid, s in systems.items())


@pytest.mark.parametrize("extra,message", [
    ([{"id": "bad", "messages": [{"role": "user", "content": ""}]}],
     "mine.jsonl, row 31, field 'messages': the prompt is empty"),
    ([], "the data has 30 prompts but the schedule needs 94"),
])
def test_a_run_on_bad_or_too_few_prompts_is_not_built(tmp_path, extra, message):
    """What dno-run turns into exit 2 (a ConfigError), before any compute; nothing is written."""
    from dno.run import Run
    from dno.runtime.config import ConfigError

    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"Fact {i}?"}]} for i in range(30)]
    data = write(tmp_path / "mine.jsonl", rows + extra)
    cfg = make_cfg(*SMOKE, "data=prompts", f"data.path={data}", "data.prompt_field=messages",
                   *(["schedule.prompts_per_iteration=40"] if not extra else []))
    with pytest.raises(ConfigError, match=message):
        Run.build(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
