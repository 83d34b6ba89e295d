"""Per-driver reading and bulk writing on raw DB-API connections (one module per driver).

SQLAlchemy opens the connections (pmigrate.metadata.db); the rows themselves
go through the drivers directly: a Row object per value would cost more than
the copy itself.

- Reading: one read transaction over the whole source (REPEATABLE READ READ
  ONLY on postgres, a consistent InnoDB snapshot on mysql, BEGIN on sqlite:
  a private snapshot of the live file, see snapshot.py) and server-side
  cursors, so memory stays flat whatever the table size.
- Writing: COPY on postgres (into a staging table merged with ON CONFLICT on
  a re-run), one LOAD DATA LOCAL per table on a fresh mysql target, else
  multi-row INSERT bounded by max_allowed_packet (ON DUPLICATE KEY UPDATE on
  a re-run), executemany on sqlite (ON CONFLICT DO UPDATE on a re-run); the
  whole load in one transaction (one per table on a fresh mysql target).
"""

from pmigrate.metadata.dialects.base import (
    Row,
    Sink,
    placeholder,
    quote,
    raw_connection,
)
from pmigrate.metadata.dialects.reader import SnapshotReader, prefetch
from pmigrate.metadata.dialects.writer import TargetWriter

__all__ = ["Row", "Sink", "SnapshotReader", "TargetWriter", "placeholder", "prefetch", "quote", "raw_connection"]
