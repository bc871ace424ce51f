"""The paper's judge: all candidates of a prompt side by side, scored on an additive 6-point rubric.

Section 3 of arXiv 2404.03715: GPT-4-Turbo sees the K samples and the teacher answer labelled id1..idN
and returns {"id1_justification": ..., "id1_score": ..., ...}. One chat-completions call per
prompt. The candidates are shown in an order shuffled per question (seeded by the question, so a
repeat asks the identical question and hits the cache); `detail.order[k]` is the candidate shown
as id(k+1), and the scores are put back in the caller's order.

An answer that is not a JSON object, lacks a score for some id, or has a score that is not a
number from 1 to 6 is `invalid`: counted, kept in the run's files, never turned into a label.

Structured outputs (`structured_output`) make a server decode only answers of the asked form, which a
small open judge otherwise misses: `json_schema` (OpenAI's structured outputs, which vLLM also
accepts), `json_object_schema` (`{"type": "json_object", "schema": ...}`, the form of llama.cpp's
servers), `json_object` (any JSON object) or `none`. The schema lists exactly the question's ids,
each with a justification string and an integer score 1..6. `auto` (the default) asks in the
strongest form first; a form the server rejects on the first question (HTTP 4xx, or 5xx after the
client's retries) is dropped for the next one, with one warning, and the form that answered is kept
for the run and remembered in the judge cache for this model on this server: a re-run or the next
iteration asks in it at once, without probing forms the server rejected. The form is part of each
question's cache key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading

from dno.data import Prompt
from dno.oracles.api import ChatAPI, ClientOptions, Reply
from dno.oracles.base import FAILED, INVALID, Judgement, Oracle
from dno.oracles.batch import complete_many
from dno.runtime.concurrency import run_concurrently

TEMPLATE_VERSION = "listwise-v1"
STRUCTURED_OUTPUTS = ("json_schema", "json_object_schema", "json_object", "none")  # strongest first
log = logging.getLogger(__name__)

SYSTEM = """You are an impartial expert judge of answers to user instructions.
Score each response on an additive 6-point scale, one point for each of these qualities it has:
1. it is an answer to the instruction, formatted as one (not a refusal, not a copy of the question);
2. it is relevant to what was asked;
3. it addresses a substantial part of the instruction;
4. it is nearly all correct and answers directly;
5. it is entirely correct, well organised and succinct;
6. it is at an expert's level: concise, accurate and fitted exactly to the instruction.
A response has between 1 and 6 points. Judge each response on its own merits; the order in which
they are shown means nothing. Give a justification of at most 100 words for each score."""


def user_message(instruction: str, shown: list[str]) -> str:
    blocks = "\n\n".join(f"## id{k}\n{text}" for k, text in enumerate(shown, start=1))
    keys = ", ".join(f'"id{k}_justification": "...", "id{k}_score": <1-6>' for k in range(1, len(shown) + 1))
    return (f"# Instruction\n{instruction}\n\n# Responses\n{blocks}\n\n"
            f"Answer with one JSON object and nothing else: {{{keys}}}")


def presentation_order(instruction: str, candidates: list[str], seed: int) -> list[int]:
    """A shuffle that depends only on the question (and `seed`), so a repeat is identical."""
    digest = hashlib.sha256(json.dumps([seed, instruction, candidates]).encode()).digest()
    order = list(range(len(candidates)))
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def parse_scores(text: str | None, n: int, lo: int = 1, hi: int = 6) -> tuple[list[float] | None, str | None]:
    """Scores of id1..idN in the order shown, or (None, why the answer is invalid)."""
    if not text:
        return None, "empty answer"
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    scores = []
    for k in range(1, n + 1):
        value = obj.get(f"id{k}_score")
        if value is None:
            return None, f"missing id{k}_score"
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            return None, f"id{k}_score={value!r} is not a number from {lo} to {hi}"
        scores.append(float(value))
    return scores, None


def answer_schema(n: int, lo: int = 1, hi: int = 6) -> dict:
    """The JSON schema of an answer about n responses: idK_justification (a string) then idK_score."""
    properties = {}
    for k in range(1, n + 1):
        properties[f"id{k}_justification"] = {"type": "string"}
        properties[f"id{k}_score"] = {"type": "integer", "enum": list(range(lo, hi + 1))}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def response_format(mode: str, n: int) -> dict:
    """The request's `response_format` for a structured-output mode ({} for none)."""
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "scores", "strict": True, "schema": answer_schema(n)}}}
    if mode == "json_object_schema":
        return {"response_format": {"type": "json_object", "schema": answer_schema(n)}}
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def rejected(status: int | None) -> bool:
    """The server refused the request's form (not a rate limit, a timeout or a conflict, which are retried)."""
    return status is not None and status >= 400 and status not in (408, 409, 429)


class OpenAIListwiseOracle(Oracle):
    """`oracle=openai_listwise` (conf/oracle/openai_listwise.yaml): the paper's judge.

    Args:
        model: the judge model (the paper: GPT-4-Turbo).
        shuffle_seed: the candidates are shown in an order shuffled per question with this seed.
        temperature, max_tokens: the judge's decoding.
        structured_output: auto, json_schema, json_object_schema, json_object or none (module docstring).
        **client: how the judge is reached and what it may spend (`dno.oracles.api.ClientOptions`).
    """

    is_listwise = True

    def __init__(self, model: str, shuffle_seed: int = 0, temperature: float = 0.0, max_tokens: int = 2048,
                 structured_output: str = "auto", **client) -> None:
        self.api = ChatAPI(ClientOptions(model=model, **client), TEMPLATE_VERSION)
        self.shuffle_seed, self.temperature, self.max_tokens = shuffle_seed, temperature, max_tokens
        self.structured_output = structured_output
        self.mode = None if structured_output == "auto" else structured_output  # auto: set by the first answer
        self._negotiation = threading.Lock()

    def check(self) -> None:
        if self.structured_output not in ("auto", *STRUCTURED_OUTPUTS):
            raise ValueError(f"oracle.structured_output must be auto or one of {', '.join(STRUCTURED_OUTPUTS)}, "
                             f"got {self.structured_output!r}")
        self.api.check()

    def messages(self, instruction: str, shown: list[str]) -> list[dict]:
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(instruction, shown)}]

    def question(self, prompt: Prompt, candidates: list[str]) -> tuple[list[dict], list[int]]:
        """The messages asking about `candidates` (shown in a shuffled order) and that order."""
        text = prompt.as_text()
        order = presentation_order(text, candidates, self.shuffle_seed)
        return self.messages(text, [candidates[i] for i in order]), order

    def interpret(self, reply: Reply, mode: str, order: list[int]) -> Judgement:
        """The judgement of a reply: scores back in the caller's order, or invalid or failed with the reason."""
        cost, detail = reply.cost(self.api), {"order": order, "structured_output": mode}
        if reply.error is not None:
            return Judgement(status=FAILED, cost=cost, detail={**detail, "error": reply.error})
        shown_scores, why = parse_scores(reply.text, len(order))
        if shown_scores is None:
            return Judgement(status=INVALID, raw=reply.text, cost=cost, detail={**detail, "error": why})
        scores = [0.0] * len(order)
        for position, index in enumerate(order):
            scores[index] = shown_scores[position]
        return Judgement(scores=scores, raw=reply.text, cost=cost, detail=detail)

    def judge(self, prompt: Prompt, candidates: list[str], pairs=None) -> Judgement:
        messages, order = self.question(prompt, candidates)
        reply, mode = self.ask(messages, len(candidates))
        return self.interpret(reply, mode, order)

    def params(self) -> dict:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def ask(self, messages: list[dict], n: int) -> tuple[Reply, str]:
        """The server's reply and the structured-output mode it was asked in. Until a mode is set (auto: the
        form this judge on this server took before, remembered in the cache, else negotiated), one question at a
        time tries the forms in order; the first that answers is kept for the run and remembered."""
        if self.mode is None:
            with self._negotiation:
                if self.mode is None and (known := self.api.remembered("structured_output")) in STRUCTURED_OUTPUTS:
                    self.mode = known
                if self.mode is None:
                    return self._negotiate(messages, n, self.params())
        return self.api.complete(messages, **self.params(), **response_format(self.mode, n)), self.mode

    def _negotiate(self, messages: list[dict], n: int, params: dict) -> tuple[Reply, str]:
        refused = []
        for mode in STRUCTURED_OUTPUTS:
            reply = self.api.complete(messages, quiet=True, **params, **response_format(mode, n))
            if reply.error is None:  # answered (or answered before: a cache hit)
                if refused:
                    log.warning("the judge at %s rejected structured_output=%s; asking with structured_output=%s "
                                "from now on (oracle.structured_output chooses one)",
                                self.api.base_url or "api.openai.com", ", ".join(refused), mode)
                self.mode = mode
                self.api.remember("structured_output", mode)
                return reply, mode
            if not rejected(reply.status):
                return reply, mode  # no answer at all (not the form's fault): the next question tries again
            refused.append(f"{mode} (HTTP {reply.status})")
        # every form refused: the server fails whatever the form (it is down, or the question is too long);
        # its errors speak for themselves: the strongest form is kept and each question asked once
        self.mode = STRUCTURED_OUTPUTS[0]
        return reply, self.mode

    def judge_many(self, items, pairs=None, desc="judging") -> list[Judgement]:
        """Every item judged: concurrent calls, or with oracle.batch the Batch API for what is not cached (the
        structured-output form settled first on the first item, directly)."""
        if not self.api.options.batch or not items:
            return run_concurrently(lambda item: self.judge(*item), items, self.api.max_concurrency, desc)
        first = [self.judge(*items[0])] if self.mode is None else []
        asked = [self.question(p, c) for p, c in items[len(first):]]
        replies = complete_many(self.api, [(m, {**self.params(), **response_format(self.mode, len(order))})
                                          for m, order in asked], desc)
        return first + [self.interpret(r, self.mode, order) for r, (_, order) in zip(replies, asked, strict=True)]
