"""Where a run's numbers come from, and no silent reuse of results made under another config.

`<run_dir>/provenance.json` is written when a run starts (and copied into the W&B config): the git
commit of this code and whether the tree was dirty (with a hash of the diff), the versions of the
libraries that can change results, the device and dtype, a hash of the resolved config, the
model's identity (hub id and the cached snapshot's revision, a sha256 of the weights files, or the
random-init config) and the prompt set's identity (a hash of the records, the dataset revision).

A re-run of the same run directory resumes. Before any compute, `check_resume` compares the
resolved config with the recorded one: a difference in a key that can change results stops the
run (ConfigError: exit 2) unless `resume=continue` accepts it for the stages not yet done; a
different commit than the one that produced the finished stages warns. Both are recorded under
`resumes` in provenance.json.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import platform
import socket
import time
from importlib import metadata
from pathlib import Path

from dno.runtime.commit import git_state
from dno.runtime.config import ConfigError, added_or, flatten, upgrade
from dno.runtime.files import read_json, write_json
from dno.runtime.layout import RunDir

log = logging.getLogger(__name__)
PACKAGES = ("dno", "torch", "transformers", "accelerate", "datasets", "alpaca_eval", "wandb", "openai", "trl",
            "peft", "vllm", "hydra-core")
# Keys that cannot change a run's results, so a resume may change them: where metrics are logged, how
# long the other processes wait for the main one, where caches live (they are keyed by content), the
# run's label in tables and its sweep's W&B group, the resume policy itself, and a judge's budget, which only
# decides where a run stops (what was paid is cached). tests/test_cluster_accidents.py resumes with each changed.
HARMLESS = ("logger", "train.process_timeout_min", "cache_dir", "method", "resume", "sweep_name", "oracle.max_requests",
            "oracle.budget_usd", "oracle.max_concurrency", "oracle.max_retries", "oracle.timeout_s",
            # a judge client's limits, patience, prices and way of paying (direct or the Batch API) change what
            # is paid and when, never a label; so do the plan's inputs
            "eval.*.max_requests", "eval.*.budget_usd", "eval.*.max_concurrency", "eval.*.max_retries",
            "eval.*.timeout_s", "oracle.price_*", "eval.*.price_*", "oracle.batch*", "eval.*.batch*",
            "oracle.server_log", "eval.*.server_log", "plan", "plan_inputs",
            "search")  # a search trial's number, parameters (set at their own keys too) and objective's name


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo's), else what `platform` knows of it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device(accelerator, dtype: str) -> dict:
    import torch

    if torch.cuda.is_available():
        return {"kind": "cuda", "gpu": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(),
                "processes": accelerator.num_processes, "dtype": dtype, "mixed_precision": accelerator.mixed_precision}
    from dno.runtime.precision import cpu_bf16_unit

    return {"kind": "cpu", "cpu": cpu_name(), "threads": torch.get_num_threads(),
            "processes": accelerator.num_processes, "dtype": dtype, "mixed_precision": accelerator.mixed_precision,
            "bf16_unit": cpu_bf16_unit()}


def config_sha256(config: dict) -> str:
    """A hash of the resolved config without the keys that cannot change results."""
    kept = {k: v for k, v in flatten(config).items() if not harmless(k)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def harmless(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, h) or fnmatch.fnmatchcase(key, h + ".*") for h in HARMLESS)


def prompts_identity(records: list, data_cfg) -> dict:
    """The prompt set's size, hash and revision (a one-turn prompt hashes as it did before prompts were messages)."""
    fields = [[r.id, r.instruction, r.system, r.teacher] if len(r.turns) == 1 else [r.id, r.messages, r.teacher]
              for r in records]
    return {"records": len(records), "sha256": hashlib.sha256(json.dumps(fields).encode()).hexdigest(),
            "revision": data_cfg.get("revision")}


def record(config: dict, *, accelerator, model_cfg, identify_model, records: list[dict], data_cfg) -> dict:
    """What provenance.json holds for a run started now (the config itself included, redacted). The model's
    and prompts' identities are the main process's work (it writes the file): hashing weights once.
    `identify_model()`: the model's identity (dno.policy.load.model_identity, given by the caller)."""
    main = accelerator.is_main_process
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), **git_state(),
            "versions": versions(),
            "device": device(accelerator, model_cfg.dtype), "config_sha256": config_sha256(config),
            "model": identify_model() if main else None,
            "prompts": prompts_identity(records, data_cfg) if main else None,
            "config": config, "resumes": []}


def check_resume(path: Path, current: dict, resume: str) -> dict | None:
    """On a re-run: the recorded provenance, updated with this start (None on a fresh run).

    Raises ConfigError when a key that can change results differs and `resume` is not `continue`."""
    if not path.exists():
        return None
    recorded = read_json(path)
    old, new = upgrade(flatten(recorded["config"])), flatten(current["config"])
    changed = {k: (added_or(old, k), added_or(new, k)) for k in sorted(set(old) | set(new))
               if added_or(old, k) != added_or(new, k) and not harmless(k)}
    if changed and resume != "continue":
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise ConfigError(
            f"{path.parent} was started with another config; these keys can change results:\n{lines}\n"
            "Its finished stages would be reused silently. Give a new hydra.run.dir for a new run, or add "
            f"resume=continue to accept the change for the stages not yet done (it is recorded in {path.name}).")
    entry = {"started": current["started"], "commit": current["commit"], "dirty": current["dirty"],
             "diff_sha256": current["diff_sha256"], "versions": current["versions"]}
    if current["commit"] != recorded["commit"] or current["diff_sha256"] != recorded["diff_sha256"]:
        log.warning("resuming %s with code %s%s; its finished stages came from %s%s: the difference cannot be "
                    "proven harmless (recorded in %s)", path.parent, current["commit"],
                    " (dirty)" if current["dirty"] else "", recorded["commit"], " (dirty)" if recorded["dirty"] else "",
                    path.name)
        entry["other_code"] = True
    if changed:
        entry["accepted_changes"] = {k: list(v) for k, v in changed.items()}
        log.warning("resume=continue: the stages not yet done run with %s", ", ".join(changed))
    recorded["resumes"] = [*recorded.get("resumes", []), entry]
    recorded["config"], recorded["config_sha256"] = current["config"], current["config_sha256"]
    return recorded


def start(run_dir: Path, config: dict, *, resume: str, **identity) -> dict:
    """This start's provenance: checked against the recorded one on a resume (see check_resume).
    Call on every process before any writes; then `write` on the main one."""
    current = record(config, **identity)
    run = RunDir(run_dir)
    updated = check_resume(run.provenance, current, resume)
    if updated is None and any(d.markers() for d in run.stage_dirs()):
        current["note"] = "first recorded on a resume: the stages done before were not checked"
    return updated or current


def write(run_dir: Path, prov: dict) -> None:
    write_json(RunDir(run_dir).provenance, prov)


def add_benchmarks(run_dir: Path, identities: dict) -> None:
    """What each benchmark of the final stage was (data source and revision, judge, prompt versions), recorded
    under `benchmarks` (a benchmark run again, e.g. after a resume, replaces its entry)."""
    path = RunDir(run_dir).provenance
    if path.exists():
        prov = read_json(path)
        write_json(path, {**prov, "benchmarks": {**prov.get("benchmarks", {}), **identities}})


def environment_summary(prov: dict) -> dict:
    """The part of provenance.json that goes into the W&B config (everything but the config itself)."""
    return {k: v for k, v in prov.items() if k != "config"}
