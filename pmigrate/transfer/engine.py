"""The blob stage: every blob the source metadata promises, copied by a process pool.

The parent streams ``files`` rows (pmigrate.enumerate), turns them into jobs,
feeds the pool, and alone writes the journal, the progress bars and the
report. Workers build their own backend clients and hash as bytes pass.

Resume: a blob the journal lists as done from a source row that has not
changed since is trusted and makes no job (transfer/delta.py), so a pass
costs what changed. A listed blob whose row changed, or whose journal row
predates that digest (or every listed blob, with --recheck), is checked on the
target before it is skipped: a stat done by the worker holding the job (a
HEAD on S3, run in parallel with the other workers' copies). Blobs the
journal does not know are simply copied. Listing the whole target up front
was rejected: it costs as much as the stats on a fresh target, and holds
every key in memory.

Workers start from a fork server, not by fork: by then the parent holds
boto3 clients, database connections and a progress thread, none of which
survive a fork safely. They are started at the end of preflight, so that
their start-up (imports, building clients) overlaps the rest of the
parent's work; they write nothing until run() feeds them.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import sqlalchemy as sa

from pmigrate import enumerate as enum_mod
from pmigrate import interrupt, ownership, progress
from pmigrate.config import PlikConfig
from pmigrate.data import ssekeys
from pmigrate.data.base import DataBackend
from pmigrate.data.budget import PartBudget
from pmigrate.data.registry import backend_class, open_backend
from pmigrate.errors import FATAL_KINDS, STORE_KINDS, UNREACHABLE, ConfigError, FatalError, PmigrateError
from pmigrate.options import RunOptions
from pmigrate.quote import shown
from pmigrate.report import Report
from pmigrate.transfer import checks, memory, precheck, stopcause, uploads
from pmigrate.transfer import delta as delta_mod
from pmigrate.transfer import journal as journal_mod
from pmigrate.transfer import worker as worker_mod
from pmigrate.transfer.jobs import CANCELLED, COPIED, FAILED, PRESENT, BlobJob, BlobResult
from pmigrate.transfer.journal import Journal, locate
from pmigrate.transfer.pool import Pool
from pmigrate.transfer.stopcause import size as _size
from pmigrate.words import plural

if TYPE_CHECKING:
    from pmigrate.transfer.cluster import ClusterPool

log = logging.getLogger(__name__)

AREA = "data"
COMMIT_ROWS = 4096  # journal rows per group commit ...
COMMIT_SECONDS = 1.0  # ... or at least this often
START_METHOD = "forkserver"  # see the module docstring


@dataclass
class Plan:
    src: PlikConfig
    dst: PlikConfig
    metadata: sa.Engine
    journal_path: Path
    identity: str
    skip_reason: str = ""  # set when the source stores no blobs (stream)
    pool: Pool | ClusterPool | None = None  # workers started by preflight
    owner: str = ""  # pmigrate.ownership state of the target store, as preflight found it
    make_keys: bool = False  # SSE-C target, source without keys: pmigrate makes them (data/ssekeys.py)
    target: str = ""  # where the blobs go, resolved
    probe: precheck.Probe | None = None  # the target took a write, or would be created
    room: precheck.Room | None = None  # free space against what is left to copy (file target)


def _backend(cfg: PlikConfig) -> DataBackend:
    return open_backend(cfg.data.backend, cfg.data.options)


def _spec(cfg: PlikConfig, mode: str) -> checks.Check:
    return (cfg.data.backend, dict(cfg.data.options), mode)


def _owner_spec(src: PlikConfig, dst: PlikConfig, mode: str, *, opts: RunOptions) -> checks.Check:
    """Whose the target store is (checks.OWN), or that and claiming an empty one (checks.CLAIM)."""
    return (*_spec(dst, mode), ownership.data_source(src.data), opts.merge)


def _source_engine(src: PlikConfig) -> sa.Engine:
    from pmigrate.metadata import db

    return db.source_engine(src.metadata)


def preflight(src: PlikConfig, dst: PlikConfig, *, opts: RunOptions) -> Plan:
    """Check both backends, the source ``files`` table, the journal and the target's room.

    Writes nothing but a probe on the target, removed at once (precheck.probe).
    """
    src_b = _backend(src)
    dst_b = _backend(dst)
    target = dst_b.where()
    try:
        skip = ""
        if not src_b.features.stores_data:
            skip = f"the source DataBackend {src.data.backend!r} stores no file data"
        elif not dst_b.features.stores_data:
            raise ConfigError(
                f"the target DataBackend {dst.data.backend!r} stores nothing: every blob would be lost; "
                "choose file, s3, gcs or swift in TARGET.cfg (or pass --metadata-only)"
            )
        elif src_b.same_location(dst_b) or dst_b.same_location(src_b):
            raise ConfigError(
                f"source and target data are the same place ({dst_b.describe()}): point TARGET.cfg elsewhere"
            )
        make_keys = not skip and ssekeys.needed(src, dst)
        if make_keys and not dst.has_metadata:
            raise ConfigError(
                "the target uses SSE = \"SSE-C\" and the source's files have no SSE-C keys: pmigrate makes one per file "
                f"and writes it into the target's files rows, so {dst.path} needs its [MetadataBackendConfig] too"
            )
        if not skip:
            check_source = getattr(dst_b, "check_source", None)
            if check_source is not None:
                check_source(src_b)  # e.g. an SSE-C target needs per-file keys from an SSE-C source
    finally:
        src_b.close()
        dst_b.close()
    if not skip:
        # The fork server, with what the workers preload, also serves the checks (transfer/checks.py).
        mp.get_context(START_METHOD).set_forkserver_preload(_preload(src, dst))
        # A target directory or bucket not there yet is fine: run() creates it as plikd would.
        found = checks.run_checks(
            [_spec(src, checks.READ), _spec(dst, checks.PROBE), _owner_spec(src, dst, checks.OWN, opts=opts)],
            start_method=START_METHOD,
        )
        probe, owner = found[1], found[-1]
        if probe.warning:
            log.warning("%s", probe.warning)
    engine = _source_engine(src)
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(enum_mod.FILES.c.id, enum_mod.FILES.c.status, enum_mod.FILES.c.size).limit(1)).all()
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot read the source files table ({type(exc.orig or exc).__name__}): check MetadataBackendConfig in {src.path}"
        ) from None
    journal_path, identity = locate(dst, opts.journal)
    # A foreign or unreadable journal is refused now.
    j = None if opts.restart else Journal.peek(journal_path, identity=identity)
    room = None
    try:
        if not skip:
            with _backend(dst) as dst_b:
                room = precheck.room(dst_b, metadata=engine, journal=j, enforce=opts.space_check)
    finally:
        if j is not None:
            j.close()
    plan = Plan(
        src=src, dst=dst, metadata=engine, journal_path=journal_path, identity=identity, skip_reason=skip, make_keys=make_keys
    )
    if not skip:
        plan.owner, plan.target, plan.probe, plan.room = owner, target, probe, room
    if not skip and not opts.dry_run:
        # Workers start now and build their clients while the parent goes on
        # (other stages' checks, the metadata copy): starting processes and
        # clients writes nothing.
        plan.pool = _pool(plan, opts=opts)
        plan.pool.start()
    return plan


def _pool(plan: Plan, *, opts: RunOptions, stat_target: bool = False) -> Pool | ClusterPool:
    """``stat_target``: stat jobs also look each blob up on the target (the dry run of a target holding blobs)."""
    if opts.cluster:  # Dask workers instead of this host's processes (transfer/cluster.py)
        from pmigrate.transfer.cluster import ClusterPool

        absent = opts.dry_run and plan.probe is not None and not plan.probe.exists  # the run would create it
        return ClusterPool(address=opts.cluster, context=_context(plan, opts=opts, stat_target=stat_target),
                           lost=worker_mod.lost_result, probe_target=not absent)  # fmt: skip
    with interrupt.held():  # the semaphore may start the resource tracker, which must outlive a stop signal
        parts = PartBudget.shared_pool(mp.get_context(START_METHOD), opts.workers)  # upload-part tokens
    log.info("blobs: a pool of %s (processes from a fork server), %s to %s", plural(opts.workers, "worker"),
             plan.src.data.describe(), plan.dst.data.describe())  # fmt: skip
    return Pool(
        factory=worker_mod.make_handler,
        context=_context(plan, opts=opts, stat_target=stat_target, parts=parts),
        workers=opts.workers,
        lost=worker_mod.lost_result,
        start_method=START_METHOD,
        preload=_preload(plan.src, plan.dst),
        tokens=parts,
    )


def _context(plan: Plan, *, opts: RunOptions, stat_target: bool, parts: Any = None) -> worker_mod.WorkerContext:
    return worker_mod.WorkerContext(
        src_backend=plan.src.data.backend,
        src_options=dict(plan.src.data.options),
        dst_backend=plan.dst.data.backend,
        dst_options=dict(plan.dst.data.options),
        checksum=opts.checksum,
        extra={"part_budget": parts, "stat_target": stat_target},
    )


def _preload(src: PlikConfig, dst: PlikConfig) -> list[str]:
    """Modules the fork server imports once, so each worker starts with them."""
    classes = (backend_class(src.data.backend), backend_class(dst.data.backend))
    mods = {c.__module__ for c in classes} | {m for c in classes for m in c.preload}
    return ["pmigrate.transfer.worker", *sorted(mods)]


# -- run ------------------------------------------------------------------------


@dataclass
class _Figures:
    copied: int = 0
    copied_bytes: int = 0
    server_side: int = 0
    present: int = 0
    present_bytes: int = 0
    errors: int = 0
    warnings: int = 0
    errors_by_kind: dict[str, int] = field(default_factory=dict)


class _Stop(Exception):
    """The first error without --ignore-errors, or a fatal one: end the run."""

    def __init__(self, kind: str, item: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.item = item


def run(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    """Copy every blob; figures into report.section('data'); FatalError to stop."""
    if plan.skip_reason:
        _skip_all(plan, opts=opts, report=report)
    elif opts.dry_run:
        _dry_run(plan, opts=opts, report=report)
    else:
        _Copy(plan, opts=opts, report=report).run()


def _skip_all(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    tally = enum_mod.Tally()
    for _ in enum_mod.scan(plan.metadata, batch_size=opts.batch_size, tally=tally):
        pass
    sec = report.section(AREA)
    sec.update(files=tally.rows, blobs=0, copied=0, bytes=0, errors=0, skipped={"no data at source": tally.rows})
    report.line(AREA, f"nothing to copy: {plan.skip_reason}; {plural(tally.rows, 'file')} skipped")


def _dry_run(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    """Every blob looked at in the pool as the copy would (precheck.survey), and what the run would do."""
    tally = enum_mod.Tally()
    journal = None if opts.restart else Journal.peek(plan.journal_path, identity=plan.identity)
    known = known_bytes = 0
    there = plan.probe is None or plan.probe.exists  # a store the run would create holds nothing to look up

    def jobs() -> Iterator[BlobJob]:
        nonlocal known, known_bytes
        seq = 0
        for batch in enum_mod.scan(plan.metadata, batch_size=opts.batch_size, tally=tally):
            for item, message in batch.invalid:
                report.problem(area=AREA, kind="invalid-id", item=item, message=message)
            done = journal.done([r.file_id for r in batch.refs]) if journal is not None and batch.refs else {}
            for r in batch.refs:
                hit = done.get(r.file_id) == r.size
                if hit:
                    known += 1
                    known_bytes += r.size
                yield BlobJob(seq, "stat", r, check_target=hit and there)
                seq += 1

    # A target holding blobs already: each key is looked up there, to say what the run would replace.
    pool = _pool(plan, opts=opts, stat_target=there and plan.owner != ownership.EMPTY)
    files_bar: Any = progress.NullBar()
    if not opts.quiet:
        files_bar = progress.bar(quiet=False, desc="looking", total=enum_mod.totals(plan.metadata)[0], unit="file")
    try:
        found = precheck.survey(pool, jobs(), report=report, area=AREA, on_progress=files_bar.update)
    finally:
        files_bar.close()
        if journal is not None:
            journal.close()
    _dry_summary(plan, tally, found, known=(known, known_bytes), opts=opts, report=report)


def _dry_summary(
    plan: Plan, tally: enum_mod.Tally, found: precheck.Survey, *, known: tuple[int, int], opts: RunOptions, report: Report
) -> None:
    skipped = {f"status {s}": n for s, n in tally.skipped_by_status().items()}
    exists = plan.probe is None or plan.probe.exists
    sec = report.section(AREA)
    sec.update(
        dry_run=True,
        target=plan.target,
        target_exists=exists,
        files=tally.rows,
        by_status={k or "(empty)": v for k, v in sorted(tally.by_status.items())},
        blobs=tally.blobs,
        bytes=tally.blob_bytes,
        journal=str(plan.journal_path),
        journal_done=known[0],
        journal_done_bytes=known[1],
        journal_lost=known[0] - found.present,
        to_copy=found.copy,
        to_copy_bytes=found.copy_bytes,
        would_replace=found.replace,
        would_delete=0,
        errors=found.errors,
        errors_by_kind=found.errors_by_kind,
        seconds=round(found.seconds, 3),
        skipped=skipped,
        invalid_ids=tally.invalid,
    )
    sec["target_owner"] = plan.owner
    report.line(AREA, f"blobs would go to {plan.target}" + ("" if exists else " (not there yet: the run would create it)"))
    report.line(AREA, _OWNER_NOTE[plan.owner])
    report.line(AREA, f"would copy {plural(found.copy, 'blob')}, {_size(found.copy_bytes)}, of {tally.blobs} ({_size(tally.blob_bytes)}) with a blob")
    if known[0]:
        lost = known[0] - found.present
        again = f"; {lost} no longer there, copied again" if lost else ""
        report.line(AREA, f"journal {plan.journal_path} lists {known[0]} ({_size(known[1])}) as done: {found.present} on the target, skipped{again}")
    if found.replace:
        report.line(AREA, f"would replace {plural(found.replace, 'blob')} ({_size(found.replace_bytes)}) the target holds under the same name")
    report.line(AREA, "would delete no blob: pmigrate deletes none from a target store")
    if plan.room is not None:
        _dry_room(plan.room, found, opts=opts, report=report)
    if found.errors:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(found.errors_by_kind.items()))
        then = "would go on past them" if opts.ignore_errors else "would stop at the first (--ignore-errors goes on past them)"
        report.line(AREA, f"errors the run would meet: {found.errors} ({kinds}); it {then} and end with exit status 1")
    by_status = ", ".join(f"{n} {s or '(empty)'}" for s, n in sorted(tally.by_status.items()))
    report.line(AREA, f"files by status: {by_status or 'none'}")
    report.line(AREA, f"looked at every blob in {found.seconds:.1f}s")


def _dry_room(room: precheck.Room, found: precheck.Survey, *, opts: RunOptions, report: Report) -> None:
    """The free space preflight checked, against what the pass found the run would write."""
    new = found.copy_bytes - found.replace_bytes  # a replaced blob frees its old bytes
    report.section(AREA).update(free_bytes=room.free.bytes, free_inodes=room.free.files, free_at=room.free.path)
    report.line(AREA, f"{_size(room.free.bytes)} free on the filesystem of {room.free.path}; the run would add {_size(new)}")
    short = precheck.Room(free=room.free, blobs=found.copy - found.replace, bytes=new).shortfall()
    if short and opts.space_check:
        # Preflight counted what the journal lists as done; some of it is gone from the target.
        report.problem(area=AREA, kind="target-full", item=room.free.path, message=f"{short}: {precheck.NO_SPACE_HINT}")
    elif short:
        report.warn(f"{short}; --no-space-check: the run would go on until the disk fills")


_OWNER_NOTE = {
    ownership.EMPTY: "the target store holds no blob: pmigrate would fill it and record this source as its owner",
    ownership.OWNED: "the target store was filled by pmigrate from this source",
    ownership.FOREIGN: "the target store holds objects pmigrate did not copy (--merge: written into, never deleted from)",
    ownership.OTHER: "the target store was filled by pmigrate from another source (--merge: written into, never deleted from)",
}


class _Copy:
    def __init__(self, plan: Plan, *, opts: RunOptions, report: Report) -> None:
        self.plan = plan
        self.opts = opts
        self.report = report
        self.tally = enum_mod.Tally()
        self.fig = _Figures()
        self.journal: Journal | None = None
        self.stop: _Stop | None = None
        self.dst: DataBackend | None = None
        self.last_commit = time.monotonic()
        self._committer: threading.Thread | None = None
        self._commit_error: BaseException | None = None
        self._unlisted = 0  # blobs durable on the target whose journal rows could not be written
        self.progress = progress.Progress(AREA, quiet=opts.quiet, every=opts.stats)
        self.files_bar: Any = progress.NullBar()
        self.bytes_bar: Any = progress.NullBar()
        self.governor: memory.MemoryGovernor | None = None
        self.notes: set[str] = set()  # what workers learnt about the stores, each reported once
        self.keyring: ssekeys.Keyring | None = None
        self.delta: delta_mod.Delta | None = None

    def run(self) -> None:
        plan, opts = self.plan, self.opts
        pool = plan.pool or _pool(plan, opts=opts)
        try:
            found = checks.run_checks(
                [_spec(plan.src, checks.READ), _spec(plan.dst, checks.CREATE), _owner_spec(plan.src, plan.dst, checks.CLAIM, opts=opts),
                 _spec(plan.dst, checks.MARKER)],
                start_method=START_METHOD,
            )  # fmt: skip
            self.report.section(AREA)["target_owner"] = found[-2]
            self.dst = _backend(plan.dst)  # its client, if any, is built only if a worker dies mid-write
            pool.on_death = self._discard_partial
            try:
                self.journal = Journal.open(plan.journal_path, identity=plan.identity, restart=opts.restart)
            except sqlite3.Error as exc:
                raise journal_mod.unwritable(plan.journal_path, exc) from None
            log.info("journal %s%s", plan.journal_path, " (emptied: --restart)" if opts.restart else "")
            if not delta_mod.anchor(self.journal, found[-1]):
                log.info("journal: the target's ownership record is not the one its rows were checked against: each is checked again")
            self.delta = delta_mod.Delta(self.journal, trust=not (opts.recheck or opts.restart), restart=opts.restart)
            if plan.make_keys:  # durable in the journal before any blob is encrypted with a key derived from it
                self.keyring = ssekeys.keyring(self.journal, create=True)
            self._sweep("start")  # before any worker writes
            self.governor = self._governor(pool)
        except BaseException:
            pool.close()
            raise
        if self.progress.shown:
            n, size = enum_mod.totals(plan.metadata)
            self.files_bar = self.progress.meter("blobs", total=n, unit="blob")
            self.bytes_bar = self.progress.meter("bytes", total=size, unit=progress.BYTES)
        started = time.perf_counter()
        stop: _Stop | None = None
        interrupted = False
        try:
            pool.run(self._jobs(), on_results=self._on_results, on_tick=self._tick)
        except _Stop as exc:
            stop = exc
        except BaseException:  # Ctrl-C or a fatal error: still account for what is on the target
            interrupted = True
            raise
        finally:
            # What finished while stopping is on the target all the same.
            if pool.drained:
                self._account([r for r in pool.drained if r.outcome == COPIED])
            commit_error: PmigrateError | None = None
            try:
                self._commit(wait=True)
            except PmigrateError as exc:
                commit_error = exc
            halt = self._halt(stop) if stop is not None else None
            if self.governor is not None:
                self.governor.stop()
            self.journal.close()
            self.dst.close()
            self.progress.close()
            for line in pool.deaths:
                self.report.warn(line)
            self._summarise(
                time.perf_counter() - started,
                workers=opts.workers,
                deaths=len(pool.deaths),
                complete=stop is None and not interrupted,
                halt=halt,
            )
            if not interrupted and not (halt is not None and halt.kind.endswith(UNREACHABLE)):
                self._sweep("end")  # every worker has stopped (and the store answers)
            if commit_error is not None:
                raise commit_error
        if halt is not None:
            raise FatalError(halt.message)
        if stop is not None:
            hint = "" if stop.kind in FATAL_KINDS else " (pass --ignore-errors to go on past such blobs)"
            raise FatalError(f"blob copy stopped: {shown(stop.item)}: {stop}{hint}")

    def _halt(self, stop: _Stop) -> stopcause.Halt | None:
        """Cause and fix of a stop by a store refusing every write, with the figures that size the fix."""
        assert self.dst is not None
        if stop.kind not in STORE_KINDS:
            return None
        remaining = 0
        try:
            remaining = max(0, enum_mod.totals(self.plan.metadata)[1] - self.fig.copied_bytes - self.fig.present_bytes)
        except sa.exc.SQLAlchemyError:
            log.debug("could not total the blobs left to copy", exc_info=True)
        return stopcause.halt(
            stop.kind,
            str(stop),
            where=self.dst.describe(),
            config=str(self.plan.dst.path),
            free=self.dst.free_bytes(),
            remaining=remaining,
        )

    def _governor(self, pool: Pool) -> memory.MemoryGovernor | None:
        """Keep the run's memory in bounds, if the target holds upload parts in memory at all."""
        assert self.dst is not None
        part, workers = self.dst.part_bytes, self.opts.workers
        if not part or pool.tokens is None:
            return None
        return memory.governor(
            pool.tokens,
            workers=workers,
            capacity=PartBudget.capacity(workers),
            part_bytes=part,
            limit=self.opts.max_memory,
            pids=memory.tree(pool.pids),
        )

    def _sweep(self, when: str) -> None:
        """Abort the uploads interrupted writes of this source's blobs left open on the target (transfer/uploads.py)."""
        assert self.dst is not None
        if not self.dst.features.open_uploads:
            return
        dst = self.plan.dst.data
        try:
            found = uploads.sweep(dst.backend, dict(dst.options), self.plan.metadata, start_method=START_METHOD)
        except (PmigrateError, sa.exc.SQLAlchemyError) as exc:
            self.report.warn(f"open multipart uploads not checked at the {when} of the copy: {exc}")
            return
        uploads.record(found, when=when, area=AREA, report=self.report)

    def _discard_partial(self, job: BlobJob) -> None:
        """A worker died writing this blob: clear its temporary file or open upload before the retry."""
        assert self.dst is not None
        self.dst.discard_partial(job.ref)
        log.info("cleared what the dead worker left of blob %s", job.ref.file_id)

    def _jobs(self) -> Iterator[BlobJob]:
        assert self.journal is not None and self.delta is not None
        prepare = self.keyring.ref if self.keyring is not None else None
        for batch in enum_mod.scan(self.plan.metadata, batch_size=self.opts.batch_size, tally=self.tally):
            for item, message in batch.invalid:
                self._error("invalid-id", item, message)
            if self.stop is not None:
                raise self.stop
            if not batch.refs:
                continue
            trusted = self.delta.trusted, self.delta.trusted_bytes
            yield from self.delta.jobs(batch.refs, prepare=prepare)  # blobs the journal vouches for make no job
            self.files_bar.update(self.delta.trusted - trusted[0])
            self.bytes_bar.update(self.delta.trusted_bytes - trusted[1])

    def _on_results(self, results: list[BlobResult]) -> None:
        self._account(results)
        if self.stop is not None:
            raise self.stop

    def _account(self, results: list[BlobResult]) -> None:
        fig = self.fig
        assert self.journal is not None
        files = nbytes = 0
        for r in results:
            if r.note and r.note not in self.notes:
                self.notes.add(r.note)
                self.report.warn(r.note)
            if r.outcome == COPIED:
                fig.copied += 1
                fig.copied_bytes += r.size
                files += 1
                nbytes += r.size
                if r.server_side:
                    fig.server_side += 1
                self.journal.record(
                    file_id=r.file_id,
                    size=r.size,
                    xxh3=r.xxh3 or worker_mod.SERVER_SIDE,
                    md5=r.md5,
                    seconds=r.seconds,
                    src=self.delta.copied(r.seq) if self.delta is not None else "",
                )
                if r.warning_kind:
                    fig.warnings += 1
                    self.report.problem(area=AREA, kind=r.warning_kind, item=r.file_id, message=r.warning)
            elif r.outcome == PRESENT:
                if self.delta is not None:
                    self.delta.present(r.seq, r.file_id)
                fig.present += 1
                fig.present_bytes += r.size
                files += 1
                nbytes += r.size
            elif r.outcome == FAILED:
                files += 1
                self._error(r.error_kind, r.file_id, r.error)
            if r.outcome in (FAILED, CANCELLED) and self.delta is not None:
                self.delta.ended((r.seq,))
        self.files_bar.update(files)
        self.bytes_bar.update(nbytes)
        if self.journal.pending >= COMMIT_ROWS:
            self._commit()

    def _tick(self) -> None:
        self.progress.tick()
        if time.monotonic() - self.last_commit >= COMMIT_SECONDS:
            self._commit()

    def _commit(self, *, wait: bool = False) -> None:
        """Durable first (one syncfs for a file target), then the journal says so.

        Runs in a thread so that the parent keeps feeding workers while the
        filesystem flushes; one commit at a time, the next batch waits its turn.
        """
        assert self.journal is not None and self.dst is not None
        if self._committer is not None:
            if self._committer.is_alive() and not wait:
                return
            self._committer.join()
            self._committer = None
            if self._commit_error is not None:
                err, self._commit_error = self._commit_error, None
                raise err
        self.last_commit = time.monotonic()
        rows = self.journal.take()
        if not rows:
            return
        if wait:
            self._durable(rows)
            if self._commit_error is not None:
                err, self._commit_error = self._commit_error, None
                raise err
            return
        self._committer = threading.Thread(target=self._durable, args=(rows,), name="pmigrate-journal", daemon=True)
        self._committer.start()

    def _durable(self, rows: list[tuple]) -> None:
        assert self.journal is not None and self.dst is not None
        try:
            sync = getattr(self.dst, "sync", None)
            if sync is not None:
                sync()
            self.journal.write(rows)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                self._commit_error = FatalError(f"journal commit failed: {exc}")
            else:
                self._unlisted += len(rows)
                free = stopcause.free_bytes(self.journal.path.parent)
                self._commit_error = FatalError(stopcause.journal_full(self.journal.path, free=free, rows=self._unlisted))
        except BaseException as exc:  # noqa: BLE001 - raised again in the parent's thread
            self._commit_error = exc if isinstance(exc, PmigrateError) else FatalError(f"journal commit failed: {exc}")

    def _error(self, kind: str, item: str, message: str) -> None:
        if kind in FATAL_KINDS and self.stop is not None and self.stop.kind in FATAL_KINDS:
            return  # another worker met the same wall before it heard of the stop: the first says it
        self.fig.errors += 1
        self.fig.errors_by_kind[kind] = self.fig.errors_by_kind.get(kind, 0) + 1
        self.report.problem(area=AREA, kind=kind, item=item, message=message)
        if self.stop is None and (kind in FATAL_KINDS or not self.opts.ignore_errors):
            # Raised once the current batch of results is accounted for.
            self.stop = _Stop(kind, item, message)

    def _summarise(
        self, seconds: float, *, workers: int, deaths: int, complete: bool, halt: stopcause.Halt | None = None
    ) -> None:
        fig, tally = self.fig, self.tally
        trust = delta_mod.figures(self.delta)
        skipped = {f"status {s}": n for s, n in tally.skipped_by_status().items()}
        if fig.present + trust["trusted"]:
            skipped["already done"] = fig.present + trust["trusted"]
        rate = fig.copied_bytes / seconds if seconds > 0 else 0.0
        fps = fig.copied / seconds if seconds > 0 else 0.0
        sec = self.report.section(AREA)
        sec.update(
            files=tally.rows,
            blobs=tally.blobs,
            copied=fig.copied,
            bytes=fig.copied_bytes,
            server_side=fig.server_side,
            already_done=fig.present + trust["trusted"],
            already_done_bytes=fig.present_bytes + trust["trusted_bytes"],
            **trust,
            skipped=skipped,
            errors=fig.errors,
            errors_by_kind=fig.errors_by_kind,
            warnings=fig.warnings,
            seconds=round(seconds, 3),
            bytes_per_second=round(rate),
            files_per_second=round(fps, 1),
            workers=workers,
            worker_deaths=deaths,
            journal=str(self.plan.journal_path),
            complete=complete,
        )
        line = f"copied {plural(fig.copied, 'blob')}, {_size(fig.copied_bytes)} in {seconds:.1f}s ({_size(rate)}/s, {fps:.0f} blobs/s)"
        if fig.server_side:
            line += f"; {fig.server_side} server-side"
        self.report.line(AREA, line)
        if skipped:
            self.report.line(AREA, "skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.items()))
        if trust["trusted"] or trust["checked_on_target"]:
            self.report.line(AREA, delta_mod.summary(trust))
        if fig.errors:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(fig.errors_by_kind.items()))
            self.report.line(AREA, f"errors: {fig.errors} ({kinds})")
        if self.keyring is not None:
            sec["sse_keys_made"] = self.keyring.made
            rows = "writes" if self.opts.metadata else "must write (run it: without --data-only, or with --metadata-only)"
            self.report.line(AREA, f"SSE-C keys made by pmigrate for {self.keyring.made} file(s) without one: "
                                   f"the metadata copy {rows} the same keys into the target's files rows")  # fmt: skip
        if self.governor is not None:
            self._memory_figures(self.governor.figures)
        if halt is not None:
            sec.update(stopped=halt.figures)
            self.report.line(AREA, f"stopped before the end: {halt.message}")
        elif not complete:
            self.report.line(AREA, "stopped before the end: run the same command again to resume")

    def _memory_figures(self, fig: memory.Figures) -> None:
        self.report.section(AREA).update(memory=fig.as_json())
        self.report.line(AREA, fig.summary())
        warning = fig.warning()
        if warning:
            self.report.warn(warning)
