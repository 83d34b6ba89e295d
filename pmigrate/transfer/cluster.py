"""Blob jobs on a Dask distributed cluster (--cluster): transfer/pool.Pool's interface, Dask's workers.

The parent stays the parent: it reads the source, feeds jobs, and alone
writes the journal, the progress and the report. Jobs go out in chunks, one
Dask task each, at most CHUNKS_PER_THREAD per thread of the workers that
may take them, so that a million blobs never sit in the scheduler at once;
results come back as each task ends (distributed.as_completed).

Each worker builds the stage's handlers (transfer/handler.py: the same
factory and context as the local pool's) once, in pmigrate's worker plugin
(transfer/cluster_worker.py). The plugin and every chunk pass through the
scheduler, which keeps them: they are sealed (transfer/sealed.py) with a
key made from PMIGRATE_CLUSTER_KEY, which the parent and each worker read
from their own environment. ``local:N`` starts a LocalCluster of N worker
processes on this host, with a passphrase of its own.

Faults:
- A worker that dies mid-task: Dask runs the task again elsewhere (it
  gives up after ``distributed.scheduler.allowed-failures`` deaths: each
  job of the chunk is then lost, as the local pool loses one). The
  scheduler names the tasks the dead worker held; once the chunk's next
  attempt has ended, ``on_death`` clears what the dead write may have left
  (a temporary file, an open multipart upload) for each of its blobs. Not
  before: the retry could be writing the same blob at that moment.
- A worker that cannot open the options or reach a store says why in its
  answer to the first task it gets; the parent says it once and sends no
  more jobs to that host.
- The scheduler lost: FatalError, and the run resumes from the journal.

This module, like cluster_worker, imports distributed: only --cluster loads it.
"""

from __future__ import annotations

import collections
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pmigrate import redact
from pmigrate.data import bwlimit
from pmigrate.errors import ConfigError, FatalError
from pmigrate.transfer import sealed
from pmigrate.transfer.handler import Factory, Lost
from pmigrate.transfer.pool import Workers
from pmigrate.words import plural

log = logging.getLogger(__name__)

LOCAL = "local:"
CHUNKS_PER_THREAD = 2  # chunks in flight per worker thread, as the local pool keeps 2 per process
# Chunk size: a task costs the scheduler about a millisecond, so a chunk should keep a thread
# busy for about TASK_SECONDS (a hundred hosts at 10 Gbit/s must not ask for tens of thousands
# of tasks a second); but the jobs of one chunk are copied one after the other by one thread of
# one host, so a chunk much longer leaves hosts idle at the end. The limits (jobs, bytes; a job
# bigger than the bytes is a chunk of its own) start at chunk_jobs and chunk_bytes, and are
# scaled by how long the chunks took, within SCALE.
CHUNK_BYTES = 8 << 20
TASK_SECONDS = 1.0
SCALE = (1 / 8, 64.0)
CONNECT_SECONDS = 20.0
WORKERS_SECONDS = 60.0  # wait for the first worker to join
REFRESH_SECONDS = 2.0  # between looks at the cluster's workers
_ADDRESS = re.compile(r"(tcp|tls)://\[?[A-Za-z0-9.:_-]+\]?:\d{1,5}")
HINT = "see docs/guide/cluster.md"


def check_option(value: str, *, env: Mapping[str, str]) -> None:
    """--cluster checked before anything runs: ConfigError (exit 2) naming the cause and the fix."""
    if value.startswith(LOCAL):
        n = value[len(LOCAL) :]
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--cluster {value}: write local:N with N worker processes, at least 1")
    elif not _ADDRESS.fullmatch(value):
        raise ConfigError(f"--cluster {value}: give the Dask scheduler's address, e.g. tcp://10.0.0.5:8786, or local:N")
    for module in ("distributed", "cryptography"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"--cluster needs the {module} package: pip install 'pmigrate[dask]'") from None
    if value.startswith(LOCAL):
        return
    passphrase = env.get(sealed.ENV, "")
    if len(passphrase) < sealed.MIN_LENGTH:
        what = "is not set" if not passphrase else f"is shorter than {sealed.MIN_LENGTH} characters"
        raise ConfigError(
            f"--cluster {value}: {sealed.ENV} {what}: give pmigrate and every dask worker the same random "
            f"passphrase (e.g. from `openssl rand -hex 24`) in that variable; {HINT}"
        )


@dataclass(eq=False)
class _Chunk:
    jobs: list[Any]
    key: str = ""
    future: Any = None
    suspect: bool = False  # a worker died while it held this chunk: clear after its next attempt


class ClusterPool(Workers):
    """``run(jobs, on_results=..., on_tick=...)`` as transfer.pool.Pool, on Dask workers.

    Upload parts are counted on each worker (cluster_worker): no tokens for the parent to govern.
    """

    def __init__(
        self,
        *,
        address: str,
        factory: Factory,
        context: Any,
        lost: Lost,
        chunk_jobs: int = 64,
        chunk_bytes: int = CHUNK_BYTES,
        probe_target: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``factory``, ``context``, ``lost``: as transfer.pool.Pool's; each worker builds its handlers with them.
        ``probe_target``: workers check that the target store is there (False for a dry run of a
        target the run would create). ``env``: where PMIGRATE_CLUSTER_KEY is read (os.environ)."""
        import os

        super().__init__(factory=factory, context=context, lost=lost, chunk_jobs=chunk_jobs, chunk_bytes=chunk_bytes)
        self.address = address
        self._scale = 1.0  # of both chunk limits, from the time chunks took (_resize)
        self._probe_target = probe_target
        self._local = address.startswith(LOCAL)
        env = os.environ if env is None else env
        self._passphrase = sealed.new_passphrase() if self._local else env.get(sealed.ENV, "")
        redact.register(self._passphrase)
        self._client: Any = None
        self._cluster: Any = None
        self._name = f"pmigrate-{secrets.token_hex(4)}"
        self._seal: sealed.Seal | None = None
        self._registered = False
        self._pending: dict[str, _Chunk] = {}
        self._retry: collections.deque[list[Any]] = collections.deque()
        self._removals: collections.deque[dict] = collections.deque()  # appended by the client's event thread
        self._threads: dict[str, int] = {}  # worker address -> threads
        self._refreshed = 0.0
        self._bad_hosts: dict[str, str] = {}  # host -> why its workers take no jobs
        self._told: set[str] = set()
        self._sent = 0
        self._done: Any = None  # distributed.as_completed over the tasks in flight

    # -- public --------------------------------------------------------------
    def start(self) -> None:
        """Connect to the scheduler (or start the LocalCluster) and wait for a worker: idempotent."""
        if self._client is not None:
            return
        from distributed import Client

        verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
        _route_logs(verbose)
        try:
            if self._local:
                self._cluster = self._local_cluster(int(self.address[len(LOCAL) :]), verbose=verbose)
                self._client = Client(self._cluster, set_as_default=False)
            else:
                self._client = Client(self.address, timeout=CONNECT_SECONDS, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, or the cluster's own
            self._close_client()
            raise ConfigError(f"cannot reach the Dask scheduler at {self.address} ({_reason(exc)}): start it, or fix --cluster; {HINT}") from None
        try:
            self._client.wait_for_workers(1, timeout=WORKERS_SECONDS)
        except Exception:  # noqa: BLE001 - TimeoutError
            self._close_client()
            raise ConfigError(
                f"no Dask worker joined the scheduler at {self.address} within {WORKERS_SECONDS:.0f}s: "
                f"start `dask worker {self.address}` on each host; {HINT}"
            ) from None
        self._refresh(force=True)
        log.info("blobs: Dask cluster at %s, %s with %s", self.address, plural(len(self._threads), "worker"),
                 plural(sum(self._threads.values()), "thread"))  # fmt: skip

    # -- Workers' loop ----------------------------------------------------------
    def _begin(self) -> None:
        from distributed import as_completed

        self._register()
        self._done = as_completed(loop=self._client.loop, with_results=True, raise_errors=False)

    def _hand_out(self, chunks: Iterator[list[Any]], exhausted: bool) -> bool:
        while len(self._pending) < self._limit():
            if self._retry:  # jobs a refusing worker gave back go out first
                chunk = self._retry.popleft()
            elif exhausted or (chunk := next(chunks, None)) is None:
                return True
            self._done.add(self._submit(chunk))
        return exhausted

    def _idle(self) -> bool:
        return not self._retry and not self._pending

    def _results(self, *, timeout: float) -> Iterator[list[Any]]:
        self._note_removals()
        for future, value in _ready(self._done, timeout=timeout):
            results = self._take(future, value)
            if results:
                yield results

    def _ticked(self) -> None:
        self._check_scheduler()
        self._refresh()

    # -- the cluster ------------------------------------------------------------
    def _local_cluster(self, n: int, *, verbose: bool) -> Any:
        from distributed import LocalCluster

        return LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.WARNING if verbose else logging.CRITICAL,
            env={sealed.ENV: self._passphrase},
        )

    def _register(self) -> None:
        """Send the sealed options to every worker (and to those that join later, through the scheduler)."""
        if self._registered:
            return
        from pmigrate.transfer.cluster_worker import RunPlugin

        salt = sealed.new_salt()
        self._seal = sealed.Seal(self._passphrase, salt=salt, context=self._name)
        plugin = RunPlugin(
            name=self._name, salt=salt, local=self._local, probe_target=self._probe_target,
            # each worker its share of the limits
            sealed=self._seal.seal((self._factory, bwlimit.for_cluster(self._context, len(self._threads)))),
        )
        self._client.subscribe_topic("all", self._on_event)
        try:
            self._client.register_plugin(plugin, name=self._name)
        except Exception as exc:  # noqa: BLE001 - raised on a worker: most often pmigrate missing there
            raise FatalError(
                f"a Dask worker could not load pmigrate's worker plugin ({_reason(exc)}): install the same "
                f"pmigrate on every worker; {HINT}"
            ) from None
        self._registered = True

    def _on_event(self, event: tuple) -> None:
        """In the client's event thread: keep the removals of workers, read by the main thread."""
        msg = event[1] if isinstance(event, tuple) and len(event) == 2 else None
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            self._removals.append(msg)

    def _refresh(self, *, force: bool = False) -> None:
        if not force and time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        try:
            self._threads = dict(self._client.nthreads())
        except Exception:  # noqa: BLE001 - the scheduler gone: _check_scheduler says so
            log.debug("could not list the Dask workers", exc_info=True)
        self._refreshed = time.monotonic()

    def _allowed(self) -> list[str] | None:
        """Hosts that may take jobs: all (None) until a worker refused them."""
        if not self._bad_hosts:
            return None
        return sorted({_host(a) for a in self._threads} - set(self._bad_hosts))

    def _limit(self) -> int:
        allowed = self._allowed()
        threads = sum(n for a, n in self._threads.items() if allowed is None or _host(a) in allowed)
        return CHUNKS_PER_THREAD * max(1, threads)

    def _check_scheduler(self) -> None:
        if self._client.status not in ("running", "newly-created"):
            raise FatalError(self._scheduler_lost())

    def _scheduler_lost(self) -> str:
        return (
            f"lost the Dask scheduler at {self.address}: the blob copy stopped; run the same command again to resume "
            "from the journal (once the scheduler is back, or without --cluster)"
        )

    # -- jobs -------------------------------------------------------------------
    def _chunker(self, jobs: Iterator[Any]) -> Iterator[list[Any]]:
        chunk: list[Any] = []
        weight = 0
        for job in jobs:
            most_jobs = max(1, round(self._chunk_jobs * self._scale))
            most_bytes = self._chunk_bytes * self._scale
            if job.size >= most_bytes:
                if chunk:
                    yield chunk
                    chunk, weight = [], 0
                yield [job]
                continue
            chunk.append(job)
            weight += job.size
            if len(chunk) >= most_jobs or weight >= most_bytes:
                yield chunk
                chunk, weight = [], 0
        if chunk:
            yield chunk

    def _submit(self, jobs: list[Any]) -> Any:
        from pmigrate.transfer.cluster_worker import run_chunk

        assert self._seal is not None
        self._sent += 1
        key = f"{self._name}-{self._sent}"
        future = self._client.submit(
            run_chunk, self._name, self._seal.seal(jobs), key=key, pure=False, workers=self._allowed(), allow_other_workers=False
        )
        self._pending[key] = _Chunk(jobs=jobs, key=key, future=future)
        return future

    def _take(self, future: Any, value: Any) -> list[Any]:
        """The results of one finished task; what a death, a refusal or a failure means for its jobs."""
        from pmigrate.transfer import cluster_worker as cw

        # The scheduler's word of a lost worker comes before the result of the task run again:
        # read it first, or that task's chunk would not be known to need clearing after.
        self._note_removals()
        chunk = self._pending.pop(future.key, None)
        if chunk is None:
            return []
        if chunk.suspect:
            self._clear_after(chunk)
        if future.status == "finished":
            kind = value[0]
            if kind == cw.RESULTS:
                assert self._seal is not None
                results = self._seal.open(value[1])
                self._resize(results)
                return results
            if kind == cw.REFUSED:
                self._refused(value[1], value[2])
                self._retry.append(chunk.jobs)
                return []
            raise FatalError(f"a Dask worker failed on a chunk of blobs: {value[1]}")
        if future.status == "error":
            exc = value[1] if isinstance(value, tuple) and len(value) == 3 else value
            if type(exc).__name__ == "KilledWorker":
                reason = f"Dask workers kept dying while handling it ({_reason(exc)})"
                return [self._lost(job, reason) for job in chunk.jobs]
            raise FatalError(f"a blob task failed on the Dask cluster: {_reason(exc)}")
        self._check_scheduler()
        raise FatalError(f"the Dask cluster at {self.address} cancelled a blob task: {_reason(value)}")

    def _resize(self, results: list[Any]) -> None:
        """Chunks that took TASK_SECONDS of their thread's time stay as they are; others grow or shrink, by half at most."""
        busy = sum(r.seconds for r in results)
        ratio = TASK_SECONDS / busy if busy > 0 else 2.0
        self._scale = min(SCALE[1], max(SCALE[0], self._scale * min(2.0, max(0.5, ratio))))

    def _refused(self, worker: str, why: str) -> None:
        host = _host(worker)
        self._bad_hosts.setdefault(host, why)
        if worker not in self._told:
            self._told.add(worker)
            log.warning("Dask worker %s %s; pmigrate sends no more blobs to %s", worker, why, host)
        self._refresh(force=True)
        if not self._allowed():
            first = next(iter(self._bad_hosts.items()))
            raise FatalError(f"no Dask worker at {self.address} can take the blobs: the worker at {first[0]} {first[1]}")

    def _note_removals(self) -> None:
        """Workers lost while holding chunks of ours: each such chunk is cleared after its next attempt."""
        while self._removals:
            msg = self._removals.popleft()
            mine = [self._pending[k] for k in msg.get("processing-tasks", ()) if k in self._pending]
            if not mine:
                log.info("Dask worker %s left the cluster", msg.get("worker"))
                continue
            for chunk in mine:
                chunk.suspect = True
            n = sum(len(c.jobs) for c in mine)
            self.deaths.append(f"Dask worker {msg.get('worker')} lost; {plural(n, 'job')} handed out again")
            log.warning("%s", self.deaths[-1])

    def _clear_after(self, chunk: _Chunk) -> None:
        if self.on_death is None:
            return
        for job in chunk.jobs:
            try:
                self.on_death(job)
            except Exception:  # noqa: BLE001 - clearing is best effort; a re-run's sweep finds open uploads too
                log.warning("could not clear what a lost Dask worker left of job %s", job.seq, exc_info=True)

    # -- stopping -----------------------------------------------------------------
    def _stop(self, *, cancel: bool) -> None:
        """Cancel what is in flight (the workers' lifelines see it within a second), take the plugin
        back (its teardown waits for running tasks to end), clear after lost workers, disconnect."""
        if self._client is None:
            return
        alive = self._client.status == "running"
        if cancel and self._pending:
            self._keep_finished()
            if alive:
                try:
                    self._client.cancel([c.future for c in self._pending.values()])
                except Exception:  # noqa: BLE001
                    log.debug("cancelling the Dask tasks failed", exc_info=True)
        self._note_removals()
        if self._registered and alive:
            try:
                self._client.unregister_worker_plugin(self._name)
            except Exception:  # noqa: BLE001
                log.debug("removing pmigrate's worker plugin failed", exc_info=True)
            self._registered = False
        for chunk in list(self._pending.values()):
            if chunk.suspect:
                self._clear_after(chunk)
        self._pending.clear()
        self._close_client()

    def _keep_finished(self) -> None:
        """Results of tasks that ended but were not taken yet: those blobs are on the target."""
        from pmigrate.transfer import cluster_worker as cw

        for chunk in list(self._pending.values()):
            f = chunk.future
            if f is not None and f.status == "finished":
                try:
                    value = f.result(timeout=5)
                except Exception:  # noqa: BLE001
                    continue
                if value[0] == cw.RESULTS and self._seal is not None:
                    self.drained.extend(self._seal.open(value[1]))
                del self._pending[chunk.key]

    def _close_client(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        if client is not None and client.status == "running":
            try:
                client.unsubscribe_topic("all")  # or the scheduler tries to tell a closed client that it left
            except Exception:  # noqa: BLE001
                log.debug("unsubscribing from the scheduler's events failed", exc_info=True)
        for thing in (client, cluster):
            if thing is None:
                continue
            try:
                thing.close(timeout=10)
            except Exception:  # noqa: BLE001 - closing what is already gone
                log.debug("closing %r failed", thing, exc_info=True)


def _ready(done: Any, *, timeout: float) -> list[tuple[Any, Any]]:
    """The tasks that ended, waiting at most ``timeout`` for the first."""
    deadline = time.monotonic() + timeout
    while not done.has_ready():
        left = deadline - time.monotonic()
        if left <= 0:
            return []
        with done.thread_condition:
            done.thread_condition.wait(min(left, 0.05))
    return done.next_batch(block=False)


def _host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def _reason(exc: Any) -> str:
    text = " ".join(str(exc).split())
    return redact.redact(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _route_logs(verbose: bool) -> None:
    """Dask's own log lines in the parent go through pmigrate's redacting handler, and only with -v.

    Before a LocalCluster starts: it would otherwise silence, then restore, the handlers removed here."""
    families = ("distributed", "tornado", "bokeh")
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.split(".", 1)[0] in families:
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
    for name in families:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
