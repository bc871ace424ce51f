"""A DNO run as one object: everything the stages share, built complete from a checked config.

    run = Run.build(cfg, run_dir)      # checks, instantiation, splits, tracker, tokenizer: no compute
    dno.loop.train_dno(run)            # the algorithm (dno-run); dno-eval and dno-bench build the same

Everything cheap is checked and instantiated first, so that a bad config fails (ConfigError, exit 2
in the apps) before any model, sample or judge is touched. The config is read here, once: the stages
get small option objects (`SamplingOptions`, `TrainOptions`, the benchmark), never the whole config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dno.benchmarks import benchmarks
from dno.data import Prompt
from dno.data.splits import Splits, make_splits
from dno.oracles import ledger
from dno.plan import make_plan, plan_table, save_plan
from dno.policy.load import model_identity
from dno.policy.sample import Sampler, SamplingOptions
from dno.runtime import provenance
from dno.runtime.config import ConfigError, grad_accumulation, validate
from dno.runtime.distributed import gather, make_accelerator, same_run_dir
from dno.runtime.layout import RunDir, StageDir
from dno.runtime.stages import run_stage, stage_seed
from dno.runtime.tracking import Launch, Tracker, comparison_axes, redact
from dno.stages.train import TrainOptions
from dno.variant import Variant

log = logging.getLogger(__name__)


class Policies:
    """Holds one policy in memory and loads another only when a stage asks for it."""

    def __init__(self, cfg: DictConfig, tokenizer, device) -> None:
        self.cfg, self.tokenizer, self.device = cfg, tokenizer, device
        self.model, self.path = None, "unloaded"

    def get(self, path: Path | None):
        """path None is pi_1 (the configured model), else a checkpoint directory."""
        if self.path != path:
            from dno.policy.load import load_model

            self.release()
            self.model = load_model(self.cfg.model, self.cfg.cache_dir, self.tokenizer,
                                    path=None if path is None else str(path)).to(self.device)
            self.path = path
        return self.model

    def release(self) -> None:
        """Drop the model in memory (before a generation server needs the GPU)."""
        import torch

        self.model, self.path = None, "unloaded"
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def take_lock(accelerator, run_dir: Path) -> None:
    """The main process takes the run directory's lock (dno.runtime.lock); every process stops if it could not."""
    from dno.runtime.lock import acquire

    error = None
    if accelerator.is_main_process:
        try:
            acquire(run_dir)
        except ConfigError as e:
            error = str(e)
    errors = [e for e in gather(accelerator, error) if e]
    if errors:
        raise ConfigError(errors[0])


def check_teacher(variant: Variant, teacher, splits: Splits, choice: str) -> None:
    """A variant that needs the teacher's answer for every prompt fails early when nothing gives one."""
    prompts = [p for part in splits.iterations for p in part]
    missing = sum(not p.teacher for p in prompts)
    if variant.needs_teacher and not teacher.answers_every_prompt and missing:
        raise ConfigError(f"loss={choice} needs the teacher's answer for every prompt, but {missing} of {len(prompts)} "
                          f"prompts have none in the data: use teacher=best_of_n, or data with teacher answers")


def check_model(cfg: DictConfig, accelerator) -> None:
    """The model's path exists, and LoRA is not asked of a sharded run."""
    from dno.policy.load import check_path
    from dno.policy.lora import lora_enabled

    if lora_enabled(cfg.model) and accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"model.lora.r={cfg.model.lora.r}: LoRA runs in one process or DDP, not "
                          f"{accelerator.distributed_type.value}: use a DDP config (conf/accelerate/cpu_ddp.yaml)")
    if cfg.model.path:
        try:
            check_path(cfg.model.path)
        except FileNotFoundError as e:
            raise ConfigError(f"model.path: {e}") from None


@dataclass
class Run:
    """What every stage of a run shares. Built once by `Run.build`, complete when built."""

    cfg: DictConfig
    dir: RunDir
    splits: Splits
    oracle: object
    variant: Variant
    teacher: object
    benchmarks: dict  # the final stage (`eval=[...]`): benchmark objects by name, in order
    sampling: SamplingOptions
    train: TrainOptions
    tracker: Tracker
    accelerator: object
    tokenizer: object
    policies: Policies
    data_stats: dict  # data/dropped_too_long, data/duplicates: logged with iteration 1
    plan: dict = field(default_factory=dict)  # the priced plan made at the start (dno.plan)
    router: object = None  # dno.stages.route.Router: who answers the iterations' judge stage (router=)

    @classmethod
    def build(cls, cfg: DictConfig, run_dir: Path, launch: Launch | None = None) -> Run:
        """The run of `cfg` in `run_dir`, every check done before any compute; `launch`: what started it (the
        sweep, the app, Hydra's choices: how W&B groups it)."""
        launch = launch or Launch()
        accelerator = make_accelerator(cfg.train.process_timeout_min, cfg.train.get("mixed_precision"))
        validate(cfg, accelerator.num_processes)
        check_model(cfg, accelerator)
        parts, records, data_stats = _instantiate(cfg)
        oracle, variant, teacher, sink, final, tokenizer, splits = parts
        check_teacher(variant, teacher, splits, launch.choices.get("loss", "?"))
        router = make_router(cfg, oracle, variant, RunDir(run_dir))
        same_run_dir(accelerator, run_dir)
        take_lock(accelerator, run_dir)
        tracker = _start(cfg, RunDir(run_dir), accelerator, records, sink, launch)
        if accelerator.is_main_process:  # the main process judges: every paid answer into the run's ledger
            ledger.activate(RunDir(run_dir).ledger)
        plan = make_plan(cfg, oracle, teacher, splits, run_dir, final) if launch.job_type == "dno-run" else {}
        if plan and accelerator.is_main_process:
            save_plan(run_dir, plan)
        return cls(cfg, RunDir(run_dir), splits, oracle, variant, teacher, final, SamplingOptions.of(cfg.sampling),
                   train_options(cfg, accelerator.num_processes), tracker, accelerator, tokenizer,
                   Policies(cfg, tokenizer, accelerator.device), data_stats, plan, router)

    @property
    def run_dir(self) -> Path:
        return self.dir.path

    def checkpoint(self, iteration: int) -> Path | None:
        """Where pi_{iteration + 1} lives; None for pi_1."""
        return self.dir.checkpoint(iteration)

    def seed(self, iteration: int, stage_name: str) -> int:
        return stage_seed(self.cfg.seed, iteration, stage_name)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def served(self) -> bool:
        """Samples of the iterations come from a generation server (generation.backend=openai_server)."""
        return self.cfg.generation.backend == "openai_server"

    def stage(self, directory: StageDir, name: str, fn, outputs: tuple[Path, ...] = (), *,
              everyone: bool = False) -> dict:
        """A resumable stage (dno.runtime.stages.run_stage) of this run's processes; `outputs`: its files,
        checked when it is skipped."""
        return run_stage(directory, name, fn, outputs, accelerator=self.accelerator, everyone=everyone)

    def sampler(self, policy: Path | None, *, sharded: bool = True) -> Sampler:
        """In-process sampling of `policy` (None: pi_1); `sharded`: every process samples its share (call on
        all processes), else the calling process samples everything."""
        return Sampler(self.policies.get(policy), self.tokenizer, self.sampling,
                       self.accelerator if sharded else None)

    def sample_with_server(self, policy: Path | None, prompts: list[Prompt], out: StageDir, k: int, seed: int) -> dict:
        """generation.backend=openai_server, on the main process: a server for `policy` while sampling."""
        from dno.policy.server import ServerBackend, ServerSampler
        from dno.stages.sample import sample_responses

        checkpoint = self.served_checkpoint(policy)
        self.policies.release()
        backend = ServerBackend(self.cfg.generation.server)
        with backend.serving(str(checkpoint), out.server_log, seed=seed, dtype=self.cfg.model.dtype) as server:
            return sample_responses(ServerSampler(server, self.tokenizer, self.sampling), prompts, out.samples, k=k,
                                    seed=seed)

    def served_checkpoint(self, policy: Path | None) -> str:
        """What the generation server loads: a checkpoint, or pi_1 as given when it is a directory or hub
        id, else pi_1 written once to init/policy (a GGUF file or random weights)."""
        if policy is not None:
            return str(policy)
        from dno.policy.load import resolve_path

        path = self.cfg.model.path
        if path and not resolve_path(path).endswith(".gguf"):
            return resolve_path(path)
        target = self.dir.init.policy
        if not target.exists():
            from dno.runtime.files import replace_dir

            def build(tmp: Path) -> None:
                self.policies.get(None).save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)

            replace_dir(target, build)
        return str(target)


def make_router(cfg: DictConfig, oracle, variant: Variant, run: RunDir):
    """The run's router (router=none: one that routes nothing), checked against the students a resumed run saved."""
    from dno.stages.route import Router, RouterOptions, check_students

    try:
        options = RouterOptions.of(cfg.get("router"))
        router = Router(options, cfg.cache_dir, variant.pairs, oracle.is_listwise)
        check_students(router, run)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if options.enabled and not oracle.is_paid:
        log.warning("router=%s with a judge that costs nothing (%s): the router saves judge calls, not money "
                    "(oracle.bill_as prices the rules judge as if it were paid)", options.kind, oracle.name)
    return router


def train_options(cfg: DictConfig, num_processes: int) -> TrainOptions:
    """The update's options of a config: the schedule's optimisation, the batch sizes, the model's length."""
    s = cfg.schedule
    return TrainOptions(s.lr, s.lr_scheduler, s.warmup_ratio, s.weight_decay, s.max_grad_norm, s.epochs,
                        cfg.train.micro_batch_size, grad_accumulation(cfg, num_processes), cfg.model.max_length)


def _instantiate(cfg: DictConfig) -> tuple[tuple, list[Prompt], dict]:
    """The config's objects (oracle, variant, teacher, logger sink, benchmarks), the tokenizer and the
    prompt splits, each checked; a ConfigError names what is wrong."""
    try:
        oracle, variant, teacher, sink = (instantiate(cfg[k]) for k in ("oracle", "loss", "teacher", "logger"))
        oracle.check()
        final = benchmarks(cfg.eval)
        SamplingOptions.of(cfg.sampling)
        if cfg.generation.backend == "openai_server":
            from dno.policy.server import ServerBackend

            ServerBackend(cfg.generation.server).command("checkpoint", 1, 0, "float32")  # placeholders known
        tokenizer, splits, (records, data_stats) = prompt_splits(cfg)
    except (ValueError, InstantiationException) as e:
        raise ConfigError(str(e)) from None
    return (oracle, variant, teacher, sink, final, tokenizer, splits), records, data_stats


def plan_run(cfg: DictConfig, run_dir: Path) -> dict:
    """dno-run plan=true: the run's priced plan (dno.plan) before any model loads (the judge's key is not
    needed; with plan_inputs.prompts_per_iteration not even the data), printed and written to plan.json."""
    validate(cfg)
    try:
        oracle, teacher = instantiate(cfg.oracle), instantiate(cfg.teacher)
    except InstantiationException as e:
        raise ConfigError(str(e)) from None
    try:
        final = benchmarks(cfg.eval, check=False)  # no key needed to plan
    except ValueError as e:
        raise ConfigError(str(e)) from None
    splits = None if (cfg.get("plan_inputs") or {}).get("prompts_per_iteration") else prompt_splits(cfg)[1]
    plan = make_plan(cfg, oracle, teacher, splits, run_dir, final)
    save_plan(run_dir, plan)
    print(plan_table(plan))
    return plan


def prompt_splits(cfg: DictConfig) -> tuple[object, Splits, tuple[list[Prompt], dict]]:
    """The tokenizer, the data's prompts that fit the model, and their splits (test, validation, iterations)."""
    from dno.data.prompts import drop_too_long
    from dno.policy.load import load_tokenizer

    s = cfg.schedule
    try:
        tokenizer = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
        records, data_stats = drop_too_long(instantiate(cfg.data)(), tokenizer,
                                            cfg.model.max_length - cfg.sampling.max_new_tokens)
        splits = make_splits(records, iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                             n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
    except (ValueError, InstantiationException) as e:
        raise ConfigError(str(e)) from None
    return tokenizer, splits, (records, data_stats)


def _start(cfg: DictConfig, run: RunDir, accelerator, records: list[Prompt], sink, launch: Launch) -> Tracker:
    """Provenance checked against a resumed run's and written, then the tracker started (main process only)."""
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    prov = provenance.start(run.path, config, resume=cfg.get("resume", "check"), accelerator=accelerator,
                            model_cfg=cfg.model, identify_model=lambda: model_identity(cfg.model, cfg.cache_dir),
                            records=records, data_cfg=cfg.data)
    accelerator.wait_for_everyone()  # every process has read the record before the main one rewrites it
    if accelerator.is_main_process:
        provenance.write(run.path, prov)
    tracker = Tracker(run, sink, enabled=accelerator.is_main_process)  # only the main process logs
    logged = comparison_axes(config, launch) | {"cfg": config, "provenance": provenance.environment_summary(prov)}
    if launch.sweep_dir:
        logged["sweep_dir"] = launch.sweep_dir
    tracker.start(logged, launch,
                  logged_iterations={t for t in range(1, cfg.schedule.iterations + 1) if run.iteration(t).done("log")})
    return tracker
