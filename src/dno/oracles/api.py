"""Chat-completions judges over the `openai` client: OpenAI itself or any OpenAI-compatible server (vLLM).

What this module adds to the client, and what it leaves to it:
- retries with exponential backoff (and the server's Retry-After) on 408/409/429/5xx, timeouts
  and dropped connections are the client's own (`max_retries`, `timeout_s`); after them the
  answer is `failed`, never a guess. A wrong key, a forbidden call or an unknown model (401, 403,
  404) stops the run at once with a clear error: every other answer would fail the same way;
- a bound on requests in flight (`max_concurrency`) and a rate limit (`requests_per_minute`);
- the persistent cache (cache.py): a question already answered, by this run or any other, is
  not asked again; its cost is counted as a cache hit;
- a budget (`max_requests` and/or `budget_usd`, priced per million prompt and completion tokens):
  past it the next request raises `BudgetExceeded`; everything paid for is already in the cache,
  so the same command with a larger budget resumes without paying twice. Each price left null is the
  model's row of conf/prices/openai.yaml on the OpenAI API (`base_url` null; a model it lacks is an error
  until both prices are given; a price given alone keeps the row's other one) and 0 on any other server (a
  local vLLM or llama.cpp);
- the bill: every paid answer is written to the run's ledger when it is paid (dno.oracles.ledger);
- the API key is read from the environment variable named by `api_key_env` when the client is
  made, and is never stored in the config, the cache, a log or a result (errors are scrubbed);
- prompt tokens the provider served from its prompt cache (`usage.prompt_tokens_details.cached_tokens`)
  are counted (`cached_tokens`) and priced at `price_cached_input_per_1m` (null: the table's cached rate, or the
  input price when the prices come from the config or the model has no cached rate);
- with `batch`, `dno.oracles.batch.complete_many` asks the questions that are not cached through the Batch
  API at `batch_price_factor` times the price.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dno.oracles import ledger
from dno.oracles.cache import JudgeCache, cache_key
from dno.oracles.prices import Price, UnknownPrice, price_of

log = logging.getLogger(__name__)


class BudgetExceeded(RuntimeError):
    """The oracle's request or dollar budget is spent; what was paid for is cached."""


class OracleError(RuntimeError):
    """The judge cannot answer at all (bad key, forbidden, unknown model)."""


class JudgeServerGone(OracleError):
    """The judge's server (base_url) refuses connections: it died or was stopped."""


@dataclass
class Reply:
    text: str | None = None
    top_logprobs: list[dict] | None = None  # the first generated token's alternatives: [{token, logprob}]
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, cached_tokens
    cached: bool = False
    error: str | None = None  # set when the request failed after the client's retries
    status: int | None = None  # the HTTP status of a failed request (None: no answer at all, e.g. a timeout)
    batch: bool = False  # answered through the Batch API (priced at its rate)

    def cost(self, api: ChatAPI) -> dict:
        if self.cached:
            return {"cache_hits": 1}
        if self.error is not None:
            return {}
        return {"requests": 1, **({"batch_requests": 1} if self.batch else {}), **self.usage,
                "usd": api.paid_usd(self.usage, self.batch)}


def usage_of(usage) -> dict:
    """Token counts of a chat completion's `usage` (an object or a dict), with the prompt tokens the provider
    served from its prompt cache."""
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        usage = usage.model_dump()
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0),
            **({"cached_tokens": cached} if cached else {})}


def reply_of(completion: dict, *, batch: bool = False) -> Reply:
    """A Reply of a chat completion (a dict, as the Batch API's output holds it)."""
    choice = completion["choices"][0]
    top = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        top = [{"token": t["token"], "logprob": t["logprob"]} for t in content[0].get("top_logprobs") or []]
    return Reply(text=choice["message"].get("content"), top_logprobs=top, usage=usage_of(completion.get("usage")),
                 batch=batch)


class RateLimit:
    """At most `per_minute` request starts per minute, evenly spaced, across threads."""

    def __init__(self, per_minute: float | None) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        time.sleep(start - now)


@dataclass(frozen=True)
class ClientOptions:
    """How an API judge is reached and what it may spend: the oracle's config keys of these names."""

    model: str  # the judge model's name on the server
    base_url: str | None = None  # None: api.openai.com; any OpenAI-compatible server (vLLM, llama.cpp)
    api_key_env: str | None = "OPENAI_API_KEY"  # the NAME of the variable holding the key (None: no key)
    max_concurrency: int = 8  # requests in flight
    requests_per_minute: float | None = None  # client-side rate limit (None: none; 429s are retried anyway)
    max_retries: int = 5  # the client's retries on 408/409/429/5xx, timeouts and dropped connections
    timeout_s: float = 120.0  # per request
    budget_usd: float | None = None  # stop past this spend (what was paid for is cached)
    max_requests: int | None = None  # ... or past this many paid requests
    cache_path: str | None = None  # the SQLite answer cache (None: no cache)
    price_input_per_1m: float | None = None  # USD per million prompt tokens (None: conf/prices on OpenAI, else 0)
    price_output_per_1m: float | None = None  # USD per million completion tokens (likewise)
    server_log: str | None = None  # the log of a judge server you started (base_url): its tail if the server dies
    price_cached_input_per_1m: float | None = None  # prompt tokens from the provider's cache (None: module docstring)
    batch: bool = False  # ask a stage's questions through the Batch API (dno.oracles.batch)
    batch_price_factor: float = 0.5  # the Batch API's price, as a fraction of the direct price (OpenAI's: half)
    batch_window: str = "24h"  # the batch's completion window
    batch_poll_s: float = 30.0  # the first wait between polls of a batch; it doubles up to 10 minutes
    batch_max_requests: int = 50_000  # per batch (the API's limit); a larger stage is split
    batch_max_mb: float = 190.0  # per batch input file (the API's limit is 200 MB)
    batch_fallback: str = "direct"  # questions a batch did not answer (expired, failed): direct, or stop (exit 3)


class ChatAPI:
    def __init__(self, options: ClientOptions, template_version: str = "v1") -> None:
        o = self.options = options
        self.model, self.base_url, self.api_key_env = o.model, o.base_url, o.api_key_env
        self.max_concurrency, self.max_retries, self.timeout_s = o.max_concurrency, o.max_retries, o.timeout_s
        self.budget_usd, self.max_requests = o.budget_usd, o.max_requests
        self.price_error: str | None = None
        self.rate_card = self._rate_card(o)
        self.prices = (self.rate_card.input, self.rate_card.output)
        self.template_version = template_version
        self.cache = JudgeCache(o.cache_path) if o.cache_path else None
        self.rate = RateLimit(o.requests_per_minute)
        self.lock = threading.Lock()
        self.requests, self.usd = 0, 0.0  # paid by this process
        self._client = None

    def _rate_card(self, o: ClientOptions) -> Price:
        """The prices this judge is billed at, each on its own: the config's where given, else 0 on another server
        than OpenAI's, else the table's row of the model (an unknown model: `price_error`, raised by `check` and by
        any paid request). A price given alone on the OpenAI API keeps the table's other one, never 0."""
        given = (o.price_input_per_1m, o.price_output_per_1m)
        cached = None if o.price_cached_input_per_1m is None else float(o.price_cached_input_per_1m)
        if o.base_url or None not in given:
            return Price(float(given[0] or 0.0), float(given[1] or 0.0), cached,
                         "config" if any(p is not None for p in given) else "not billed (base_url)")
        try:
            card = price_of(o.model)
        except UnknownPrice as e:
            self.price_error = str(e)
            return Price(0.0, 0.0, None, "unknown")
        if given[0] is not None:  # the table's cached rate belongs to its input price, not to the config's
            card = Price(float(given[0]), card.output, None, f"{card.model}, input price from the config", card.date)
        if given[1] is not None:
            card = Price(card.input, float(given[1]), card.cached_input, f"{card.model}, output price from the config",
                         card.date)
        return card if cached is None else Price(card.input, card.output, cached, card.model, card.date)

    def check(self) -> None:
        if self.cache is not None:
            self.cache.check()  # damaged, foreign, read-only or locked: found before any compute
        if not self.model:
            raise ValueError("oracle.model is empty: name the judge model")
        if self.max_concurrency < 1:
            raise ValueError(f"oracle.max_concurrency must be at least 1, got {self.max_concurrency}")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"oracle.api_key_env: the environment variable {self.api_key_env} is not set; "
                             f"export it with the judge's API key (or set oracle.api_key_env=null for a "
                             f"server without authentication)")
        if self.price_error:
            raise ValueError(self.price_error)

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

    def client(self):
        with self.lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(api_key=self._key() or "EMPTY", base_url=self.base_url,
                                             max_retries=self.max_retries, timeout=self.timeout_s)
            return self._client

    def price(self, usage: dict) -> float:
        """USD of one answer's tokens at the direct price (cached prompt tokens at the cached rate)."""
        if self.price_error:
            raise UnknownPrice(self.price_error)
        return self.rate_card.usd(usage)

    def key(self, messages: list[dict], params: dict) -> str:
        """The cache key of a question: the judge, the template version, the messages and the decoding."""
        return cache_key(model=self.model, template=self.template_version, messages=messages, params=params)

    def paid_usd(self, usage: dict, batch: bool) -> float:
        """USD of one paid answer: its tokens at the direct price, times `batch_price_factor` through a batch."""
        return self.price(usage) * (self.options.batch_price_factor if batch else 1.0)

    def store(self, key: str, reply: Reply) -> None:
        """An answer paid for: into the cache (marked with the ledger that pays it), then into the run's ledger, and
        its price into this process's spend."""
        bill = ledger.active()
        if self.cache is not None:
            self.cache.put(key, {"text": reply.text, "top_logprobs": reply.top_logprobs, "usage": reply.usage,
                                 "batch": reply.batch, "paid_by": bill.id if bill else None})
        usd = self.paid_usd(reply.usage, reply.batch)
        if bill is not None:
            # without a cache a question asked again is paid again: its line must not be taken for the first one's
            bill.pay(key if self.cache is not None else f"{key}#{time.time_ns()}", model=self.model,
                     usage=reply.usage, usd=usd, batch=reply.batch)
        with self.lock:
            self.usd += usd

    def remembered(self, what: str) -> str | None:
        """A fact about this judge on this server kept in the cache (e.g. the structured-output form it takes)."""
        key = cache_key(remembered=what, model=self.model, server=self.base_url or "api.openai.com")
        return self.cache.fact(key) if self.cache is not None else None

    def remember(self, what: str, value: str) -> None:
        if self.cache is not None:
            self.cache.remember(cache_key(remembered=what, model=self.model, server=self.base_url or "api.openai.com"),
                                value)

    def cached(self, key: str) -> Reply | None:
        """The cached answer of `key`, free. An answer this run's ledger paid for but has no line of (a kill between
        the cache's write and the ledger's) gets its line now."""
        hit = self.cache.get(key) if self.cache is not None else None
        if hit is None:
            return None
        bill = ledger.active()
        if bill is not None and hit.get("paid_by") == bill.id and key not in bill:
            bill.pay(key, model=self.model, usage=hit.get("usage") or {},
                     usd=self.paid_usd(hit.get("usage") or {}, bool(hit.get("batch"))), batch=bool(hit.get("batch")),
                     recovered=True)
        return Reply(text=hit.get("text"), top_logprobs=hit.get("top_logprobs"), usage=hit.get("usage") or {},
                     cached=True)

    def reserve(self, n: int = 1) -> None:
        """Room in the budget for `n` more paid requests (a batch reserves all of its own at once)."""
        with self.lock:
            if self.max_requests is not None and self.requests + n > self.max_requests:
                raise BudgetExceeded(f"oracle budget spent: {self.requests} requests made, {n} more asked, "
                                     f"oracle.max_requests={self.max_requests}. Answers paid for are cached in "
                                     f"{self.cache_path()}; raise the budget and run the same command again to go on.")
            if self.budget_usd is not None and self.usd >= self.budget_usd:
                raise BudgetExceeded(f"oracle budget spent: ${self.usd:.4f} of oracle.budget_usd={self.budget_usd}. "
                                     f"Answers paid for are cached in {self.cache_path()}; raise the budget and "
                                     f"run the same command again to go on.")
            self.requests += n

    def release(self, n: int = 1) -> None:
        """Requests reserved and not paid (they failed)."""
        with self.lock:
            self.requests -= n

    def count_paid(self, n: int) -> None:
        """Requests paid that this process did not reserve (a batch submitted before a resume)."""
        with self.lock:
            self.requests += n

    def pay_unreadable(self, key: str, usage: dict) -> None:
        """A batch output line the server billed but that holds no readable answer: paid, in the ledger (priced from
        its usage where that was readable, else 0 with `usd_unknown`)."""
        usd = self.paid_usd(usage, True)
        with self.lock:
            self.usd += usd
        bill = ledger.active()
        if bill is not None:
            bill.pay(key, model=self.model, usage=usage, usd=usd, batch=True, unreadable=True,
                     **({"usd_unknown": True} if not usage else {}))

    def cache_path(self) -> str:
        return str(self.cache.path) if self.cache else "(no cache: oracle.cache_path is null)"

    def _scrub(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "***") if key else text

    def complete(self, messages: list[dict], *, quiet: bool = False, **params) -> Reply:
        """One chat completion, from the cache when this exact question was answered before. `quiet`: a
        failure is the caller's to report (`Reply.status`), e.g. a form of request the server may reject."""
        import openai

        key = self.key(messages, params)
        if (hit := self.cached(key)) is not None:
            return hit
        self.reserve()
        client = self.client()
        self.rate.wait()
        try:
            resp = client.chat.completions.create(model=self.model, messages=messages, **params)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
            raise OracleError(f"judge {self.model} at {self.base_url or 'api.openai.com'}: "
                              f"{self._scrub(str(e))}") from None
        except (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError) as e:
            self.release()  # not paid
            if isinstance(e, openai.APIConnectionError) and not isinstance(e, openai.APITimeoutError):
                self._raise_if_server_gone()
            if not quiet:
                log.warning("judge request failed after %d retries: %s", self.max_retries, self._scrub(str(e))[:200])
            return Reply(error=f"{type(e).__name__}: {self._scrub(str(e))[:500]}",
                         status=getattr(e, "status_code", None))
        reply = reply_of(resp.model_dump())
        self.store(key, reply)
        return reply


    def _raise_if_server_gone(self) -> None:
        """After a connection error the client's retries did not cure: a judge server on `base_url` that refuses
        connections is gone (it died or was stopped), which no retry or later judgement will cure: say so, with
        the tail of its log when `server_log` names it."""
        if not self.base_url:
            return
        url = urlsplit(self.base_url)
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), 5).close()
            return  # it accepts connections: a dropped connection, judged as a failed request
        except ConnectionRefusedError:
            pass
        except OSError:
            return  # unreachable for another reason (DNS, network): not known to be gone
        tail = ""
        log_file = Path(self.options.server_log) if self.options.server_log else None
        if log_file and log_file.exists():
            lines = log_file.read_text(errors="replace").splitlines()[-15:]
            tail = f" The last lines of its log ({log_file}):\n" + "\n".join("    " + line for line in lines)
        elif log_file:
            tail = f" Its log {log_file} does not exist."
        raise JudgeServerGone(f"the judge server at {self.base_url} is gone: it refuses connections (after "
                              f"{self.max_retries} retries), so it died or was stopped. Restart it and run the same "
                              f"command again: the judgements made so far are cached.{tail}")
