"""What the blob copy would meet, found before it writes: the same checks for the run and --dry-run.

- probe(): the target store takes a write (a probe of pmigrate's own,
  removed at once), or is missing and the run would create it. Both the run
  and the dry run call it in preflight, before any stage writes, so a
  read-only directory or credentials that may only read stop the run with
  exit status 2 and nothing written, metadata included.
- room(): free space where the blobs go against what is still to copy (the
  metadata's total less what the journal lists as done). The journal may
  list blobs since purged from the source, so the figure errs towards less
  to copy: a refusal means the space is clearly short.
- StatHandler and survey(): the dry run's pass over every blob, in the
  worker pool: each worker looks at its blobs as a copy would (the source
  opened or HEADed, no byte read; the target looked at where the copy would
  look), and the parent counts what the run would copy, skip, replace and
  fail on.

Why a probe object on object stores rather than trusting the bucket's
existence: a key that may read but not write is the commonest mistake, and
S3, GCS and Swift have no call that answers "may I write" without writing.
The probe is an empty object named PROBE_PREFIX + random, beside the
ownership record, deleted at once; on a versioned bucket that leaves a
delete marker and an empty noncurrent version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pmigrate.data.base import BlobStat, DataBackend, FreeSpace
from pmigrate.data.sizing import size_error
from pmigrate.errors import BlobNotFound, ConfigError, FatalError, ItemError, Kind, RetryableError
from pmigrate.quote import shown
from pmigrate.transfer.handler import Lifeline, StoreHandler, Stores
from pmigrate.transfer.jobs import FAILED, PRESENT, READABLE, REPLACES, BlobJob, BlobResult
from pmigrate.transfer.worker import RETRIES, failed
from pmigrate.words import size as _size

if TYPE_CHECKING:  # the workers import this module, and need none of these
    import sqlalchemy as sa

    from pmigrate.journal import Journal
    from pmigrate.report import Report

# -- the target store --------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    exists: bool  # False: the store is missing and the run would create it
    warning: str = ""  # the probe could not be removed


def probe(backend: DataBackend) -> Probe:
    """Try the target as the run's first write would; ConfigError when it would fail."""
    try:
        backend.check(create=False)
    except ConfigError as exc:
        if "does not exist" not in str(exc):
            raise
        backend.probe_create()
        return Probe(exists=False)
    return Probe(exists=True, warning=backend.probe_write())


@dataclass(frozen=True)
class Room:
    free: FreeSpace
    blobs: int  # still to copy, as preflight estimates it
    bytes: int

    def shortfall(self) -> str:
        """Why the blobs cannot fit, or "" when they may."""
        where = f"on the filesystem of {self.free.path}"
        if self.bytes > self.free.bytes:
            return f"target full: {_size(self.free.bytes)} free {where}, {_size(self.bytes)} still to copy"
        if self.free.files is not None and self.blobs > self.free.files:
            return f"target full: {self.free.files} free inodes {where}, {self.blobs} blob(s) still to copy"
        return ""


NO_SPACE_HINT = "make room or choose another Directory (--no-space-check copies anyway, e.g. onto a filesystem that compresses)"


def room(backend: DataBackend, *, metadata: sa.Engine, journal: Journal | None, enforce: bool) -> Room | None:
    """Free space against what is left to copy; ConfigError when clearly short and ``enforce``.

    None for a store that reports no free space (object stores).
    """
    from pmigrate import filerows

    free = backend.free_space()
    if free is None:
        return None
    blobs, size = filerows.totals(metadata)
    if journal is not None:
        done, done_bytes = journal.totals()
        blobs, size = max(0, blobs - done), max(0, size - done_bytes)
    found = Room(free=free, blobs=blobs, bytes=size)
    short = found.shortfall()
    if short and enforce:
        raise ConfigError(f"{short}: {NO_SPACE_HINT}")
    return found


# -- one blob, in a worker ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StatContext:
    """What a dry run's worker needs: the stores, and whether to look each key up on the target."""

    stores: Stores
    look_at_target: bool = False


class StatHandler(StoreHandler):
    """The dry run's handler: stat_blob() on each job, with this worker's clients."""

    def __init__(self, context: StatContext, *, lifeline: Lifeline | None) -> None:
        super().__init__(context.stores, lifeline=lifeline)
        self._look = context.look_at_target

    def __call__(self, job: BlobJob) -> BlobResult:
        return stat_blob(job, src=self.src, dst=self.dst, look_at_target=self._look)


def make_handler(context: StatContext, *, lifeline: Lifeline | None) -> StatHandler:
    """The dry run's factory for a pool."""
    return StatHandler(context, lifeline=lifeline)


def stat_blob(job: BlobJob, *, src: DataBackend, dst: DataBackend, look_at_target: bool) -> BlobResult:
    """What copying job.ref would come to, reading no byte.

    A blob the journal lists (job.check_target) and the target holds at its
    size is skipped by the run: so here, without looking at the source.
    With ``look_at_target`` (a target that holds blobs already), every other
    blob's key is looked up there too, to count what the run would replace.
    """
    for attempt in range(RETRIES):
        try:
            return _stat_once(job, src=src, dst=dst, look_at_target=look_at_target)
        except RetryableError as exc:
            if attempt + 1 < RETRIES:
                time.sleep(0.5 * 2**attempt)
                continue
            return failed(job, Kind.RETRY_EXHAUSTED, str(exc))
        except FatalError as exc:
            return failed(job, Kind.FATAL, str(exc))
        except ItemError as exc:
            return failed(job, exc.kind, str(exc))
        except Exception as exc:  # noqa: BLE001 - one blob's failure is reported, not raised
            return failed(job, Kind.ERROR, f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


def _stat_once(job: BlobJob, *, src: DataBackend, dst: DataBackend, look_at_target: bool) -> BlobResult:
    ref = job.ref
    there: BlobStat | None = None
    if job.check_target or look_at_target:
        there = dst.stat(ref)
        if job.check_target and there is not None and there.size == ref.size:
            return BlobResult(job.seq, ref.file_id, PRESENT, size=there.size)
    st = src.check_read(ref)
    if st is None:
        raise BlobNotFound(f"no blob for file {ref.file_id} at the source ({src.describe()})", item=ref.file_id)
    if ref.size >= 0 and st.size != ref.size:
        raise size_error(item=ref.file_id, expected=ref.size, got=st.size)
    return BlobResult(job.seq, ref.file_id, REPLACES if there is not None else READABLE, size=st.size)


# -- every blob, in the parent -----------------------------------------------------------


@dataclass
class Survey:
    """What the run would do with each blob, counted from the workers' results."""

    copy: int = 0  # the source holds it as files.size says: the run would copy it ...
    copy_bytes: int = 0
    replace: int = 0  # ... of which this many over a blob the target already holds under its key
    replace_bytes: int = 0
    present: int = 0  # the journal lists it and the target holds it: skipped
    present_bytes: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return sum(self.errors_by_kind.values())


def survey(pool: Any, jobs: Iterable[BlobJob], *, report: Report, area: str, on_progress: Callable[[int], None]) -> Survey:
    """Run ``jobs`` through a pool of StatHandlers; each failure becomes a problem as the run would list it.

    A fatal one (credentials refused, a store gone) stops the pass, as it stops the run.
    """
    found = Survey()
    started = time.perf_counter()

    def take(results: list[BlobResult]) -> None:
        for r in results:
            if r.outcome in (READABLE, REPLACES):
                found.copy += 1
                found.copy_bytes += r.size
                if r.outcome == REPLACES:
                    found.replace += 1
                    found.replace_bytes += r.size
            elif r.outcome == PRESENT:
                found.present += 1
                found.present_bytes += r.size
            elif r.outcome == FAILED:
                found.errors_by_kind[r.error_kind] = found.errors_by_kind.get(r.error_kind, 0) + 1
                report.problem(area=area, kind=r.error_kind, item=r.file_id, message=r.error)
                if r.error_kind == Kind.FATAL:
                    raise FatalError(f"dry run stopped: {shown(r.file_id)}: {r.error}")
        on_progress(len(results))

    try:
        pool.run(jobs, on_results=take)
    finally:
        found.seconds = time.perf_counter() - started
    return found
