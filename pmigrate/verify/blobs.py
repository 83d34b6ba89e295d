"""Blob audit: every blob the source metadata says exists, read and hashed from the target.

The parent streams the source `files` rows (uploaded and removed: the only
statuses with a blob) into small batches of jobs on a bounded queue; worker
processes build their own backends, run blobjob.verify_blob on each job and
send results back; only the parent writes the report. Memory stays flat: the
parent holds at most the batches in flight.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pmigrate.data.base import BlobRef
from pmigrate.data.registry import open_backend
from pmigrate.errors import FatalError, ItemError
from pmigrate.ids import check_id
from pmigrate.verify import blobjob

AREA = "verify-blobs"
WITH_BLOB = ("uploaded", "removed")
BATCH_FILES = 32  # jobs per queue item: fewer hand-offs for small blobs
BATCH_BYTES = 16 << 20  # ... but no more than this much to read per item
KINDS = (
    blobjob.OK,
    blobjob.MISSING,
    blobjob.SIZE,
    blobjob.HASH,
    blobjob.CORRUPT_SOURCE,
    blobjob.SOURCE_MISSING,
    blobjob.ERROR,
)

ExpectedHashes = Callable[[list[str]], Mapping[str, str]]


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """What a worker needs to build a backend: plain, picklable."""

    name: str
    options: dict[str, Any]


@dataclass(kw_only=True)
class BlobTotals:
    files: int = 0
    bytes: int = 0
    bytes_read: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    unverifiable: int = 0
    by_etag: int = 0
    seconds: float = 0.0

    def figures(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "bytes_read": self.bytes_read,
            **{k: v for k, v in self.counts.items()},
            "unverifiable_by_md5": self.unverifiable,
            "verified_by_etag": self.by_etag,
            "seconds": round(self.seconds, 3),
            "read_mb_per_s": round(self.bytes_read / self.seconds / 1e6, 1) if self.seconds > 0 else None,
        }


# -- the source's files ------------------------------------------------------


def _file_columns(engine: Engine) -> list[str]:
    have = {c["name"] for c in sa.inspect(engine).get_columns("files")}
    return [c for c in ("id", "upload_id", "size", "type", "md5", "backend_details", "status") if c in have]


def file_rows(engine: Engine, *, statuses: tuple[str, ...] | None, batch_size: int) -> Iterator[dict[str, Any]]:
    """files rows as dicts, streamed in id order; statuses=None: every status."""
    cols = _file_columns(engine)
    q = engine.dialect.identifier_preparer.quote_identifier
    sql = f"SELECT {', '.join(q(c) for c in cols)} FROM {q('files')}"
    params: dict[str, Any] = {}
    if statuses is not None:
        sql += f" WHERE {q('status')} IN ({', '.join(f':s{i}' for i in range(len(statuses)))})"
        params = {f"s{i}": s for i, s in enumerate(statuses)}
    sql += f" ORDER BY {q('id')}"
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(sa.text(sql), params)
        for batch in result.partitions(batch_size):
            for row in batch:
                yield dict(zip(cols, row))


def totals(engine: Engine) -> tuple[int, int]:
    """(files, bytes) with a blob, for the progress bar."""
    q = engine.dialect.identifier_preparer.quote_identifier
    sql = f"SELECT COUNT(*), COALESCE(SUM({q('size')}), 0) FROM {q('files')} WHERE {q('status')} IN ('uploaded', 'removed')"
    with engine.connect() as conn:
        n, size = conn.execute(sa.text(sql)).one()
    return int(n), int(size or 0)


def to_ref(row: Mapping[str, Any]) -> BlobRef:
    """A BlobRef from a files row; InvalidId when an id must not become a key."""
    size = row.get("size")
    return BlobRef(
        file_id=check_id(row["id"], what="file id"),
        upload_id=check_id(row["upload_id"], what="upload id"),
        size=int(size) if size is not None else -1,
        content_type=row.get("type") or "",
        md5=row.get("md5") or "",
        backend_details=row.get("backend_details") or "",
    )


# -- the workers -------------------------------------------------------------


def _worker(jobs: Any, results: Any, src: BackendSpec, dst: BackendSpec) -> None:
    """Worker process: build the backends, verify each job, send results back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C
    with open_backend(src.name, src.options) as s, open_backend(dst.name, dst.options) as d:
        while True:
            item = jobs.get()
            if item is None:
                return
            batch_id, batch = item
            results.put((batch_id, [blobjob.verify_blob(job, src=s, dst=d) for job in batch]))


@dataclass
class _Pool:
    """N worker processes with a bounded job queue; a replacement starts when one dies."""

    workers: int
    src: BackendSpec
    dst: BackendSpec
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))

    def __post_init__(self) -> None:
        self.jobs = self.ctx.Queue(maxsize=self.workers * 2)
        self.results = self.ctx.Queue()
        self.procs = [self._start() for _ in range(self.workers)]
        self.deaths = 0

    def _start(self) -> Any:
        p = self.ctx.Process(target=_worker, args=(self.jobs, self.results, self.src, self.dst), daemon=True)
        p.start()
        return p

    def check(self) -> None:
        """Replace workers that died (killed, crashed) so the pool stays whole."""
        for i, p in enumerate(self.procs):
            if p.exitcode not in (None, 0):
                self.deaths += 1
                self.procs[i] = self._start()

    def alive(self) -> bool:
        return any(p.exitcode is None for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            if p.exitcode is None:
                p.join(timeout=5)
            if p.exitcode is None:
                p.terminate()
                p.join()
        self.jobs.cancel_join_thread()
        self.jobs.close()
        self.results.close()


# -- the audit ---------------------------------------------------------------


def audit(
    *,
    engine: Engine,
    src: BackendSpec,
    dst: BackendSpec,
    report: Any,
    workers: int,
    md5: bool,
    expected: ExpectedHashes | None = None,
    batch_size: int = 5000,
    quiet: bool = True,
) -> BlobTotals:
    """Verify every blob of the source's uploaded and removed files on the target."""
    from pmigrate.progress import bar

    t = BlobTotals()
    t.files, t.bytes = totals(engine)
    pending: dict[int, list[blobjob.VerifyJob]] = {}
    lock = threading.Lock()
    feed_error: list[BaseException] = []
    stop = threading.Event()
    pool = _Pool(workers=workers, src=src, dst=dst)
    sent = [0, False]  # batches sent, feeding done

    def put(batch_id: int, batch: list[blobjob.VerifyJob]) -> None:
        with lock:
            pending[batch_id] = batch
        while not stop.is_set():
            try:
                pool.jobs.put((batch_id, batch), timeout=0.5)
                return
            except queue.Full:
                continue

    def feed() -> None:
        n = 0
        try:
            batch: list[blobjob.VerifyJob] = []
            batch_bytes = 0
            for rows in _chunks(file_rows(engine, statuses=WITH_BLOB, batch_size=batch_size), 500):
                refs = []
                for row in rows:
                    try:
                        refs.append(to_ref(row))
                    except ItemError as exc:
                        invalid.append((str(row.get("id"))[:64], exc))
                hashes = expected([r.file_id for r in refs]) if expected is not None else {}
                for ref in refs:
                    batch.append(blobjob.VerifyJob(ref=ref, expected_xxh3=hashes.get(ref.file_id, ""), md5=md5))
                    batch_bytes += max(ref.size, 0)
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        put(n, batch)
                        n += 1
                        batch, batch_bytes = [], 0
                    if stop.is_set():
                        return
            if batch:
                put(n, batch)
                n += 1
        except BaseException as exc:  # noqa: BLE001 - handed to the parent's loop
            feed_error.append(exc)
        finally:
            sent[0] = n
            sent[1] = True
            for _ in pool.procs:
                while not stop.is_set():
                    try:
                        pool.jobs.put(None, timeout=0.5)
                        break
                    except queue.Full:
                        continue

    invalid: list[tuple[str, ItemError]] = []
    feeder = threading.Thread(target=feed, name="verify-feed", daemon=True)
    start = time.perf_counter()
    received = 0
    try:
        feeder.start()
        with bar(quiet=quiet, desc="verify blobs", total=t.bytes, unit="B", unit_scale=True) as progress:
            while True:
                try:
                    batch_id, results = pool.results.get(timeout=0.5)
                except queue.Empty:
                    pool.check()
                    if sent[1] and not pool.alive() and received < sent[0]:
                        break  # workers gone with batches unanswered: reported below
                    if sent[1] and received >= sent[0]:
                        break
                    continue
                received += 1
                with lock:
                    pending.pop(batch_id, None)
                for res in results:
                    _record(res, t, report)
                    progress.update(res.target_bytes)
                if sent[1] and received >= sent[0]:
                    break
    except BaseException:
        stop.set()
        raise
    finally:
        t.seconds = time.perf_counter() - start
        stop.set()
        feeder.join(timeout=10)
        pool.close()
    if feed_error:
        raise FatalError(f"reading the source's files table failed: {feed_error[0]}")
    for batch in pending.values():
        for job in batch:
            t.counts[blobjob.ERROR] += 1
            report.problem(area=AREA, kind=blobjob.ERROR, item=job.ref.file_id, message="worker process died while verifying it")
    for fid, exc in invalid:
        t.counts[blobjob.ERROR] += 1
        report.problem(area=AREA, kind=exc.kind, item=fid, message=str(exc))
    return t


def _record(res: blobjob.VerifyResult, t: BlobTotals, report: Any) -> None:
    t.bytes_read += res.bytes_read
    if res.by_etag:
        t.by_etag += 1
    if res.unverifiable:
        t.unverifiable += 1
        report.problem(area=AREA, kind=blobjob.UNVERIFIABLE, item=res.file_id, message="files.md5 is empty: not verifiable by md5", fatal=False)
    if res.ok:
        t.counts[blobjob.OK] += 1
        return
    for i, (kind, message) in enumerate(res.problems):
        if i == 0:
            t.counts[kind if kind in t.counts else blobjob.ERROR] += 1
        elif kind == blobjob.CORRUPT_SOURCE:
            t.counts[kind] += 1  # also a copy error: both are counted
        report.problem(area=AREA, kind=kind, item=res.file_id, message=message)


def _chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in it:
        chunk.append(x)
        if len(chunk) >= n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
