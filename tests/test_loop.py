"""The smoke loop end to end through the real `dno-run`: outputs, W&B offline, resume, multirun (a run
killed and resumed, among other accidents: tests/test_cluster_accidents.py)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dno.runtime.files import read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, PairRow, Samples, read_rows
from helpers import SMOKE, VARIANTS_RUN, dno_run, make_cfg

pytestmark = pytest.mark.slow
STAGES = ["sample", "judge", "pairs", "reference", "train", "evaluate", "log"]


def without_times(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("time/")}


def weights(run_dir: Path, t: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"iter_{t}" / "checkpoint" / "model.safetensors")


def wandb_log(run_dir: Path) -> bytes:
    logs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert logs, f"no offline W&B run under {run_dir}"
    return b"".join(p.read_bytes() for p in logs)


def test_smoke_run_writes_the_run_directory_contract(smoke_run):
    d = smoke_run
    rows = read_jsonl(d / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("eval/win_rate_vs_init", "eval/win_rate_vs_prev", "eval/avg_length", "data/student_score_mean",
                    "data/student_len_words_mean", "pairs/student_over_student", "train/loss", "time/train_s",
                    "time/sample_tokens_per_s", "oracle/invalid_frac", "eval/lc_win_rate_vs_init"):
            assert key in r, key
        assert 0 <= r["eval/win_rate_vs_init"] <= 100
    assert rows[0]["pairs/total"] > 0 and rows[0]["train/steps"] > 0  # training really ran
    assert rows[1]["pairs/replayed"] == round(0.3 * rows[0]["pairs/new"])  # dno_prct replays 30% of t-1
    summary = json.loads((d / "summary.json").read_text())
    for key in ("alpaca_eval/win_rate", "alpaca_eval/lc_win_rate", "alpaca_eval/avg_length", "alpaca_eval/n_total",
                "final/best_iteration", "final/model"):
        assert key in summary
    assert summary["alpaca_eval/n_total"] == 8
    for t in (1, 2):
        assert (d / f"iter_{t}" / "checkpoint" / "config.json").exists()
        assert all((d / f"iter_{t}" / f"DONE.{s}").exists() for s in STAGES)
    assert not torch.equal(weights(d, 1)["model.embed_tokens.weight"], weights(d, 2)["model.embed_tokens.weight"])
    outputs = json.loads(RunDir(d).final.benchmark("local").model_outputs.read_text())
    assert len(outputs) == 8 and set(outputs[0]) == {"instruction", "output", "generator", "dataset"}
    logged = wandb_log(d)
    assert b"eval/win_rate_vs_init" in logged and b"alpaca_eval/lc_win_rate" in logged
    run_id = json.loads((d / "wandb_run.json").read_text())["id"]
    assert list(d.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))


def test_pairs_carry_reference_logps_of_pi_t(smoke_run):
    pairs = read_rows(RunDir(smoke_run).iteration(2).pairs, PairRow)
    assert pairs and all(p.ref_chosen_logps < 0 and p.ref_rejected_logps < 0 for p in pairs)
    assert {p.source_iteration for p in pairs} == {1, 2}  # new pairs plus replayed ones


def test_first_training_step_starts_at_log_2(smoke_run):
    # policy == reference at the start: reference log-probs come from the same forward as training
    # (train/loss is the mean over the iteration's steps: the later ones have moved away from it)
    first = read_jsonl(smoke_run / "metrics.jsonl")[0]
    assert first["train/first_step_loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_rerun_finishes_quickly_and_redoes_nothing(smoke_run, tmp_path):
    run_dir = tmp_path / "run"  # a copy (times kept): the shared run stays as it finished for the other tests
    shutil.copytree(smoke_run, run_dir)
    markers = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("DONE.*")}
    metrics = (run_dir / "metrics.jsonl").read_text()
    proc = dno_run(*SMOKE, f"hydra.run.dir={run_dir}")
    assert {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("DONE.*")} == markers
    assert len(markers) > 10 and (run_dir / "metrics.jsonl").read_text() == metrics
    assert "| 2 |" in proc.stdout  # the results table is printed again


def test_multirun_gives_one_wandb_run_per_job_in_one_group(smoke_sweep):
    jobs, sweep = smoke_sweep, smoke_sweep[0].parent
    assert len(jobs) == 2
    records = [json.loads((j / "wandb_run.json").read_text()) for j in jobs]
    assert records[0]["id"] != records[1]["id"]
    assert records[0]["group"] == records[1]["group"] == sweep.name  # the sweep's name, readable in W&B's UI
    assert "seed=0" in records[0]["name"] and "seed=1" in records[1]["name"]
    for j in jobs:
        assert str(sweep).encode() in wandb_log(j)  # the sweep's path reached W&B too (config: sweep_dir)
    assert read_rows(RunDir(jobs[0]).iteration(1).samples, Samples) != \
        read_rows(RunDir(jobs[1]).iteration(1).samples, Samples)


def test_every_variant_runs_the_loop_and_soft_losses_use_all_pairs(smoke_run, tmp_path):
    sweep = tmp_path / "losses"
    dno_run("-m", *SMOKE, f"loss={','.join(VARIANTS_RUN)}", "schedule.iterations=1", f"hydra.sweep.dir={sweep}")
    hard = read_jsonl(smoke_run / "metrics.jsonl")[0]
    k, prompts = 4, 6  # the smoke schedule
    seen = set()
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        loss = json.loads((job / "wandb_run.json").read_text())["name"].split("loss=")[1].split(",")[0]
        seen.add(loss)
        first = read_jsonl(job / "metrics.jsonl")[0]
        assert first["train/steps"] > 0 and (job / "summary.json").exists()
        if loss == "ipo":
            assert first["pairs/new"] == hard["pairs/new"]  # the same large-margin rules as dno_prct
            assert 0 < first["train/loss"] < (1 / (2 * 0.1)) ** 2  # starts at (0 - 5)^2 = 25 and falls
        elif loss == "best_vs_worst":  # the README's worked example: one pair per prompt, its largest margin
            pairs = read_rows(RunDir(job).iteration(1).pairs, PairRow)
            paper = [p for p in read_rows(RunDir(smoke_run).iteration(1).pairs, PairRow) if p.source_iteration == 1]
            by_prompt = {p.prompt.id: p for p in pairs}
            assert len(by_prompt) == len(pairs) == len({p.prompt.id for p in paper}) > 0
            for pid, pair in by_prompt.items():
                margins = [p.chosen_score - p.rejected_score for p in paper if p.prompt.id == pid]
                assert pair.chosen_score - pair.rejected_score == max(margins)
        else:
            assert first["pairs/new"] == prompts * k * (k - 1) // 2  # every pair of the K samples
    assert seen == set(VARIANTS_RUN) == {"dno", "ipo", "sppo", "best_vs_worst"}


def test_best_of_n_teacher_gives_teacher_pairs_and_is_computed_once(tmp_path):
    teachers = Path(make_cfg().cache_dir) / "teachers"  # the default cache_dir, shared by the tests
    args = [*SMOKE, "teacher=best_of_n", "teacher.n=3", "loss.pairs.teacher_margin=1", "schedule.iterations=1"]
    dno_run(*args, f"hydra.run.dir={tmp_path / 'a'}")
    cached = sorted(teachers.glob("best_of_3-*.json"))
    dno_run(*args, f"hydra.run.dir={tmp_path / 'b'}")
    assert sorted(teachers.glob("best_of_3-*.json")) == cached  # the second run reused the cache
    teacher_a = json.loads((tmp_path / "a" / "init" / "teacher.json").read_text())
    assert teacher_a == json.loads((tmp_path / "b" / "init" / "teacher.json").read_text())
    assert len(teacher_a) == 6  # every prompt of the (one) iteration
    judged = read_rows(RunDir(tmp_path / "a").iteration(1).judgements, Judged)
    assert all(row.prompt.teacher == teacher_a[row.prompt.id] == row.candidates[row.teacher_candidate]
               and len(row.candidates) == 4 + 1 for row in judged)
    first = read_jsonl(tmp_path / "a" / "metrics.jsonl")[0]
    assert "data/teacher_score_mean" in first and "data/best_of_n_win_rate" in first
    assert first["pairs/teacher_over_student"] + first["pairs/student_over_teacher"] > 0
