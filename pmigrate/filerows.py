"""The source's ``files`` rows as BlobRefs: the one reading of that table that copy, dry run and verify share.

One SELECT inside one read transaction, through a server-side cursor
(psycopg named cursor, PyMySQL SSCursor, SQLite's own stepping), so a
deployment with millions of files is read in constant memory and from one
consistent snapshot. The engine is the source's, read-only
(db.source_engine): a sqlite3 source is read from the snapshot the
metadata copy read, so both see the same rows. Only ``uploaded`` and
``removed`` files have a blob; the rest are counted by status. Ids are
checked before they can become a path or key.

A NULL ``files.size`` is an unknown size (BlobRef.size -1), never 0: gorm
reads NULL as 0 and plikd serves a file whose size is not above 0 without a
Content-Length, whatever its blob holds, so such a blob is copied and
verified as it is, its length checked against nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from pmigrate.data.base import BlobRef
from pmigrate.errors import InvalidId
from pmigrate.ids import check_id
from pmigrate.metadata.rawtext import as_str

BLOB_STATUSES = ("uploaded", "removed")
UNKNOWN_SIZE = -1

FILES = sa.table(
    "files",
    sa.column("id"),
    sa.column("upload_id"),
    sa.column("status"),
    sa.column("size"),
    sa.column("type"),
    sa.column("md5"),
    sa.column("backend_details"),
)
# Columns an old or foreign schema may lack: read as empty.
_OPTIONAL = ("type", "md5", "backend_details")


@dataclass
class Tally:
    """Running counts of what the scan has met."""

    rows: int = 0
    blobs: int = 0  # rows whose status promises a blob
    blob_bytes: int = 0  # the sizes files.size states (an unknown size adds nothing)
    by_status: Counter = field(default_factory=Counter)  # every row, by status
    invalid: int = 0

    def skipped_by_status(self) -> dict[str, int]:
        return {_label(s): n for s, n in sorted(self.by_status.items()) if s not in BLOB_STATUSES}


@dataclass
class Batch:
    refs: list[BlobRef]
    invalid: list[tuple[str, str]]  # (file id as found, why): ids that must not become keys


def _label(status: str) -> str:
    return status if status else "(empty)"


def blob_size(value: Any) -> int:
    """files.size as BlobRef.size: NULL is unknown (-1), not empty."""
    return UNKNOWN_SIZE if value is None else int(value)


def totals(engine: sa.Engine) -> tuple[int, int]:
    """(files, bytes) promised by the metadata: sizes the progress bars."""
    q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(FILES.c.size), 0)).where(FILES.c.status.in_(BLOB_STATUSES))
    with engine.connect() as conn:
        n, size = conn.execute(q).one()
    return int(n or 0), int(size or 0)


def _query(conn: sa.Connection, statuses: tuple[str, ...] | None, ordered: bool) -> sa.Select:
    have = {c["name"] for c in sa.inspect(conn).get_columns("files")}
    cols = [FILES.c[name] if name not in _OPTIONAL or name in have else sa.null().label(name) for name in FILES.c.keys()]
    q = sa.select(*cols)
    if statuses is not None:
        q = q.where(FILES.c.status.in_(statuses))
    return q.order_by(FILES.c.id) if ordered else q


def scan(
    engine: sa.Engine,
    *,
    batch_size: int,
    tally: Tally | None = None,
    statuses: tuple[str, ...] | None = BLOB_STATUSES,
    ordered: bool = False,
) -> Iterator[Batch]:
    """Yield the rows of ``statuses`` (None: every status) as BlobRefs, batch by batch.

    With a ``tally`` every row is read and counted, whatever its status;
    without one the database leaves out the other statuses itself.
    ``ordered``: in id order (verify reports in it), else as stored.
    """
    with engine.connect() as conn, conn.begin():
        q = _query(conn, statuses if tally is None else None, ordered)
        result = conn.execution_options(yield_per=batch_size, stream_results=True).execute(q)
        for rows in result.partitions(batch_size):
            refs: list[BlobRef] = []
            invalid: list[tuple[str, str]] = []
            for fid, uid, status, size, ctype, md5, details in rows:
                status = status or ""
                if tally is not None:
                    tally.rows += 1
                    tally.by_status[status] += 1
                if statuses is not None and status not in statuses:
                    continue
                try:
                    check_id(fid, what="file id")
                    check_id(uid, what=f"upload id of file {fid}")
                except InvalidId as exc:
                    if tally is not None:
                        tally.invalid += 1
                    invalid.append((str(fid), str(exc)))
                    continue
                ref = BlobRef(
                    file_id=fid,
                    upload_id=uid,
                    size=blob_size(size),
                    content_type=as_str(ctype) or "",
                    md5=as_str(md5) or "",
                    backend_details=as_str(details) or "",
                )
                if tally is not None:
                    tally.blobs += 1
                    tally.blob_bytes += max(ref.size, 0)
                refs.append(ref)
            yield Batch(refs, invalid)
