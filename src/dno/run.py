"""A DNO run as one object: everything the stages share, built complete from a checked config.

    run = Run.build(cfg, run_dir)      # checks, instantiation, splits, tracker, tokenizer: no compute
    dno.loop.train_dno(run)            # the algorithm (dno-run); dno-eval and dno-bench build the same

Everything cheap is checked and instantiated first, so that a bad config fails (ConfigError, exit 2
in the apps) before any model, sample or judge is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dno import provenance
from dno.alpacaeval import check as check_eval
from dno.config import ConfigError, grad_accumulation, validate
from dno.data.splits import Splits, make_splits
from dno.distributed import make_accelerator, same_run_dir, stage
from dno.records import stage_seed
from dno.tracking import Tracker, redact
from dno.variant import Variant


class Policies:
    """Holds one policy in memory and loads another only when a stage asks for it."""

    def __init__(self, cfg: DictConfig, tokenizer, device) -> None:
        self.cfg, self.tokenizer, self.device = cfg, tokenizer, device
        self.model, self.path = None, "unloaded"

    def get(self, path: Path | None):
        """path None is pi_1 (the configured model), else a checkpoint directory."""
        if self.path != path:
            from dno.policy import load_model

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
    """The main process takes the run directory's lock (dno.lock); every process stops if it could not."""
    from dno.distributed import gather
    from dno.lock import acquire

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
    missing = sum(not p.get("teacher") for p in prompts)
    if variant.needs_teacher and not teacher.answers_every_prompt and missing:
        raise ConfigError(f"loss={choice} needs the teacher's answer for every prompt, but {missing} of {len(prompts)} "
                          f"prompts have none in the data: use teacher=best_of_n, or data with teacher answers")


@dataclass
class Run:
    """What every stage of a run shares. Built once by `Run.build`, complete when built."""

    cfg: DictConfig
    run_dir: Path
    splits: Splits
    oracle: object
    variant: Variant
    teacher: object
    tracker: Tracker
    accelerator: object
    grad_accum: int
    tokenizer: object
    policies: Policies
    data_stats: dict  # data/dropped_too_long, data/duplicates: logged with iteration 1

    @classmethod
    def build(cls, cfg: DictConfig, run_dir: Path, *, group: str | None = None, name: str | None = None,
              loss_choice: str = "?") -> Run:
        accelerator = make_accelerator(cfg.train.process_timeout_min)
        validate(cfg, accelerator.num_processes)
        from dno.adapters import lora_enabled

        if lora_enabled(cfg.model) and accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
            raise ConfigError(f"model.lora.r={cfg.model.lora.r}: LoRA runs in one process or DDP, not "
                              f"{accelerator.distributed_type.value}: use a DDP config (conf/accelerate/cpu_ddp.yaml)")
        from dno.data.prompts import drop_too_long
        from dno.policy import check_path, load_tokenizer

        if cfg.model.path:
            try:
                check_path(cfg.model.path)
            except FileNotFoundError as e:
                raise ConfigError(f"model.path: {e}") from None
        s = cfg.schedule
        try:
            oracle, variant, teacher, sink = (instantiate(cfg[k]) for k in ("oracle", "loss", "teacher", "logger"))
            oracle.check()
            check_eval(cfg)
            if cfg.generation.backend == "openai_server":
                from dno.generation import ServerBackend

                ServerBackend(cfg.generation.server).command("checkpoint", 1, 0, "float32")  # placeholders known
            tokenizer = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
            records, data_stats = drop_too_long(instantiate(cfg.data), tokenizer,
                                                cfg.model.max_length - cfg.sampling.max_new_tokens)
            splits = make_splits(records, iterations=s.iterations, per_iteration=s.prompts_per_iteration,
                                 n_val=s.val_prompts, n_test=s.test_prompts, seed=cfg.split_seed)
        except (ValueError, InstantiationException) as e:
            raise ConfigError(str(e)) from None
        check_teacher(variant, teacher, splits, loss_choice)
        same_run_dir(accelerator, run_dir)
        take_lock(accelerator, run_dir)
        config = redact(OmegaConf.to_container(cfg, resolve=True))
        prov = provenance.start(run_dir, config, resume=cfg.get("resume", "check"), accelerator=accelerator,
                                model_cfg=cfg.model, cache_dir=cfg.cache_dir, records=records, data_cfg=cfg.data)
        accelerator.wait_for_everyone()  # every process has read the record before the main one rewrites it
        if accelerator.is_main_process:
            provenance.write(run_dir, prov)
        tracker = Tracker(run_dir, sink, enabled=accelerator.is_main_process)  # only the main process logs
        tracker.start(config | {"provenance": provenance.environment_summary(prov)}, group=group,
                      name=name or run_dir.name,
                      logged_iterations={t for t in range(1, s.iterations + 1)
                                         if (run_dir / f"iter_{t}" / "DONE.log").exists()})
        return cls(cfg, run_dir, splits, oracle, variant, teacher, tracker, accelerator,
                   grad_accumulation(cfg, accelerator.num_processes), tokenizer,
                   Policies(cfg, tokenizer, accelerator.device), data_stats)

    def checkpoint(self, iteration: int) -> Path | None:
        """Where pi_{iteration + 1} lives; None for pi_1."""
        return None if iteration == 0 else self.run_dir / f"iter_{iteration}" / "checkpoint"

    def seed(self, iteration: int, stage_name: str) -> int:
        return stage_seed(self.cfg.seed, iteration, stage_name)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def stage(self, directory: Path, name: str, fn, *, everyone: bool = False, outputs: tuple[str, ...] = ()) -> dict:
        """A resumable stage (dno.distributed.stage); `outputs`: its files under `directory`, checked when it is
        skipped."""
        return stage(self.accelerator, directory, name, fn, everyone=everyone, outputs=outputs)

    def sample(self, policy: Path | None, prompts: list[dict], out: Path, k: int, seed: int, desc: str = "sampling"):
        """In process, every process samples its shard (call on all); see sample_with_server."""
        from dno.stages.sample import sample_responses

        return sample_responses(self.policies.get(policy), self.tokenizer, prompts, out, k=k,
                                sampling=self.cfg.sampling, seed=seed, desc=desc, accelerator=self.accelerator)

    def sample_with_server(self, policy: Path | None, prompts: list[dict], out: Path, k: int, seed: int) -> dict:
        """generation.backend=openai_server, on the main process: a server for `policy` while sampling."""
        from dno.generation import ServerBackend
        from dno.stages.sample import sample_responses

        checkpoint = self.served_checkpoint(policy)
        self.policies.release()
        backend = ServerBackend(self.cfg.generation.server)
        with backend.serving(str(checkpoint), out.parent / "server.log", seed=seed, dtype=self.cfg.model.dtype) as srv:
            return sample_responses(None, self.tokenizer, prompts, out, k=k, sampling=self.cfg.sampling, seed=seed,
                                    server=srv)

    def served_checkpoint(self, policy: Path | None) -> str:
        """What the generation server loads: a checkpoint, or pi_1 as given when it is a directory or hub
        id, else pi_1 written once to <run_dir>/init/policy (a GGUF file or random weights)."""
        if policy is not None:
            return str(policy)
        from dno.policy import resolve_path

        path = self.cfg.model.path
        if path and not resolve_path(path).endswith(".gguf"):
            return resolve_path(path)
        target = self.run_dir / "init" / "policy"
        if not target.exists():
            from dno.records import replace_dir

            def build(tmp: Path) -> None:
                self.policies.get(None).save_pretrained(tmp)
                self.tokenizer.save_pretrained(tmp)

            replace_dir(target, build)
        return str(target)
