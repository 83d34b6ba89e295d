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
lifeline's ``held``), raised after a token is taken and lowered before it is
given back: when the worker is killed, the parent returns that many to the
pool, and the others do not wait forever for parts that no longer exist.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from pmigrate.data.base import DataBackend

WAIT = 0.05  # seconds between looks at whether to give up while no token is free


class PartBudget:
    """Tokens for upload parts in memory: from the pool the workers share, or a backend's own when used alone."""

    def __init__(
        self, shared: Any = None, *, own: int = 0, stopped: Callable[[], bool] = lambda: False, ledger: Any = None
    ) -> None:
        self._tokens = shared if shared is not None else threading.Semaphore(own)
        self._stopped = stopped
        self._ledger = ledger  # shared c_int: tokens held, read by the parent if this process dies
        self._lock = threading.Lock()
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

    def stopping(self) -> bool:
        """True once the run is stopping (the parent gone, the run cancelled): waits should end."""
        return self._stopped()

    def acquire(self, stopped: Callable[[], bool] | None = None) -> bool:
        """Block until a token is free; False if told to stop first (the parent gone, the run cancelled)."""
        stopped = stopped or self._stopped
        while not self._tokens.acquire(True, WAIT):
            if stopped():
                return False
        with self._lock:
            self.held += 1
            self.peak = max(self.peak, self.held)
            if self._ledger is not None:
                self._ledger.value += 1
        return True

    def release(self) -> None:
        """Give back one token, so that another part (of any worker) may be read."""
        with self._lock:
            if self.held == 0:
                return
            self.held -= 1
            if self._ledger is not None:
                self._ledger.value -= 1  # before the release: a death in between loses a token, never adds one
        self._tokens.release()

    def release_all(self) -> None:
        """Give back every token held: the one upload that held them is over."""
        while self.held:
            self.release()


class PartHolder(Protocol):
    """A backend whose streamed upload holds whole parts in memory (Features.holds_parts): S3's multipart.

    Storage alone is the backend contract (data/base.py); the engine that
    runs many uploads at once hands this ability the budget they share.
    """

    part_bytes: int  # bytes of one part held in memory

    def use_part_budget(self, budget: PartBudget) -> None:
        """Take a token from ``budget`` before each part is read, give it back once the part is sent."""


def part_holder(backend: DataBackend) -> PartHolder | None:
    """The backend as a PartHolder when its features say it holds parts in memory, else None."""
    return cast(PartHolder, backend) if backend.features.holds_parts else None
