"""The blob stage: every blob the source metadata promises, copied by a process pool.

The parent streams ``files`` rows (pmigrate.filerows), turns them into jobs,
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pmigrate import filerows, interrupt, ownership, progress
from pmigrate import journal as journal_mod
from pmigrate.config import PlikConfig
from pmigrate.data import bwlimit, ssekeys
from pmigrate.data.base import DataBackend
from pmigrate.data.budget import PartBudget, part_holder
from pmigrate.data.registry import open_backend
from pmigrate.errors import FATAL_KINDS, STORE_KINDS, UNREACHABLE, ConfigError, FatalError, Kind, PmigrateError
from pmigrate.journal import Journal, locate
from pmigrate.options import RunOptions
from pmigrate.quote import shown
from pmigrate.report import Report
from pmigrate.transfer import checks, memory, precheck, prune, stopcause, summary, uploads
from pmigrate.transfer import delta as delta_mod
from pmigrate.transfer import worker as worker_mod
from pmigrate.transfer.committer import COMMIT_ROWS, Committer
from pmigrate.transfer.handler import Stores
from pmigrate.transfer.jobs import CANCELLED, COPIED, FAILED, PRESENT, BlobJob, BlobResult
from pmigrate.transfer.pool import Pool, Workers
from pmigrate.words import plural

log = logging.getLogger(__name__)

AREA = summary.AREA
START_METHOD = "forkserver"  # see the module docstring


@dataclass
class Plan:
    src: PlikConfig
    dst: PlikConfig
    metadata: sa.Engine
    journal_path: Path
    identity: str
    skip_reason: str = ""  # set when the source stores no blobs (stream)
    pool: Workers | None = None  # workers started by preflight
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
            dst_b.check_source(src_b)  # e.g. an SSE-C target needs per-file keys from an SSE-C source
    finally:
        src_b.close()
        dst_b.close()
    if not skip:
        # The fork server, with what the workers preload, also serves the checks (transfer/checks.py).
        mp.get_context(START_METHOD).set_forkserver_preload(_stores(src, dst).preload(*HANDLERS))
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
            conn.execute(sa.select(filerows.FILES.c.id, filerows.FILES.c.status, filerows.FILES.c.size).limit(1)).all()
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
        if opts.prune:
            prune.check(owner, where=target)
    if not skip and not opts.dry_run:
        # Workers start now and build their clients while the parent goes on
        # (other stages' checks, the metadata copy): starting processes and
        # clients writes nothing.
        plan.pool = _pool(plan, opts=opts)
        plan.pool.start()
    return plan


def _pool(plan: Plan, *, opts: RunOptions, look: bool | None = None) -> Workers:
    """The copy's pool; with ``look`` the dry run's instead, whose workers also look each blob up on
    the target when ``look`` is true (the dry run of a target holding blobs)."""
    stores = _stores(plan.src, plan.dst)
    context: worker_mod.CopyContext | precheck.StatContext
    if look is None:
        limits = _limits(opts)
        factory, context = worker_mod.make_handler, worker_mod.CopyContext(stores=stores, checksum=opts.checksum, limits=limits)
    else:
        factory, context = precheck.make_handler, precheck.StatContext(stores=stores, look_at_target=look)
    if opts.cluster:  # Dask workers instead of this host's processes (transfer/cluster.py)
        from pmigrate.transfer.cluster import ClusterPool

        absent = opts.dry_run and plan.probe is not None and not plan.probe.exists  # the run would create it
        return ClusterPool(address=opts.cluster, factory=factory, context=context, lost=worker_mod.lost_result, probe_target=not absent)
    with interrupt.held():  # the semaphore may start the resource tracker, which must outlive a stop signal
        parts = PartBudget.shared_pool(mp.get_context(START_METHOD), opts.workers)  # upload-part tokens
    log.info("blobs: a pool of %s (processes from a fork server), %s to %s", plural(opts.workers, "worker"),
             plan.src.data.describe(), plan.dst.data.describe())  # fmt: skip
    return Pool(
        factory=factory,
        context=context,
        workers=opts.workers,
        lost=worker_mod.lost_result,
        start_method=START_METHOD,
        preload=stores.preload(*HANDLERS),
        tokens=parts,
    )


HANDLERS = ("pmigrate.transfer.worker", "pmigrate.transfer.precheck")  # the modules of this stage's handlers


def _limits(opts: RunOptions) -> bwlimit.Limits | None:
    """--bwlimit/--tpslimit: one budget in shared memory for this host's pool; a Dask pool divides it."""
    if opts.cluster:
        return bwlimit.Limits(bw=opts.bwlimit, tps=opts.tpslimit)
    with interrupt.held():  # the shared memory may start the resource tracker, which must outlive a stop signal
        return bwlimit.shared(mp.get_context(START_METHOD), bw=opts.bwlimit, tps=opts.tpslimit)


def _stores(src: PlikConfig, dst: PlikConfig) -> Stores:
    return Stores(src_backend=src.data.backend, src_options=dict(src.data.options),
                  dst_backend=dst.data.backend, dst_options=dict(dst.data.options))  # fmt: skip


# -- run ------------------------------------------------------------------------


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
        if opts.prune:
            prune.dry_run(plan, opts=opts, report=report)
    else:
        _Copy(plan, opts=opts, report=report).run()
        if opts.prune:  # once the copy ended well: the blobs of files plikd deleted or purged
            prune.run(plan, opts=opts, report=report)


def _skip_all(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    tally = filerows.Tally()
    for _ in filerows.scan(plan.metadata, batch_size=opts.batch_size, tally=tally):
        pass
    sec = report.section(AREA)
    sec.update(files=tally.rows, blobs=0, copied=0, bytes=0, errors=0, skipped={"no data at source": tally.rows})
    report.line(AREA, f"nothing to copy: {plan.skip_reason}; {plural(tally.rows, 'file')} skipped")


def _dry_run(plan: Plan, *, opts: RunOptions, report: Report) -> None:
    """Every blob looked at in the pool as the copy would (precheck.survey), and what the run would do."""
    tally = filerows.Tally()
    journal = None if opts.restart else Journal.peek(plan.journal_path, identity=plan.identity)
    known = known_bytes = 0
    there = plan.probe is None or plan.probe.exists  # a store the run would create holds nothing to look up

    def jobs() -> Iterator[BlobJob]:
        nonlocal known, known_bytes
        seq = 0
        for batch in filerows.scan(plan.metadata, batch_size=opts.batch_size, tally=tally):
            for item, message in batch.invalid:
                report.problem(area=AREA, kind=Kind.INVALID_ID, item=item, message=message)
            done = journal.done([r.file_id for r in batch.refs]) if journal is not None and batch.refs else {}
            for r in batch.refs:
                hit = done.get(r.file_id) == r.size
                if hit:
                    known += 1
                    known_bytes += r.size
                yield BlobJob(seq, r, check_target=hit and there)
                seq += 1

    # A target holding blobs already: each key is looked up there, to say what the run would replace.
    pool = _pool(plan, opts=opts, look=there and plan.owner != ownership.EMPTY)
    files_bar: Any = progress.NullBar()
    if not opts.quiet:
        files_bar = progress.bar(quiet=False, desc="looking", total=filerows.totals(plan.metadata)[0], unit="file")
    try:
        found = precheck.survey(pool, jobs(), report=report, area=AREA, on_progress=files_bar.update)
    finally:
        files_bar.close()
        if journal is not None:
            journal.close()
    looked = summary.Looked(target=plan.target, exists=there, owner=plan.owner, journal=plan.journal_path,
                            known=(known, known_bytes), room=plan.room)  # fmt: skip
    summary.dry_summary(report, tally, found, looked, opts=opts)


class _Copy:
    def __init__(self, plan: Plan, *, opts: RunOptions, report: Report) -> None:
        self.plan = plan
        self.opts = opts
        self.report = report
        self.tally = filerows.Tally()
        self.fig = summary.Figures()
        self.journal: Journal | None = None
        self.committer: Committer | None = None
        self.stop: _Stop | None = None
        self.dst: DataBackend | None = None
        self.progress = progress.Progress(AREA, quiet=opts.quiet, every=opts.stats)
        self.subscriber: progress.Subscriber = progress.Subscriber()  # the bars, once shown
        self.pool: Workers | None = None
        self._streamed = 0  # bytes of unfinished blobs the subscriber has heard of
        self.governor: memory.MemoryGovernor | None = None
        self.notes: set[str] = set()  # what workers learnt about the stores, each reported once
        self.keyring: ssekeys.Keyring | None = None
        self.delta: delta_mod.Delta | None = None

    def run(self) -> None:
        plan, opts = self.plan, self.opts
        pool = self.pool = plan.pool or _pool(plan, opts=opts)
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
            self.committer = Committer(self.journal, self.dst)
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
            n, size = filerows.totals(plan.metadata)
            self.subscriber = progress.Bars(
                self.progress.meter("blobs", total=n, unit="blob"), self.progress.meter("bytes", total=size, unit=progress.BYTES)
            )
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
                self.committer.commit(wait=True)
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
            self.fig.trusted, self.fig.trusted_bytes = (self.delta.trusted, self.delta.trusted_bytes) if self.delta else (0, 0)
            self.fig.checked_on_target = self.delta.checked if self.delta else 0
            summary.copy_summary(self.report, self.fig, self.tally, summary.Run(
                seconds=time.perf_counter() - started, workers=opts.workers, deaths=len(pool.deaths),
                journal=plan.journal_path, complete=stop is None and not interrupted, halt=halt,
                keys_made=self.keyring.made if self.keyring is not None else None, metadata=opts.metadata,
                memory=self.governor.figures if self.governor is not None else None,
            ))  # fmt: skip
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
            remaining = max(0, filerows.totals(self.plan.metadata)[1] - self.fig.bytes - self.fig.already_done_bytes)
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

    def _governor(self, pool: Workers) -> memory.MemoryGovernor | None:
        """Keep the run's memory in bounds, if the target holds upload parts in memory at all."""
        assert self.dst is not None
        holder = part_holder(self.dst)
        if holder is None or not holder.part_bytes or pool.tokens is None:
            return None
        part, workers = holder.part_bytes, self.opts.workers
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
        for batch in filerows.scan(self.plan.metadata, batch_size=self.opts.batch_size, tally=self.tally):
            for item, message in batch.invalid:
                self._error(Kind.INVALID_ID, item, message)
            if self.stop is not None:
                raise self.stop
            if not batch.refs:
                continue
            before = self.delta.trusted, self.delta.trusted_bytes
            for job in self.delta.jobs(batch.refs, prepare=prepare):  # blobs the journal vouches for make no job
                self.subscriber.on_queued(size=job.ref.size)
                yield job
            if self.delta.trusted > before[0]:
                self.subscriber.on_progress(self.delta.trusted_bytes - before[1])
                self.subscriber.on_done(ok=True, items=self.delta.trusted - before[0])

    def _on_results(self, results: list[BlobResult]) -> None:
        self._account(results)
        if self.stop is not None:
            raise self.stop

    def _account(self, results: list[BlobResult]) -> None:
        fig, sub = self.fig, self.subscriber
        assert self.journal is not None and self.committer is not None
        for r in results:
            if r.note and r.note not in self.notes:
                self.notes.add(r.note)
                self.report.warn(r.note)
            if r.outcome == COPIED:
                fig.copied += 1
                fig.bytes += r.size
                if r.server_side:
                    fig.server_side += 1
                self.journal.record(file_id=r.file_id, size=r.size, xxh3=r.xxh3 or worker_mod.SERVER_SIDE, md5=r.md5,
                                    seconds=r.seconds, upload_id=r.upload_id, src=self.delta.copied(r.seq))  # fmt: skip
                if r.warning_kind:
                    fig.warnings += 1
                    self.report.problem(area=AREA, kind=r.warning_kind, item=r.file_id, message=r.warning)
            elif r.outcome == PRESENT:
                self.delta.present(r.seq, r.file_id)
                fig.already_done += 1
                fig.already_done_bytes += r.size
            elif r.outcome == FAILED:
                self._error(r.error_kind, r.file_id, r.error)
            if r.outcome in (FAILED, CANCELLED):
                self.delta.ended((r.seq,))
            if r.outcome != CANCELLED:
                sub.on_progress(r.size if r.outcome != FAILED else 0)
                sub.on_done(ok=r.outcome != FAILED)
        self._heard_streaming()
        if self.journal.pending >= COMMIT_ROWS:
            self.committer.commit()

    def _heard_streaming(self) -> None:
        """The bytes of blobs still streaming, as they grow, or shrink when a stream starts again."""
        assert self.pool is not None
        now = self.pool.streaming()
        if now != self._streamed:
            self.subscriber.on_progress(now - self._streamed)
            self._streamed = now

    def _tick(self) -> None:
        self._heard_streaming()
        self.progress.tick()
        assert self.committer is not None
        if self.committer.due():
            self.committer.commit()

    def _error(self, kind: str, item: str, message: str) -> None:
        if kind in FATAL_KINDS and self.stop is not None and self.stop.kind in FATAL_KINDS:
            return  # another worker met the same wall before it heard of the stop: the first says it
        self.fig.error(kind)
        self.report.problem(area=AREA, kind=kind, item=item, message=message)
        if self.stop is None and (kind in FATAL_KINDS or not self.opts.ignore_errors):
            # Raised once the current batch of results is accounted for.
            self.stop = _Stop(kind, item, message)
