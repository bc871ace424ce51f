"""Preemption: SIGTERM (what SLURM sends before it kills a job) and Ctrl-C stop a run cleanly.

Inside `preemptible()`, either signal raises `Preempted` in the main thread. It derives from
BaseException, so no `except Exception` on the way swallows it: the running stage ends without its
DONE marker (its outputs are written atomically, so nothing partial is taken as done), the W&B run is
marked preempted (a requeue resumes the same W&B run), and the app exits with PREEMPTED_EXIT; the
same command resumes from the unfinished stage.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

PREEMPTED_EXIT = 4


class Preempted(BaseException):
    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        super().__init__(f"stopped by {self.signal}")


@contextmanager
def preemptible():
    """SIGTERM and SIGINT raise Preempted while the block runs (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Preempted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
