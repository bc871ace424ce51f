"""Every config option composes, instantiates and passes validation; bad configs fail before compute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tests.conftest import SMOKE, dno_run, make_cfg

from dno.config import ConfigError, validate
from dno.run import CONF_DIR, redact

GROUPS = ["model", "oracle", "loss", "schedule", "data", "logger"]
REQUIRED = {("oracle", "reward_model"): ["oracle.model.path=Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")  # API judges check that their key variable is set
    cfg = make_cfg(f"{group}={option}", *REQUIRED.get((group, option), []))
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in ("oracle", "loss", "logger"):
        assert instantiate(cfg[group]) is not None


def test_an_option_with_a_required_value_names_the_key():
    with pytest.raises(ConfigError, match="'oracle.model.path'.*oracle.model.path=..."):
        validate(make_cfg("oracle=reward_model"))


def test_required_groups_have_the_issue_options():
    assert {"smollm2_135m", "tiny_random", "qwen2_5_0_5b_instruct", "mistral_7b_instruct"} <= set(options("model"))
    assert {"demo", "smoke", "paper"} <= set(options("schedule"))
    assert {"builtin", "ultrafeedback"} <= set(options("data"))
    assert {"wandb", "none"} <= set(options("logger"))


def test_paper_schedule_is_the_paper_recipe():
    s = make_cfg("schedule=paper").schedule
    assert (s.iterations, s.samples_per_prompt, s.temperature, s.top_p) == (3, 5, 0.7, 0.95)
    assert (s.lr, s.effective_batch_size, s.epochs, s.beta) == (5e-5, 64, 1, 0.1)
    assert list(s.replay) == [0.3, 0.15]
    assert (s.pairs.min_positive_score, s.pairs.teacher_margin, s.pairs.student_margin) == (5, 2, 1)


def test_loss_beta_follows_the_schedule():
    assert instantiate(make_cfg("schedule=paper", "schedule.beta=0.05").loss).beta == 0.05


def test_builtin_data_instantiates_records():
    records = instantiate(make_cfg().data)
    assert len(records) == 600 and all(r["constraints"] for r in records)


@pytest.mark.parametrize("override,message", [
    ("schedule.iterations=0", "schedule.iterations must be a positive integer"),
    ("schedule.samples_per_prompt=1", "at least 2"),
    ("schedule.top_p=1.5", "sampling.top_p"),
    ("schedule.lr=-1", "schedule.lr"),
    ("schedule.replay=[0.3,2]", "schedule.replay[1]"),
    ("schedule.effective_batch_size=6", "not a multiple"),
    ("model.dtype=int8", "model.dtype"),
    ("schedule.beta=???", "schedule.beta"),
])
def test_bad_values_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(make_cfg(override))


def test_redact_drops_secret_values():
    assert redact({"oracle": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "n": [{"token": "t"}]}}) == {
        "oracle": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "n": [{"token": "<redacted>"}]}}


@pytest.mark.parametrize("override,message", [
    ("model=no_such_model", "Could not find 'model/no_such_model'"),
    ("schedule.iterations=0", "schedule.iterations must be a positive integer"),
    ("schedule.prompts_per_iteration=500", "the data has 600 prompts but the schedule needs"),
    ("model.path=/nonexistent/model.gguf", "does not exist"),
    ("+oracle.bogus=1", "bogus"),
    ("teacher=best_of_n teacher.n=1", "teacher.n must be at least 2"),
    ("schedule.pairs.rule=nope", "schedule.pairs.rule must be paper or spin"),
    ("eval=alpaca_eval2 eval.api_key_env=DNO_TEST_UNSET_KEY", "DNO_TEST_UNSET_KEY is not set"),
    ("eval.baseline=teacher", "eval.baseline must be auto, pi_1 or gold"),
])
def test_dno_run_fails_before_compute(tmp_path, override, message):
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    proc = dno_run(*SMOKE, *override.split(), f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (run_dir / "init").exists() and not (run_dir / "wandb").exists()
    assert time.perf_counter() - start < 60
