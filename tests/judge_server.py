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


class JudgeServer:
    def __init__(self, position_bias: float = 0.0, timeout_sleep: float = 1.5, latency: float = 0.0,
                 rejects: tuple[str, ...] = (), weak: bool = False) -> None:
        self.rejects, self.weak = rejects, weak
        self.faults: list[str] = []
        self.requests: list[dict] = []  # every request received: time, authorization, body, fault
        self.position_bias, self.timeout_sleep, self.latency = position_bias, timeout_sleep, latency
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    fault = server.faults.pop(0) if server.faults else None
                    server.requests.append({"time": time.monotonic(), "path": self.path, "fault": fault,
                                            "authorization": self.headers.get("Authorization"), "body": body,
                                            "form": form_of(body)})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.latency)
                    status, payload, headers = server.answer(body, fault)
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                 **headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and hung up
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

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
                content = ('{"response1": 3, "response2": 5}' if len(self.requests) % 2
                           else '{"id1_score": 4, "id2_score": 2')
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
