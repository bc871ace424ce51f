"""A stage's judge questions through OpenAI's Batch API (`oracle.batch=true`), at half the price.

DNO's loop is batched: every question of a stage is known before the judge is asked. `Batches.answer` takes
them, answers those in the cache from it, and sends the rest as batches: a JSONL file of chat-completions
requests (`/v1/files`, purpose batch), a batch over it (`/v1/batches`), polled with a doubling wait until it
ends, then its output and error files read back. Each answer goes into the cache and through the same parsing,
validity rules and cost accounting as a direct one, priced at `batch_price_factor` times the direct price.

A batch is recorded in the running stage's journal (`StageDir.batch_journal`) when its input file is up and
again when it is created, so a kill, a preemption or a timeout while waiting resumes by polling the same batch:
the same questions are never submitted twice (a batch whose creation was cut off is found again by its input
file). Its answers go into the cache and the run's ledger before the journal marks it read, so a kill while
reading reads the same output file again (free) instead of submitting again. A kill at any moment (upload,
create, poll, read) pays nothing twice (tests/test_batch.py kills it at each).

A stage's questions are split into batches within the API's limits (requests and megabytes per file). A batch is
polled until it ends or until its completion window (plus `BATCH_GRACE_S`) has passed since it was created; then
it is cancelled and what it answered is read. Questions a batch did not answer (it expired, failed or was
cancelled, an error line of its error file, a line of its output that is not a chat completion) are asked
directly, once each, and the log says how many (`batch_fallback=direct`), or the stage stops with exit 3
(`batch_fallback=stop`); what was answered is kept either way. An output line the server billed but that cannot be
read is paid all the same: the ledger has a line for it (`unreadable`), priced from its usage when that is
readable, and the journal counts it (`bad_lines`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from pathlib import Path

from tqdm.auto import tqdm

from dno.oracles.api import ChatAPI, OracleError, Reply, reply_of, usage_of
from dno.runtime.concurrency import run_concurrently
from dno.runtime.files import read_json, write_json

log = logging.getLogger(__name__)
ENDED = ("completed", "failed", "expired", "cancelled")
ENDPOINT = "/v1/chat/completions"
BATCH_GRACE_S = 600.0  # past the completion window, how long a batch may still take to end before it is cancelled


def window_seconds(window: str) -> float:
    """A completion window (`24h`, `90m`, `30s`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    if not window or window[-1] not in units:
        raise ValueError(f"oracle.batch_window={window!r}: a number and h, m or s (the API's is 24h)")
    return float(window[:-1]) * units[window[-1]]


def complete_many(api: ChatAPI, questions: list[tuple[list[dict], dict]], desc: str) -> list[Reply]:
    """Replies to (messages, params) questions: concurrent direct calls, or with `batch` the Batch API for those
    not cached (its journal in the running stage's folder)."""
    if api.options.batch and questions:
        return Batches(api).answer(questions, desc)
    return run_concurrently(lambda q: api.complete(q[0], **q[1]), questions, api.max_concurrency, desc)


def journal_path(api: ChatAPI) -> Path:
    """The running stage's journal; outside a stage, one beside the judge cache, named by the judge."""
    from dno.runtime.stages import running_stage

    running = running_stage()
    if running is not None:
        directory, name = running
        return directory.batch_journal(name)
    if api.cache is None:
        raise OracleError("oracle.batch=true outside a run's stage needs oracle.cache_path (where its batches are "
                          "recorded)")
    return api.cache.path.with_name(f"batches.{api.model.replace('/', '_')}.json")


def usage_in(line: str) -> dict:
    """The token usage of a batch output line that is not a readable answer, where it can still be found."""
    try:
        body = (json.loads(line).get("response") or {}).get("body") or {}
        return usage_of(body.get("usage"))
    except (json.JSONDecodeError, AttributeError, TypeError):
        return {}


def request_lines(api: ChatAPI, asked: list[tuple[str, list[dict], dict]]) -> list[bytes]:
    """The input file's lines, one chat-completions request per question, its cache key as custom_id."""
    return [json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                        "body": {"model": api.model, "messages": messages, **params}}).encode() + b"\n"
            for key, messages, params in asked]


def chunks(lines: list[bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """Indices of `lines` in consecutive batches of at most `max_requests` lines and `max_bytes` bytes."""
    out, current, size = [], [], 0
    for i, line in enumerate(lines):
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(i)
        size += len(line)
    return out + ([current] if current else [])


class Batches:
    """The Batch API path of one ChatAPI for one stage (its journal)."""

    def __init__(self, api: ChatAPI) -> None:
        self.api = api
        self.o = api.options
        self.journal = journal_path(api)
        self.reserved: set[str] = set()  # input files whose requests this process reserved in the budget

    def answer(self, questions: list[tuple[list[dict], dict]], desc: str) -> list[Reply]:
        """Replies in the order of `questions` ((messages, params) each): cached, batched, or asked directly when
        a batch left them unanswered."""
        keys = [self.api.key(m, p) for m, p in questions]
        replies: dict[str, Reply] = {}
        for key in keys:
            if key not in replies and (hit := self.api.cached(key)) is not None:
                replies[key] = hit
        wanted = {k: q for k, q in zip(keys, questions, strict=True) if k not in replies}
        if wanted:
            replies |= self.run(wanted, desc)
        else:
            self.settle(set(keys))
        return [replies[k] for k in keys]

    def settle(self, cached: set[str]) -> None:
        """Batches whose every answer is in the cache (stored by a process killed before it marked them read) are
        marked read: nothing of them is to be read again."""
        if not self.journal.exists():
            return
        entries = read_json(self.journal)
        unsettled = [e for e in entries if not e.get("read") and e.get("batch_id") and set(e["custom_ids"]) <= cached]
        for e in unsettled:
            e.update(read=True, status="answers cached before a kill", answered=len(e["custom_ids"]))
        if unsettled:
            write_json(self.journal, entries)

    def run(self, wanted: dict[str, tuple[list[dict], dict]], desc: str) -> dict[str, Reply]:
        entries = read_json(self.journal) if self.journal.exists() else []
        pending = [e for e in entries if not e.get("read")]
        held = {k for e in pending for k in e["custom_ids"]}
        new = [(k, *q) for k, q in wanted.items() if k not in held]
        if new:
            lines = request_lines(self.api, new)
            for part in chunks(lines, self.o.batch_max_requests, int(self.o.batch_max_mb * 1e6)):
                entries.append(self.upload([new[i][0] for i in part], b"".join(lines[i] for i in part)))
                write_json(self.journal, entries)
        answered: dict[str, Reply] = {}
        for entry in entries:
            if not entry.get("read") and set(entry["custom_ids"]) & set(wanted):
                answered |= self.finish(entry, entries, desc)
        missing = [k for k in wanted if k not in answered]
        if missing:
            answered |= self.fallback(missing, wanted)
        return answered

    def upload(self, custom_ids: list[str], data: bytes) -> dict:
        """The input file, uploaded, and its journal entry (the batch is created by `finish`)."""
        self.api.reserve(len(custom_ids))  # the budget holds every request of the batch before it is sent
        client = self.api.client()
        uploaded = client.files.create(file=("dno_batch.jsonl", io.BytesIO(data)), purpose="batch")
        self.reserved.add(uploaded.id)
        return {"input_file_id": uploaded.id, "sha256": hashlib.sha256(data).hexdigest(), "custom_ids": custom_ids,
                "batch_id": None, "created": time.time()}

    def finish(self, entry: dict, entries: list[dict], desc: str) -> dict[str, Reply]:
        """The entry's batch created (or found again), polled until it ends, and its answers read."""
        client = self.api.client()
        if entry["batch_id"] is None:
            found = [b for b in client.batches.list(limit=100) if b.input_file_id == entry["input_file_id"]]
            batch = found[0] if found else client.batches.create(
                input_file_id=entry["input_file_id"], endpoint=ENDPOINT, completion_window=self.o.batch_window,
                metadata={"dno": "judge"})
            entry["batch_id"] = batch.id
            write_json(self.journal, entries)
        batch = self.poll(entry["batch_id"], len(entry["custom_ids"]), desc)
        replies, unreadable = self.read(batch)
        errors = self.errors(batch)
        for key, reply in replies.items():  # cache and ledger first: a kill before the journal's write re-reads
            self.api.store(key, reply)
        for n, usage in enumerate(unreadable):  # billed by the server, but no answer could be read from the line
            self.api.pay_unreadable(f"unreadable:{batch.id}:{n}", usage)
        entry.update(read=True, status=batch.status, answered=len(replies), bad_lines=len(unreadable), errors=errors)
        write_json(self.journal, entries)
        paid = len(replies) + len(unreadable)
        if entry["input_file_id"] in self.reserved:
            self.api.release(len(entry["custom_ids"]) - paid)  # what was not answered was not paid
        else:  # submitted by an earlier process: its reservation died with it; what it answered is paid now
            self.api.count_paid(paid)
        if batch.status != "completed" or len(replies) < len(entry["custom_ids"]):
            log.warning("batch %s %s: %d of %d questions answered (%d output lines unreadable, error lines: %s)",
                        batch.id, batch.status, len(replies), len(entry["custom_ids"]), len(unreadable),
                        errors or "none")
        return replies

    def poll(self, batch_id: str, n: int, desc: str):
        """The batch, once it ended; waits double from batch_poll_s up to 10 minutes. Past its completion window
        (and BATCH_GRACE_S) it is cancelled and returned as it is."""
        client, wait = self.api.client(), self.o.batch_poll_s
        window = window_seconds(self.o.batch_window) + BATCH_GRACE_S
        with tqdm(total=n, desc=f"{desc} (batch {batch_id})", unit="question", leave=False) as bar:
            while True:
                batch = client.batches.retrieve(batch_id)
                counts = batch.request_counts
                if counts is not None:
                    bar.n = counts.completed + counts.failed
                    bar.set_postfix_str(batch.status)
                    bar.refresh()
                if batch.status in ENDED:
                    return batch
                left = (batch.created_at or time.time()) + window - time.time()
                if left <= 0:
                    log.warning("batch %s is still %s past its completion window (%s): cancelled; what it answered "
                                "is read, the rest asked again", batch_id, batch.status, self.o.batch_window)
                    return client.batches.cancel(batch_id)
                time.sleep(min(wait, max(left, 0.0)))
                wait = min(wait * 2, 600.0)

    def read(self, batch) -> tuple[dict[str, Reply], list[dict]]:
        """The answered questions of an ended batch (a 200 whose body is a chat completion), and the usage of each
        output line that is not readable ({} where even that is not)."""
        if not batch.output_file_id:
            return {}, []
        text = self.api.client().files.content(batch.output_file_id).text
        replies, unreadable = {}, []
        for line in text.split("\n"):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                response = row.get("response") or {}
                if response.get("status_code") == 200:
                    replies[row["custom_id"]] = reply_of(response["body"], batch=True)
            except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
                unreadable.append(usage_in(line))
        return replies, unreadable

    def errors(self, batch) -> dict[str, int]:
        """The error file's lines counted by error code (their questions are asked again, once, directly)."""
        if not getattr(batch, "error_file_id", None):
            return {}
        counts: dict[str, int] = {}
        for line in self.api.client().files.content(batch.error_file_id).text.split("\n"):
            if line.strip():
                try:
                    row = json.loads(line)
                    error = row.get("error") or (row.get("response") or {}).get("body", {}).get("error") or {}
                    code = str(error.get("code") or (row.get("response") or {}).get("status_code") or "unknown")
                except (json.JSONDecodeError, AttributeError):
                    code = "unreadable"
                counts[code] = counts.get(code, 0) + 1
        return counts

    def fallback(self, missing: list[str], wanted: dict) -> dict[str, Reply]:
        """Questions the batches did not answer: asked directly, or the stage stops (batch_fallback=stop)."""
        if self.o.batch_fallback == "stop":
            raise OracleError(f"{len(missing)} of {len(wanted)} questions were not answered by the Batch API "
                              f"(see {self.journal}); oracle.batch_fallback=stop. The answers that came are cached: "
                              "the same command submits only the missing ones again.")
        log.warning("%d of %d questions were not answered by the Batch API: asking them directly (full price)",
                    len(missing), len(wanted))
        replies = run_concurrently(lambda k: self.api.complete(*wanted[k][:1], **wanted[k][1]), missing,
                                   self.api.max_concurrency, "judging what the batch left")
        return dict(zip(missing, replies, strict=True))
