"""Verify one blob: the job a worker process runs, with the backends it built itself.

The target blob is read in full and hashed with xxh3-128 (and MD5 with
--checksum md5). The reference is the hash recorded when the blob was copied
(the journal) or, without one, the source blob's hash, read in the same job.
With --checksum md5 the blob must also match files.md5, the MD5 plikd
computed at upload: when it does not, the source is read too, to tell a copy
error (target differs from source) from a source that no longer matches its
own MD5 (corrupt at the source). An empty files.md5 proves nothing and is
reported apart, never as a match.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import xxhash

from pmigrate.batching import pieces
from pmigrate.data.base import BlobRef, DataBackend
from pmigrate.errors import BlobNotFound, Cancelled, ItemError, Kind
from pmigrate.transfer.handler import Lifeline, StoreHandler, Stores

BUFFER = 256 << 10  # fits in L2 beside the kernel copy: hashing reads it from cache
MAP_STEP = 8 << 20  # mapped files are hashed in steps, to notice a stop request
_local = threading.local()  # one buffer per thread (a Dask worker runs several jobs at once), reused: a fresh buffer per blob costs page faults


def _view() -> memoryview:
    view = getattr(_local, "buffer", None)
    if view is None:
        view = _local.buffer = memoryview(bytearray(BUFFER))
    return view


# Outcome kinds, as they appear in the report.
OK = "ok"
MISSING = Kind.MISSING
SIZE = Kind.SIZE_MISMATCH
HASH = Kind.HASH_MISMATCH
CORRUPT_SOURCE = Kind.CORRUPT_SOURCE
SOURCE_MISSING = Kind.SOURCE_MISSING
UNVERIFIABLE = Kind.UNVERIFIABLE  # by md5: files.md5 is empty
ERROR = Kind.ERROR


@dataclass(slots=True)
class VerifyJob:
    """Plain and small: it crosses a process boundary. The pool needs seq, attempt and size."""

    seq: int
    ref: BlobRef
    expected_xxh3: str = ""  # from the journal; empty: hash the source
    md5: bool = False  # --checksum md5
    attempt: int = 0

    @property
    def size(self) -> int:
        return max(self.ref.size, 0)


@dataclass(slots=True)
class VerifyResult:
    seq: int
    file_id: str
    bytes_read: int = 0  # target and source bytes read, for throughput
    target_bytes: int = 0
    seconds: float = 0.0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (kind, message); empty: ok
    unverifiable: bool = False
    by_etag: bool = False
    target_xxh3: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def _regular_size(stream: BinaryIO) -> int | None:
    """The size of the regular file behind a fresh stream, or None (object store bodies, pipes)."""
    try:
        fd = stream.fileno()
        st = os.fstat(fd)
        if stat_mod.S_ISREG(st.st_mode) and stream.tell() == 0:
            return st.st_size
    except (AttributeError, OSError, ValueError):
        pass
    return None


class _Unmappable(Exception):
    """mmap refused by the file system: read the stream instead."""


def _digest_mapped(stream: BinaryIO, size: int, *, md5: bool, stopped: Callable[[], bool] | None) -> tuple[int, str, str]:
    """Hash a local file through mmap: straight from the page cache, no copy into a buffer.

    Two to three times less CPU than read(): the bytes are hashed where the
    kernel keeps them. A file truncated while mapped would raise SIGBUS in
    this worker; the pool notices the death and tries the job once more.
    A file system that cannot map files (FUSE in direct I/O, some network
    file systems) raises _Unmappable before anything is read, the stream open.
    """
    h = xxhash.xxh3_128()
    m = hashlib.md5() if md5 else None
    try:
        mapping = mmap.mmap(stream.fileno(), size, access=mmap.ACCESS_READ) if size else None
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EINVAL, errno.EACCES, errno.EPERM):
            raise _Unmappable from None
        stream.close()
        raise
    try:
        if mapping is not None:
            with mapping as mapped:
                if hasattr(mapped, "madvise"):
                    mapped.madvise(mmap.MADV_SEQUENTIAL)
                view = memoryview(mapped)
                try:
                    for off in range(0, size, MAP_STEP):
                        part = view[off : off + MAP_STEP]
                        h.update(part)
                        if m is not None:
                            m.update(part)
                        part.release()
                        if stopped is not None and stopped():
                            raise Cancelled
                finally:
                    view.release()
    finally:
        stream.close()
    return size, h.hexdigest(), m.hexdigest() if m is not None else ""


def _digest(stream: BinaryIO, *, md5: bool, stopped: Callable[[], bool] | None = None) -> tuple[int, str, str]:
    """(bytes, xxh3-128 hex, md5 hex or '') of a whole stream, through one reused buffer."""
    size = _regular_size(stream)
    if size is not None:
        try:
            return _digest_mapped(stream, size, md5=md5, stopped=stopped)
        except _Unmappable:
            pass  # read through the buffer instead
    h = xxhash.xxh3_128()
    m = hashlib.md5() if md5 else None
    total = 0
    try:
        for chunk in pieces(stream, _view()):
            h.update(chunk)
            if m is not None:
                m.update(chunk)
            total += len(chunk)
            if stopped is not None and stopped():
                raise Cancelled
    finally:
        stream.close()
    return total, h.hexdigest(), m.hexdigest() if m is not None else ""


def verify_blob(job: VerifyJob, *, src: DataBackend, dst: DataBackend, stopped: Callable[[], bool] | None = None) -> VerifyResult:
    """Check one blob of the target; per-item failures become problems, never exceptions."""
    ref = job.ref
    res = VerifyResult(seq=job.seq, file_id=ref.file_id)
    start = time.perf_counter()
    try:
        _verify(job, res, src=src, dst=dst, stopped=stopped)
    except Cancelled:
        res.problems = [(ERROR, "not verified: the run was stopping")]
    except ItemError as exc:
        res.problems.append((exc.kind if exc.kind != MISSING else ERROR, str(exc)))
    except OSError as exc:
        res.problems.append((ERROR, f"read error: {exc}"))
    except Exception as exc:  # noqa: BLE001 - one bad blob must not end the worker
        res.problems.append((ERROR, f"{type(exc).__name__}: {exc}"))
    res.seconds = time.perf_counter() - start
    return res


class VerifyHandler(StoreHandler):
    """Verify's handler for a pool: verify_blob() on each job, with this worker's clients."""

    def __call__(self, job: VerifyJob) -> VerifyResult:
        return verify_blob(job, src=self.src, dst=self.dst, stopped=self.stopped)


def make_handler(context: Stores, *, lifeline: Lifeline | None) -> VerifyHandler:
    """Verify's factory for a pool: runs in the worker."""
    return VerifyHandler(context, lifeline=lifeline)


def lost(job: VerifyJob, reason: str) -> VerifyResult:
    """The result of a job whose worker processes kept dying."""
    return VerifyResult(seq=job.seq, file_id=job.ref.file_id, problems=[(ERROR, reason)])


def _verify(job: VerifyJob, res: VerifyResult, *, src: DataBackend, dst: DataBackend, stopped: Callable[[], bool] | None) -> None:
    ref = job.ref
    want_md5 = (ref.md5 or "").strip().lower()
    check_md5 = job.md5 and bool(want_md5)
    if job.md5 and not want_md5:
        res.unverifiable = True

    # The target answers without a read when its stored MD5 proves the same thing.
    if check_md5 and dst.features.md5_without_read:
        st = dst.stat(ref)
        if st is None:
            res.problems.append((MISSING, f"absent from the target ({dst.describe()})"))
            return
        if ref.size >= 0 and st.size != ref.size:
            res.problems.append((SIZE, f"target holds {st.size} bytes, files.size is {ref.size}"))
            return
        if st.md5 and st.md5.lower() == want_md5:
            res.by_etag = True
            res.target_bytes = st.size
            return

    try:
        size, xxh, md5 = _digest(dst.open_read(ref), md5=job.md5, stopped=stopped)
    except BlobNotFound:
        res.problems.append((MISSING, f"absent from the target ({dst.describe()})"))
        return
    res.bytes_read += size
    res.target_bytes = size
    res.target_xxh3 = xxh
    if ref.size >= 0 and size != ref.size:
        res.problems.append((SIZE, f"target holds {size} bytes, files.size is {ref.size}"))

    md5_ok = check_md5 and md5 == want_md5
    expected = (job.expected_xxh3 or "").lower()
    source_md5 = ""
    if not expected or (check_md5 and not md5_ok):
        try:
            ssize, expected_src, source_md5 = _digest(src.open_read(ref), md5=check_md5, stopped=stopped)
        except BlobNotFound:
            if not expected:
                res.problems.append((SOURCE_MISSING, "absent from the source: nothing to compare the target with"))
                return
            ssize = -1
            expected_src = ""
        else:
            res.bytes_read += ssize
        expected = expected or expected_src
        if check_md5 and ssize >= 0 and source_md5 != want_md5:
            res.problems.append((CORRUPT_SOURCE, f"source blob MD5 {source_md5} differs from files.md5 {want_md5}: altered at the source"))

    if xxh != expected:
        where = "the hash recorded when it was copied" if job.expected_xxh3 else "the source blob"
        if not any(k == SIZE for k, _ in res.problems):
            res.problems.append((HASH, f"xxh3-128 {xxh} differs from {where} ({expected})"))
    elif check_md5 and not md5_ok and not any(k == CORRUPT_SOURCE for k, _ in res.problems):
        # Equal to what was copied, yet not what plikd received at upload.
        res.problems.append((CORRUPT_SOURCE, f"MD5 {md5} differs from files.md5 {want_md5}, though the copy is faithful"))
