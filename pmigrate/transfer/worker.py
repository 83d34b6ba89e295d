"""The copy's handler, inside a worker: copy one blob, hashing bytes as they stream through.

Built once per worker by the pool from a CopyContext (transfer/handler.py says
how a pool runs any stage's handler), so every worker owns its clients.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

import xxhash

from pmigrate.data import bwlimit
from pmigrate.data.budget import PartBudget, part_holder
from pmigrate.data.sizing import SizedReader, size_error
from pmigrate.errors import Cancelled, FatalError, ItemError, Kind, PmigrateError, RetryableError, StoreError, Unsupported, store_kind
from pmigrate.transfer.handler import Lifeline, StoreHandler, Stores
from pmigrate.transfer.jobs import CANCELLED, COPIED, FAILED, PRESENT, BlobJob, BlobResult

log = logging.getLogger(__name__)

# Tries of a blob whose backend raised RetryableError: a stream its SDK does not resume, an
# upload that ended under it. A failed request is retried by the backend alone (data/retry.py).
RETRIES = 3
SERVER_SIDE = "server-side"  # what the journal says instead of a hash nobody computed
SMALL = 64 << 10  # folder to folder, a blob below this size is read whole (CopyHandler._copy_small)


class HashingReader(SizedReader):
    """The source blob as the backend reads it, held to files.size, every byte hashed and counted.

    A size error is raised from read(), inside the backend's write, so the
    backend aborts and nothing appears under the final name.
    """

    def __init__(self, raw: BinaryIO, *, expected: int, item: str, md5: bool, lifeline: Any, counted: Any = None) -> None:
        """``counted``: a shared count this reader keeps at its value when it began plus the bytes read."""
        super().__init__(raw, expected=expected, item=item)
        self._lifeline = lifeline
        self._xxh = xxhash.xxh3_128()
        self._md5 = hashlib.md5() if md5 else None
        self._counted = counted
        self._base = counted.value if counted is not None else 0

    def _guard(self, read: Callable[[Any], Any], arg: Any) -> Any:
        self._check()
        try:
            return read(arg)
        except Exception as exc:  # noqa: BLE001 - classified as a read error
            raise self._failed_read(exc) from exc

    def _took(self, data: Any) -> None:
        self._xxh.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._counted is not None:
            self._counted.value = self._base + self.count  # count includes data already

    def _failed_read(self, exc: Exception) -> BaseException:
        """This blob's read error; a source store that stopped answering (StoreError) stops the run instead."""
        if isinstance(exc, StoreError):
            exc.side = exc.side or "source"
            return self._fail(exc)
        return self._fail(ItemError(f"reading the source failed: {_describe(exc)}", item=self._item, kind=Kind.READ_ERROR))

    def _check(self) -> None:
        if self._lifeline is not None and self._lifeline.stopped():
            raise self._fail(Cancelled("stopping"))

    def xxh3(self) -> str:
        return self._xxh.hexdigest()

    def md5(self) -> str:
        return self._md5.hexdigest() if self._md5 is not None else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PmigrateError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, kw_only=True)
class CopyContext:
    """What a copy worker needs, plain enough to pickle."""

    stores: Stores
    checksum: str = "xxh3"  # xxh3 | md5 (md5 computed alongside, compared with files.md5)
    limits: bwlimit.Limits | None = None  # --bwlimit/--tpslimit: the pool's shared budget (data/bwlimit.py)


def make_handler(context: CopyContext, *, lifeline: Lifeline | None) -> CopyHandler:
    """The copy's factory for a pool: runs in the worker, whose logs and stderr are redacted first."""
    bwlimit.install(context.limits)  # before the backends build their clients
    return CopyHandler(context, lifeline=lifeline)


def lost_result(job: BlobJob, reason: str) -> BlobResult:
    """Pool callback for a job whose workers kept dying."""
    return failed(job, Kind.WORKER_DIED, reason)


class CopyHandler(StoreHandler):
    """Copies one blob per call, from its own source client to its own target client."""

    def __init__(self, context: CopyContext, *, lifeline: Lifeline | None) -> None:
        super().__init__(context.stores, lifeline=lifeline)
        holder = part_holder(self.dst)
        if holder is not None and lifeline is not None and lifeline.tokens is not None:
            # Upload parts in memory: tokens from the pool all the workers share.
            holder.use_part_budget(PartBudget(lifeline.tokens, stopped=lifeline.stopped, ledger=lifeline.held))
        self._md5 = context.checksum == "md5"
        # Set by a fatal error: the run is stopping, and every further blob
        # would meet the same wall (a full disk), so none is tried.
        self._fatal = False
        self._server_side = self.dst.features.server_side_copy
        self._note = ""  # for the next result: the parent reports it once
        # Folder to folder: a small blob is read whole into one reused buffer, hashed
        # and written in one call each (_copy_small), no stream between.
        self._small: bytearray | None = None
        if self.src.name == "file" and self.dst.name == "file":
            self._small = bytearray(SMALL)

    def finish(self, results: list[BlobResult]) -> None:
        """The blobs of this chunk made durable on this host (a no-op on object stores)."""
        if any(r.outcome == COPIED for r in results):
            self.dst.sync()

    def __call__(self, job: BlobJob) -> BlobResult:
        t0 = time.perf_counter()
        ref = job.ref
        if self._fatal:
            return BlobResult(job.seq, ref.file_id, CANCELLED)
        counted = self.lifeline.streamed if self.lifeline is not None else None
        before = counted.value if counted is not None else 0
        for attempt in range(RETRIES):
            if counted is not None:
                counted.value = before  # a stream tried again counts from the start: the parent's bar goes back
            try:
                result = self._copy_once(job, counted)
            except RetryableError as exc:
                if attempt + 1 < RETRIES and not self.stopped():
                    time.sleep(0.5 * 2**attempt)
                    continue
                result = failed(job, exc.kind if exc.kind != Kind.ERROR else Kind.RETRY_EXHAUSTED, _describe(exc))
            except Cancelled:
                result = BlobResult(job.seq, ref.file_id, CANCELLED)
            except StoreError as exc:
                self._fatal = True
                result = failed(job, store_kind(exc.side or "target", exc.cause), _describe(exc))
            except FatalError as exc:
                self._fatal = True
                result = failed(job, Kind.FATAL, _describe(exc))
            except ItemError as exc:
                result = failed(job, exc.kind, _describe(exc))
            except Exception as exc:  # noqa: BLE001 - one blob's failure is reported, not raised
                result = failed(job, Kind.ERROR, _describe(exc))
            result.seconds = time.perf_counter() - t0
            if counted is not None and result.outcome != COPIED:
                counted.value = before  # bytes that came to nothing
            result.upload_id = ref.upload_id
            if self._note:
                result.note, self._note = self._note, ""
            return result
        raise AssertionError("unreachable")

    def _copy_once(self, job: BlobJob, counted: Any) -> BlobResult:
        ref = job.ref
        if job.check_target:
            st = self.dst.stat(ref)
            if st is not None and st.size == ref.size:
                return BlobResult(job.seq, ref.file_id, PRESENT, size=st.size)
        if self._server_side:
            # copy_from checks the source's presence and size itself (one HEAD).
            try:
                copied = self.dst.copy_from(self.src, ref)
            except Unsupported as exc:
                # A store that refuses one server-side copy refuses them all:
                # this worker streams from now on, and says so once.
                self._server_side = False
                self._note = f"{self.dst.describe()}: {exc}; blobs are streamed through pmigrate instead"
                copied = False
            if copied:
                # No byte passed through this host: the hash is unknown, and is
                # left for verify to compute from the target.
                return BlobResult(job.seq, ref.file_id, COPIED, size=max(ref.size, 0), xxh3="", server_side=True)
        if self._small is not None and 0 <= ref.size < SMALL - 1:
            return self._copy_small(job, counted)
        return self._stream(job, counted)

    def _copy_small(self, job: BlobJob, counted: Any) -> BlobResult:
        """A small blob between folders: the stream's checks and results, without the stream."""
        ref = job.ref
        if self.stopped():
            raise Cancelled("stopping")
        raw = self._open_source(ref)
        view = memoryview(self._small)  # type: ignore[arg-type]
        try:
            try:
                n = raw.readinto(view[: ref.size + 1])  # the blob and its end, in one read
                if n != ref.size:
                    # A regular file reads short only at its end, so n == size is the whole blob;
                    # anything else is read on to the end, to name the size the source holds.
                    total = n
                    while n and total <= ref.size:
                        n = raw.readinto(view[total : ref.size + 1])
                        total += n
                    n = total
            except Exception as exc:  # noqa: BLE001 - classified as a read error
                raise ItemError(f"reading the source failed: {_describe(exc)}", item=ref.file_id, kind=Kind.READ_ERROR) from exc
        finally:
            try:
                raw.close()
            except Exception:  # noqa: BLE001
                pass
        bwlimit.paid(n, stopped=self.stopped)  # --bwlimit: the pool's shared budget, as reader() pays it
        if n != ref.size:
            raise size_error(item=ref.file_id, expected=ref.size, got=n)
        data = view[:n]
        if counted is not None:
            counted.value += n
        try:
            self.dst.write_bytes(ref, data)  # type: ignore[attr-defined]
        except BaseException as exc:
            failure = _write_failure(exc, ref)
            if failure is exc:
                raise
            raise failure from exc
        result = BlobResult(job.seq, ref.file_id, COPIED, size=n, xxh3=xxhash.xxh3_128_hexdigest(data),
                            md5=hashlib.md5(data).hexdigest() if self._md5 else "")  # fmt: skip
        if self._md5 and ref.md5 and result.md5 != ref.md5.lower():
            result.warning_kind = Kind.MD5_MISMATCH
            result.warning = f"source bytes have MD5 {result.md5}, files.md5 records {ref.md5} (copied as they are)"
        return result

    def _open_source(self, ref: Any) -> Any:
        try:
            return self.src.open_read(ref)
        except StoreError as exc:
            exc.side = exc.side or "source"
            raise
        except (ItemError, FatalError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise ItemError(f"opening the source failed: {_describe(exc)}", item=ref.file_id, kind=Kind.READ_ERROR) from exc

    def _stream(self, job: BlobJob, counted: Any) -> BlobResult:
        ref = job.ref
        raw = self._open_source(ref)
        raw = bwlimit.reader(raw, stopped=self.stopped)  # --bwlimit: the pool's shared budget
        reader = HashingReader(raw, expected=ref.size, item=ref.file_id, md5=self._md5, lifeline=self.lifeline, counted=counted)
        try:
            try:
                self.dst.write(ref, reader)
            except BaseException as exc:
                if reader.error is not None and reader.error is not exc:
                    raise reader.error from exc  # the backend wrapped our own error
                failure = exc if reader.error is not None else _write_failure(exc, ref)
                if failure is exc:
                    raise
                raise failure from exc
            try:
                reader.ensure_complete()
            except BaseException:
                self.dst.delete(ref)  # the backend trusted files.size; the source was longer
                raise
        finally:
            try:
                raw.close()
            except Exception:  # noqa: BLE001
                pass
        result = BlobResult(job.seq, ref.file_id, COPIED, size=reader.count, xxh3=reader.xxh3(), md5=reader.md5())
        if self._md5 and ref.md5 and result.md5 != ref.md5.lower():
            result.warning_kind = Kind.MD5_MISMATCH
            result.warning = f"source bytes have MD5 {result.md5}, files.md5 records {ref.md5} (copied as they are)"
        return result


def _write_failure(exc: BaseException, ref: Any) -> BaseException:
    """What a target's write error is reported as: a write error of this blob, unless it says more."""
    if not isinstance(exc, (ItemError, FatalError, Cancelled)):
        return ItemError(f"writing the target failed: {_describe(exc)}", item=ref.file_id, kind=Kind.WRITE_ERROR)
    if isinstance(exc, ItemError) and exc.kind == Kind.ERROR:
        exc.kind = Kind.WRITE_ERROR
    return exc


def failed(job: BlobJob, kind: Kind, message: str) -> BlobResult:
    """The result of a job that failed, as the parent reports it."""
    return BlobResult(job.seq, job.ref.file_id, FAILED, error_kind=kind, error=message)

