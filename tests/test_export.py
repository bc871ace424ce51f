"""dno-export: a run's per-iteration pairs and samples as a datasets DatasetDict in TRL's format,
read back with load_from_disk and load_dataset, trained on by TRL's DPOTrainer; W&B Tables."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
from datasets import load_dataset, load_from_disk

from dno.reports.export import export_run
from dno.runtime.config import ConfigError
from dno.runtime.files import read_jsonl, write_json, write_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, read_rows
from helpers import run


def judgement(pid: str, instruction: str, responses: list[str], **extra) -> dict:
    return {"version": 2, "id": pid, "instruction": instruction, "teacher": None, "responses": responses,
            "candidates": responses, "judgement": {"scores": [5.0, 2.0], "status": "ok", "raw": "[5, 2]"},
            "win_probs": [1.0, 0.0], **extra}


def pair(pid: str, instruction: str, t: int, **extra) -> dict:
    return {"version": 2, "prompt_id": pid, "instruction": instruction, "chosen": f"good {pid}",
            "rejected": f"bad {pid}", "chosen_score": 5.0, "rejected_score": 2.0, "chosen_win_prob": 1.0,
            "rejected_win_prob": 0.0, "type": "student_over_student", "source_iteration": t, **extra}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run directory written by hand in the format of version 2 (before prompts were messages): iteration 1
    (two prompts, one with a system turn), iteration 2 (one new pair and one replayed from iteration 1),
    iteration 3 unfinished (no DONE.pairs)."""
    d = tmp_path / "run"
    write_jsonl(d / "iter_1" / "judgements.jsonl", [judgement("a", "Say hi.", ["hi", "no"]),
                                                     judgement("b", "Add.", ["2", "x"], system="Be brief.")])
    write_jsonl(d / "iter_1" / "pairs.jsonl", [pair("a", "Say hi.", 1, ref_chosen_logps=-3.5, ref_rejected_logps=-2.0),
                                               pair("b", "Add.", 1, system="Be brief.")])
    write_jsonl(d / "iter_2" / "judgements.jsonl", [judgement("c", "Name a colour.", ["red", "??"])])
    write_jsonl(d / "iter_2" / "pairs.jsonl", [pair("c", "Name a colour.", 2), pair("a", "Say hi.", 1)])
    for t in (1, 2):
        write_json(d / f"iter_{t}" / "DONE.pairs", {"pairs/total": 2})
    write_jsonl(d / "iter_3" / "judgements.jsonl", [judgement("d", "Wait.", ["ok", "no"])])
    return d


def test_pairs_in_trl_conversational_format(run_dir, tmp_path):
    counts = export_run(run_dir, tmp_path / "out")
    assert counts == {"pairs": {"iter_1": 2, "iter_2": 2}, "samples": {"iter_1": 2, "iter_2": 1}}
    pairs = load_from_disk(str(tmp_path / "out" / "pairs"))
    assert list(pairs) == ["iter_1", "iter_2"]
    a, b = pairs["iter_1"]
    assert a["prompt"] == [{"role": "user", "content": "Say hi."}]
    assert b["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add."}]
    assert a["chosen"] == [{"role": "assistant", "content": "good a"}]
    assert a["rejected"] == [{"role": "assistant", "content": "bad a"}]
    assert (a["chosen_win_prob"], a["rejected_win_prob"], a["pi_t_chosen_logps"], b["pi_t_chosen_logps"]) == \
        (1.0, 0.0, -3.5, None)
    replayed = pairs["iter_2"][1]
    assert (replayed["prompt_id"], replayed["iteration"], replayed["source_iteration"]) == ("a", 2, 1)
    samples = load_from_disk(str(tmp_path / "out" / "samples"))
    s = samples["iter_1"][1]
    assert (s["responses"], s["scores"], s["win_probs"]) == (["2", "x"], [5.0, 2.0], [1.0, 0.0])
    assert s["judge_raw"] == "[5, 2]" and s["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert s["candidates"] == ["2", "x"] and s["teacher_candidate"] is None


def test_parquet_and_card_load_like_the_hub(run_dir, tmp_path):
    out = tmp_path / "out"
    export_run(run_dir, out)
    assert sorted(p.name for p in (out / "data" / "pairs").iterdir()) == ["iter_1.parquet", "iter_2.parquet"]
    cache = str(tmp_path / "hf-cache")  # datasets' cache knows a folder by its name: keep this test's own
    pairs = load_dataset(str(out), "pairs", cache_dir=cache)  # the card's configs: header maps splits to the files
    assert {k: len(v) for k, v in pairs.items()} == {"iter_1": 2, "iter_2": 2}
    assert pairs["iter_1"].to_list() == load_from_disk(str(out / "pairs"))["iter_1"].to_list()
    assert len(load_dataset(str(out), "samples", split="iter_2", cache_dir=cache)) == 1
    card = (out / "README.md").read_text()
    assert "| iter_1 | 2 | 2 |" in card and "not recorded" in card  # no .hydra/ in a hand-made run


def test_bad_runs_are_config_errors(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="no such run directory"):
        export_run(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no iteration has finished"):
        export_run(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ConfigError, match="inside the run directory"):
        export_run(run_dir, run_dir / "export")
    assert not (run_dir / "export").exists()


@pytest.mark.slow
def test_export_of_a_real_run_trains_trl(smoke_run, tmp_path):
    """dno-export on the smoke run as a user types it; one step of TRL's DPOTrainer on iteration 1."""
    out = tmp_path / "export"
    run(["dno-export", f"run={smoke_run}", f"out={out}"], timeout=120)
    pairs = load_from_disk(str(out / "pairs"))
    for t in (1, 2):
        assert len(pairs[f"iter_{t}"]) == len(read_jsonl(smoke_run / f"iter_{t}" / "pairs.jsonl")) == \
            json.loads((smoke_run / f"iter_{t}" / "DONE.pairs").read_text())["pairs/total"]
        assert len(load_from_disk(str(out / "samples"))[f"iter_{t}"]) == 6  # schedule=smoke: 6 prompts
    card = (out / "README.md").read_text()
    assert "`tiny-random-llama`" in card and "loss=dno_prct" in card and "2 iterations" in card

    from trl import DPOConfig, DPOTrainer

    from dno.policy.load import load_model, load_tokenizer
    from helpers import SMOKE, make_cfg

    cfg = make_cfg(*SMOKE)
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, max_steps=1, report_to=[],
                     save_strategy="no", use_cpu=True, learning_rate=1e-3, disable_tqdm=True, max_length=256,
                     precompute_ref_log_probs=True)  # the reference is pi_1 itself (no hub path to load it from)
    trainer = DPOTrainer(model=model, args=args, train_dataset=pairs["iter_1"], processing_class=tok)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss == pytest.approx(0.6931, abs=1e-3)  # log 2 at pi_1
    assert any(not (v == before[k]).all() for k, v in model.state_dict().items())


@pytest.mark.slow
def test_wandb_tables_and_pairs_artifact(smoke_run):
    """The smoke run's offline W&B files hold samples/iter_<t> and eval/answers tables, and the pairs by reference."""
    (run,) = glob.glob(str(smoke_run / "wandb" / "offline-run-*"))  # the one W&B run of the one uninterrupted run
    for t in (1, 2):
        (table,) = glob.glob(f"{run}/files/media/table/samples/iter_{t}_*.table.json")
        data = json.loads(Path(table).read_text())
        assert data["columns"] == ["prompt_id", "prompt", "k", "response", "teacher", "score", "win_prob",
                                   "judge_status"]
        judged = read_rows(RunDir(smoke_run).iteration(t).judgements, Judged)
        assert len(data["data"]) == sum(len(j.candidates) for j in judged) == 24  # no teacher: the 4 answers
        first = judged[0]
        assert data["data"][0][:5] == [first.prompt.id, first.prompt.instruction, 0, first.responses[0], False]
        assert data["data"][0][6] == first.win_probs[0]
    answers = glob.glob(f"{run}/files/media/table/eval/answers_*.table.json")  # once per run of the command
    annotations = json.loads(RunDir(smoke_run).final.benchmark("local").annotations.read_text())
    assert answers
    for table in answers:
        rows = json.loads(Path(table).read_text())["data"]
        assert len(rows) == len(annotations) == 8 and rows[0][2] == annotations[0]["output_1"]
    log = b"".join(Path(p).read_bytes() for p in glob.glob(f"{run}/run-*.wandb"))
    for t in (1, 2):
        assert (smoke_run / f"iter_{t}" / "pairs.jsonl").resolve().as_uri().encode() in log


@pytest.mark.slow
def test_an_iterations_pairs_hold_its_replayed_ones_with_pi_t_as_their_reference(smoke_run, tmp_path):
    """docs/guides/own-data.md: split iter_2 holds pairs replayed from iteration 1, whose pi_t log-probs are pi_2's
    (computed again), not the ones iteration 1 stored under pi_1."""
    export_run(smoke_run, tmp_path / "out")
    pairs = load_from_disk(str(tmp_path / "out" / "pairs"))
    key = ("prompt_id", "chosen", "rejected")
    first = {tuple(str(r[k]) for k in key): r["pi_t_chosen_logps"] for r in pairs["iter_1"]}
    replayed = [r for r in pairs["iter_2"] if r["source_iteration"] == 1]
    assert replayed and len(replayed) < len(pairs["iter_2"]) and all(r["iteration"] == 2 for r in replayed)
    for r in replayed:
        assert r["pi_t_chosen_logps"] != pytest.approx(first[tuple(str(r[k]) for k in key)], abs=1e-4)

