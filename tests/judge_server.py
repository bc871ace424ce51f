"""A real HTTP server on 127.0.0.1 that speaks the chat-completions protocol and plays a judge.

Listwise questions (the openai_listwise template) get {"idK_justification", "idK_score"} with
score(text) per shown response; pairwise questions (max_tokens 1 + logprobs) get the labels' log-
probabilities from P(A) = sigmoid(score(A) - score(B) + position_bias). `faults` is a queue: each
request takes the next one, if any: "500", "429", "timeout" (answers after `timeout_sleep` s),
"malformed" (not JSON), "missing" (an id's score left out), "range" (a score of 9), "401",
"nolabel" (a pairwise answer without either label). AlpacaEval's annotator prompt (labels m, M)
is answered like a pairwise question.

MT-Bench's single-answer grading (FastChat's prompts, `[[rating]]`) is answered with a rating of the graded
answer, 3 + score(answer) (fault "norating": an explanation without one); Arena-Hard's games (`<|User Prompt|>`)
with a verdict from score(A) - score(B): A>>B from 2 up, A>B at 1, A=B at 0 (fault "noverdict": none).

The Batch API as OpenAI's: `POST /v1/files` (multipart, purpose batch), `POST /v1/batches`, `GET
/v1/batches/{id}` (each retrieve moves a batch one step: validating, in_progress, finalizing, completed),
`GET /v1/batches`, `GET /v1/files/{id}/content`; the output file's lines (in reverse order) hold each request's
answer as the chat-completions endpoint would give it. `batch_faults` is a queue, one per batch created:
"expire_half" (expired with half the requests answered, the rest in the error file), "fail" (failed, no
output), "malformed_line" (one output line not JSON). `batch_answered` counts the requests batches answered.

Structured outputs, as open-model servers treat them: `rejects` lists the response_format forms
answered with HTTP 500 (llama.cpp's server rejects OpenAI's "json_schema"); a `weak` judge (a small
model) writes JSON-like text with the wrong keys or broken syntax unless the request carries a
schema, which it then honours exactly: its keys are the schema's, nothing else.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def score(text: str) -> int:
    """The scripted judge's rubric score of a response: 1..6, a function of its content only."""
    return 1 + sum(map(ord, text)) % 6


def shown_responses(user: str) -> list[str]:
    body = user.split("# Responses\n", 1)[1].rsplit("\n\nAnswer with one JSON object", 1)[0]
    parts = re.split(r"(?:^|\n\n)## id\d+\n", body)
    return parts[1:]


ALPACA_OUTPUT = re.compile(r'"model_identifier": "(m|M)",\s*"output": """(.*?)"""\s*}', re.DOTALL)


def alpaca_outputs(user: str) -> tuple[str, str] | None:
    """output_1 (identifier m) and output_2 (M) of alpaca_eval's weighted GPT-4-Turbo prompt."""
    found = dict((k, v) for k, v in ALPACA_OUTPUT.findall(user))
    return (found["m"], found["M"]) if len(found) == 2 else None


def pair_outputs(user: str) -> tuple[str, str]:
    a = user.split("# Output A\n", 1)[1].split("\n\n# Output B\n", 1)
    return a[0], a[1].rsplit("\n\nWhich output is better?", 1)[0]


def graded_answer(system: str, user: str) -> str:
    """The answer an MT-Bench request grades: turn 1's, or the last of Assistant A's turns (turn 2)."""
    if "[The Start of Assistant's Answer]" in user:
        return user.split("[The Start of Assistant's Answer]\n", 1)[1].split("\n[The End of Assistant's Answer]")[0]
    conversation = user.split("<|The Start of Assistant A's Conversation with User|>")[-1]
    return conversation.rsplit("### Assistant A:\n", 1)[1].split("\n\n<|The End of Assistant A's")[0]


def arena_answers(user: str) -> tuple[str, str]:
    a = user.split("<|The Start of Assistant A's Answer|>\n", 1)[1].split("\n<|The End of Assistant A's Answer|>")[0]
    b = user.split("<|The Start of Assistant B's Answer|>\n", 1)[1].split("\n<|The End of Assistant B's Answer|>")[0]
    return a, b


def verdict(a: str, b: str) -> str:
    d = score(a) - score(b)
    return "A>>B" if d >= 2 else "A>B" if d == 1 else "A=B" if d == 0 else "B>A" if d == -1 else "B>>A"


def form_of(body: dict) -> str:
    """The structured-output form of a request: json_schema, json_object_schema, json_object or none."""
    fmt = body.get("response_format")
    if not fmt:
        return "none"
    if fmt["type"] == "json_object":
        return "json_object_schema" if fmt.get("schema") else "json_object"
    return fmt["type"]


def schema_of(body: dict) -> dict | None:
    fmt = body.get("response_format") or {}
    return fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")


def weak_reply(user: str) -> str:
    """A small model's answer without a schema: JSON-like text with the wrong keys or broken syntax, which one
    fixed by the question (the same question gets the same garbage, whatever the order requests arrive in)."""
    return '{"response1": 3, "response2": 5}' if zlib.crc32(user.encode()) % 2 else '{"id1_score": 4, "id2_score": 2'


class JudgeServer:
    def __init__(self, position_bias: float = 0.0, timeout_sleep: float = 1.5, latency: float = 0.0,
                 rejects: tuple[str, ...] = (), weak: bool = False) -> None:
        self.rejects, self.weak = rejects, weak
        self.faults: list[str] = []
        self.requests: list[dict] = []  # every request received: time, authorization, body, fault
        self.position_bias, self.timeout_sleep, self.latency = position_bias, timeout_sleep, latency
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = self.replied = 0
        # hold(n): the n+1-th request and those after it get no answer until release(): a kill lands inside a stage
        self.held_from: int | None = None
        self.released = threading.Event()
        self.released.set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_faults: list[str | None] = []
        self.batch_answered: list[dict] = []  # the bodies of the requests that batches answered (paid)
        # hold_batch_step(step): the Batch API's `upload`, `create` or `read` is done on the server, its reply held
        # until release(): a client killed then has lost the reply, not the server's work
        self.held_step: str | None = None
        self.held_reached = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, payload, content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with server.lock:
                    status, payload = server.batch_api_get(self.path)
                server.wait_if_held("read" if self.path.split("?")[0].endswith("/content") and
                                    not server.is_error_file(self.path) else "poll")
                self.reply(status, payload, "application/octet-stream" if isinstance(payload, bytes)
                           else "application/json")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.endswith(("/files", "/batches", "/cancel")):
                    with server.lock:
                        answer = server.batch_api_post(self.path, raw, self.headers["Content-Type"])
                    server.wait_if_held("upload" if self.path.endswith("/files") else "create")
                    self.reply(*answer)
                    return
                body = json.loads(raw)
                with server.lock:
                    fault = server.faults.pop(0) if server.faults else None
                    server.requests.append({"time": time.monotonic(), "path": self.path, "fault": fault,
                                            "authorization": self.headers.get("Authorization"), "body": body,
                                            "form": form_of(body)})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    held = server.held_from is not None and len(server.requests) > server.held_from
                try:
                    if held:
                        server.released.wait(timeout=600)
                    time.sleep(server.latency)
                    status, payload, headers = server.answer(body, fault)
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                 **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                    with server.lock:
                        server.replied += 1
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def hold(self, answered: int) -> None:
        """Answer the next `answered` requests, then hold every later one until release()."""
        with self.lock:
            self.held_from = len(self.requests) + answered
            self.released.clear()

    def release(self) -> None:
        with self.lock:
            self.held_from = None
            self.held_step = None
            self.released.set()

    def hold_batch_step(self, step: str) -> None:
        """Do the Batch API's `step` (upload, create, poll, read) and hold its reply until release()."""
        with self.lock:
            self.held_step = step
            self.held_reached.clear()
            self.released.clear()

    def wait_if_held(self, step: str) -> None:
        if self.held_step == step:
            self.held_reached.set()
            self.released.wait(timeout=600)

    def is_error_file(self, path: str) -> bool:
        file_id = path.split("?")[0].rstrip("/").split("/")[-2]
        return any(b.get("error_file_id") == file_id for b in self.batches.values())

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def batch_api_post(self, path: str, raw: bytes, content_type: str) -> tuple[int, dict]:
        """POST /v1/files (multipart) or /v1/batches."""
        now = int(time.time())
        if path.endswith("/files"):
            from email.parser import BytesParser
            from email.policy import default

            message = BytesParser(policy=default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
            parts = {p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
                     for p in message.iter_parts()}
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = parts["file"]
            return 200, {"id": file_id, "object": "file", "bytes": len(parts["file"]), "created_at": now,
                         "filename": "input.jsonl", "purpose": parts.get("purpose", b"batch").decode(),
                         "status": "processed"}
        if path.endswith("/cancel"):
            batch = self.batches[path.rstrip("/").split("/")[-2]]
            batch["status"] = "cancelled"
            return 200, self.batch_view(batch["id"])
        body = json.loads(raw)
        batch_id = f"batch_{len(self.batches) + 1}"
        total = len([line for line in self.files[body["input_file_id"]].split(b"\n") if line.strip()])
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                                  "input_file_id": body["input_file_id"],
                                  "completion_window": body["completion_window"],
                                  "status": "validating", "output_file_id": None, "error_file_id": None,
                                  "created_at": now, "request_counts": {"total": total, "completed": 0, "failed": 0},
                                  "metadata": body.get("metadata"),
                                  "fault": self.batch_faults.pop(0) if self.batch_faults else None}
        return 200, self.batch_view(batch_id)

    def batch_view(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if k != "fault"}

    def batch_api_get(self, path: str) -> tuple[int, dict | bytes]:
        """GET /v1/batches, /v1/batches/{id} (one step further each time), /v1/files/{id}/content."""
        parts = path.split("?")[0].rstrip("/").split("/")
        if parts[-1] == "batches":
            return 200, {"object": "list", "data": [self.batch_view(b) for b in self.batches], "has_more": False}
        if parts[-2] == "batches":
            batch = self.batches[parts[-1]]
            steps = ("validating", "in_progress", "finalizing", "completed")
            if batch["fault"] == "stuck" and batch["status"] == "validating":
                batch["status"] = "in_progress"  # and there it stays
            elif batch["fault"] != "stuck" and batch["status"] in steps[:-1]:
                batch["status"] = steps[steps.index(batch["status"]) + 1]
                if batch["status"] == "completed":
                    self.run_batch(batch)
            return 200, self.batch_view(batch["id"])
        return 200, self.files[parts[-2]]

    def run_batch(self, batch: dict) -> None:
        """The batch's requests answered as the chat-completions endpoint would, its files written."""
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].split(b"\n") if line.strip()]
        if batch["fault"] == "fail":
            batch.update(status="failed", errors={"data": [{"code": "invalid_request", "message": "injected"}]})
            return
        answered = lines[: len(lines) // 2] if batch["fault"] == "expire_half" else lines
        out = []
        for k, line in enumerate(answered):
            status, payload, _ = self.answer(line["body"], None)
            self.batch_answered.append(line["body"])
            out.append(json.dumps({"id": f"batch_req_{k}", "custom_id": line["custom_id"], "error": None,
                                   "response": {"status_code": status, "request_id": f"req_{k}", "body": payload}}))
        if batch["fault"] == "malformed_line" and out:
            out[0] = out[0][: len(out[0]) // 2]
        errors = [json.dumps({"id": f"batch_req_e{k}", "custom_id": line["custom_id"], "response": None,
                              "error": {"code": "batch_expired", "message": "not run within the window"}})
                  for k, line in enumerate(lines[len(answered):])]
        for name, content in (("output_file_id", out), ("error_file_id", errors)):
            if content:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "\n".join(reversed(content)).encode() + b"\n"  # in any order
                batch[name] = file_id
        batch["status"] = "expired" if batch["fault"] == "expire_half" else "completed"
        batch["request_counts"].update(completed=len(answered), failed=len(errors))

    def answered(self) -> int:
        """Requests that got a 200 answer (what a paid API would bill)."""
        return sum(r["fault"] not in ("500", "429", "timeout", "401") and r["form"] not in self.rejects
                   for r in self.requests)

    def answer(self, body: dict, fault: str | None) -> tuple[int, dict, dict]:
        if form_of(body) in self.rejects:  # llama.cpp's server on OpenAI's json_schema form
            message = f"unsupported response_format {form_of(body)}"
            return 500, {"error": {"message": message, "type": "server_error"}}, {}
        if fault in ("500", "429"):
            return int(fault), {"error": {"message": f"injected {fault}", "type": "server_error"}}, \
                {"retry-after-ms": "10"}
        if fault == "401":
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, {}
        if fault == "timeout":
            time.sleep(self.timeout_sleep)
        user = body["messages"][-1]["content"]
        system = body["messages"][0]["content"] if len(body["messages"]) > 1 else ""
        if "<|User Prompt|>" in user:  # an Arena-Hard game
            content = ("Both are answers." if fault == "noverdict"
                       else f"My own answer first. My final verdict is: [[{verdict(*arena_answers(user))}]]")
            logprobs = None
        elif "[[rating]]" in system + user:  # MT-Bench's single-answer grading
            rating = 3 + score(graded_answer(system, user))
            content = "A fair answer." if fault == "norating" else f"The answer is adequate. Rating: [[{rating}]]"
            logprobs = None
        elif body.get("logprobs"):
            alpaca = alpaca_outputs(user)  # AlpacaEval's annotator: labels m (output_1) and M (output_2)
            a, b = alpaca or pair_outputs(user)
            labels = ("m", "M") if alpaca else ("A", "B")
            p = 1 / (1 + math.exp(-(score(a) - score(b) + self.position_bias)))
            top = [{"token": labels[0], "logprob": math.log(p), "bytes": None},
                   {"token": labels[1], "logprob": math.log(1 - p), "bytes": None}]
            content = labels[0] if p >= 0.5 else labels[1]
            if fault == "nolabel":  # an answer with neither label among the alternatives
                top, content = [{"token": "Both", "logprob": -0.1, "bytes": None}], "Both"
            logprobs = {"content": [{"token": content, "logprob": math.log(max(p, 1 - p)), "bytes": None,
                                     "top_logprobs": top}]}
        else:
            shown = shown_responses(user)
            obj = {}
            for k, text in enumerate(shown, start=1):
                obj[f"id{k}_justification"] = f"{len(text)} characters"
                obj[f"id{k}_score"] = score(text)
            if fault == "missing":
                obj.pop(f"id{len(shown)}_score")
            if fault == "range":
                obj["id1_score"] = 9
            content = "I think the first one is best." if fault == "malformed" else json.dumps(obj)
            schema = schema_of(body)
            if self.weak and schema is None:  # a small model left to itself: JSON-like, not what was asked
                content = weak_reply(user)
            elif schema is not None and fault is None:  # decoding constrained to the schema: its keys only
                content = json.dumps({key: obj.get(key, "?") for key in schema["properties"]})
            logprobs = None
        usage = {"prompt_tokens": len(user) // 4, "completion_tokens": len(content) // 4}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}],
        }, {}
