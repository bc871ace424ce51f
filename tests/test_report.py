"""dno-report on a real offline sweep (two values of loss.beta x two seeds on tiny_random): the runs' W&B config holds
the comparison axes (read back from the offline .wandb files), the report's specification names exactly the runs of
the sweep, every metric a panel draws is in those runs' W&B files, the report groups by what the sweep varied (two
groups of two runs, seeds pooled) and names the values, group_by= chooses another grouping and a key of no run
stops it, what is missing is reported, the spec round-trips through wandb-workspaces' own models, publish=true
without a key exits 2 before anything else."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dno.runtime.files import read_json, read_jsonl, write_jsonl
from dno.runtime.layout import RunDir
from helpers import BETA_SWEEP, REPO, dno_run, run, wandb_history, wandb_records

pytestmark = pytest.mark.slow
AXES = ("method", "model", "oracle", "loss", "schedule", "data", "teacher", "benchmarks", "seed", "overrides")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("report") / "sweep"
    dno_run(*BETA_SWEEP, f"hydra.sweep.dir={sweep}")  # the W&B reports guide's sweep
    return sweep


def jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if RunDir(p).metrics.exists())


def wandb_run_record(job: Path):
    """The offline W&B run record: its config, group, job type, tags."""
    return next(r.run for r in wandb_records(job) if r.WhichOneof("record_type") == "run")


def wandb_config(job: Path) -> dict:
    return {item.key: json.loads(item.value_json) for item in wandb_run_record(job).config.update}


def wandb_summary_keys(job: Path) -> set[str]:
    return {item.key or "/".join(item.nested_key) for r in wandb_records(job)
            if r.WhichOneof("record_type") == "summary" for item in r.summary.update}


def report(sweep: Path, out: Path, *extra: str, check: bool = True, env: dict | None = None):
    return run(["dno-report", f"runs={sweep}", f"hydra.run.dir={out}", "lc_samples=3", *extra], check=check,
               env=env, timeout=300)


def test_every_run_logs_the_axes_users_group_by_as_plain_top_level_keys(sweep):
    for job in jobs(sweep):
        config = wandb_config(job)
        for key in AXES:
            assert key in config and not isinstance(config[key], dict | list), key
        overrides = OmegaConf.load(RunDir(job).hydra_settings).hydra.overrides.task
        assert config["overrides"] == " ".join(overrides) and f"seed={config['seed']}" in overrides
        assert config["model"] == "tiny_random" and config["oracle"] == "rules" and config["benchmarks"] == "local"
        assert config["method"] == config["loss"] == "dno_prct" and config["seed"] in (0, 1)
        assert f"loss.beta={config['cfg']['loss']['beta']}" in overrides
        assert config["cfg"]["schedule"]["iterations"] == 1  # the composed config, nested under cfg
        record = wandb_run_record(job)
        assert record.run_group == sweep.name and record.job_type == "dno-run"  # the sweep's name, not its path
        assert config["sweep_dir"] == str(sweep.resolve())


def test_the_report_names_exactly_the_sweeps_runs_and_draws_what_they_logged(sweep, tmp_path):
    report(sweep, tmp_path / "report", "workspace=true")
    spec = read_json(tmp_path / "report" / "report.json")
    check = read_json(tmp_path / "report" / "report_check.json")
    ids = {read_json(RunDir(j).wandb_run)["id"]: j for j in jobs(sweep)}
    grids = [b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid"]
    for grid in grids:
        runset = grid["metadata"]["runSets"][0]
        (only,) = runset["filters"]["filters"]
        assert only["key"] == {"section": "run", "name": "name"} and only["op"] == "IN"
        assert sorted(only["value"]) == sorted(ids)  # exactly the sweep's runs, by their W&B ids
        assert runset["grouping"] == [{"section": "config", "name": "cfg.value.loss.beta"}]  # W&B's cfg.loss.beta
    betas = {}
    for job in ids.values():
        betas.setdefault(wandb_config(job)["cfg"]["loss"]["beta"], []).append(job.name)
        history = set().union(*(row.keys() for row in wandb_history(job)))
        for metrics in check["per_iteration"].values():
            assert set(metrics) <= history, (job, set(metrics) - history)
        for metrics in check["final"].values():
            assert set(metrics) <= wandb_summary_keys(job)
    # what the sweep varied, seeds pooled: two groups of two runs, seeds 0 and 1 in each, named by their values
    assert check["group_by"] == ["loss.beta"] and check["wandb_groupby"] == ["cfg.loss.beta"]
    assert {k: sorted(v) for k, v in check["groups"].items()} == {f"loss.beta={b}": sorted(v) for b, v in betas.items()}
    assert sorted(betas) == [0.05, 0.1] and [len(v) for v in betas.values()] == [2, 2]
    for label, names in check["groups"].items():
        assert sorted(r["seed"] for r in check["runs"] if r["name"] in names) == [0, 1], label
    assert spec["displayName"] == f"DNO: {sweep.name}: loss.beta=0.05 vs loss.beta=0.1" and check["notes"] == []
    drawn = [p for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    plotted = {m for p in drawn if p["viewType"] == "Run History Line Plot" for m in p["config"]["metrics"]}
    assert plotted == set().union(*map(set, check["per_iteration"].values())) and "train/loss" in plotted
    markdown = [b["content"] for b in spec["spec"]["blocks"] if b["type"] == "markdown-block"]
    table1 = (tmp_path / "report" / "tables" / "table1.md").read_text()
    assert table1 in markdown and any("dno-run -m" in m and "loss.beta=0.05,0.1" in m for m in markdown)
    assert any("- `loss.beta=0.05`: 2 run(s), seed 0, 1" in m and "by loss.beta (what the sweep varied)" in m
               for m in markdown)
    workspace = read_json(tmp_path / "report" / "workspace.json")
    sections = workspace["spec"]["section"]["panelBankConfig"]["sections"]
    assert {s["name"] for s in sections} >= {"eval", "pairs", "train"}


def test_group_by_chooses_another_grouping_and_a_key_of_no_run_stops_before_the_tables(sweep, tmp_path):
    report(sweep, tmp_path / "method", "group_by=method")
    check = read_json(tmp_path / "method" / "report_check.json")
    assert check["group_by"] == ["method"] and list(check["groups"]) == ["method=dno_prct"]  # the betas pooled
    assert len(check["groups"]["method=dno_prct"]) == 4
    spec = read_json(tmp_path / "method" / "report.json")
    grid = next(b for b in spec["spec"]["blocks"] if b["type"] == "panel-grid")
    assert grid["metadata"]["runSets"][0]["grouping"] == [{"section": "config", "name": "method.value"}]
    proc = report(sweep, tmp_path / "typo", "group_by=loss.bta", check=False)
    assert proc.returncode == 2 and "group_by=loss.bta: loss.bta is neither a comparison axis" in proc.stderr
    assert not (tmp_path / "typo" / "tables").exists()


def test_the_spec_round_trips_through_wandb_workspaces_models(sweep, tmp_path):
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2.internal import ReportViewspec

    report(sweep, tmp_path / "report")
    text = (tmp_path / "report" / "report.json").read_text()
    model = ReportViewspec.model_validate_json(text)  # what the library would send, read by the library
    again = json.loads(wr.Report._from_model(model)._to_model().model_dump_json(by_alias=True, exclude_none=True))
    assert again["spec"]["blocks"] == json.loads(text)["spec"]["blocks"]


def test_a_run_without_wandb_and_a_metric_no_run_logged_are_reported(sweep, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    gone = jobs(copy)[-1]
    RunDir(gone).wandb_run.unlink()  # as logger=none leaves it
    for job in jobs(copy):  # runs from before the LC win-rate was logged
        rows = read_jsonl(RunDir(job).metrics)
        write_jsonl(RunDir(job).metrics, [{k: v for k, v in r.items() if k != "eval/lc_win_rate_vs_init"}
                                          for r in rows])
    proc = report(copy, tmp_path / "report")
    check = read_json(tmp_path / "report" / "report_check.json")
    assert len(check["runs"]) == 3 and f"{gone}: no W&B run (logger=none?): not in the report" in check["notes"]
    assert any(n.startswith("eval/lc_win_rate_vs_init: logged by no run") for n in check["notes"])
    assert "LC win-rate vs pi_1 (validation, %)" not in check["per_iteration"]
    assert "no W&B run" in proc.stdout  # said, not only written


def test_publish_without_a_key_exits_2_before_anything_else(sweep, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"HOME": str(tmp_path), "NETRC": str(tmp_path / "none"), "WANDB_CONFIG_DIR": str(tmp_path)})
    proc = run(["dno-report", f"runs={sweep}", f"hydra.run.dir={tmp_path / 'report'}", "publish=true"], check=False,
               env=env, timeout=120)
    assert proc.returncode == 2 and "publish=true needs a W&B API key" in proc.stderr
    assert not (tmp_path / "report" / "report.json").exists()


SEEDED = REPO / "results" / "table1_seeds"


def without_ids(spec, key: str = ""):
    """A report spec without the ids wandb-workspaces draws at random for each panel and runset."""
    if isinstance(spec, dict):
        return {k: without_ids(v, k) for k, v in spec.items() if k != "__id__" and not (key == "runSets" and k == "id")}
    if isinstance(spec, list):
        return [without_ids(v, key) for v in spec]
    return spec


@pytest.mark.experiment  # about a minute: with the experiments' tests (make test-experiments), not make test
def test_the_committed_seeded_report_is_the_report_of_the_committed_runs(tmp_path):
    """results/table1_seeds/report/ is what dno-report builds from the seeded Table 1 sweep's runs, whose records
    are committed beside it (results/table1_seeds/runs/, experiments/table1_seeds.sh): its runset names exactly
    those 12 runs by their W&B ids, 4 methods x 3 seeds in one W&B group, and building it again from the records
    gives the same specification and tables."""
    from collections import Counter

    records = sorted(p for p in (SEEDED / "runs").iterdir() if p.is_dir())
    check = read_json(SEEDED / "report" / "report_check.json")
    assert len(records) == 12 and not check["notes"]
    assert sorted(r["id"] for r in check["runs"]) == sorted(read_json(p / "wandb_run.json")["id"] for p in records)
    assert {r["group"] for r in check["runs"]} == {"table1_seeds"}
    assert Counter(r["method"] for r in check["runs"]) == {"DNO": 3, "DNO-Restrictive": 3, "SPIN": 3, "Offline DPO": 3}
    title = read_json(SEEDED / "report" / "report.json")["displayName"]
    run(["dno-report", "runs=results/table1_seeds/runs", f"title='{title}'", f"hydra.run.dir={tmp_path}"],
        timeout=300)  # as experiments/table1_seeds.sh built it
    assert without_ids(read_json(tmp_path / "report.json")) == without_ids(read_json(SEEDED / "report" / "report.json"))
    for table in (SEEDED / "report" / "tables").glob("*.md"):
        assert (tmp_path / "tables" / table.name).read_text() == table.read_text(), table.name
