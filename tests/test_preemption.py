"""SIGTERM and Ctrl-C raise Preempted (exit 4 in the apps). A real SIGTERM to dno-run, the W&B run marked
preempted and the resume: tests/test_cluster_accidents.py."""

from __future__ import annotations

import os
import signal
import time

import pytest

from dno.runtime.signals import Preempted, preemptible


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_raises_preempted_and_the_handlers_come_back(signum):
    before = signal.getsignal(signum)
    with pytest.raises(Preempted, match=f"stopped by {signal.Signals(signum).name}"), preemptible():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # interrupted at once
    assert signal.getsignal(signum) is before
    assert not issubclass(Preempted, Exception)  # no `except Exception` on the way swallows it
