"""Sampling on an external engine: `generation.backend=openai_server`.

For each iteration the loop starts a server for pi_t's checkpoint with `generation.server.command`
(vLLM by default), waits until it answers, asks the OpenAI-compatible completions API for K
responses per prompt (the prompt sent as token ids of the chat template, so the engine sees exactly
what the in-process sampler would; n=K, a seed per prompt, EOS as the stop token), and stops the
server before training needs the GPU. A server that exits, never becomes healthy, or stops
answering is a GenerationError after its timeout; the samples file is written only when complete.

Command placeholders: {checkpoint} {port} {seed} {dtype} {python} (this interpreter) {cpus} (this process's
cores, e.g. 0-1) and every scalar key of `generation.server` ({host} {tensor_parallel} ...; conf/generation/server/:
`vllm` for `vllm serve` on GPUs, `vllm_cpu` for vLLM's CPU build). `python -m dno.policy.serve {checkpoint}
--port {port}` is the small transformers server this project ships for tests.

Before sampling, one small request checks that the server speaks the API this client needs: a prompt given as
token ids, `n`, and a `seed` that makes the draw reproducible (two identical requests give the same texts). The
request format was checked against vllm-cpu 0.32.0 (`make test-vllm`) and dno.policy.serve.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dno.policy.load import prompt_ids
from dno.policy.sample import SamplingOptions
from dno.runtime.concurrency import run_concurrently


class GenerationError(RuntimeError):
    """The generation server failed; nothing of the stage was kept, a re-run starts it again."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Server:
    """A running generation server (a process group) and the client that samples from it."""

    def __init__(self, process: subprocess.Popen, base_url: str, log_file: Path, cfg) -> None:
        self.process, self.base_url, self.log_file, self.cfg = process, base_url, log_file, cfg

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise GenerationError(f"the generation server exited with code {code}; last lines of {self.log_file}:\n"
                                  f"{_tail(self.log_file)}")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise GenerationError(f"the generation server did not become healthy within {self.cfg.startup_timeout_s} s "
                              f"(generation.server.startup_timeout_s); last lines of {self.log_file}:\n"
                              f"{_tail(self.log_file)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def client(self):
        """The OpenAI client of this server (no key: a local engine)."""
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key="EMPTY", timeout=self.cfg.request_timeout_s,
                             max_retries=self.cfg.max_retries)

    def check_api(self, seed: int) -> None:
        """One prompt of token ids, n=2 and a seed, asked twice: a server that rejects the request (no token-id
        prompts, no `seed`, no `n`) or draws differently under the same seed is a GenerationError naming what
        differs, before any sampling (vLLM has changed its request format between versions)."""
        import openai

        client = self.client()
        version = self.version()
        try:
            model = client.models.list().data[0].id
            draws = [[c.text for c in sorted(client.completions.create(
                model=model, prompt=[1, 2, 3, 4], n=2, seed=seed, max_tokens=16, temperature=1.0,
                extra_body={"stop_token_ids": [], "skip_special_tokens": True, "top_k": 50}).choices,
                key=lambda c: c.index)] for _ in range(2)]  # the fields sample() sends
        except openai.OpenAIError as e:
            self.check_alive()
            raise GenerationError(f"the generation server{version} does not accept the request dno sends (a prompt "
                                  f"of token ids, n, seed; checked with vllm-cpu 0.32.0): {type(e).__name__}: {e}"
                                  ) from None
        if len(draws[0]) != 2:
            raise GenerationError(f"the generation server{version} returned {len(draws[0])} responses for n=2")
        if draws[0] != draws[1]:
            raise GenerationError(f"the generation server{version} ignores `seed`: the same request drew different "
                                  "texts, so samples would not be reproducible (vLLM: a seed needs "
                                  "--no-enable-chunked-prefill on CPU)")
        with open(self.log_file, "a") as log:
            log.write(f"dno: the server{version} passed the API check (token-id prompt, n, seed)\n")

    def version(self) -> str:
        """` (vLLM 0.32.0)` from vLLM's GET /version, or "" when the server has none."""
        try:
            with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/version", timeout=5) as r:
                return f" (vLLM {json.loads(r.read())['version']})"
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
            return ""

    def sample(self, tokenizer, prompts: list[list[dict]], sampling: SamplingOptions, *, n: int, seed: int,
               desc: str = "sampling") -> tuple[list[list[str]], int]:
        """`n` answers per prompt (a messages list), in order, and the number of generated tokens."""
        import openai

        client = self.client()
        try:
            model = client.models.list().data[0].id

            def one(i: int) -> tuple[list[str], int]:
                self.check_alive()
                r = client.completions.create(
                    model=model, prompt=prompt_ids(tokenizer, prompts[i]), n=n, seed=seed + i,
                    max_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                    extra_body={"stop_token_ids": [tokenizer.eos_token_id], "skip_special_tokens": True,
                                "top_k": sampling.top_k or -1})  # vLLM's default is all tokens
                choices = sorted(r.choices, key=lambda c: c.index)
                if len(choices) != n:
                    raise GenerationError(f"the server returned {len(choices)} responses for n={n}")
                return [c.text.strip() for c in choices], r.usage.completion_tokens if r.usage else 0

            results = run_concurrently(one, list(range(len(prompts))), self.cfg.concurrency, desc)
        except openai.OpenAIError as e:
            self.check_alive()  # a crash explains the failure better than the client's error
            raise GenerationError(f"generation server request failed: {type(e).__name__}: {e}") from None
        return [texts for texts, _ in results], sum(k for _, k in results)


@dataclass(frozen=True)
class ServerSampler:
    """`Sampler.sample` over a running server: what the sample stage calls either way."""

    server: Server
    tokenizer: object
    options: SamplingOptions

    def sample(self, prompts: list[list[dict]], *, n: int, seed: int, desc: str = "sampling"):
        return self.server.sample(self.tokenizer, prompts, self.options, n=n, seed=seed, desc=desc)


def cpu_list() -> str:
    """The cores this process may run on, as vLLM's VLLM_CPU_OMP_THREADS_BIND wants them: `0-3` or `0,2,5`."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if cores == list(range(cores[0], cores[-1] + 1)):
        return f"{cores[0]}-{cores[-1]}"
    return ",".join(map(str, cores))


class ServerBackend:
    """`generation.server` settings; `serving()` starts and stops one server."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def command(self, checkpoint: str, port: int, seed: int, dtype: str) -> list[str]:
        c = self.cfg
        builtin = dict(checkpoint=shlex.quote(checkpoint), port=port, seed=seed, dtype=dtype,
                       python=shlex.quote(sys.executable), cpus=cpu_list())
        keys = {k: shlex.quote(str(v)) for k, v in c.items() if k != "command" and isinstance(v, (str, int, float))}
        clash = sorted(set(keys) & (set(builtin) - {"port"}))  # port: the key's value, 0 meaning a free one
        if clash:
            raise ValueError(f"generation.server.{clash[0]} is a placeholder dno fills in; rename the key")
        fields = {**keys, **builtin}
        try:
            return shlex.split(c.command.format(**fields))
        except (KeyError, IndexError) as e:
            raise ValueError(f"generation.server.command has an unknown placeholder {e}; "
                             f"known: {', '.join('{' + k + '}' for k in fields)}") from None

    @contextlib.contextmanager
    def serving(self, checkpoint: str, log_file: Path, *, seed: int, dtype: str):
        port = self.cfg.port or free_port(self.cfg.host)
        argv = self.command(checkpoint, port, seed, dtype)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as log:
            log.write(f"$ {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                raise GenerationError(f"cannot start the generation server {argv[0]!r}: {e}") from None
        server = Server(process, f"http://{self.cfg.host}:{port}/v1", log_file, self.cfg)
        try:
            server.wait_healthy()
            server.check_api(seed)
            yield server
        finally:
            server.stop()
