"""The contract between a pool of workers and the stage whose jobs they run.

A pool (transfer/pool.py on this host, transfer/cluster.py on Dask) knows
nothing of copying or verifying: a stage hands it a ``factory``, a plain
``context`` and a ``lost`` callback. ``factory(context, lifeline=...)`` runs
inside each worker and builds the stage's handler there, as s3transfer's
process pool builds its clients from a client factory: clients do not
survive a fork or a pickle. The factory is a module-level function, so it
pickles by name, and the context is a frozen dataclass of plain values.

Each stage brings its own handler: the copy (transfer/worker.py), the dry
run's look at each blob (transfer/precheck.py), verify (verify/blobjob.py).
StoreHandler is what they share: both stores, opened once per worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pmigrate import redact
from pmigrate.data.base import DataBackend
from pmigrate.data.registry import open_backend, preload

log = logging.getLogger(__name__)


class Job(Protocol):
    """What a pool needs of a job: a ``seq`` unique in the run, the deaths it met, its weight."""

    seq: int
    attempt: int

    @property
    def size(self) -> int: ...


class Result(Protocol):
    """What a pool needs of a result: the job it answers and the time it took."""

    seq: int
    seconds: float


class Lifeline(Protocol):
    """What a worker's long operations ask: whether to give up, and the pool's shared tokens.

    ``tokens``: the semaphore of upload parts in memory the pool's workers share
    (data/budget.py), or None; ``held``: a shared count of those this worker
    holds, which the pool gives back if the worker dies, or None.
    ``streamed``: where a handler counts the bytes it streams, for the
    parent's progress (transfer/pool.py), or None.
    """

    tokens: Any
    held: Any
    streamed: Any  # shared count of bytes streamed by jobs whose results are not sent yet, or None

    def stopped(self) -> bool: ...


class Handler(Protocol):
    def __call__(self, job: Any) -> Any: ...

    def finish(self, results: list[Any]) -> None:
        """Before the results of a chunk leave a Dask worker's host: make what it wrote durable there."""

    def close(self) -> None: ...


Factory = Callable[..., Handler]  # factory(context, *, lifeline) -> Handler, module-level
Lost = Callable[[Any, str], Any]  # lost(job, reason): the result of a job whose workers kept dying


def _debugging() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


@dataclass(frozen=True, kw_only=True)
class Stores:
    """Both stores as (DataBackend name, options), plain enough to pickle; part of each stage's context."""

    src_backend: str
    src_options: dict[str, Any]
    dst_backend: str
    dst_options: dict[str, Any]
    # The parent's secrets and log level, taken when the context is made in the parent.
    secrets: tuple[str, ...] = field(default_factory=redact.registered)
    verbose: bool = field(default_factory=_debugging)

    def preload(self, *handlers: str) -> list[str]:
        """Modules a fork server imports once for workers of these stores, ``handlers`` first."""
        return [*handlers, *sorted(set(preload(self.src_backend)) | set(preload(self.dst_backend)))]


class StoreHandler:
    """A handler with its own clients of both stores; a subclass says what one job does."""

    def __init__(self, stores: Stores, *, lifeline: Lifeline | None) -> None:
        redact.init_child(stores.secrets, verbose=stores.verbose)  # before a client may log
        self.lifeline = lifeline
        self.src: DataBackend = open_backend(stores.src_backend, stores.src_options)
        self.dst: DataBackend = open_backend(stores.dst_backend, stores.dst_options)
        for b in (self.src, self.dst):
            try:
                b.prepare()  # clients built now, while the parent enumerates
            except Exception:  # noqa: BLE001 - the first blob meets the same error and reports it
                log.debug("preparing %s failed", b.name, exc_info=True)

    def stopped(self) -> bool:
        return self.lifeline is not None and self.lifeline.stopped()

    def __call__(self, job: Any) -> Any:
        raise NotImplementedError

    def finish(self, results: list[Any]) -> None:
        """Nothing written, nothing to make durable: the copy says otherwise."""

    def close(self) -> None:
        for b in (self.src, self.dst):
            try:
                b.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %s failed", b.name, exc_info=True)
