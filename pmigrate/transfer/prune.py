"""--prune for blobs: delete from the target the blobs of files plikd deleted or purged, and only those pmigrate wrote.

The journal is the proof of ownership: a blob is deleted only when the
journal lists it (pmigrate wrote it) and the target store is one pmigrate
filled from this source (pmigrate.ownership). Objects put there by anyone
else are never looked at; ``pmigrate verify`` lists them as unowned.

Which journal rows are gone from the source is an anti-join of the journal
against the source's ``files`` ids. Both may hold millions of ids, so the
source ids are streamed into a temporary SQLite file and joined there with
the journal attached read-only: memory stays flat, and no collation of the
source database (MySQL ignores case, plikd's ids do not) decides a match.

A deleted blob leaves the journal only once the target confirmed the
deletion (after one sync for a file target), so a crash in between means
deleting it again, never a blob nobody can prove is pmigrate's.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pmigrate import filerows, ownership
from pmigrate.data.base import BlobRef, DataBackend
from pmigrate.data.registry import open_backend
from pmigrate.errors import ConfigError, InvalidId, PmigrateError
from pmigrate.journal import Journal
from pmigrate.options import RunOptions
from pmigrate.report import Report
from pmigrate.words import plural
from pmigrate.words import size as _size

log = logging.getLogger(__name__)

AREA = "data"
CHUNK = 1000  # blobs deleted, then forgotten by the journal, per round
THREADS = 8  # deletions in flight: one request each on an object store
LISTED = 1000  # ids of the blobs a dry run would delete, listed in the JSON report
GONE = "purged"  # the reason of a blob whose row plikd purged
UNLOCATED = "unlocated"


@dataclass(frozen=True, slots=True)
class Gone:
    """A journaled blob whose file the source no longer keeps: ``why`` is its status, or GONE."""

    file_id: str
    upload_id: str
    size: int
    why: str


@dataclass
class Figures:
    pruned: int = 0
    pruned_bytes: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    unlocated: int = 0  # journal rows without an upload id (older journals) whose key needs one


def check(owner: str, *, where: str) -> None:
    """Preflight: --prune deletes blobs only in a store pmigrate filled from this source."""
    if owner in (ownership.FOREIGN, ownership.OTHER):
        raise ConfigError(
            f"--prune deletes blobs only in a target store pmigrate filled from this source, and {where} is not one: "
            "drop --prune to merge without deleting"
        )


def gone(metadata: sa.Engine, journal_path: Path, *, batch_size: int) -> Iterator[Gone]:
    """Journaled blobs whose source row is gone or no longer holds a blob, streamed in file id order."""
    if not journal_path.exists():
        return
    with tempfile.TemporaryDirectory(prefix="pmigrate-prune-") as tmp:
        con = sqlite3.connect(Path(tmp) / "ids.db", isolation_level=None, uri=True)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            # Appended, then indexed once: five times faster than inserting into a keyed table at random.
            con.execute("CREATE TABLE src (file_id TEXT NOT NULL, status TEXT NOT NULL, upload_id TEXT NOT NULL)")
            _load_source(con, metadata, batch_size=batch_size)
            con.execute("CREATE INDEX src_id ON src (file_id)")
            con.execute("ATTACH DATABASE ? AS j", (f"{journal_path.resolve().as_uri()}?mode=ro",))
            columns = {row[1] for row in con.execute("PRAGMA j.table_info(blobs)")}
            if not columns:
                return
            jup = "b.upload_id" if "upload_id" in columns else "''"
            marks = ",".join("?" * len(filerows.BLOB_STATUSES))
            row = "SELECT {} FROM src s WHERE s.file_id = b.file_id LIMIT 1"
            rows = con.execute(
                f"SELECT b.file_id, coalesce(({row.format('s.upload_id')}), {jup}), b.size, "
                f"coalesce(({row.format('s.status')}), ?) FROM j.blobs b "
                f"WHERE NOT EXISTS (SELECT 1 FROM src s WHERE s.file_id = b.file_id AND s.status IN ({marks})) "
                "ORDER BY b.file_id",
                (GONE, *filerows.BLOB_STATUSES),
            )
            for fid, uid, size, why in rows:
                yield Gone(fid, uid or "", int(size), why or "(empty)")
        finally:
            con.close()


def _load_source(con: sqlite3.Connection, metadata: sa.Engine, *, batch_size: int) -> None:
    files = filerows.FILES
    q = sa.select(files.c.id, files.c.status, files.c.upload_id)
    with metadata.connect() as conn, conn.begin():
        result = conn.execution_options(yield_per=batch_size, stream_results=True).execute(q)
        for rows in result.partitions(batch_size):
            con.execute("BEGIN")
            con.executemany(
                "INSERT INTO src VALUES (?, ?, ?)",
                ((str(fid), str(status or ""), str(uid or "")) for fid, status, uid in rows if fid is not None),
            )
            con.execute("COMMIT")


def dry_run(plan: Any, *, opts: RunOptions, report: Report) -> None:
    """What --prune would delete: counted and listed, nothing deleted."""
    fig = Figures()
    listed: list[str] = []
    for g in gone(plan.metadata, plan.journal_path, batch_size=opts.batch_size):
        fig.pruned += 1
        fig.pruned_bytes += g.size
        fig.by_reason[g.why] = fig.by_reason.get(g.why, 0) + 1
        log.info("would prune blob %s (%s)", g.file_id, _reason(g.why))
        if len(listed) < LISTED:
            listed.append(g.file_id)
    sec = report.section(AREA)
    sec.update(would_prune=fig.pruned, would_prune_bytes=fig.pruned_bytes, would_prune_by_reason=fig.by_reason,
               would_prune_blobs=listed, would_delete=fig.pruned)  # fmt: skip
    if fig.pruned and plan.owner != ownership.OWNED and plan.owner != ownership.EMPTY:
        report.line(AREA, "--prune would delete no blob: the target store is not one pmigrate filled from this source")
        return
    shown = ", ".join(listed[:10]) + (", ..." if fig.pruned > 10 else "")
    report.line(AREA, f"--prune would delete {plural(fig.pruned, 'blob')} ({_size(fig.pruned_bytes)}) the journal says "
                      f"pmigrate wrote{_reasons(fig)}" + (f": {shown}" if fig.pruned else ""))  # fmt: skip


def run(plan: Any, *, opts: RunOptions, report: Report) -> None:
    """Delete the journaled blobs of deleted and purged files from the target, then from the journal."""
    dst = open_backend(plan.dst.data.backend, plan.dst.data.options)
    fig = Figures()
    try:
        state = ownership.data_state(dst, source=ownership.data_source(plan.src.data)).state
        if state != ownership.OWNED:
            report.line(AREA, f"--prune: no blob deleted: the target store is {state}, not filled by pmigrate from this source")
            return
        journal = Journal.open(plan.journal_path, identity=plan.identity)
        try:
            _delete_all(plan, dst, journal, fig, opts=opts, report=report)
        finally:
            journal.close()
    finally:
        dst.close()
        _summarise(fig, report=report)


def _delete_all(plan: Any, dst: DataBackend, journal: Journal, fig: Figures, *, opts: RunOptions, report: Report) -> None:
    local = threading.local()
    backends: list[DataBackend] = []
    lock = threading.Lock()

    def backend() -> DataBackend:
        b = getattr(local, "backend", None)
        if b is None:
            b = local.backend = open_backend(plan.dst.data.backend, plan.dst.data.options)
            with lock:
                backends.append(b)
        return b

    def delete(g: Gone) -> str:
        ref = BlobRef(file_id=g.file_id, upload_id=g.upload_id, size=g.size)
        try:
            backend().delete(ref)
        except InvalidId as exc:  # no upload id to name the key with (a journal older than them)
            return UNLOCATED if not g.upload_id else str(exc)
        except PmigrateError as exc:
            return str(exc)
        return ""

    try:
        with ThreadPoolExecutor(THREADS, thread_name_prefix="pmigrate-prune") as pool:
            for chunk in _chunks(gone(plan.metadata, plan.journal_path, batch_size=opts.batch_size)):
                done: list[Gone] = []
                for g, error in zip(chunk, pool.map(delete, chunk)):
                    if error == UNLOCATED:
                        fig.unlocated += 1
                    elif error:
                        fig.errors += 1
                        report.problem(area=AREA, kind="prune-error", item=g.file_id, message=error)
                    else:
                        done.append(g)
                        log.info("pruned blob %s (%s)", g.file_id, _reason(g.why))
                if done:
                    dst.sync()  # the deletions are durable before the journal forgets them
                    journal.forget([g.file_id for g in done])
                for g in done:
                    fig.pruned += 1
                    fig.pruned_bytes += g.size
                    fig.by_reason[g.why] = fig.by_reason.get(g.why, 0) + 1
    finally:
        for b in backends:
            b.close()


def _chunks(items: Iterator[Gone]) -> Iterator[list[Gone]]:
    """CHUNK at a time; the join reads the journal from its own snapshot (WAL) while the deletions edit it."""
    chunk: list[Gone] = []
    for g in items:
        chunk.append(g)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _summarise(fig: Figures, *, report: Report) -> None:
    sec = report.section(AREA)
    sec.update(pruned=fig.pruned, pruned_bytes=fig.pruned_bytes, pruned_by_reason=fig.by_reason, prune_errors=fig.errors)
    report.line(AREA, f"pruned {plural(fig.pruned, 'blob')} ({_size(fig.pruned_bytes)}) pmigrate wrote{_reasons(fig)}")
    if fig.unlocated:
        sec["prune_unlocated"] = fig.unlocated
        report.warn(f"--prune: {plural(fig.unlocated, 'blob')} of purged files kept: the journal that lists them predates "
                    "upload ids, which their keys need; pmigrate verify lists them as unowned")  # fmt: skip


def _reason(why: str) -> str:
    return "row purged" if why == GONE else f"status {why}"


def _reasons(fig: Figures) -> str:
    if not fig.by_reason:
        return ""
    return " (" + ", ".join(f"{n} {_reason(w)}" for w, n in sorted(fig.by_reason.items())) + ")"
