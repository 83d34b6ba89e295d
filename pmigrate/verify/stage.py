"""The verify stage: prove that the target holds every row and every blob of the source.

`pmigrate verify` runs it alone; `pmigrate --verify` runs it after copying.
Rows are compared table by table by primary key (rows.py); blobs are read in
full from the target and hashed in worker processes (blobs.py, blobjob.py);
objects the target stores that no file row claims are listed, never deleted
(unowned.py). Every difference is a problem in the report, so the exit code is
0 only when everything matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pmigrate.errors import ConfigError
from pmigrate.options import RunOptions
from pmigrate.words import plural
from pmigrate.words import size as _size


@dataclass(frozen=True, kw_only=True)
class VerifyPlan:
    src: Any  # PlikConfig
    dst: Any  # PlikConfig
    rows: bool
    blobs: bool
    journal: Any = None  # path of the copy journal, when there is one


def _engine(meta: Any, *, source: bool = False) -> Any:
    """The source is opened read-only (and a sqlite3 one from its snapshot)."""
    from pmigrate.metadata.db import engine

    return engine(meta, read_only=source)


def _check_db(meta: Any, *, what: str, need_files: bool) -> None:
    """The database answers (and holds a files table when needed); nothing is created."""
    import sqlalchemy as sa

    from pmigrate.metadata.db import check_connect

    source = what == "source"
    check_connect(meta, must_exist=True, read_only=source)
    if not need_files:
        return
    engine = _engine(meta, source=source)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if "files" not in tables:
        raise ConfigError(f"the {what} metadata database ({meta.describe()}) has no files table: is it a Plik database?")


def _naive_zone(meta: Any) -> Any:
    """The zone naive timestamps are in: mysql's loc=, read as the copier reads it (values.zone_of), else UTC."""
    from pmigrate.metadata.values import zone_of

    return zone_of(meta)


def _check_backend(data: Any) -> None:
    from pmigrate.data.registry import open_backend

    with open_backend(data.backend, data.options) as backend:
        backend.check(create=False)


def preflight(src: Any, dst: Any, *, opts: RunOptions) -> VerifyPlan:
    """Check that both sides can be read; writes nothing, not even an empty sqlite file.

    A target that does not exist yet (a new sqlite file, directory or bucket)
    passes here, since `pmigrate --verify` creates it before verifying; run()
    checks it again and fails if it is still absent.
    """
    from pmigrate.metadata.db import sqlite_file

    _check_db(src.metadata, what="source", need_files=True)
    if opts.metadata:
        path = sqlite_file(dst.metadata)
        if path is None or path.exists():
            _check_db(dst.metadata, what="target", need_files=False)
    if opts.data:
        _check_backend(src.data)
        try:
            _check_backend(dst.data)
        except ConfigError:
            pass  # absent until copied: run() says so if it still is
    return VerifyPlan(src=src, dst=dst, rows=opts.metadata, blobs=opts.data, journal=_journal_path(dst, opts=opts))


def check_migrated(src: Any, dst: Any, *, opts: RunOptions) -> None:
    """`pmigrate verify` on a target no run has written to: one message, not a failure per table and per blob.

    The rows are absent when the target database is (a sqlite3 file that does
    not exist) or holds no Plik table; the blobs when no copy journal of this
    target exists and its store is absent or empty while the source has blobs.
    """
    rows = opts.metadata and _rows_absent(dst.metadata)
    blobs = opts.data and _blobs_absent(src, dst, opts=opts)
    if (rows or not opts.metadata) and (blobs or not opts.data):
        raise ConfigError(f"{dst.path} holds no migration from {src.path}: run pmigrate first")
    if rows:
        raise ConfigError(
            f"{dst.path} holds no metadata migrated from {src.path}: run pmigrate first, or verify the blobs alone with --data-only"
        )
    if blobs:
        raise ConfigError(
            f"{dst.path} holds no blobs migrated from {src.path}: run pmigrate first, or verify the rows alone with --metadata-only"
        )


def _rows_absent(meta: Any) -> bool:
    import sqlalchemy as sa

    from pmigrate.metadata.db import check_connect, sqlite_file

    path = sqlite_file(meta)
    if path is not None and not path.exists():
        return True
    check_connect(meta, must_exist=True)  # a server database that does not exist is named as such
    engine = _engine(meta)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    return not tables & {"files", "uploads", "migrations"}


def _blobs_absent(src: Any, dst: Any, *, opts: RunOptions) -> bool:
    from pmigrate.data.registry import open_backend
    from pmigrate.errors import StoreAbsent

    journal = _journal_path(dst, opts=opts)
    if journal is None or journal[0].exists() or not _source_has_blobs(src.metadata):
        return False
    with open_backend(dst.data.backend, dst.data.options) as backend:
        if not backend.features.stores_data or not backend.features.listable:
            return False
        try:
            backend.check(create=False)
        except StoreAbsent:
            return True
        return next(iter(backend.list_blobs()), None) is None


def _source_has_blobs(meta: Any) -> bool:
    import sqlalchemy as sa

    from pmigrate.filerows import BLOB_STATUSES

    engine = _engine(meta)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("files"):
                return False  # not a Plik database: preflight says so
            files = sa.table("files", sa.column("status"))
            query = sa.select(sa.literal(1)).where(files.c.status.in_(BLOB_STATUSES)).limit(1)
            return conn.execute(query).first() is not None
    finally:
        engine.dispose()


def _journal_path(dst: Any, *, opts: RunOptions) -> Any:
    """The copy journal of this target (each blob's xxh3-128 as copied), when there is one."""
    try:
        from pmigrate.journal import Journal, locate
    except ImportError:
        return None
    path, identity = locate(dst, opts.journal)
    journal = Journal.peek(path, identity=identity)  # ConfigError for another target's journal
    if journal is not None:
        journal.close()
    return (path, identity)  # read at run time: `pmigrate --verify` writes it in between


def _open_journal(where: Any) -> Any:
    """The copy journal, or None when this target has none (yet).

    Opened for writing: a blob found missing or wrong on the target is dropped
    from it, so that the next `pmigrate` run copies that blob again.
    """
    if where is None:
        return None
    from pmigrate.journal import Journal

    path, identity = where
    if not path.exists():
        return None
    return Journal.open(path, identity=identity)


def _hash_lookup(journal: Any) -> Any:
    """file ids -> xxh3-128 hex recorded when each blob was copied.

    A server-side copy records no hash (no byte passed through pmigrate):
    those blobs are compared with the source instead.
    """
    from pmigrate.transfer.worker import SERVER_SIDE

    def lookup(ids: list[str]) -> dict[str, str]:
        found = journal.lookup(ids)
        return {fid: xxh for fid, (_size, xxh, _md5) in found.items() if xxh and xxh != SERVER_SIDE}

    return lookup


def _check_target(plan: VerifyPlan) -> None:
    """The target must exist by now: a missing one is a failed verification (exit 1)."""
    from pmigrate.errors import FatalError
    from pmigrate.metadata.db import sqlite_file

    try:
        if plan.rows:
            path = sqlite_file(plan.dst.metadata)
            if path is not None and not path.exists():
                raise ConfigError(f"target sqlite3 database {path} does not exist")
            _check_db(plan.dst.metadata, what="target", need_files=False)
        if plan.blobs:
            _check_backend(plan.dst.data)
    except ConfigError as exc:
        raise FatalError(f"nothing to verify: {exc}") from None


def _keyring(plan: VerifyPlan) -> Any:
    """The SSE-C keys pmigrate made for files without one (data/ssekeys.py), when the target needs them; else None."""
    from pmigrate.data import ssekeys
    from pmigrate.errors import FatalError
    from pmigrate.journal import Journal

    if not ssekeys.needed(plan.src, plan.dst):
        return None
    path, identity = plan.journal
    journal = Journal.peek(path, identity=identity)  # the same location as the copy's: --journal, else beside TARGET.cfg
    keyring = None
    if journal is not None:
        try:
            keyring = ssekeys.keyring(journal, create=False)
        finally:
            journal.close()
    if keyring is None:
        raise FatalError(
            f"nothing to verify against: the SSE-C keys pmigrate made for this target derive from a secret kept in the "
            f"journal {path}, which is missing or holds none; pass --journal with the journal of the copy"
        )
    return keyring


def run(plan: VerifyPlan, *, opts: RunOptions, report: Any) -> None:
    """Audit rows, then blobs, then unowned objects; every difference goes to the report."""
    _check_target(plan)
    keyring = _keyring(plan)
    src_engine = _engine(plan.src.metadata, source=True)
    try:
        if plan.rows:
            from pmigrate.verify import rows

            dst_engine = _engine(plan.dst.metadata)
            try:
                rows.audit(
                    rows.Side(engine=src_engine, driver=plan.src.metadata.driver, zone=_naive_zone(plan.src.metadata)),
                    rows.Side(engine=dst_engine, driver=plan.dst.metadata.driver, zone=_naive_zone(plan.dst.metadata)),
                    report=report,
                    batch_size=opts.batch_size,
                    quiet=opts.quiet,
                    stats=opts.stats,
                    with_sessions=opts.with_sessions,
                    fixes={"files": keyring.row_fixer} if keyring is not None else None,
                )
            finally:
                dst_engine.dispose()
        if plan.blobs:
            _run_blobs(plan, src_engine=src_engine, opts=opts, report=report, keyring=keyring)
    finally:
        src_engine.dispose()


def _run_blobs(plan: VerifyPlan, *, src_engine: Any, opts: RunOptions, report: Any, keyring: Any = None) -> None:
    from pmigrate.data.registry import open_backend
    from pmigrate.verify import blobs, unowned

    area = blobs.AREA
    section = report.section(area)
    with open_backend(plan.dst.data.backend, plan.dst.data.options) as dst:
        if not dst.features.stores_data:
            section["skipped"] = f"the target data backend {dst.describe()} stores no blobs"
            report.line(area, section["skipped"])
            return
        journal = _open_journal(plan.journal)
        forgotten = 0

        def forget(ids: list[str]) -> None:
            nonlocal forgotten
            journal.forget(ids)
            forgotten += len(ids)

        try:
            totals = blobs.audit(
                engine=src_engine,
                src=blobs.BackendSpec(name=plan.src.data.backend, options=dict(plan.src.data.options)),
                dst=blobs.BackendSpec(name=plan.dst.data.backend, options=dict(plan.dst.data.options)),
                report=report,
                workers=opts.workers,
                md5=opts.checksum == "md5",
                expected=_hash_lookup(journal) if journal is not None else None,
                batch_size=opts.batch_size,
                quiet=opts.quiet,
                stats=opts.stats,
                on_target_wrong=forget if journal is not None else None,
                keyring=keyring,
                cluster=opts.cluster,
            )
        finally:
            if journal is not None:
                journal.close()
        if forgotten:
            section["dropped_from_journal"] = forgotten
            report.line(area, f"{plural(forgotten, 'blob')} dropped from the copy journal: the next pmigrate run copies them again")
        section.update(totals.figures())
        section["reference"] = f"copy journal {plan.journal[0]}, else the source blobs" if journal is not None else "source blobs"
        if dst.features.listable:
            listed, found = unowned.audit(engine=src_engine, backend=dst, report=report, batch_size=opts.batch_size)
            section["objects_listed"] = listed
            section["unowned"] = found
        else:
            section["unowned"] = None
            report.line(area, f"unowned objects not checked: {dst.describe()} cannot list its blobs")
        if dst.features.open_uploads:
            section["open_uploads"] = unowned.open_uploads(backend=dst, report=report)
    for text in _blob_lines(section, md5=opts.checksum == "md5"):
        report.line(area, text)


def _blob_lines(s: Mapping[str, Any], *, md5: bool) -> list[str]:
    c = s
    lines = [
        f"{plural(c['files'], 'file')} ({_size(c['bytes'])}): {c['ok']} ok, {c['missing']} missing, "
        f"{c['size-mismatch']} size mismatch, {c['hash-mismatch']} hash mismatch, "
        f"{c['corrupt-source']} corrupt at the source, {c['source-missing']} missing at the source, {c['error']} errors",
    ]
    if s.get("unowned") is not None:
        lines.append(f"{plural(s['objects_listed'], 'object')} in the target, {s['unowned']} unowned (left in place)")
    if s.get("open_uploads"):
        lines.append(f"{plural(s['open_uploads'], 'open multipart upload')} under the target's prefix (left in place)")
    if md5:
        lines.append(f"{c['unverifiable_by_md5']} unverifiable by md5 (files.md5 empty), {c['verified_by_etag']} verified by ETag without reading")
    rate = f" at {_size(c['bytes_read'] / c['seconds'])}/s" if c.get("seconds") else ""
    lines.append(f"read {_size(c['bytes_read'])} in {c['seconds']}s{rate}, compared with the {s['reference']}")
    return lines
