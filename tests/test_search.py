"""Search sweeps (hydra/sweeper=optuna search=dno, issue 44): Hydra's sweep syntax as Optuna's distributions, the
objective a trial returns, the study's order; then real sweeps on the tiny model: the study's trials and states in
its SQLite file, a sweep killed mid-trial resumed by the same command (only the unfinished trial runs, in its own
directory, resuming its stages), every trial a W&B run of the sweep's group with its number and parameters, a
failing trial recorded as failed while the sweep goes on, a key that does not exist or a range outside a knob's
valid values refused before any trial, and the report's parallel coordinates and sorted table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dno.runtime.config import ConfigError
from dno.runtime.files import read_json, write_json, write_jsonl
from dno.runtime.search import (
    DEFAULT_OBJECTIVE,
    load_study,
    objective_value,
    parse_space,
    trial_overrides,
    trial_rows,
)
from dno.runtime.tracking import comparison_axes
from helpers import REPO, SEARCH, dno_run, make_cfg, program, run, wandb_records

SEARCH_SPACE = REPO / "conf" / "search" / "dno.yaml"


def test_hydra_sweep_syntax_maps_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space, fixed = parse_space(["loss.beta=tag(log, interval(0.02, 0.5))", "schedule.lr=interval(1e-5, 1e-4)",
                                "schedule.samples_per_prompt=int(interval(2, 6))", "k=range(2, 8, 2)",
                                "loss.replay=choice([0.0,0.0],[0.3,0.15])", "loss=dno,dno_prct", "seed=3",
                                "schedule.lr=interval(1e-6, 1e-5)"])  # a later line replaces an earlier one
    assert space["loss.beta"].distribution == FloatDistribution(0.02, 0.5, log=True)
    assert space["schedule.lr"].distribution == FloatDistribution(1e-6, 1e-5)
    assert space["schedule.samples_per_prompt"].distribution == IntDistribution(2, 6)
    assert space["k"].distribution == IntDistribution(2, 6, step=2)  # Hydra's range: the stop is not a value
    assert space["loss.replay"].distribution == CategoricalDistribution(["[0.0,0.0]", "[0.3,0.15]"])
    assert space["loss"].distribution == CategoricalDistribution(["dno", "dno_prct"])
    assert fixed == ["seed=3"] and space["loss.beta"].extremes() == [0.02, 0.5]
    with pytest.raises(ConfigError, match="loss.beta=tag"):  # Optuna cannot draw a log scale reaching 0
        parse_space(["loss.beta=tag(log, interval(0, 0.5))"])


def test_a_trial_runs_its_parameters_and_records_them_under_search():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = trial_overrides(7, {"loss.beta": 0.07, "loss.replay": "[0.3,0.15]", "loss": "dno"})
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(lines)}
    assert parsed == {"loss.beta": 0.07, "loss.replay": [0.3, 0.15], "loss": "dno", "search.trial": 7,
                      "search.params": {"loss.beta": 0.07, "loss.replay": [0.3, 0.15], "loss": "dno"}}
    axes = comparison_axes({"search": {"trial": 7, "params": {"loss.beta": 0.07}}}, _launch())
    assert axes["trial"] == 7 and axes["params"] == {"loss.beta": 0.07}
    assert "trial" not in comparison_axes({"search": {"trial": None}}, _launch())  # search=dno in a plain run


def _launch():
    from dno.runtime.tracking import Launch

    return Launch()


def test_the_objective_is_the_chosen_iterates_validation_value(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [{"iteration": 1, DEFAULT_OBJECTIVE: 41.0},
                                             {"iteration": 2, DEFAULT_OBJECTIVE: 63.5}])
    write_json(tmp_path / "summary.json", {"final/best_iteration": 2, "alpaca_eval/lc_win_rate": 58.0})
    assert objective_value(tmp_path, DEFAULT_OBJECTIVE) == 63.5  # the chosen iterate's, not the last or the best
    assert objective_value(tmp_path, "alpaca_eval/lc_win_rate") == 58.0  # a summary key as it is
    assert objective_value(tmp_path, "eval/no_such_metric") is None
    assert objective_value(tmp_path, DEFAULT_OBJECTIVE, {"final/best_iteration": 0}) == 50.0  # pi_1 vs itself
    assert objective_value(tmp_path, DEFAULT_OBJECTIVE, {"final/best_iteration": 1}) == 41.0
    assert objective_value(tmp_path / "none", DEFAULT_OBJECTIVE) is None  # no summary: no value
    lookahead = {"final/model": "lookahead", "final/best_iteration": 2, "lookahead/win_rate_vs_init": 61.0}
    assert objective_value(tmp_path, "eval/win_rate_vs_init", lookahead) == 61.0  # its model, not iteration 2's
    assert objective_value(tmp_path, DEFAULT_OBJECTIVE, lookahead) is None  # Lookahead logs no validation LC


def test_trials_are_ordered_best_first_and_failed_ones_last():
    import optuna

    for direction, order in (("maximize", [1, 2, 0, 3]), ("minimize", [2, 1, 0, 3])):
        study = optuna.create_study(direction=direction)
        for value in (None, 70.0, 55.0, None):
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            if value is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, value)
        assert [r["trial"] for r in trial_rows(study)] == order, direction


def test_the_search_space_comments_each_knob_and_trial_0_is_the_offline_default():
    """conf/search/dno.yaml: every knob has a comment with the paper's symbol or step and value and why its range,
    names a key of the composed config, and the enqueued first point is the default config's own values."""
    lines = SEARCH_SPACE.read_text().splitlines()
    cfg = make_cfg("search=dno", return_hydra_config=True)
    default = make_cfg()
    params = cfg.hydra.sweeper.params
    assert set(params) == {"loss.beta", "schedule.lr", "loss.pairs.student_margin", "schedule.samples_per_prompt",
                           "loss.replay"}
    for key in params:
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
        comment = []
        for line in reversed(lines[:at]):
            if not line.strip().startswith("#"):
                break
            comment.insert(0, line)
        text = " ".join(comment)
        assert "the paper" in text and ("scale" in text or "Integers" in text or "None" in text), key
        assert OmegaConf.select(default, key) is not None, key
    first = OmegaConf.to_container(cfg.hydra.sweeper.enqueue_trials[0])
    assert {k: str(v).replace(" ", "") for k, v in first.items()} == \
        {k: str(OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(default, k)}))["v"]).replace(" ", "")
         for k in params}
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.dno_search.optuna_sweeper.OptunaSearchSweeper"
    assert cfg.search.objective == DEFAULT_OBJECTIVE and cfg.hydra.sweeper.direction == "maximize"


def test_the_issues_command_composes():
    cfg = make_cfg("hydra/sweeper=optuna", "search=dno", "hydra.sweeper.n_trials=12", return_hydra_config=True)
    assert cfg.hydra.sweeper.n_trials == 12 and cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    # trials go through Hydra's launcher: SLURM's composes with the search (a test runs submitit's; make test-cluster
    # runs SLURM's own sweeps)
    cfg = make_cfg("search=dno", "hydra/launcher=submitit_slurm", "hydra.sweeper.n_jobs=4", return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.sweeper.n_jobs == 4


def test_the_sampler_is_chosen_on_the_command_line_over_the_search_and_a_bad_one_is_a_config_error():
    from hydra_plugins.dno_search.optuna_sweeper import sampler_for

    seeded = {}
    for choice, target, startup in [(None, "TPESampler", 5), ("tpe", "TPESampler", 10),
                                    ("random", "RandomSampler", None)]:
        cfg = make_cfg("hydra/sweeper=optuna", "search=dno", *([f"hydra/sweeper/sampler={choice}"] if choice else []),
                       return_hydra_config=True)
        sampler = sampler_for(cfg.hydra.sweeper.sampler, existing=3)
        assert type(sampler).__name__ == target and cfg.hydra.sweeper.sampler.get("n_startup_trials") == startup
        seeded[choice] = sampler
    assert seeded[None]._n_startup_trials == 5 and seeded["tpe"]._n_startup_trials == 10

    import optuna
    from optuna.distributions import FloatDistribution

    def first_draw(sampler) -> float:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(sampler=sampler).ask({"x": FloatDistribution(0, 1)}).params["x"]

    # a study with 3 trials already: the seed moved on by 3, so a resumed sweep does not draw the first start's points
    random = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 7})
    assert first_draw(sampler_for(random, existing=3)) == first_draw(optuna.samplers.RandomSampler(seed=10))
    assert first_draw(sampler_for(random, existing=0)) == first_draw(optuna.samplers.RandomSampler(seed=7))
    assert first_draw(sampler_for(random, existing=3)) != first_draw(sampler_for(random, existing=0))
    cfg = make_cfg("hydra/sweeper=optuna", "search=dno", "hydra/sweeper/sampler=random",
                   "+hydra.sweeper.sampler.n_startup_trials=5", return_hydra_config=True)
    with pytest.raises(ConfigError, match=r"sweeper.sampler \(optuna.samplers.RandomSampler\): .*n_startup_trials"):
        sampler_for(cfg.hydra.sweeper.sampler, existing=0)


# --- real sweeps on the tiny model ---------------------------------------------------------------------------------


def study_of(sweep: Path):
    return load_study(sweep)


@pytest.fixture(scope="module")
def search_sweep(tmp_path_factory) -> dict:
    """The guide's tiny search (3 trials), killed (SIGKILL) while trial 2 runs, then the same command again."""
    sweep = tmp_path_factory.mktemp("search") / "sweep"
    argv = [program("dno-run"), *SEARCH, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    marker = sweep / "2" / "metrics.jsonl"  # trial 2 has finished its first iteration
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists(), "trial 2 never started its first iteration"
    killed = {t.number: t.state.name for t in study_of(sweep).trials}
    finished = {n: (sweep / str(n) / "summary.json").stat().st_mtime for n in (0, 1)}
    resumed = dno_run(*SEARCH, f"hydra.sweep.dir={sweep}", timeout=300)
    return {"sweep": sweep, "killed": killed, "finished": finished, "log": resumed.stderr + resumed.stdout}


@pytest.mark.slow
def test_a_killed_sweep_resumes_only_its_unfinished_trial(search_sweep):
    sweep, log = search_sweep["sweep"], search_sweep["log"]
    assert search_sweep["killed"] == {0: "COMPLETE", 1: "COMPLETE", 2: "RUNNING"}
    assert "resuming trial(s) 2" in log and "\t#2 : " in log and "\t#0 : " not in log and "\t#1 : " not in log
    assert {n: (sweep / str(n) / "summary.json").stat().st_mtime for n in (0, 1)} == search_sweep["finished"]
    resumes = read_json(sweep / "2" / "provenance.json")["resumes"]
    assert len(resumes) == 1  # trial 2's run directory resumed its finished stages
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0", "1", "2"]


@pytest.mark.slow
def test_the_study_in_the_sweep_directory_holds_every_trial_and_its_objective(search_sweep):
    sweep = search_sweep["sweep"]
    study = study_of(sweep)
    assert (sweep / "study.db").exists() and [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for t in study.trials:  # the value told to the study is what the run returned: its summary's objective
        summary = read_json(sweep / str(t.number) / "summary.json")
        assert t.value == summary["search/objective"] == objective_value(sweep / str(t.number), DEFAULT_OBJECTIVE)
        assert OmegaConf.load(sweep / str(t.number) / ".hydra" / "config.yaml").search.trial == t.number
    assert study.trials[0].params == {"loss.beta": 0.1, "schedule.lr": 5e-05, "loss.pairs.student_margin": 1,
                                      "schedule.samples_per_prompt": 4, "loss.replay": "[0.3,0.15]"}
    assert set(study.user_attrs["space"]) == set(study.trials[1].params)
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert results.best_value == study.best_value and results.trials == {"COMPLETE": 3}


@pytest.mark.slow
def test_every_trial_is_a_wandb_run_of_the_sweeps_group_with_its_number_and_parameters(search_sweep):
    sweep = search_sweep["sweep"]
    for t in study_of(sweep).trials:
        run_record = next(r.run for r in wandb_records(sweep / str(t.number)) if r.WhichOneof("record_type") == "run")
        config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
        assert run_record.run_group == sweep.name and config["trial"] == t.number
        assert {k: str(v).replace(" ", "") for k, v in config["params"].items()} == \
            {k: str(v) for k, v in t.params.items()}
        summary = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for r in wandb_records(sweep / str(t.number)) if r.WhichOneof("record_type") == "summary"
                   for item in r.summary.update}
        assert summary["search/objective"] == t.value and summary["search/trial"] == t.number


@pytest.mark.slow
def test_the_report_of_a_search_adds_parallel_coordinates_and_the_trials_sorted(search_sweep, tmp_path):
    sweep = search_sweep["sweep"]
    run(["dno-report", f"runs={sweep}", f"hydra.run.dir={tmp_path}", "lc_samples=3"], timeout=300)
    spec = read_json(tmp_path / "report.json")
    (panel,) = _panels(spec, "Parallel Coordinates Plot")
    assert [c["accessor"] for c in panel["config"]["columns"]] == [
        "config:cfg.value.loss.beta", "config:cfg.value.schedule.lr", "config:cfg.value.loss.pairs.student_margin",
        "config:cfg.value.schedule.samples_per_prompt", "config:cfg.value.loss.replay", "summary:search/objective"]
    check = read_json(tmp_path / "report_check.json")
    trials = check["search"]["trials"]
    assert [t["value"] for t in trials] == sorted((t["value"] for t in trials), reverse=True) and len(trials) == 3
    assert check["group_by"] == ["trial"] and check["search"]["source"].startswith("the study")
    table = next(b["content"] for b in _blocks(spec) if "| rank | trial |" in b.get("content", ""))
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "rank" not in line]
    assert [int(r[2]) for r in rows] == [t["trial"] for t in trials]  # the table is the study's order
    assert [float(r[4]) for r in rows] == [round(t["value"], 2) for t in trials]


def _blocks(obj) -> list[dict]:
    if isinstance(obj, dict):
        return [obj, *(b for v in obj.values() for b in _blocks(v))]
    return [b for v in obj for b in _blocks(v)] if isinstance(obj, list) else []


def _panels(obj, view: str) -> list[dict]:
    if isinstance(obj, dict):
        return [obj] if obj.get("viewType") == view else [p for v in obj.values() for p in _panels(v, view)]
    return [p for v in obj for p in _panels(v, view)] if isinstance(obj, list) else []


@pytest.mark.slow
def test_a_failing_trial_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    """SPIN needs a teacher's answer for every prompt and the builtin prompts have none: that trial's run stops
    (exit 2, a bad point) and the other trial's goes on. Both at once through submitit's launcher (each trial a
    process, as on SLURM), in job directories named by trial number."""
    dno_run("-m", "hydra/sweeper=optuna", "hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2",
            "loss=choice(spin,dno_prct)", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.enqueue_trials=[{loss:spin},{loss:dno_prct}]", "model=tiny_random", "schedule=smoke",
            "schedule.iterations=1", "logger=none", f"hydra.sweep.dir={tmp_path}")
    study = study_of(tmp_path)
    assert [(t.params["loss"], t.state.name) for t in study.trials] == [("spin", "FAIL"), ("dno_prct", "COMPLETE")]
    assert "exited 2" in study.trials[0].user_attrs["error"]
    assert study.trials[1].value == read_json(tmp_path / "1" / "summary.json")["search/objective"]
    assert OmegaConf.load(tmp_path / "0" / ".hydra" / "config.yaml").search.trial == 0


@pytest.mark.slow
@pytest.mark.parametrize("space,why", [
    ("loss.betaa=interval(0.05,0.2)", "Could not override 'loss.betaa'"),  # no such key
    ("loss.beta=interval(0,0.5)", "loss.beta must be a number in (0, 10000], got 0.0"),  # beta <= 0
    ("schedule.samples_per_prompt=int(interval(1,4))", "must be at least 2 to form pairs"),  # K < 2
])
def test_a_bad_key_or_range_fails_before_any_trial_naming_it(space, why, tmp_path):
    sweep = tmp_path / "sweep"
    proc = dno_run("-m", "hydra/sweeper=optuna", space, "model=tiny_random", "schedule=smoke",
                   f"hydra.sweep.dir={sweep}", check=False, timeout=120)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and line.startswith(f"dno-run: config error: search space: {space} at ") and \
        why in line, proc.stderr[-2000:]
    assert not sweep.exists()  # no study, no trial
    if space.startswith("loss.beta="):  # the search guide shows this very line
        assert f"\n{line}\n" in (REPO / "docs" / "guides" / "search.md").read_text()
