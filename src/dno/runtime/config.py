"""Checks of a composed config, run before any data, model or judge is touched.

Hydra already rejects an unknown option (`model=nope`) or an unknown key; this module rejects
missing required values (`???`), values out of range and sizes that do not fit together, each
with a message that names the key.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")  # the apps' Hydra config directory


class ConfigError(ValueError):
    pass


# Values a run directory may have recorded under an older name, with today's: a resume compares the
# recorded config upgraded by these with today's, so that a rename alone never stops a resume.
RENAMED_VALUES = {
    "sampling.sampler": {"dno": "shared_prefill"},
    "_target_": {
        "dno.pairs.PaperRule": "dno.pairs.LargeMarginRule",
        "dno.data.builtin.make_records": "dno.data.builtin.BuiltinPrompts",
        "dno.data.prompts.load_prompts": "dno.data.prompts.PromptFile",
        "dno.tracking.WandbSink": "dno.runtime.tracking.WandbSink",
        "dno.tracking.NullSink": "dno.runtime.tracking.NullSink",
    },
}


# Keys added since, with the value that does what the code did before them: a config recorded without one
# had that value, so that a new key alone never stops a resume. A key is compared as this value wherever
# either side lacks it (a rules oracle's billing keys are absent from an API oracle's config, too).
ADDED_KEYS = {"train.mixed_precision": None, "router.kind": "none",
              "oracle.bill_as": None, "oracle.bill_tokens_per_candidate": 140}


def added_or(flat: dict, key: str):
    """`flat[key]`, or the value a key added since had before it existed ("<absent>" for any other key)."""
    return flat.get(key, ADDED_KEYS.get(key, "<absent>"))


def upgrade(flat: dict) -> dict:
    """A flattened config ({"a.b": value}) as today's code names it (RENAMED_VALUES, ADDED_KEYS)."""
    if "train.mixed_precision" not in flat and any(key.startswith("train.") for key in flat):
        flat = {"train.mixed_precision": ADDED_KEYS["train.mixed_precision"], **flat}
    def renamed(key: str, value):
        for suffix, names in RENAMED_VALUES.items():
            if (key == suffix or key.endswith("." + suffix)) and isinstance(value, str) and value in names:
                return names[value]
        return value

    return _eval_as_list({k: renamed(k, v) for k, v in flat.items()})


# eval=NAME before benchmarks were a list: eval.name, eval.<option> are eval.NAME.<option> today
BENCHMARK_TARGETS = {"local": "dno.benchmarks.local.LocalBenchmark",
                     "alpaca_eval2": "dno.benchmarks.alpaca_eval2.AlpacaEval2"}


def _eval_as_list(flat: dict) -> dict:
    name = flat.get("eval.name")
    if name not in BENCHMARK_TARGETS:
        return flat
    out = {k: v for k, v in flat.items() if not k.startswith("eval.")}
    out |= {f"eval.{name}.{k[5:]}": v for k, v in flat.items() if k.startswith("eval.") and k != "eval.name"}
    return out | {f"eval.{name}._target_": BENCHMARK_TARGETS[name]}


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A config a run directory recorded, as today's code names it (RENAMED_VALUES, eval as a list)."""
    flat = upgrade(flatten(OmegaConf.to_container(cfg, resolve=False)))
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return OmegaConf.create(out)


def flatten(obj, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if isinstance(obj, dict) and obj:
        return {k: v for key, value in obj.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             f"{key} must be a positive integer, got {value!r}")


def _in_range(cfg: DictConfig, key: str, lo: float, hi: float, *, lo_open: bool = True) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and (lo < value if lo_open else lo <= value) and value <= hi
    _require(ok, f"{key} must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {value!r}")


def grad_accumulation(cfg: DictConfig, num_processes: int) -> int:
    """Accumulation steps so that micro-batch x accumulation x processes = effective batch."""
    per_step = cfg.train.micro_batch_size * num_processes
    effective = cfg.schedule.effective_batch_size
    _require(effective % per_step == 0,
             f"schedule.effective_batch_size={effective} is not a multiple of train.micro_batch_size="
             f"{cfg.train.micro_batch_size} x {num_processes} process(es)")
    return effective // per_step


def validate(cfg: DictConfig, num_processes: int = 1) -> None:
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError) as e:
        # through an interpolation the message names the missing key; directly, full_key does
        key = str(e).split("Missing mandatory value: ")[-1].split()[0] \
            if isinstance(e, InterpolationToMissingValueError) else e.full_key
        raise ConfigError(f"missing required value {key!r} (it is ??? in the config): "
                          f"set it on the command line, e.g. {key}=...") from None
    for key in ("schedule.iterations", "schedule.samples_per_prompt", "schedule.val_prompts",
                "schedule.test_prompts", "schedule.effective_batch_size", "schedule.epochs",
                "sampling.max_new_tokens", "sampling.batch_size", "train.micro_batch_size", "model.max_length"):
        _positive_int(cfg, key)
    for key in ("schedule.prompts_per_iteration", "schedule.max_pairs_per_prompt"):
        if OmegaConf.select(cfg, key) is not None:
            _positive_int(cfg, key)
    _require(cfg.schedule.samples_per_prompt >= 2, "schedule.samples_per_prompt must be at least 2 to form pairs")
    _in_range(cfg, "sampling.temperature", 0.0, 10.0)
    _in_range(cfg, "sampling.top_p", 0.0, 1.0)
    _require(cfg.sampling.get("sampler") in ("shared_prefill", "generate", "dno"),
             f"sampling.sampler must be shared_prefill or generate, got {cfg.sampling.get('sampler')!r}")
    _require(int(cfg.sampling.get("top_k", 50) or 0) >= 0, f"sampling.top_k must be 0 (all) or more, "
             f"got {cfg.sampling.get('top_k')}")
    _in_range(cfg, "schedule.lr", 0.0, 1.0)
    _in_range(cfg, "schedule.warmup_ratio", 0.0, 1.0, lo_open=False)
    _in_range(cfg, "max_failed_frac", 0.0, 1.0, lo_open=False)
    _in_range(cfg, "max_invalid_frac", 0.0, 1.0, lo_open=False)
    _require(cfg.model.dtype in ("float32", "bfloat16", "float16"),
             f"model.dtype must be float32, bfloat16 or float16, got {cfg.model.dtype!r}")
    _require(bool(cfg.model.path) or bool(cfg.model.get("random_init")),
             "model.path is empty: give a hub id, a local directory or a .gguf file")
    grad_accumulation(cfg, num_processes)
    _require(cfg.get("resume", "check") in ("check", "continue"),
             f"resume must be check or continue, got {cfg.get('resume')!r}")
    if cfg.model.get("lora"):
        r = cfg.model.lora.get("r")
        _require(isinstance(r, int) and not isinstance(r, bool) and r >= 0,
                 f"model.lora.r must be a non-negative integer (0: full fine-tuning), got {r!r}")
        _in_range(cfg, "model.lora.alpha", 0.0, 1e6)
        _in_range(cfg, "model.lora.dropout", 0.0, 1.0, lo_open=False)
    _require(cfg.generation.backend in ("hf", "openai_server"),
             f"generation.backend must be hf or openai_server, got {cfg.generation.backend!r}")
    for key in ("generation.server.tensor_parallel", "generation.server.data_parallel",
                "generation.server.concurrency"):
        _positive_int(cfg, key)
    _in_range(cfg, "generation.server.startup_timeout_s", 0.0, 1e6)
    _in_range(cfg, "generation.server.request_timeout_s", 0.0, 1e6)
    _in_range(cfg, "train.process_timeout_min", 0.0, 1e6)
