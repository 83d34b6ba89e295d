"""Stopping a run by signal: SIGTERM (systemd stop) and SIGHUP (a closed terminal) as Ctrl-C.

In the parent, the first SIGTERM or SIGHUP raises ``Stopped``, a
KeyboardInterrupt: it unwinds through the very path Ctrl-C takes (workers
cancelled, open uploads aborted, the journal committed, the summary and the
report written) and the run exits 128 + the signal's number, as a shell
reports a process killed by it. Later ones are ignored: a hangup often comes
twice (from the kernel and from the shell), and the second must not cut the
cleanup short.

Child processes leave these signals to the parent: systemd's default
KillMode=control-group sends SIGTERM to every process of the unit, and a
worker that died of it would leave its blob half-written and its tokens
held. Children are started with the signals blocked (``held``), so that the
fork server and the resource tracker, which run no code of ours, never see
them; a worker then ignores them outright (``leave_to_parent``).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

from pmigrate.errors import EXIT_INTERRUPTED

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A stop signal received by the parent: the run ends as on Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(exc: BaseException) -> int:
    """128 + the signal that stopped the run: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    if isinstance(exc, Stopped):
        return 128 + exc.signum
    return EXIT_INTERRUPTED


def describe(exc: BaseException) -> str:
    return f"stopped by {signal.Signals(exc.signum).name}" if isinstance(exc, Stopped) else "interrupted"


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """For the length of a run in the parent: SIGTERM and SIGHUP raise Stopped, once."""
    pid = os.getpid()
    fired = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal fired
        if fired or os.getpid() != pid:  # a second signal, or a forked child before it ignores them
            return
        fired = True
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        fired = True  # the run is over: nothing left to stop
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Around starting a child process: it inherits the blocked signals, the parent gets them on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def leave_to_parent() -> None:
    """In a worker: Ctrl-C and the stop signals are the parent's; it cancels the workers itself."""
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
