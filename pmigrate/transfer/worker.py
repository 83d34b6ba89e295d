"""Inside a worker process: handle one blob job, hashing bytes as they stream through.

A handler is built once per worker from plain (backend name, options) pairs,
so every worker owns its clients (boto3 clients do not survive a fork or a
pickle). It dispatches on ``job.mode``: ``do_copy`` here; another kind of job
is another ``do_<mode>`` method, with no change to the pool.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

import xxhash

from pmigrate import redact
from pmigrate.data.base import DataBackend
from pmigrate.data.budget import PartBudget
from pmigrate.data.registry import open_backend
from pmigrate.data.sizing import SizedReader
from pmigrate.errors import Cancelled, FatalError, ItemError, PmigrateError, RetryableError, StoreError, Unsupported, store_kind
from pmigrate.transfer.jobs import CANCELLED, COPIED, FAILED, PRESENT, BlobJob, BlobResult

log = logging.getLogger(__name__)

# Tries of a blob whose backend raised RetryableError: a stream its SDK does not resume, an
# upload that ended under it. A failed request is retried by the backend alone (data/retry.py).
RETRIES = 3
SERVER_SIDE = "server-side"  # what the journal says instead of a hash nobody computed
_KINDS = {"size": "size-mismatch"}  # the backends' names for kinds this module also raises


class ReadError(ItemError):
    def __init__(self, message: str, *, item: str = "") -> None:
        super().__init__(message, item=item, kind="read-error")


class HashingReader(SizedReader):
    """The source blob as the backend reads it, held to files.size, every byte hashed and counted.

    A size error is raised from read(), inside the backend's write, so the
    backend aborts and nothing appears under the final name.
    """

    def __init__(self, raw: BinaryIO, *, expected: int, item: str, md5: bool, lifeline: Any) -> None:
        super().__init__(raw, expected=expected, item=item)
        self._lifeline = lifeline
        self._xxh = xxhash.xxh3_128()
        self._md5 = hashlib.md5() if md5 else None

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

    def _failed_read(self, exc: Exception) -> BaseException:
        """This blob's read error; a source store that stopped answering (StoreError) stops the run instead."""
        if isinstance(exc, StoreError):
            exc.side = exc.side or "source"
            return self._fail(exc)
        return self._fail(ReadError(f"reading the source failed: {_describe(exc)}", item=self._item))

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


def _debugging() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.DEBUG


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs, plain enough to pickle."""

    src_backend: str
    src_options: dict[str, Any]
    dst_backend: str
    dst_options: dict[str, Any]
    checksum: str = "xxh3"  # xxh3 | md5 (md5 computed alongside, compared with files.md5)
    extra: dict[str, Any] = field(default_factory=dict)
    # The parent's secrets and log level, taken when the context is made in the parent.
    secrets: tuple[str, ...] = field(default_factory=redact.registered)
    verbose: bool = field(default_factory=_debugging)


def make_handler(context: WorkerContext, *, lifeline: Any) -> "BlobHandler":
    """Pool factory: runs in the worker process, whose logs and stderr are redacted first."""
    redact.init_child(context.secrets, verbose=context.verbose)
    return BlobHandler(context, lifeline=lifeline)


def lost_result(job: BlobJob, reason: str) -> BlobResult:
    """Pool callback for a job whose workers kept dying."""
    return BlobResult(job.seq, job.ref.file_id, FAILED, error_kind="worker-died", error=reason)


class BlobHandler:
    def __init__(self, context: WorkerContext, *, lifeline: Any) -> None:
        self.context = context
        self.lifeline = lifeline
        self.src: DataBackend = open_backend(context.src_backend, context.src_options)
        self.dst: DataBackend = open_backend(context.dst_backend, context.dst_options)
        shared = context.extra.get("part_budget")
        if shared is not None:  # upload parts in memory: tokens from the pool all the workers share
            self.dst.use_part_budget(
                PartBudget(shared, stopped=lifeline.stopped, ledger=lifeline.held) if lifeline is not None else PartBudget(shared)
            )
        self._md5 = context.checksum == "md5"
        # Set by a fatal error: the run is stopping, and every further blob
        # would meet the same wall (a full disk), so none is tried.
        self._fatal = False
        self._server_side = self.dst.features.server_side_copy
        self._note = ""  # for the next result: the parent reports it once
        for b in (self.src, self.dst):
            try:
                b.prepare()  # clients built now, while the parent enumerates
            except Exception:  # noqa: BLE001 - the first blob meets the same error and reports it
                log.debug("preparing %s failed", b.name, exc_info=True)

    def close(self) -> None:
        for b in (self.src, self.dst):
            try:
                b.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %s failed", b.name, exc_info=True)

    def __call__(self, job: BlobJob) -> BlobResult:
        method = getattr(self, f"do_{job.mode}", None)
        if method is None:
            return BlobResult(job.seq, job.ref.file_id, FAILED, error_kind="error", error=f"unknown job mode {job.mode!r}")
        return method(job)

    # -- verify ------------------------------------------------------------------
    def do_verify(self, job: Any) -> Any:
        """Read one target blob in full and check it: pmigrate.verify.blobjob says how."""
        from pmigrate.verify.blobjob import verify_blob

        return verify_blob(job, src=self.src, dst=self.dst, stopped=self.lifeline.stopped)

    # -- dry run -----------------------------------------------------------------
    def do_stat(self, job: BlobJob) -> BlobResult:
        """Look at one blob as a copy would, reading no byte: pmigrate.transfer.precheck says how."""
        from pmigrate.transfer.precheck import stat_blob

        return stat_blob(job, src=self.src, dst=self.dst, look_at_target=bool(self.context.extra.get("stat_target")))

    # -- copy --------------------------------------------------------------------
    def do_copy(self, job: BlobJob) -> BlobResult:
        t0 = time.perf_counter()
        ref = job.ref
        if self._fatal:
            return BlobResult(job.seq, ref.file_id, CANCELLED)
        for attempt in range(RETRIES):
            try:
                result = self._copy_once(job)
            except RetryableError as exc:
                if attempt + 1 < RETRIES and not self.lifeline.stopped():
                    time.sleep(0.5 * 2**attempt)
                    continue
                result = _failed(job, exc.kind if exc.kind != "error" else "retry-exhausted", _describe(exc))
            except Cancelled:
                result = BlobResult(job.seq, ref.file_id, CANCELLED)
            except StoreError as exc:
                self._fatal = True
                result = _failed(job, store_kind(exc.side or "target", exc.cause), _describe(exc))
            except FatalError as exc:
                self._fatal = True
                result = _failed(job, "fatal", _describe(exc))
            except ItemError as exc:
                result = _failed(job, _KINDS.get(exc.kind, exc.kind), _describe(exc))
            except Exception as exc:  # noqa: BLE001 - one blob's failure is reported, not raised
                result = _failed(job, "error", _describe(exc))
            result.seconds = time.perf_counter() - t0
            if self._note:
                result.note, self._note = self._note, ""
            return result
        raise AssertionError("unreachable")

    def _copy_once(self, job: BlobJob) -> BlobResult:
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
        return self._stream(job)

    def _stream(self, job: BlobJob) -> BlobResult:
        ref = job.ref
        try:
            raw = self.src.open_read(ref)
        except StoreError as exc:
            exc.side = exc.side or "source"
            raise
        except (ItemError, FatalError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise ReadError(f"opening the source failed: {_describe(exc)}", item=ref.file_id) from exc
        reader = HashingReader(raw, expected=ref.size, item=ref.file_id, md5=self._md5, lifeline=self.lifeline)
        try:
            try:
                self.dst.write(ref, reader)
            except BaseException as exc:
                if reader.error is not None and reader.error is not exc:
                    raise reader.error from exc  # the backend wrapped our own error
                if reader.error is None and not isinstance(exc, (ItemError, FatalError, Cancelled)):
                    raise ItemError(f"writing the target failed: {_describe(exc)}", item=ref.file_id, kind="write-error") from exc
                if reader.error is None and isinstance(exc, ItemError) and exc.kind == "error":
                    exc.kind = "write-error"
                raise
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
            result.warning_kind = "md5-mismatch"
            result.warning = f"source bytes have MD5 {result.md5}, files.md5 records {ref.md5} (copied as they are)"
        return result


def _failed(job: BlobJob, kind: str, message: str) -> BlobResult:
    return BlobResult(job.seq, job.ref.file_id, FAILED, error_kind=kind, error=message)

