"""Worker processes fed through bounded pipes, with worker death detection.

The pool knows nothing of blobs: it moves chunks of jobs to workers and lists
of results back. A job only needs ``seq`` (unique per run), ``attempt`` and
``size``; what a worker does with it is the business of the handler the stage
handed in (transfer/handler.py), so a new kind of job needs no change here.

Why one pipe per worker rather than one shared queue: the parent then knows
exactly which jobs each worker holds, so a worker killed mid-job is replaced
and its jobs handed out again, and a worker dying while writing cannot leave a
shared queue's lock held. Each worker also publishes the ``seq`` of the job it
is working on in shared memory: only that job's ``attempt`` grows when the
worker dies, the jobs queued behind it are simply handed out again.

Flow control: each worker holds at most ``inflight`` chunks, so reading the
metadata can never run ahead of copying and memory stays flat.

Children ignore SIGINT, SIGTERM and SIGHUP (pmigrate.interrupt); the parent
owns Ctrl-C and the stop signals and stops them through a shared cancel flag
(checked between reads, so even a 1 GiB copy stops promptly and the backend
cleans up after itself) and a sentinel. A pool its parent never stopped
raises that flag at exit, since its workers no longer die of the SIGTERM
multiprocessing sends its daemons then.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import util
from multiprocessing.connection import Connection, wait
from operator import attrgetter
from typing import Any

from pmigrate import interrupt
from pmigrate.batching import batched
from pmigrate.errors import FatalError
from pmigrate.transfer.handler import Factory, Handler, Lost
from pmigrate.words import plural

log = logging.getLogger(__name__)

IDLE = -1
EARLY_REPORT_SIZE = 8 << 20  # before a job this big, a worker sends the results it holds


class Lifeline:
    """Lets a worker's long operations ask cheaply whether to give up.

    True once the parent asked the pool to cancel, or once the parent process
    is gone (then nobody would record the result: better to clean up now).
    """

    __slots__ = ("_cancel", "_main_pid", "_ppid", "_next_check", "held", "tokens", "streamed")

    def __init__(self, cancel: Any, main_pid: int, held: Any = None, tokens: Any = None, streamed: Any = None) -> None:
        self._cancel = cancel
        self._main_pid = main_pid
        # The pool's `tokens` semaphore, and the shared count of those this
        # worker holds: the parent gives them back if the worker dies.
        self.tokens = tokens
        self.held = held
        # Shared count of the bytes streamed by the jobs whose results this
        # worker has not sent yet (a job tried again takes its bytes back):
        # the parent's live progress, back to 0 once the results are sent.
        self.streamed = streamed
        self._ppid = os.getppid()
        self._next_check = 0.0

    def stopped(self) -> bool:
        if self._cancel.value:
            return True
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + 1.0
            if os.getppid() != self._ppid or not _alive(self._main_pid):
                return True
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _return_large_buffers() -> None:
    """Have glibc give every buffer of 1 MiB or more back to the system as soon as it is freed.

    By default glibc raises its mmap threshold to the size of the largest
    buffer freed so far, so after the first upload part (16 MiB) every part is
    carved from the heap and per-thread arenas, which keep the freed memory:
    a worker's RSS then grows by tens of MiB beyond the parts it holds.
    """
    try:
        # The running process's own symbols include libc's: ctypes.util.find_library
        # would run ldconfig and cost each worker some 2.5 MiB of its own.
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


M_MMAP_THRESHOLD = -3  # from glibc's malloc.h


def _serve(
    factory: Factory, context: Any, conn: Connection, shared: tuple[Any, Any, Any, Any], cancel: Any, main_pid: int
) -> None:
    """A worker's life: build the handler, then handle chunks until the sentinel."""
    # What the fork server preloaded (boto3 and its models: tens of MiB) stays
    # shared with it only while nothing writes to those pages; the cyclic GC
    # writes to every object it scans, so it is told to leave them alone.
    gc.freeze()
    _return_large_buffers()
    interrupt.leave_to_parent()
    current, held, tokens, streamed = shared
    lifeline = Lifeline(cancel, main_pid, held, tokens, streamed)
    handler: Handler | None = None
    try:
        try:
            handler = factory(context, lifeline=lifeline)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
            conn.send(("fatal", f"worker could not start: {exc}"))
            return
        while True:
            # Idle workers wake up every second: with the fork start method a
            # sibling may hold the parent's end of this pipe open, so EOF alone
            # would not tell that the parent is gone.
            while not conn.poll(1.0):
                if lifeline.stopped():
                    return
            chunk = conn.recv()
            if chunk is None:
                return
            out: list[Any] = []
            last_send = time.monotonic()
            for job in chunk:
                if cancel.value:
                    break  # what is done is on the target: the parent still journals it
                if out and (job.size >= EARLY_REPORT_SIZE or time.monotonic() - last_send > 0.25):
                    # A long job ahead, or a long chunk: report what is done so
                    # far, so that progress stays live and a death does not
                    # redo finished work.
                    conn.send(("results", out, False))
                    streamed.value = 0  # those bytes are the results' now
                    out = []
                    last_send = time.monotonic()
                current.value = job.seq
                out.append(handler(job))
                current.value = IDLE
            conn.send(("results", out, True))
            streamed.value = 0
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone
    finally:
        if handler is not None:
            handler.close()


def _raise_flag(cancel: Any) -> None:
    """At exit (or once the pool is gone): idle workers see the flag within a second and quit."""
    cancel.value = 1


class Workers:
    """What a stage sees of a pool of workers: Pool on this host, transfer/cluster.ClusterPool on Dask.

    run() is one loop for both: hand chunks of jobs out while the workers have
    room, take results as they come, tick the caller every ``tick`` seconds.
    A subclass says what room, handing out and taking mean there.
    """

    tokens: Any = None  # the semaphore the workers take upload-part tokens from (lifeline.tokens), if the parent governs one

    def __init__(self, *, factory: Factory, context: Any, lost: Lost, chunk_jobs: int, chunk_bytes: int) -> None:
        """``factory(context, lifeline=...)`` builds a worker's handler (transfer/handler.py);
        ``lost(job, reason)`` the result of a job whose workers kept dying; a chunk holds
        at most ``chunk_jobs`` jobs and, unless one job is bigger, ``chunk_bytes`` bytes."""
        self._factory = factory
        self._context = context
        self._lost = lost
        self._chunk_jobs = chunk_jobs
        self._chunk_bytes = chunk_bytes
        self.deaths: list[str] = []  # one line per worker that died while it held jobs, for the report
        # Called with a job a worker was handling when it died, before that job
        # is handed out again: the place to clear what the dead write left behind.
        self.on_death: Callable[[Any], None] | None = None
        self.drained: list[Any] = []  # results that arrived while stopping after an error

    def start(self) -> None:
        """Start the workers now (idempotent): their start-up, client building included, then
        overlaps whatever the parent does before run()."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The workers' process ids on this host, for measuring their memory."""
        return []

    def streaming(self) -> int:
        """Bytes streamed by jobs whose results have not come in yet; 0 where the workers do not say."""
        return 0

    def close(self) -> None:
        """Stop what start() began (another stage's check failed before run())."""
        self._stop(cancel=True)

    def run(
        self,
        jobs: Iterable[Any],
        *,
        on_results: Callable[[list[Any]], None],
        on_tick: Callable[[], None] | None = None,
        tick: float = 0.5,
    ) -> None:
        """Handle every job; return when all results are in.

        An exception (from a callback, Ctrl-C, the workers lost) cancels the
        workers, waits for them to clean up, and propagates.
        """
        chunks = self._chunker(iter(jobs))
        exhausted = False
        next_tick = time.monotonic() + tick
        try:
            self.start()
            self._begin()
            while True:
                exhausted = self._hand_out(chunks, exhausted)
                if exhausted and self._idle():
                    break
                for results in self._results(timeout=max(0.0, next_tick - time.monotonic())):
                    on_results(results)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + tick
                    self._ticked()
                    if on_tick is not None:
                        on_tick()
        except BaseException:
            self._stop(cancel=True)
            raise
        self._stop(cancel=False)

    # -- what a pool says ------------------------------------------------------------
    def _chunker(self, jobs: Iterator[Any]) -> Iterator[list[Any]]:
        raise NotImplementedError

    def _begin(self) -> None:
        """Once the workers are there, before the first chunk."""

    def _hand_out(self, chunks: Iterator[list[Any]], exhausted: bool) -> bool:
        """Hand out chunks while the workers have room; True once no job is left to hand out."""
        raise NotImplementedError

    def _idle(self) -> bool:
        """True when no job is out with a worker nor waiting to go out again."""
        raise NotImplementedError

    def _results(self, *, timeout: float) -> Iterator[list[Any]]:
        """The results that came in, waiting at most ``timeout`` for the first."""
        raise NotImplementedError

    def _ticked(self) -> None:
        """Every ``tick`` seconds of run()."""

    def _stop(self, *, cancel: bool) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class _Slot:
    process: Any
    conn: Connection
    current: Any  # shared c_longlong: seq of the job in progress, or IDLE
    streamed: Any  # shared c_longlong: bytes streamed by jobs whose results are not sent yet (Lifeline.streamed)
    held: Any  # shared c_int: tokens the worker holds (Lifeline.held)
    jobs: dict[int, Any] = field(default_factory=dict)  # seq -> job, sent and not answered
    chunks: int = 0  # chunks sent and not finished


class Pool(Workers):
    """N worker processes; ``run`` feeds them jobs and hands results to callbacks."""

    def __init__(
        self,
        *,
        factory: Factory,
        context: Any,
        workers: int,
        lost: Lost,
        chunk_jobs: int = 64,
        chunk_bytes: int = 32 << 20,
        inflight: int = 2,
        start_method: str = "forkserver",
        preload: Sequence[str] = (),
        max_attempts: int = 2,
        stop_timeout: float = 60.0,
        tokens: Any = None,
    ) -> None:
        """``factory(context, lifeline=...)`` runs in each worker and builds its handler
        (module-level, so it pickles by name). ``lost(job, reason)`` builds the
        result of a job whose workers died ``max_attempts`` times. ``tokens`` is a
        semaphore the workers take from (``lifeline.tokens``), counting what they
        hold in ``lifeline.held``: a dead worker's tokens go back to it.
        """
        if workers < 1:
            raise ValueError("workers must be at least 1")
        super().__init__(factory=factory, context=context, lost=lost, chunk_jobs=chunk_jobs, chunk_bytes=chunk_bytes)
        self._workers = workers
        self._inflight = inflight
        self._max_attempts = max_attempts
        self.tokens = tokens
        self._stop_timeout = stop_timeout
        self._mp = mp.get_context(start_method)
        if start_method == "forkserver" and preload:
            self._mp.set_forkserver_preload(list(preload))
        self._cancel = self._mp.RawValue("b", 0)
        util.Finalize(self, _raise_flag, (self._cancel,), exitpriority=10)
        self._slots: list[_Slot] = []
        self._retry: deque[Any] = deque()
        self._max_deaths = 3 + 2 * workers

    # -- public --------------------------------------------------------------
    def start(self) -> None:
        while len(self._slots) < self._workers:
            self._slots.append(self._start())

    def pids(self) -> list[int]:
        """The workers' process ids, those replacing dead ones included."""
        return [s.process.pid for s in list(self._slots) if s.process.pid]

    def streaming(self) -> int:
        return sum(s.streamed.value for s in self._slots)

    def _hand_out(self, chunks: Iterator[list[Any]], exhausted: bool) -> bool:
        while True:
            slot = self._free_slot()
            if slot is None:
                return exhausted
            chunk = self._next_chunk(chunks, exhausted)
            if chunk is None:
                return not self._retry
            self._send(slot, chunk)

    def _idle(self) -> bool:
        return not self._retry and not any(s.chunks for s in self._slots)

    def _results(self, *, timeout: float) -> Iterator[list[Any]]:
        return self._poll(timeout=timeout)

    # -- workers ---------------------------------------------------------------
    def _start(self) -> _Slot:
        parent_end, child_end = self._mp.Pipe(duplex=True)
        current = self._mp.RawValue("q", IDLE)
        held = self._mp.RawValue("i", 0)
        streamed = self._mp.RawValue("q", 0)
        proc = self._mp.Process(
            target=_serve,
            args=(self._factory, self._context, child_end, (current, held, self.tokens, streamed), self._cancel, os.getpid()),
            name="pmigrate-worker",
            daemon=True,
        )
        with interrupt.held():
            proc.start()
        child_end.close()
        return _Slot(process=proc, conn=parent_end, current=current, held=held, streamed=streamed)

    def _free_slot(self) -> _Slot | None:
        best = None
        for s in self._slots:
            if s.chunks < self._inflight and (best is None or s.chunks < best.chunks):
                best = s
        return best

    def _chunker(self, jobs: Iterator[Any]) -> Iterator[list[Any]]:
        return batched(jobs, self._chunk_jobs, weight=attrgetter("size"), most=self._chunk_bytes)

    def _next_chunk(self, chunks: Iterator[list[Any]], exhausted: bool) -> list[Any] | None:
        if self._retry:
            chunk: list[Any] = []
            weight = 0
            while self._retry and len(chunk) < self._chunk_jobs and weight < self._chunk_bytes:
                job = self._retry.popleft()
                chunk.append(job)
                weight += job.size
            return chunk
        if exhausted:
            return None
        return next(chunks, None)

    def _send(self, slot: _Slot, chunk: list[Any]) -> None:
        for job in chunk:
            slot.jobs[job.seq] = job
        slot.chunks += 1
        try:
            slot.conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # it died: its sentinel fires and _bury() hands the chunk out again

    def _poll(self, *, timeout: float) -> Iterator[list[Any]]:
        by_conn = {s.conn: s for s in self._slots}
        by_sentinel = {s.process.sentinel: s for s in self._slots}
        ready = wait(list(by_conn) + list(by_sentinel), timeout)
        dead: list[_Slot] = []
        for obj in ready:
            if obj in by_conn:
                slot = by_conn[obj]
                try:
                    yield from self._receive(slot)
                except (EOFError, OSError):
                    if slot not in dead:
                        dead.append(slot)
            elif by_sentinel[obj] not in dead:
                dead.append(by_sentinel[obj])
        for slot in dead:
            yield from self._bury(slot)

    def _receive(self, slot: _Slot) -> Iterator[list[Any]]:
        while slot.conn.poll():
            msg = slot.conn.recv()
            if msg[0] == "fatal":
                raise FatalError(msg[1])
            _, results, chunk_done = msg
            for r in results:
                slot.jobs.pop(r.seq, None)
            if chunk_done:
                slot.chunks -= 1
            if results:
                yield results

    def _bury(self, slot: _Slot) -> Iterator[list[Any]]:
        """A worker died: keep what it finished, hand its jobs out again, replace it."""
        try:
            yield from self._receive(slot)
        except (EOFError, OSError):
            pass
        slot.process.join(timeout=5)
        self._give_back(slot)
        code = slot.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        in_progress = slot.current.value
        lost = []
        for seq, job in slot.jobs.items():
            if seq == in_progress:
                self._clear_after(job)
                job.attempt += 1
                if job.attempt >= self._max_attempts:
                    lost.append(self._lost(job, f"worker process died twice while handling it ({how})"))
                    continue
            self._retry.append(job)
        self.deaths.append(f"worker pid {slot.process.pid} {how}; {plural(len(slot.jobs), 'job')} handed out again")
        log.warning("%s", self.deaths[-1])
        slot.conn.close()
        self._slots.remove(slot)
        if len(self.deaths) > self._max_deaths:
            raise FatalError(f"worker processes keep dying (last: {how}); see the log with -v")
        self._slots.append(self._start())
        if lost:
            yield lost

    def _give_back(self, slot: _Slot) -> None:
        """Return the tokens a dead worker held, or the others would wait for them forever."""
        if self.tokens is None:
            return
        for _ in range(slot.held.value):
            try:
                self.tokens.release()
            except ValueError:  # already full: the worker died while giving one back
                break

    def _clear_after(self, job: Any) -> None:
        if self.on_death is None:
            return
        try:
            self.on_death(job)
        except Exception:  # noqa: BLE001 - clearing is best effort; the retry overwrites anyway
            log.warning("could not clear what a dead worker left of job %s", job.seq, exc_info=True)

    # -- stopping --------------------------------------------------------------
    def _stop(self, *, cancel: bool) -> None:
        """Sentinel to every worker; on cancel, also raise the flag their reads check.

        Keeps reading their pipes meanwhile (a worker blocked on sending its
        results could not see the sentinel), then terminates stragglers.
        """
        if cancel:
            self._cancel.value = 1
        for s in self._slots:
            try:
                s.conn.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + self._stop_timeout
        pending = list(self._slots)
        while pending and time.monotonic() < deadline:
            conns = {s.conn: s for s in pending}
            ready = wait(list(conns) + [s.process.sentinel for s in pending], 0.5)
            for obj in ready:
                slot = conns.get(obj)
                if slot is not None:
                    self._drain(slot)
            pending = [s for s in pending if s.process.is_alive()]
        for s in pending:
            log.warning("worker pid %s did not stop in %.0fs; terminating it", s.process.pid, self._stop_timeout)
            s.process.terminate()
        for s in self._slots:
            s.process.join(timeout=5)
            if s.process.is_alive():
                s.process.kill()
                s.process.join()
            self._drain(s)  # what it sent just before it ended, after the last wait above
            s.conn.close()
        self._slots.clear()

    def _drain(self, slot: _Slot) -> None:
        """Keep the results a stopping worker sends: those blobs are on the target."""
        try:
            while slot.conn.poll():
                msg = slot.conn.recv()
                if msg[0] == "results":
                    self.drained.extend(msg[1])
        except (EOFError, OSError):
            pass
