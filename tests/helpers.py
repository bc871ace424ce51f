"""Helpers shared by the test files: compose configs like the apps do, run an app as a user would, build the
tiny random model, and read offline W&B runs.

A plain module (not conftest.py), so that every test file imports it the same way whether it runs
alone (`pytest tests/test_configs.py`) or in the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dno.runtime.config import CONF_DIR

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["model=tiny_random", "schedule=smoke", "oracle.concise_max_words=8"]
SWEEP = ["-m", "model=tiny_random", "schedule=smoke", "loss=dno_prct", "oracle=rules", "seed=0,1"]  # as the README
# The W&B reports guide's hyperparameter sweep (two betas x two seeds, one iteration), run by tests/test_report.py
BETA_SWEEP = ["-m", "model=tiny_random", "schedule=smoke", "schedule.iterations=1", "loss.beta=0.05,0.1", "seed=0,1"]
# The search guide's tiny search (3 Optuna trials of search=dno), run, killed and resumed by tests/test_search.py
SEARCH = ["-m", "hydra/sweeper=optuna", "search=dno", "model=tiny_random", "schedule=smoke", "hydra.sweeper.n_trials=3"]
# The README's 2-process command (and its submitit sweep): effective batch 4 = 2 processes x micro 2
# (one process: accumulation 2); sampling batches of 2 prompts, so the 6 prompts make 3 batches to share.
DDP = ["model=tiny_random", "schedule=smoke", "train.micro_batch_size=2", "sampling.batch_size=8"]
SUBMITIT = ["-m", *DDP, "seed=0,1", "hydra/launcher=submitit_local"]
# The README's vLLM command (SmolLM2 sampled on vLLM's CPU build), run for real by tests/test_vllm.py
VLLM = ["generation.backend=openai_server", "generation/server=vllm_cpu", "schedule=smoke", "schedule.iterations=1",
        "logger=none"]
VARIANTS_RUN = ("dno", "ipo", "sppo", "best_vs_worst")  # the variants test_loop.py's sweep runs on SMOKE
# The README's LoRA command, run for real by tests/test_lora.py (one process, then two killed and resumed)
LORA_RUN = [*DDP, "model.lora.r=4", "model.lora.alpha=8", "logger=none"]
APPS = ("dno-run", "dno-eval", "dno-bench", "dno-tables", "dno-nash", "dno-export", "dno-report", "accelerate", ".sh",
        "judge_agreement.py")
TINY_RANDOM = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "tiny_random.yaml").random_init)
TOKENIZER = OmegaConf.load(REPO / "conf" / "model" / "tiny_random.yaml").tokenizer


def program(name: str) -> str:
    """An installed console script (dno-run, accelerate, ...) of this virtual environment."""
    return str(Path(sys.executable).with_name(name))




def starts_an_app(args) -> bool:
    """Whether a subprocess's argv runs one of the apps or experiment scripts (only `slow` tests may)."""
    argv = [args] if isinstance(args, str | Path) else list(args)
    return any(str(a).endswith(APPS) for a in argv[:2])


def make_cfg(*overrides: str, return_hydra_config: bool = False, config_name: str = "config"):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def run(argv: list, *, check: bool = True, timeout: int = 300, env: dict | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    """A command as a user runs it, W&B offline; an app's name (dno-run, accelerate, ...) runs this environment's.
    With `check`, a failure raises with the command's stderr."""
    argv = [program(argv[0]) if argv[0].startswith(("dno-", "accelerate")) else argv[0], *map(str, argv[1:])]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run(argv, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:2])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def dno_run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["dno-run", *args], **kwargs)


def dno_eval(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["dno-eval", *args], **kwargs)


def tiny_model_config(**changes) -> dict:
    """The tiny random Llama of `model=tiny_random` (conf/model/tiny_random.yaml), with `changes`."""
    return {**TINY_RANDOM, **changes}


def tiny_llama(vocab_size: int, **changes):
    """The tiny random Llama itself, for a vocabulary of `vocab_size` (eval mode, seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(**tiny_model_config(vocab_size=vocab_size, **changes))
    return AutoModelForCausalLM.from_config(config).eval()


def wandb_records(run_dir: Path) -> list:
    """The records of a run directory's offline W&B logs (wandb's protobuf Record), read from the
    LevelDB-style log format of `.wandb` files: a 7-byte file header, then 32 KiB blocks of chunks
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) with a 7-byte header each."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, parts = path.read_bytes(), 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:  # a block's tail too short for a header is padding
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0 and length == 0:
                break
            parts += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):
                record = pb.Record()
                record.ParseFromString(parts)
                records.append(record)
                parts = b""
    return records


def wandb_history(run_dir: Path) -> list[dict]:
    """The rows `run.log` wrote into a run directory's offline W&B logs, values decoded from their JSON."""
    rows = []
    for record in wandb_records(run_dir):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def documented_commands() -> list[str]:
    """Every line of README.md's and docs/'s pages (where the commands users run are written)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return [line for page in pages for line in page.read_text().splitlines()]


# README.md and every page of the documentation site (docs/), by path: what tests/test_readme.py and
# tests/test_doc_claims.py hold against the code and results/
PAGES = {"README.md": (REPO / "README.md").read_text(),
         **{p.relative_to(REPO).as_posix(): p.read_text() for p in sorted((REPO / "docs").rglob("*.md"))}}


def section(start: str, end: str | None = None, page: str | None = None) -> str:
    """The text from `start` to `end` (or the page's end) of `page`, else of the one page that has `start`."""
    pages = [page] if page else [name for name, text in PAGES.items() if start in text]
    assert len(pages) == 1, (start, pages)
    text = PAGES[pages[0]]
    i = text.index(start)
    j = text.find(end, i + len(start)) if end else -1
    return text[i:j if j >= 0 else len(text)]


def table_rows(text: str, first_cell: str) -> dict[str, list[str]]:
    """Rows of the markdown tables in `text` whose first cell matches `first_cell`, keyed by that cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(first_cell, cells[0]):
            rows[cells[0]] = cells[1:]
    return rows


def metric_names() -> list[str]:
    """The keys docs/reference/metrics.md names (`<family>` placeholders kept)."""
    import re

    return re.findall(r"`([a-z_]+/[^`]+|iteration)`", (REPO / "docs" / "reference" / "metrics.md").read_text())


def documented(key: str, names: list[str]) -> bool:
    """Whether metrics.md names `key`, a `<family>` placeholder standing for any name."""
    import re

    return any(re.fullmatch(re.sub(r"<[^>]+>", r"[\\w/]+", re.escape(n).replace(r"\<", "<").replace(r"\>", ">")), key)
               for n in names)
