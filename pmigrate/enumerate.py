"""Which blobs a deployment holds: the source ``files`` rows, streamed in batches.

One SELECT inside one read transaction, through a server-side cursor
(psycopg named cursor, PyMySQL SSCursor, SQLite's own stepping), so a
deployment with millions of files is read in constant memory and from one
consistent snapshot. The engine is the source's, read-only
(db.source_engine): a sqlite3 source is read from the snapshot the
metadata copy read, so both see the same rows. Only ``uploaded`` and
``removed`` files have a blob; the rest are counted by status. Ids are
checked before they can become a path or key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from pmigrate.data.base import BlobRef
from pmigrate.errors import InvalidId
from pmigrate.ids import check_id
from pmigrate.metadata.rawtext import as_str

BLOB_STATUSES = ("uploaded", "removed")

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


@dataclass
class Tally:
    """Running counts of what the scan has met."""

    rows: int = 0
    blobs: int = 0  # rows whose status promises a blob
    blob_bytes: int = 0
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


def totals(engine: sa.Engine) -> tuple[int, int]:
    """(files, bytes) promised by the metadata: sizes the progress bars."""
    q = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(FILES.c.size), 0)).where(FILES.c.status.in_(BLOB_STATUSES))
    with engine.connect() as conn:
        n, size = conn.execute(q).one()
    return int(n or 0), int(size or 0)


def scan(engine: sa.Engine, *, batch_size: int, tally: Tally) -> Iterator[Batch]:
    """Yield the blob-holding rows as BlobRefs, batch by batch, updating ``tally``."""
    q = sa.select(
        FILES.c.id, FILES.c.upload_id, FILES.c.status, FILES.c.size, FILES.c.type, FILES.c.md5, FILES.c.backend_details
    )
    with engine.connect() as conn, conn.begin():
        result = conn.execution_options(yield_per=batch_size, stream_results=True).execute(q)
        for rows in result.partitions(batch_size):
            refs: list[BlobRef] = []
            invalid: list[tuple[str, str]] = []
            for fid, uid, status, size, ctype, md5, details in rows:
                status = status or ""
                tally.rows += 1
                tally.by_status[status] += 1
                if status not in BLOB_STATUSES:
                    continue
                try:
                    check_id(fid, what="file id")
                    check_id(uid, what=f"upload id of file {fid}")
                except InvalidId as exc:
                    tally.invalid += 1
                    invalid.append((str(fid), str(exc)))
                    continue
                size = int(size or 0)
                tally.blobs += 1
                tally.blob_bytes += size
                refs.append(
                    BlobRef(
                        file_id=fid,
                        upload_id=uid,
                        size=size,
                        content_type=as_str(ctype) or "",
                        md5=as_str(md5) or "",
                        backend_details=as_str(details) or "",
                    )
                )
            yield Batch(refs, invalid)
