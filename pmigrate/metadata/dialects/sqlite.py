"""SQLite: the read transaction's start and end; writes by executemany, with ON CONFLICT DO UPDATE on a re-run."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pmigrate.metadata import rawtext
from pmigrate.metadata.dialects.base import Row, Sink


def begin_read(conn: Any, *, text_factory: Callable[[bytes], Any]) -> None:
    """A read transaction whose snapshot is taken now (on a private copy of a live file, see snapshot.py)."""
    if conn.in_transaction:
        conn.rollback()
    conn.text_factory = text_factory
    conn.execute("BEGIN")
    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # takes the read snapshot now


def end_read(conn: Any) -> None:
    conn.text_factory = rawtext.decode  # the engine's own, for the pool's next user


class SqliteInsert(Sink):
    def __init__(self, w: Any, table: str, columns: Sequence[str], pk: Sequence[str], *, upsert: bool) -> None:
        self._w = w
        cols = ", ".join(w.q(c) for c in columns)
        marks = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {w.q(table)} ({cols}) VALUES ({marks})"
        if upsert:
            others = [c for c in columns if c not in pk]
            conflict = ", ".join(w.q(c) for c in pk)
            if others:
                sets = ", ".join(f"{w.q(c)} = excluded.{w.q(c)}" for c in others)
                differ = " OR ".join(f"{w.q(table)}.{w.q(c)} IS NOT excluded.{w.q(c)}" for c in others)
                sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets} WHERE {differ}"
            else:
                sql += f" ON CONFLICT ({conflict}) DO NOTHING"
        self._sql = sql

    def write(self, rows: Sequence[Row]) -> int | None:
        conn = self._w.conn
        before = conn.total_changes
        conn.executemany(self._sql, rows)
        return conn.total_changes - before
