"""dno-eval on a checkpoint of a run: the model (tokenizer, dtype, LoRA, name) is the run's own, read from the run
directory the checkpoint is in, not the current `model=`; a `model=` naming another model stops before any compute
with both named; `model.<key>=` overrides apply on top of the run's model."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from dno.final import run_of, with_run_model
from dno.runtime.config import ConfigError
from dno.runtime.files import read_json
from dno.runtime.layout import RunDir
from helpers import dno_eval, make_cfg


@pytest.fixture
def tiny_run(tmp_path):
    """A run directory as dno-run leaves it, as far as dno-eval reads it: its Hydra config and a checkpoint."""
    run = RunDir(tmp_path / "run")
    run.hydra_config.parent.mkdir(parents=True)
    OmegaConf.save(make_cfg("model=tiny_random", "schedule=smoke"), run.hydra_config)
    run.iteration(1).checkpoint.mkdir(parents=True)
    return run


def test_a_checkpoint_in_a_run_directory_is_found_and_one_elsewhere_is_not(tiny_run, tmp_path):
    assert run_of(tiny_run.iteration(1).checkpoint).path == tiny_run.path
    (tmp_path / "mine").mkdir()
    assert run_of(tmp_path / "mine") is None and run_of(tiny_run.iteration(1).path) is None


def test_the_runs_model_replaces_the_configured_one_and_model_keys_apply_on_top(tiny_run):
    cfg = with_run_model(make_cfg(config_name="eval_app"), tiny_run.iteration(1).checkpoint, ())
    assert OmegaConf.to_container(cfg.model) == OmegaConf.to_container(make_cfg("model=tiny_random").model)
    bf16 = make_cfg("model.dtype=bfloat16", config_name="eval_app")
    cfg = with_run_model(bf16, tiny_run.iteration(1).checkpoint, ("model.dtype=bfloat16",))
    assert cfg.model.name == "tiny-random-llama" and cfg.model.dtype == "bfloat16"
    same = make_cfg("model=tiny_random", config_name="eval_app")  # the run's own model named again: no conflict
    assert with_run_model(same, tiny_run.iteration(1).checkpoint, ("model=tiny_random",)).model.name == \
        "tiny-random-llama"


def test_another_model_on_the_command_line_is_a_config_error_naming_both(tiny_run):
    other = make_cfg("model=smollm2_135m", config_name="eval_app")
    with pytest.raises(ConfigError, match=r"from the model tiny-random-llama .*but model=smollm2_135m is "
                                          r"smollm2-135m-instruct: model\.name is 'tiny-random-llama' in the run"):
        with_run_model(other, tiny_run.iteration(1).checkpoint, ("model=smollm2_135m",))


@pytest.mark.slow
def test_dno_eval_of_a_runs_checkpoint_uses_the_runs_model(smoke_run, tmp_path):
    checkpoint = smoke_run / "iter_2" / "checkpoint"
    common = ["schedule=smoke", "oracle.concise_max_words=8", f"checkpoint={checkpoint}"]
    dno_eval(*common, f"hydra.run.dir={tmp_path / 'run_model'}")  # no model=: the default would be SmolLM2
    dno_eval(*common, "model=tiny_random", f"hydra.run.dir={tmp_path / 'named'}")
    ours, named = (read_json(RunDir(tmp_path / d).final.benchmark("local").annotations) for d in ("run_model", "named"))
    assert {a["generator_2"] for a in ours} == {"tiny-random-llama-iter_2"} and len(ours) == 8
    assert [a["output_2"] for a in ours] == [a["output_2"] for a in named]  # the same model, the same answers
    model = read_json(RunDir(tmp_path / "run_model").provenance)["config"]["model"]
    assert model["name"] == "tiny-random-llama" and model["max_length"] == 256


@pytest.mark.slow
def test_dno_eval_with_another_model_exits_2_before_any_compute(smoke_run, tmp_path):
    proc = dno_eval("model=smollm2_135m", f"checkpoint={smoke_run / 'iter_2' / 'checkpoint'}",
                    f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "but model=smollm2_135m is smollm2-135m-instruct" in proc.stderr
    assert "tiny-random-llama" in proc.stderr and not (tmp_path / "final").exists()
