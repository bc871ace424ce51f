"""The typed rows of a run's files (dno.stages.records): round trips, the teacher's candidate named in the row,
rows of the formats of earlier versions read into today's types, and clear errors for rows this code cannot
read."""

from __future__ import annotations

import pytest

from dno.data import Prompt
from dno.oracles.base import Judgement
from dno.runtime.files import write_jsonl
from dno.stages.records import VERSION, Judged, PairRow, RecordError, Samples, Validation, read_rows, write_rows

FISH = Prompt.of("a", "Name a fish.", "Be brief.", teacher="A cod.", meta={"keywords": ["fish"]})


def test_rows_round_trip_through_their_files(tmp_path):
    samples = [Samples(FISH, ["Salmon.", "Trout."])]
    judged = [Judged.of(samples[0], Judgement(scores=[5.0, 3.0, 6.0]))]
    pairs = [PairRow(FISH, "A cod.", "Trout.", 1.0, 0.0, "teacher_over_student", 1, 6.0, 3.0, -4.5, -7.25)]
    checks = [Validation("a", 1.0, None)]
    for rows, kind in ((samples, Samples), (judged, Judged), (pairs, PairRow), (checks, Validation)):
        write_rows(tmp_path / "rows.jsonl", rows)
        assert read_rows(tmp_path / "rows.jsonl", kind) == rows
        assert (tmp_path / "rows.jsonl").read_text().count(f'"version": {VERSION}') == len(rows)


def test_the_teachers_candidate_is_named_in_the_row_not_found_by_position():
    judged = Judged.of(Samples(FISH, ["Salmon.", "Trout."]), Judgement(scores=[5.0, 3.0, 6.0]))
    assert judged.candidates == ["Salmon.", "Trout.", "A cod."] and judged.teacher_candidate == 2
    assert judged.responses == ["Salmon.", "Trout."] and [judged.is_teacher(i) for i in range(3)] == [0, 0, 1]
    assert judged.win_probs == [0.5, 0.0, 1.0]  # r_t of each candidate: its share of wins against the others
    moved = Judged(FISH, ["A cod.", "Salmon."], 0, Judgement(scores=[6.0, 5.0]), [1.0, 0.0])  # anywhere it is named
    assert moved.responses == ["Salmon."] and moved.is_teacher(0)
    alone = Judged.of(Samples(Prompt.of("b", "Hi."), ["x", "y"]), Judgement(scores=[1.0, 2.0]))
    assert alone.teacher_candidate is None and alone.responses == ["x", "y"]


def test_rows_written_by_earlier_versions_read_into_todays_types(tmp_path):
    """A run directory made before prompts were messages (format 2) or before names followed the paper (1)."""
    flat = {"id": "a", "instruction": "Name a fish.", "system": "Be brief.", "teacher": "A cod.", "keywords": ["fish"]}
    write_jsonl(tmp_path / "samples.jsonl", [{**flat, "teacher": None, "gold": "A cod.", "responses": ["Salmon."]}])
    assert read_rows(tmp_path / "samples.jsonl", Samples) == [Samples(FISH, ["Salmon."])]
    judgement = Judgement(scores=[5.0, 6.0]).to_dict()
    write_jsonl(tmp_path / "judgements.jsonl", [
        {"version": 2, **flat, "responses": ["Salmon."], "candidates": ["Salmon.", "A cod."], "judgement": judgement,
         "win_probs": [0.0, 1.0]},
        {"id": "b", "instruction": "Hi.", "responses": ["x", "y"], "candidates": ["x", "y"], "judgement": judgement,
         "win_rates": [0.0, 1.0]}])  # format 1: win_rates, no teacher
    old, plain = read_rows(tmp_path / "judgements.jsonl", Judged)
    assert old.prompt == FISH and old.teacher_candidate == 1 and old.responses == ["Salmon."]
    assert plain.teacher_candidate is None and plain.win_probs == [0.0, 1.0] and plain.prompt == Prompt.of("b", "Hi.")
    write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt_id": "a", "instruction": "Name a fish.", "chosen": "x", "rejected": "y", "chosen_win_rate": 1.0,
         "rejected_win_rate": 0.0, "ref_logp_chosen": -3.0, "ref_logp_rejected": -4.0, "type": "student_over_student",
         "source_iteration": 1},
        {"version": 2, "prompt_id": "b", "instruction": "Hi.", "system": "S.", "chosen": "x", "rejected": "y",
         "chosen_win_prob": 0.75, "rejected_win_prob": 0.25, "chosen_score": 5.0, "rejected_score": 2.0,
         "type": "student_over_student", "source_iteration": 2}])
    assert read_rows(tmp_path / "pairs.jsonl", PairRow) == [
        PairRow(Prompt.of("a", "Name a fish."), "x", "y", 1.0, 0.0, "student_over_student", 1, None, None, -3.0, -4.0),
        PairRow(Prompt.of("b", "Hi.", "S."), "x", "y", 0.75, 0.25, "student_over_student", 2, 5.0, 2.0)]
    write_jsonl(tmp_path / "eval_judgements.jsonl", [{"id": "a", "vs_init": 1.0, "vs_prev": 0.5}])
    assert read_rows(tmp_path / "eval_judgements.jsonl", Validation) == [Validation("a", 1.0, 0.5)]


def test_a_row_newer_than_the_code_or_with_an_unknown_field_is_a_clear_error(tmp_path):
    path = tmp_path / "pairs.jsonl"
    row = PairRow(FISH, "x", "y", 1.0, 0.0, "student_over_student", 1).to_json()
    write_jsonl(path, [row, {**row, "version": VERSION + 1}])
    with pytest.raises(RecordError, match=rf"pairs.jsonl, row 2: format version {VERSION + 1}, but this code reads "
                                          rf"versions 1 to {VERSION}: update dno"):
        read_rows(path, PairRow)
    write_jsonl(path, [row, {**row, "chosen_win_rate": 1.0}])  # a misspelled field fails loudly
    with pytest.raises(RecordError, match="pairs.jsonl, row 2: not a PairRow row: unknown field 'chosen_win_rate'"):
        read_rows(path, PairRow)
    write_jsonl(path, [{k: v for k, v in row.items() if k != "rejected"}])
    with pytest.raises(RecordError, match="row 1: not a PairRow row: .*rejected"):
        read_rows(path, PairRow)
    with pytest.raises(TypeError, match="chosen_win_rate"):  # and so does a misspelled field in code
        PairRow(FISH, "x", "y", chosen_win_rate=1.0)


def test_a_prompt_is_a_conversation_that_ends_with_a_user_turn():
    two = Prompt("c", [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                       {"role": "user", "content": "Bye?"}])
    assert two.instruction == "Bye?" and two.system is None and len(two.turns) == 3
    assert two.as_text() == "[user]\nHi.\n\n[assistant]\nHello.\n\n[user]\nBye?"
    assert FISH.as_text() == "Name a fish." and FISH.system == "Be brief."
    for bad in ([], [{"role": "assistant", "content": "x"}], [{"role": "user", "content": "x"},
                                                              {"role": "system", "content": "y"},
                                                              {"role": "user", "content": "z"}]):
        with pytest.raises(ValueError, match="ending with a user turn"):
            Prompt("d", bad)
