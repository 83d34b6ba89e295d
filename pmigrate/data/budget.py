"""Upload parts held in memory by all the workers together, counted in tokens.

A streamed multipart upload must hold each part in memory until the store
has it, because the source is not seekable (it is hashed as it passes). With
a fixed allowance per worker, a worker alone on one big blob could keep only
that many parts in flight while the other workers' allowance sat idle.

So in a pool every token is shared: a multiprocessing semaphore of
``2 x workers`` tokens, one taken before a part is read and given back when
its upload ends. One big blob may then have several parts reading or
uploading at once, while all the workers together stay within two parts
each. The parent keeps the whole run within its memory limit by holding
back some of those tokens (pmigrate.transfer.memory): the processes
themselves, not only the parts, take memory.

Each worker also counts the tokens it holds in a shared integer (its
lifeline's ``held``), taken after a token and given back before it: when the
worker is killed, the parent returns that many to the pool, and the others
do not wait forever for parts that no longer exist.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

WAIT = 0.05  # seconds between looks at whether to give up while no token is free


class PartBudget:
    """One process's side of the budget: tokens of its own, and the pool shared with the other workers (or None)."""

    def __init__(
        self, shared: Any = None, *, own: int = 0, stopped: Callable[[], bool] = lambda: False, ledger: Any = None
    ) -> None:
        self._own = threading.Semaphore(own)
        self._shared = shared
        self._stopped = stopped
        self._ledger = ledger  # shared c_int: tokens of `shared` held, read by the parent if this process dies
        self._lock = threading.Lock()
        self._borrowed = 0
        self.held = 0  # tokens held now (a part being read or uploading)
        self.peak = 0  # most tokens held at once: parts in flight, for tests and tuning

    @staticmethod
    def capacity(workers: int) -> int:
        """Tokens in the shared pool: two parts per worker, one uploading and one being read."""
        return 2 * workers

    @classmethod
    def shared_pool(cls, mp_context: Any, workers: int) -> Any:
        """The pool to pass to every worker; made by the parent from the pool's own start method."""
        return mp_context.BoundedSemaphore(cls.capacity(workers))

    def acquire(self, stopped: Callable[[], bool] | None = None) -> bool:
        """Block until a token is free; False if told to stop first (the parent gone, the run cancelled)."""
        stopped = stopped or self._stopped
        while True:
            if self._own.acquire(blocking=False):
                self._count(+1, borrowed=False)
                return True
            if self._shared is not None and self._shared.acquire(True, WAIT):
                self._count(+1, borrowed=True)
                return True
            if self._shared is None and self._own.acquire(timeout=WAIT):
                self._count(+1, borrowed=False)
                return True
            if stopped():
                return False

    def release(self) -> None:
        """Give back one token: a shared one first, so other workers get it sooner."""
        with self._lock:
            if self.held == 0:
                return
            borrowed = self._borrowed > 0
            self.held -= 1
            if borrowed:
                self._borrowed -= 1
                if self._ledger is not None:
                    self._ledger.value -= 1  # before the release: a death in between loses a token, never adds one
        if borrowed:
            self._shared.release()
        else:
            self._own.release()

    def release_all(self) -> None:
        """Give back every token held: the one upload that held them is over."""
        while self.held:
            self.release()

    def _count(self, n: int, *, borrowed: bool) -> None:
        with self._lock:
            self.held += n
            self.peak = max(self.peak, self.held)
            if borrowed:
                self._borrowed += n
                if self._ledger is not None:
                    self._ledger.value += n
