"""Every config option composes, instantiates and passes validation; bad configs fail before compute."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dno.losses import DNOLoss, DNOPrctLoss, IPOLoss, SFTLoss, SPPOLoss
from dno.pairs import AllPairs, BestVsWorst, LargeMarginRule, SpinRule
from dno.runtime.config import CONF_DIR, ConfigError, upgrade, validate
from dno.runtime.tracking import redact
from dno.variant import Variant
from helpers import SMOKE, dno_run, make_cfg

GROUPS = ["model", "oracle", "loss", "schedule", "data", "logger", "router"]
REQUIRED = {("oracle", "reward_model"): ["oracle.model.path=Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"],
            ("oracle", "student"): ["oracle.path=RUN/iter_2/student_judge"],  # read when the run checks its oracle
            ("router", "random"): ["router.paid_share=0.3"],
            ("data", "prompts"): ["data.path=experiments/examples/prompts.jsonl"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-used")  # API judges check that their key variable is set
    cfg = make_cfg(f"{group}={option}", *REQUIRED.get((group, option), []))
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in ("oracle", "loss", "logger", "data"):  # each builds the object its _target_ names
        built = instantiate(cfg[group])
        assert f"{type(built).__module__}.{type(built).__name__}" == cfg[group]._target_
    if group == "router":  # its options build, checked
        from dno.stages.route import RouterOptions

        assert RouterOptions.of(cfg.router).kind == {"none": "none", "student_only": "random"}.get(option, option)


def test_an_option_with_a_required_value_names_the_key():
    with pytest.raises(ConfigError, match="'oracle.model.path'.*oracle.model.path=..."):
        validate(make_cfg("oracle=reward_model"))


def test_required_groups_have_the_issue_options():
    assert {"smollm2_135m", "tiny_random", "qwen2_5_0_5b_instruct", "mistral_7b_instruct"} <= set(options("model"))
    assert {"demo", "smoke", "paper"} <= set(options("schedule"))
    assert {"builtin", "ultrafeedback"} <= set(options("data"))
    assert {"wandb", "none"} <= set(options("logger"))


def test_paper_schedule_and_default_variant_are_the_paper_recipe():
    cfg = make_cfg("schedule=paper")
    s, v = cfg.schedule, instantiate(cfg.loss)
    assert (s.iterations, s.samples_per_prompt, s.temperature, s.top_p) == (3, 5, 0.7, 0.95)
    assert (s.lr, s.effective_batch_size, s.epochs, s.max_pairs_per_prompt) == (5e-5, 64, 1, None)
    assert isinstance(v, Variant) and v.objective == DNOPrctLoss(beta=0.1) and v.replay == (0.3, 0.15)
    assert v.pairs == LargeMarginRule(min_positive_score=5, teacher_margin=2, student_margin=1) and not v.lookahead


def test_schedules_hold_sizes_only_and_inherit_the_paper_one():
    method_keys = {"beta", "replay", "lookahead", "pairs", "rule", "keep_types"}
    paper = set(OmegaConf.load(Path(CONF_DIR) / "schedule" / "paper.yaml"))
    for name in options("schedule"):
        raw = OmegaConf.load(Path(CONF_DIR) / "schedule" / f"{name}.yaml")
        assert not method_keys & set(raw), name
        if name != "paper":
            assert list(raw.defaults) == ["paper", "_self_"]
            # the one method knob a schedule sets: random weights never score the paper rule's 5
            assert set(raw) - {"defaults"} - paper == ({"min_positive_score"} if name == "smoke" else set()), name


@pytest.mark.parametrize("loss,objective,rule,extra", [
    ("dno_prct", DNOPrctLoss, LargeMarginRule, {}),
    ("dno", DNOLoss, AllPairs, {}),
    ("ipo", IPOLoss, LargeMarginRule, {}),
    ("sppo", SPPOLoss, AllPairs, {}),
    ("sft", SFTLoss, LargeMarginRule, {}),
    ("spin", DNOPrctLoss, SpinRule, {"needs_teacher": True}),
    ("dno_restrictive", DNOPrctLoss, LargeMarginRule, {"needs_teacher": True}),
    ("dno_lookahead", DNOPrctLoss, LargeMarginRule, {"lookahead": True}),
    ("best_vs_worst", DNOPrctLoss, BestVsWorst, {}),
])
def test_a_variant_is_one_config_choice(loss, objective, rule, extra):
    v = instantiate(make_cfg(f"loss={loss}").loss)
    assert type(v.objective) is objective and type(v.pairs) is rule
    assert {k: getattr(v, k) for k in extra} == extra
    if loss == "dno_restrictive":
        assert v.pairs.keep_types == ("teacher_over_student",)


def test_variant_knobs_live_under_loss():
    v = instantiate(make_cfg("loss=dno", "loss.beta=0.05", "loss.replay=[0.5]").loss)
    assert v.objective.beta == 0.05 and v.replay == (0.5,)
    spin = instantiate(make_cfg("pair_rule@loss.pairs=spin").loss)  # a rule from the command line
    assert type(spin.pairs) is SpinRule and spin.needs_teacher  # the rule, not the file, says what it needs
    assert not instantiate(make_cfg("loss=dno_restrictive", "pair_rule@loss.pairs=all_pairs").loss).needs_teacher
    assert instantiate(make_cfg("loss=sft", "loss.beta=0.05").loss).beta == 0.05  # a sweep over beta crosses sft
    old = instantiate(make_cfg("pair_rule@loss.pairs=paper").loss).pairs  # the rule's option name before the rename
    assert old == instantiate(make_cfg().loss).pairs and type(old) is LargeMarginRule


def test_a_recorded_config_with_old_names_upgrades_to_todays():
    """What lets a run directory made before a rename resume: the recorded names are today's after upgrade()."""
    recorded = {"sampling.sampler": "dno", "loss.pairs._target_": "dno.pairs.PaperRule",
                "data._target_": "dno.data.builtin.make_records", "logger._target_": "dno.tracking.WandbSink",
                "loss.objective._target_": "dno.losses.DNOPrctLoss", "oracle.model": "dno"}
    assert upgrade(recorded) == {"sampling.sampler": "shared_prefill",
                                 "loss.pairs._target_": "dno.pairs.LargeMarginRule",
                                 "data._target_": "dno.data.builtin.BuiltinPrompts",
                                 "logger._target_": "dno.runtime.tracking.WandbSink",
                                 "loss.objective._target_": "dno.losses.DNOPrctLoss", "oracle.model": "dno"}


def test_a_recorded_config_from_before_a_key_was_added_had_its_default():
    """train.mixed_precision came later; null (accelerate's choice, fp32 unless launched otherwise) is what runs
    before it did: a run recorded without it resumes, one recorded with bf16 does not under null."""
    assert upgrade({"train.micro_batch_size": 4}) == {"train.micro_batch_size": 4, "train.mixed_precision": None}
    assert upgrade({"train.mixed_precision": "bf16"}) == {"train.mixed_precision": "bf16"}
    assert upgrade({"eval.local.samples": 1}) == {"eval.local.samples": 1}  # no train group: nothing added


def test_a_run_from_before_the_router_and_rules_billing_resumes_unless_they_are_used(tmp_path):
    """router.kind and the rules oracle's bill_as came later: absent is their default (nothing routed, nothing
    billed), on either side (an API oracle's config never has bill_as); turning one on is a change."""
    from dno.runtime.files import write_json
    from dno.runtime.provenance import check_resume

    def current(config):
        return {"config": config, "config_sha256": "x", "started": "now", "commit": "c", "dirty": False,
                "diff_sha256": None, "versions": {}}

    old = {"oracle": {"_target_": "dno.oracles.rules.RulesOracle"}, "seed": 0}
    write_json(tmp_path / "provenance.json", {**current(old), "resumes": []})
    same = {"oracle": {**old["oracle"], "bill_as": None, "bill_tokens_per_candidate": 140},
            "router": {"kind": "none"}, "seed": 0}
    assert "accepted_changes" not in check_resume(tmp_path / "provenance.json", current(same), "never")["resumes"][-1]
    for key, value in [("router", {"kind": "distilled"}), ("oracle", {**same["oracle"], "bill_as": "gpt-4-turbo"})]:
        with pytest.raises(ConfigError, match=key):
            check_resume(tmp_path / "provenance.json", current({**same, key: value}), "never")


def test_table1_rows_hold_only_the_choices_that_define_them():
    for path in sorted((Path(CONF_DIR) / "experiment").glob("table1_*.yaml")):
        raw = OmegaConf.load(path)
        assert set(raw) <= {"defaults", "method", "logger", "schedule"}, path.name
        assert set(raw.get("schedule", {})) <= {"iterations", "epochs", "lr"}, path.name
        assert len(path.read_text().splitlines()) <= 14, path.name
        command = path.read_text().splitlines()[1]  # each starts with the command that runs it
        assert command.startswith(f"# Run: .venv/bin/dno-run experiment={path.stem} "), path.name


def test_builtin_data_instantiates_records():
    records = instantiate(make_cfg().data)()
    assert len(records) == 600 and all(r.meta["constraints"] for r in records)


@pytest.mark.parametrize("override,message", [
    ("schedule.iterations=0", "schedule.iterations must be a positive integer"),
    ("schedule.samples_per_prompt=1", "at least 2"),
    ("schedule.top_p=1.5", "sampling.top_p"),
    ("schedule.lr=-1", "schedule.lr"),
    ("schedule.effective_batch_size=6", "not a multiple"),
    ("model.dtype=int8", "model.dtype"),
    ("loss.beta=???", "loss.beta"),
])
def test_bad_values_are_rejected_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(make_cfg(override))


def test_redact_drops_secret_values():
    assert redact({"oracle": {"api_key": "sk-1", "api_key_env": "OPENAI_API_KEY", "n": [{"token": "t"}]}}) == {
        "oracle": {"api_key": "<redacted>", "api_key_env": "OPENAI_API_KEY", "n": [{"token": "<redacted>"}]}}


@pytest.mark.parametrize("override,message", [
    ("model=no_such_model", "Could not find 'model/no_such_model'"),  # Hydra's refusals exit 1 (resume.md)
    ("schedule.nope=1", "Key 'nope' is not in struct"),
    ("schedule.iterations=0", "dno-run: config error: schedule.iterations must be a positive integer"),
])
@pytest.mark.slow
def test_dno_run_fails_before_compute(tmp_path, override, message):
    run_dir = tmp_path / "run"
    start = time.perf_counter()
    proc = dno_run(*SMOKE, *override.split(), f"hydra.run.dir={run_dir}", check=False)
    assert proc.returncode == (2 if "config error" in message else 1)
    assert message in proc.stderr
    assert not (run_dir / "init").exists() and not (run_dir / "wandb").exists()
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("override,message", [
    ("schedule.prompts_per_iteration=500", "the data has 600 prompts but the schedule needs"),
    ("model.path=/nonexistent/model.gguf", "does not exist"),
    ("+oracle.bogus=1", "bogus"),
    ("teacher=best_of_n teacher.n=1", "teacher.n must be at least 2"),
    ("loss.pairs.keep_types=[nope]", "loss.pairs.keep_types has unknown types ['nope']"),
    ("loss.replay=[0.3,2]", "loss.replay[1] must be a fraction in [0, 1]"),
    ("eval=alpaca_eval2 eval.alpaca_eval2.api_key_env=DNO_TEST_UNSET_KEY", "DNO_TEST_UNSET_KEY is not set"),
    ("eval.local.baseline=gold", "eval.local.baseline must be auto, pi_1 or teacher"),
])
def test_a_run_is_not_built_from_a_bad_config(tmp_path, override, message):
    """Run.build, as dno-run calls it (a ConfigError is exit 2 there; see the test above): nothing written."""
    from dno.run import Run

    with pytest.raises(ConfigError) as e:
        Run.build(make_cfg(*SMOKE, *override.split()), tmp_path / "run")
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_variant_whose_rule_needs_the_teacher_stops_without_one():
    from dno.data.splits import make_splits
    from dno.run import check_teacher

    cfg = make_cfg(*SMOKE, "loss=spin")
    s = cfg.schedule
    splits = make_splits(instantiate(cfg.data)(), iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                         n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
    with pytest.raises(ConfigError, match="loss=spin needs the teacher's answer for every prompt, but 12 of 12"):
        check_teacher(instantiate(cfg.loss), instantiate(cfg.teacher), splits, "spin")
    check_teacher(instantiate(cfg.loss), instantiate(make_cfg("teacher=best_of_n").teacher), splits, "spin")


def test_no_key_of_an_app_config_is_also_a_config_group():
    """dno-nash's `pairs=300` once read as a config group: the apps share conf/, so their keys must not."""
    groups = {p.name for p in Path(CONF_DIR).iterdir() if p.is_dir()}
    for app in ("nash", "tables", "bench", "eval_app"):
        keys = set(OmegaConf.load(Path(CONF_DIR) / f"{app}.yaml")) - {"defaults", "hydra"}
        assert not keys & groups, (app, keys & groups)
