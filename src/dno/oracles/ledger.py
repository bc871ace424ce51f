"""The judge's bill: one ledger per run, a line per paid answer, written when it is paid.

    <run_dir>/ledger.jsonl
    {"stage": "judge", "iteration": 1, "key": "3f2a...", "model": "gpt-4-turbo", "batch": false,
     "prompt_tokens": 812, "cached_tokens": 0, "completion_tokens": 230, "usd": 0.01502, "time": 1733500000.0}

Every paid answer of every judge goes through `ChatAPI.store` (a direct reply, or a line of a batch's output
file), which writes its line here; benchmarks whose judge is another package's client (alpaca_eval) write
theirs from what that package records (`pay_priced`). The stage is the running stage's (`bill_stage`):
`judge` (an iteration's training judge), `validation`, `lookahead`, `teacher`, `final/<benchmark>`.

Lines are deduplicated by key (the judge cache's key of the question): a question is paid once, so a killed
and resumed run's ledger equals an uninterrupted run's, and a cache hit costs nothing. The answer goes into
the judge cache first, marked with the ledger that paid it (`paid_by`); a kill between the two writes leaves
the answer in the cache and no line here, and the resumed run, finding its own mark on the cached answer,
writes the line then (`recover`). Output lines of a batch that the server billed but that could not be read
are paid too: a line each, `unreadable: true`, keyed by the batch and the line.

`cost_metrics(rows)` sums lines into `cost/<stage>/{usd,requests,prompt_tokens,completion_tokens}` and
`cost/total_usd`: what summary.json, W&B and metrics.jsonl carry.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

COST_FIELDS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "usd")


class Ledger:
    """A run's ledger file; thread-safe appends, one line per key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = threading.Lock()
        self.keys: set[str] = set()
        self.size = -1  # the file's size when `keys` was read: another writer (a killed process's) changes it
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # a line cut short by a kill: the next line starts on its own
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    @property
    def id(self) -> str:
        """What the judge cache marks an answer paid by this ledger with."""
        return str(self.path.resolve())

    def rows(self) -> list[dict]:
        return read_ledger(self.path)

    def _fresh_keys(self) -> set[str]:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size != self.size:
            self.keys, self.size = {row["key"] for row in self.rows()}, size
        return self.keys

    def __contains__(self, key: str) -> bool:
        with self.lock:
            return key in self._fresh_keys()

    def pay(self, key: str, *, model: str, usage: dict, usd: float, batch: bool = False, **extra) -> bool:
        """One paid answer; False (nothing written) when the key is paid already."""
        from dno.runtime.stages import bill_stage

        stage, iteration = bill_stage()
        row = {"stage": stage, "iteration": iteration, "key": key, "model": model, "batch": batch,
               "prompt_tokens": usage.get("prompt_tokens", 0) or 0, "cached_tokens": usage.get("cached_tokens", 0) or 0,
               "completion_tokens": usage.get("completion_tokens", 0) or 0, "usd": usd, "time": round(time.time(), 3),
               **extra}
        with self.lock:
            if key in self._fresh_keys():
                return False
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
                self.size = f.tell()
            self.keys.add(key)
        return True


_ACTIVE: Ledger | None = None


def activate(path: str | Path | None) -> Ledger | None:
    """The ledger every judge of this process writes to from now on (None: none)."""
    global _ACTIVE
    _ACTIVE = Ledger(path) if path is not None else None
    return _ACTIVE


def active() -> Ledger | None:
    return _ACTIVE


def pay_priced(key: str, *, model: str, usd: float, usage: dict | None = None, **extra) -> None:
    """An answer another package's client paid for (it reports the price, maybe not the tokens)."""
    if _ACTIVE is not None:
        _ACTIVE.pay(key, model=model, usage=usage or {}, usd=usd, **extra)


def totals(rows: list[dict]) -> dict[str, dict]:
    """Per stage: requests, tokens and USD of `rows`."""
    out: dict[str, dict] = {}
    for row in rows:
        t = out.setdefault(row["stage"], dict.fromkeys(COST_FIELDS, 0))
        t["requests"] += 1
        for k in COST_FIELDS[1:]:
            t[k] += row.get(k, 0) or 0
    return out


def cost_metrics(rows: list[dict]) -> dict:
    """`cost/<stage>/{usd,requests,prompt_tokens,completion_tokens,cached_tokens}` and `cost/total_usd` (also
    `cost/total_requests`, and `cost/unreadable_requests` when a batch line was paid but unreadable)."""
    out = {}
    for stage, t in sorted(totals(rows).items()):
        out |= {f"cost/{stage}/{k}": v for k, v in t.items()}
    out["cost/total_usd"] = sum(r.get("usd", 0) or 0 for r in rows)
    out["cost/total_requests"] = len(rows)
    unreadable = sum(bool(r.get("unreadable")) for r in rows)
    if unreadable:
        out["cost/unreadable_requests"] = unreadable
    return out


def read_ledger(path: str | Path) -> list[dict]:
    """Every line of a ledger file (none when it does not exist; a line cut short by a kill is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
