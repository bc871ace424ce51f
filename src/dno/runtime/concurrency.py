"""Calls on a bounded pool of threads, in order, stopping at the first error (the judges' requests, the
generation server's)."""

from __future__ import annotations

import contextvars
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from tqdm.auto import tqdm


def run_concurrently(fn, items: list, max_workers: int, desc: str) -> list:
    """fn(item) for every item on at most `max_workers` threads, results in order. On an error (a spent
    budget, a bad key) or a signal (SIGTERM's preemption) nothing new starts; requests in flight finish (and
    are cached)."""
    if max_workers <= 1 or len(items) <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, unit="call", leave=False)]
    pool = ThreadPoolExecutor(max_workers=max_workers)
    try:
        with tqdm(total=len(items), desc=desc, unit="call", leave=False) as bar:
            # each call sees the caller's context (the running stage, which the ledger names)
            futures = [pool.submit(contextvars.copy_context().run, fn, x) for x in items]
            for f in futures:
                f.add_done_callback(lambda _: bar.update())
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                raise failed[0].exception()
            return [f.result() for f in futures]
    finally:  # the queued calls are dropped, not made: `with ThreadPoolExecutor` would make them all first
        pool.shutdown(wait=True, cancel_futures=True)
