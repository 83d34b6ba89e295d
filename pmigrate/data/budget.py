"""Upload parts held in memory by all the workers together, counted in tokens.

A streamed multipart upload must hold each part in memory until the store
has it, because the source is not seekable (it is hashed as it passes). With
a fixed allowance per worker, a worker alone on one big blob could keep only
that many parts in flight while the other workers' allowance sat idle.

So each worker owns one token (it can always make progress, whatever the
others hold) and borrows more from a pool of ``workers - 1`` tokens (at
least one) shared by all of them: at most 2 x workers - 1 parts in memory
in all, within a fixed allowance of two per worker, yet one big blob may
have up to ``workers`` parts reading or uploading at once. The part left
out of the allowance pays for the processes themselves: six Python
processes with boto3 for four workers are some 110 MiB before any part.

The shared pool is a multiprocessing semaphore. A worker killed while it
holds borrowed tokens takes them with it; the pool then shrinks for the rest
of the run, but never below the workers' own tokens, so nothing waits forever.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

WAIT = 0.05  # seconds between looks at the worker's own token while the shared pool is empty


class PartBudget:
    """One worker's side of the budget: its own tokens (one in a pool), and the shared pool (or None)."""

    def __init__(self, shared: Any = None, *, own: int = 1) -> None:
        self._own = threading.Semaphore(own)
        self._shared = shared
        self._lock = threading.Lock()
        self._borrowed = 0
        self.held = 0  # tokens held now (a part being read or uploading)
        self.peak = 0  # most tokens held at once: parts in flight, for tests and tuning

    @classmethod
    def shared_pool(cls, mp_context: Any, workers: int) -> Any:
        """The pool to pass to every worker; made by the parent from the pool's own start method."""
        return mp_context.BoundedSemaphore(max(1, workers - 1))

    def acquire(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Block until a token is free; False if told to stop first."""
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
        """Give back one token: a borrowed one first, so other workers get it sooner."""
        with self._lock:
            if self.held == 0:
                return
            borrowed = self._borrowed > 0
            self.held -= 1
            if borrowed:
                self._borrowed -= 1
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
