"""Objects nobody owns: what the target stores that no files row claims. Reported, never deleted.

Open uploads too (S3 multipart uploads begun and never finished): invisible
among the objects, billed all the same.

The keys every files row may claim (all statuses, every layout plikd reads)
and the keys the target lists both go to a temporary SQLite file, and one
anti-join names the unowned ones: memory stays flat for millions of files.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from typing import Any

from sqlalchemy.engine import Engine

from pmigrate import filerows
from pmigrate.batching import batched
from pmigrate.data.base import DataBackend, is_marker
from pmigrate.errors import ItemError

AREA = "verify-blobs"
KIND = "unowned"
OPEN_UPLOAD = "open-upload"
BATCH = 5000


def _claimed_keys(engine: Engine, backend: DataBackend, *, batch_size: int) -> Iterator[tuple[str]]:
    # An id that can never be a key claims nothing: scan leaves it out, and the blob audit names it.
    for batch in filerows.scan(engine, batch_size=batch_size, statuses=None):
        for ref in batch.refs:
            try:
                keys = backend.candidate_keys(ref) if hasattr(backend, "candidate_keys") else (backend.key(ref),)
            except ItemError:
                continue
            for k in keys:
                yield (k,)


def _storable(key: str) -> str | bytes:
    """A key SQLite can hold: a file name that is not UTF-8 (lone surrogates in Python) as its bytes.

    No row claims such a name (ids are ASCII), and it reads back as the same str.
    """
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return key.encode("utf-8", "surrogateescape")
    return key


def audit(*, engine: Engine, backend: DataBackend, report: Any, batch_size: int = 5000, tmp_dir: str | None = None) -> tuple[int, int]:
    """Report every unowned object of the target; (objects listed, unowned found)."""
    listed = unowned = 0
    with tempfile.TemporaryDirectory(prefix="pmigrate-unowned-", dir=tmp_dir) as tmp:
        db = sqlite3.connect(os.path.join(tmp, "keys.db"))
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("CREATE TABLE claimed (k TEXT PRIMARY KEY) WITHOUT ROWID")
            db.execute("CREATE TABLE stored (k TEXT NOT NULL, size INTEGER NOT NULL)")
            for batch in batched(_claimed_keys(engine, backend, batch_size=batch_size), BATCH):
                db.executemany("INSERT OR IGNORE INTO claimed VALUES (?)", batch)
            stored = ((k, size) for k, size in backend.list_blobs() if not is_marker(k))  # pmigrate's own record
            for batch in batched(stored, BATCH):
                listed += len(batch)
                db.executemany("INSERT INTO stored VALUES (?, ?)", [(_storable(k), n) for k, n in batch])
            db.commit()
            cur = db.execute("SELECT k, size FROM stored WHERE k NOT IN (SELECT k FROM claimed) ORDER BY k")
            for key, size in cur:
                if isinstance(key, bytes):
                    key = key.decode("utf-8", "surrogateescape")
                unowned += 1
                report.problem(area=AREA, kind=KIND, item=key, message=f"{size} bytes stored in the target that no files row claims (left in place)")
        finally:
            db.close()
    return listed, unowned


def open_uploads(*, backend: DataBackend, report: Any) -> int:
    """Report every upload open under the target's prefix; how many there are."""
    import datetime as dt

    found = backend.open_uploads()
    for u in found:
        when = dt.datetime.fromtimestamp(u.initiated, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if u.initiated else "at an unknown time"
        whose = f"the blob key of file {u.file_id}" if u.file_id else "no blob key"
        report.problem(
            area=AREA,
            kind=OPEN_UPLOAD,
            item=u.key,
            message=f"multipart upload begun {when} and never completed or aborted ({whose}): "
            "the store bills its parts until it is aborted (left in place)",
        )
    return len(found)
