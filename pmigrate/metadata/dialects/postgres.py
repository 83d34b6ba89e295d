"""PostgreSQL: reads in one REPEATABLE READ snapshot; writes by COPY, merged through a temporary table on a re-run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pmigrate.metadata.dialects.base import Row, Sink, assignments


def begin_read(conn: Any) -> None:
    """REPEATABLE READ, READ ONLY: one snapshot for every read of the run."""
    import psycopg

    conn.rollback()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    conn.execute("SELECT 1").fetchall()  # the snapshot starts at the first query


def end_read(conn: Any) -> None:
    conn.read_only = None
    conn.isolation_level = None


def server_cursor(conn: Any, *, name: str, batch: int) -> Any:
    """A named (server-side) cursor: rows come ``batch`` at a time."""
    cur = conn.cursor(name=name)
    cur.itersize = batch
    return cur


class PgCopy(Sink):
    """COPY FROM STDIN for the whole table: the fastest way into a fresh table."""

    def __init__(self, w: Any, table: str, columns: Sequence[str]) -> None:
        cols = ", ".join(w.q(c) for c in columns)
        self._cur = w.conn.cursor()
        self._ctx = self._cur.copy(f"COPY {w.q(table)} ({cols}) FROM STDIN")
        self._copy = self._ctx.__enter__()

    def write(self, rows: Sequence[Row]) -> int | None:
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)
        return len(rows)

    def close(self) -> int | None:
        try:
            self._ctx.__exit__(None, None, None)
        finally:
            self._cur.close()
        return None

    def abort(self, exc: BaseException) -> None:
        try:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass
        self._cur.close()


class PgMerge(Sink):
    """COPY each batch into a temporary table, then one INSERT ... ON CONFLICT DO UPDATE."""

    def __init__(self, w: Any, table: str, columns: Sequence[str], pk: Sequence[str]) -> None:
        self._w = w
        self._stage = f"pmigrate_stage_{next(w._stage)}"
        cols = ", ".join(w.q(c) for c in columns)
        w.execute(f"CREATE TEMPORARY TABLE {self._stage} (LIKE {w.q(table)} INCLUDING DEFAULTS) ON COMMIT DROP").close()
        self._copy_sql = f"COPY {self._stage} ({cols}) FROM STDIN"
        sets = assignments(w, columns, pk, "EXCLUDED.{}")
        conflict = ", ".join(w.q(c) for c in pk)
        if sets:
            others = [c for c in columns if c not in pk]
            mine = ", ".join(f"{w.q(table)}.{w.q(c)}" for c in others)
            theirs = ", ".join(f"EXCLUDED.{w.q(c)}" for c in others)
            action = f"DO UPDATE SET {', '.join(sets)} WHERE ROW({mine}) IS DISTINCT FROM ROW({theirs})"
        else:
            action = "DO NOTHING"
        self._merge = (
            f"INSERT INTO {w.q(table)} ({cols}) SELECT {cols} FROM {self._stage} ON CONFLICT ({conflict}) {action}"
        )

    def write(self, rows: Sequence[Row]) -> int | None:
        cur = self._w.conn.cursor()
        try:
            with cur.copy(self._copy_sql) as cp:
                for row in rows:
                    cp.write_row(row)
            cur.execute(self._merge)
            changed = cur.rowcount
            cur.execute(f"TRUNCATE {self._stage}")
            return changed
        finally:
            cur.close()
