"""A small OpenAI-compatible completions server on transformers, for tests and CPU machines:

    python -m dno.policy.serve CHECKPOINT --port 8000

It speaks the part of vLLM's API that `generation.backend=openai_server` uses: GET /health,
GET /v1/models, POST /v1/completions with a prompt given as text or token ids, n, max_tokens,
temperature, top_p, top_k, seed and vLLM's `stop_token_ids`. Requests are served one at a time. It is
not a replacement for vLLM: no batching across requests, no paged attention.
`--exit-after N` makes it crash on the request after the first N (to test the loop's handling of a dead server);
`--api text_only` (no token-id prompts) or `--api no_seed` (the seed ignored) make it speak another API, to test
the client's API check.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


class Engine:
    def __init__(self, checkpoint: str, api: str = "vllm") -> None:
        self.name, self.api = checkpoint, api
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
        self.lock = threading.Lock()
        self.completions = 0
        self.received = 0

    @torch.no_grad()
    def complete(self, body: dict) -> dict:
        prompt = body["prompt"]
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"] if isinstance(prompt, str) else prompt
        if not ids or not all(isinstance(i, int) for i in ids) or (self.api == "text_only" and ids is prompt):
            raise ValueError("prompt must be a string" + ("" if self.api == "text_only" else " or a list of token ids"))
        n = int(body.get("n", 1))
        eos = list(body.get("stop_token_ids") or []) + [self.tokenizer.eos_token_id]
        temperature = float(body.get("temperature", 1.0))
        with self.lock:
            torch.manual_seed(int(body.get("seed", 0)) if self.api != "no_seed" else self.completions)
            out = self.model.generate(
                input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=temperature > 0, temperature=temperature or None, top_p=float(body.get("top_p", 1.0)),
                top_k=max(int(body.get("top_k", -1)), 0),  # 0: all tokens (None would be generate's 50)
                max_new_tokens=int(body.get("max_tokens", 16)), num_return_sequences=n,
                eos_token_id=eos, pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )[:, len(ids):]
            self.completions += 1
        choices, n_tokens = [], 0
        for i, row in enumerate(out.tolist()):
            stop = next((j for j, t in enumerate(row) if t in eos), None)
            kept = row[: stop + 1] if stop is not None else row
            n_tokens += len(kept)
            choices.append({"index": i, "text": self.tokenizer.decode(kept, skip_special_tokens=True),
                            "finish_reason": "stop" if stop is not None else "length", "logprobs": None})
        return {"id": f"cmpl-{self.completions}", "object": "text_completion", "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": len(ids), "completion_tokens": n_tokens,
                          "total_tokens": len(ids) + n_tokens}}


def handler(engine: Engine, exit_after: int | None):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": engine.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/v1/completions":
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            with engine.lock:
                engine.received += 1
                if exit_after is not None and engine.received > exit_after:
                    os._exit(17)  # a crash, as a killed engine would look to the client
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(200, engine.complete(body))
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})

        def log_message(self, fmt: str, *args) -> None:
            print(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}", flush=True)

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--exit-after", type=int, default=None)
    p.add_argument("--api", choices=("vllm", "text_only", "no_seed"), default="vllm")
    args = p.parse_args(argv)
    engine = Engine(args.checkpoint, args.api)
    server = ThreadingHTTPServer((args.host, args.port), handler(engine, args.exit_after))
    print(f"serving {args.checkpoint} on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
