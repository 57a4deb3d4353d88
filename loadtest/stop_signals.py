"""SIGTERM and SIGHUP stop a run as Ctrl-C does.

A cancelled CI job, ``kill``, ``timeout`` and a closed terminal send SIGTERM or SIGHUP, not SIGINT,
and Python's default for them ends the process on the spot: Locust and the sampler, each in a
session of its own, went on with the whole schedule with no one to read it, no report was written,
and the embedded server stayed up on its port. Raised as ``KeyboardInterrupt`` in the main thread
instead, they take the path Ctrl-C already takes in every command (``run`` and the commands made
of runs): Locust is asked to stop and writes what it measured, the summary says ``interrupted``,
every child is ended in a ``finally``, and ``loadtest`` exits 130, as for Ctrl-C. One code for
"stopped early", whichever signal asked: what the results directory holds is the same.

A second signal during that stop raises again, and stops the waiting for Locust; the ``finally``
blocks that end the children run with the stop signals ``held`` (raised when the block is done),
so no child is left behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
HELD = {signal.SIGINT, *STOP_SIGNALS}


class StopSignal(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the main thread was; whatever handles Ctrl-C handles it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame: object) -> None:
    raise StopSignal(signum)


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``StopSignal`` while the block runs; the handlers before it come back after.

    A signal this process was started ignoring stays ignored (``nohup`` ignores SIGHUP, and means it).
    Handlers can only be set from the main thread; elsewhere the block runs without them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    for s, handler in before.items():
        if handler is not signal.SIG_IGN:
            signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextmanager
def held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP wait while the block runs, and are raised as it ends.

    For the ``finally`` blocks that end child processes: a second Ctrl-C there would otherwise stop
    the cleanup half-way and leave a child running. The handlers are swapped for ones that only take
    note, not the signal mask: any thread may receive a signal, and a child would inherit a mask.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    before = {s: signal.getsignal(s) for s in HELD}
    for s, handler in before.items():
        if handler not in (signal.SIG_IGN, None):
            signal.signal(s, lambda signum, _frame: noted.append(signum))
    try:
        yield
    finally:
        for s, handler in before.items():
            if handler not in (signal.SIG_IGN, None):
                signal.signal(s, handler)
        if noted:
            signal.raise_signal(noted[0])  # now, to the handler it would have met
