"""On a Dask worker: pmigrate's plugin, which holds the backend clients for the worker's life, and the task run there.

The plugin reaches the worker through the scheduler, which keeps it for
workers that join later: it carries the run's options sealed
(transfer/sealed.py), opened with the worker's own PMIGRATE_CLUSTER_KEY.
setup() builds one handler per worker thread with the stage's factory
(transfer/handler.py, as a local worker process builds its own) and checks once that the source and
the target answer from this host; a worker that cannot open the options or
reach a store then answers every task with that one reason, and the
parent sends it no more (transfer/cluster.py). teardown() waits for the
tasks still running to notice the end and closes the clients.

Upload parts held in memory are counted per worker (data/budget.py): two
per thread, shared by that worker's threads only, since a semaphore does
not cross hosts.

Blobs written to a file target are made durable on the worker's host before
the results leave it (the handler's finish(): one syncfs per chunk): the
parent's own syncfs reaches only what its host wrote.

A task never raises: a Dask scheduler keeps a failed task's exception and
traceback, and shows them. Whatever goes wrong is returned as a short,
redacted reason.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
import time
from typing import Any

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from pmigrate import redact
from pmigrate.errors import ConfigError, StoreAbsent
from pmigrate.transfer.handler import Handler, StoreHandler
from pmigrate.transfer.sealed import ENV, Seal, SealError

log = logging.getLogger(__name__)

# What a task returns: (RESULTS, sealed list of results) or (REFUSED, worker address, reason) or (FAILED, reason).
RESULTS = "results"
REFUSED = "refused"
FAILED = "failed"
PLUGIN_WAIT = 60.0  # seconds a task waits for its worker's plugin to be built
PROBE_WAIT = 20.0  # seconds a worker's check of a store may go unanswered before it is taken as unreachable
STOP_CHECK = 1.0  # seconds between looks at whether the task was cancelled
TEARDOWN_WAIT = 60.0  # seconds teardown waits for running tasks to give their handler back
_OVER = frozenset({"cancelled", "released", "forgotten"})  # a task in these states is no one's any more


class TaskLifeline:
    """transfer.pool.Lifeline for a Dask task: true once the task is cancelled (the parent stopped or
    left) or the plugin is being removed, so that a long copy stops and its backend cleans up."""

    held = None  # tokens are counted per worker here, and a dead worker takes its own with it
    streamed = None  # progress comes with each chunk's results

    def __init__(self, plugin: RunPlugin, tokens: Any) -> None:
        self._plugin = plugin
        self.tokens = tokens  # this worker's own upload-part tokens, shared by its threads (module docstring)
        self.key: Any = None
        self._next_check = 0.0

    def stopped(self) -> bool:
        if self._plugin.closing:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + STOP_CHECK
        from distributed.worker import WORKER_ANY_RUNNING

        worker = self._plugin.worker
        if worker is None or worker.status not in WORKER_ANY_RUNNING:
            return True
        ts = worker.state.tasks.get(self.key) if self.key is not None else None
        return ts is not None and ts.state in _OVER


class RunPlugin(WorkerPlugin):
    """One run's clients on one worker. Only the sealed options travel; everything else is built here."""

    idempotent = False

    def __init__(self, *, name: str, salt: bytes, sealed: bytes, local: bool, probe_target: bool) -> None:
        self.name = name
        self.salt = salt
        self.sealed = sealed  # (factory, context) of the stage, sealed
        self.local = local  # a LocalCluster of pmigrate's own: Ctrl-C belongs to the parent
        self.probe_target = probe_target  # False: the target may not exist yet (a dry run)

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("name", "salt", "sealed", "local", "probe_target")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    # -- Dask's hooks ----------------------------------------------------------
    def setup(self, worker: Any) -> None:
        self.worker = worker
        self.closing = False
        self.problem = ""  # why this worker cannot take jobs, once known
        self.seal: Seal | None = None
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._handlers: list[Handler] = []
        self._ready = threading.Event()
        self._saved = (sys.stderr, logging.getLogger().handlers[:], logging.getLogger().level)
        if self.local and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGHUP):  # the terminal's signals go to the parent, which stops the run
                signal.signal(sig, signal.SIG_IGN)
        # Built in a thread: a store that does not answer must not stall the worker's event loop
        # (its heartbeats) nor the other workers, whose tasks start as soon as they are ready.
        self._builder = threading.Thread(target=self._build, args=(worker.state.nthreads,), name="pmigrate-setup", daemon=True)
        self._builder.start()

    async def teardown(self, worker: Any) -> None:
        """Returns once the tasks still running gave their handler back (they see ``closing``), or after TEARDOWN_WAIT."""
        import asyncio

        self.closing = True
        await asyncio.to_thread(self._close)

    # -- building and closing ------------------------------------------------------
    def _build(self, threads: int) -> None:
        from pmigrate.data.budget import PartBudget

        try:
            passphrase = _passphrase()
            seal = Seal(passphrase, salt=self.salt, context=self.name)
            try:
                factory, context = seal.open(self.sealed)
            except SealError:
                raise _Refusal(f"cannot open pmigrate's options: its {ENV} is not the one pmigrate was given") from None
            self.seal = seal
            parts = threading.BoundedSemaphore(PartBudget.capacity(threads))  # this worker's own (module docstring)
            for _ in range(max(1, threads)):
                lifeline = TaskLifeline(self, parts)
                handler = factory(context, lifeline=lifeline)
                self._handlers.append(handler)
                self._free.put((handler, lifeline))
            redact.register(passphrase)  # after the factory, which sets up the redacted logs
            self.problem = _probe(self._handlers[0], target=self.probe_target)
        except _Refusal as exc:
            self.problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - said once to the parent, which sends this worker nothing more
            self.problem = redact.redact(f"could not start pmigrate's handler: {type(exc).__name__}: {exc}")
        finally:
            self._ready.set()

    def _close(self) -> None:
        self._builder.join(TEARDOWN_WAIT)
        deadline = time.monotonic() + TEARDOWN_WAIT
        back = 0
        while back < len(self._handlers) and time.monotonic() < deadline:
            try:
                self._free.get(timeout=0.5)
                back += 1
            except queue.Empty:
                continue
        for handler in self._handlers:
            handler.close()
        stderr, handlers, level = self._saved  # as the worker logged before this run
        sys.stderr = stderr
        root = logging.getLogger()
        root.handlers[:] = handlers
        root.setLevel(level)

    # -- serving tasks ---------------------------------------------------------------
    def wait_ready(self) -> bool:
        return self._ready.wait(PLUGIN_WAIT)

    def checkout(self, key: Any) -> tuple[Handler, TaskLifeline] | None:
        """A free handler for this task's thread; None once the plugin is being removed (the run is over)."""
        while not self.closing:
            try:
                handler, lifeline = self._free.get(timeout=0.5)
            except queue.Empty:
                continue
            lifeline.key = key
            return handler, lifeline
        return None

    def checkin(self, handler: Handler, lifeline: TaskLifeline) -> None:
        lifeline.key = None
        self._free.put((handler, lifeline))


class _Refusal(Exception):
    """This worker cannot take jobs; the message says why and what to do."""


def _passphrase() -> str:
    value = os.environ.get(ENV, "")
    if not value:
        raise _Refusal(f"has no {ENV} in its environment: start `dask worker` with the same {ENV} as pmigrate")
    return value


def _probe(handler: Handler, *, target: bool) -> str:
    """Why this host cannot reach a store, or ''; what each backend's check() says, once per worker.

    A check that gets no answer (a store down, a proxy that swallows requests) would be tried
    again for --retry-for, as in an outage: past PROBE_WAIT it is taken as unreachable, well
    before the parent gives up on the plugin.
    """
    if not isinstance(handler, StoreHandler):
        return ""  # no store of its own to look at
    for side, backend in (("source", handler.src), ("target", handler.dst)):
        try:
            _within(PROBE_WAIT, lambda b=backend: b.check(create=False))
        except TimeoutError:
            return redact.redact(f"cannot reach the {side}: no answer within {PROBE_WAIT:.0f}s")
        except StoreAbsent as exc:
            if side == "source" or target:
                return redact.redact(f"cannot reach the {side}: {exc}")
        except ConfigError as exc:
            return redact.redact(f"cannot reach the {side}: {exc}")
        except Exception as exc:  # noqa: BLE001
            return redact.redact(f"cannot reach the {side}: {type(exc).__name__}: {exc}")
    return ""


def _within(seconds: float, fn: Any) -> None:
    """fn() in a daemon thread: its error, or TimeoutError past seconds (the thread is left to end on its own)."""
    done = threading.Event()
    failed: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            failed.append(exc)
        finally:
            done.set()

    threading.Thread(target=call, name="pmigrate-probe", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError
    if failed:
        raise failed[0]


def _durable(handler: Handler, results: list[Any]) -> None:
    """What this chunk wrote, made durable before the parent journals it: the handler's own
    (the parent's syncfs reaches its own host's writes only)."""
    try:
        handler.finish(results)
    except OSError as exc:
        raise _Refusal(redact.redact(f"could not make the blobs it wrote durable: {exc}")) from None


def _plugin(worker: Any, name: str) -> RunPlugin | None:
    deadline = time.monotonic() + PLUGIN_WAIT
    while True:
        plugin = worker.plugins.get(name)
        if plugin is not None or time.monotonic() >= deadline:
            return plugin
        time.sleep(0.05)


def run_chunk(name: str, sealed: bytes) -> tuple:
    """The Dask task: open a chunk of jobs, handle each with this thread's handler, seal the results."""
    worker = get_worker()
    plugin = _plugin(worker, name)
    if plugin is None:
        return (REFUSED, worker.address, "never received pmigrate's worker plugin")
    if not plugin.wait_ready():
        return (REFUSED, worker.address, f"took more than {PLUGIN_WAIT:.0f}s to build its backend clients")
    if plugin.problem or plugin.seal is None:
        return (REFUSED, worker.address, plugin.problem or "could not open pmigrate's options")
    try:
        jobs = plugin.seal.open(sealed)
    except SealError as exc:
        return (FAILED, f"a chunk of jobs {exc}")
    taken = plugin.checkout(worker.get_current_task())
    if taken is None:
        return (FAILED, "the run ended")  # nobody waits for this result any more
    handler, lifeline = taken
    try:
        out = []
        for job in jobs:
            if lifeline.stopped():
                break  # cancelled: Dask drops this task's result anyway
            out.append(handler(job))
        _durable(handler, out)
        return (RESULTS, plugin.seal.seal(out))
    except _Refusal as exc:
        return (FAILED, str(exc))
    except Exception as exc:  # noqa: BLE001 - a handler reports per blob; this is a defect, said without a traceback
        return (FAILED, redact.redact(f"{type(exc).__name__}: {exc}"))
    finally:
        plugin.checkin(handler, lifeline)
