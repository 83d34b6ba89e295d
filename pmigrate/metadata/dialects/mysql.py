"""MySQL/MariaDB: reads in one consistent snapshot; writes by LOAD DATA LOCAL into a fresh table, else multi-row INSERT.

PyMySQL offers no public way to allow LOAD DATA LOCAL for one statement only,
nor a public string escape that honours NO_BACKSLASH_ESCAPES: this module
uses its ``_local_infile``, ``_escape_string`` and ``converters._escape_table``,
for the versions pyproject pins; tests/test_mysql_local_files.py fails when
they change.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from pmigrate.metadata.dialects.base import Row, Sink


def begin_read(conn: Any) -> None:
    """A consistent InnoDB snapshot, read-only, for every read of the run."""
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")


def end_read(conn: Any) -> None:
    """Nothing to undo: the session's settings are the next transaction's to set."""


def server_cursor(conn: Any, *, name: str, batch: int) -> Any:
    """An unbuffered cursor: rows stream from the server instead of arriving all at once."""
    import pymysql.cursors

    return conn.cursor(pymysql.cursors.SSCursor)


def allow_local_files(conn: Any, allowed: bool) -> None:
    """Let a PyMySQL connection send a file for LOAD DATA LOCAL, or refuse the server's request for one.

    The connection is opened with ``local_infile=True`` (the capability is
    announced at the handshake and cannot be added later), then refused
    except while our own LOAD DATA runs, so a server cannot ask for a file
    of its choosing in answer to any other statement.
    """
    if type(getattr(conn, "_local_infile", None)) is not bool:
        import pymysql

        raise RuntimeError(f"PyMySQL {pymysql.__version__} no longer has Connection._local_infile: pin the version pyproject names")
    conn._local_infile = allowed


class MysqlInsert(Sink):
    """Multi-row INSERT statements, each below the server's max_allowed_packet."""

    def __init__(self, w: Any, table: str, columns: Sequence[str], pk: Sequence[str], *, upsert: bool) -> None:
        self._w = w
        cols = ", ".join(w.q(c) for c in columns)
        self._head = f"INSERT INTO {w.q(table)} ({cols}) VALUES "
        if upsert:
            # A key equal in the target's collation but spelled otherwise (case, accents) is another
            # row: its values never go into this one (preflight names such keys; see collisions.py).
            same = " AND ".join(f"CAST({w.q(k)} AS BINARY) <=> CAST(VALUES({w.q(k)}) AS BINARY)" for k in pk)
            sets = [f"{w.q(c)} = IF({same}, VALUES({w.q(c)}), {w.q(c)})" for c in columns if c not in pk]
            self._tail = " ON DUPLICATE KEY UPDATE " + ", ".join(sets or [f"{w.q(pk[0])} = {w.q(pk[0])}"])
        else:
            self._tail = ""
        self._limit = _mysql_statement_limit(w)
        self._row = _mysql_row_literal(w.conn, len(columns))

    def write(self, rows: Sequence[Row]) -> int | None:
        fmt = self._row
        limit = self._limit
        cur = self._w.conn.cursor()
        try:
            parts: list[str] = []
            size = 0
            for text in map(fmt, rows):
                n = len(text) * 4 + 1  # utf8mb4: at most 4 bytes a character
                if parts and size + n > limit:
                    cur.execute(self._head + ",".join(parts) + self._tail)
                    parts, size = [], 0
                parts.append(text)
                size += n
            if parts:
                cur.execute(self._head + ",".join(parts) + self._tail)
        finally:
            cur.close()
        return None


class _NotText(Exception):
    """A value LOAD DATA's text cannot carry as is (bytes, ...)."""


def can_load(w: Any) -> bool:
    """LOAD DATA LOCAL works when this connection may send files and the server accepts them."""
    from pymysql.constants import CLIENT

    if not getattr(w.conn, "client_flag", 0) & CLIENT.LOCAL_FILES:
        return False
    try:
        return bool(int(w.all("SELECT @@local_infile")[0][0]))
    except Exception:  # noqa: BLE001 - a server without the variable: INSERT it is
        return False


class MysqlLoad(Sink):
    """One LOAD DATA LOCAL INFILE per table, fed through a pipe (fresh tables only).

    The server reads tab-separated text instead of parsing SQL, and one
    statement for the whole table lets InnoDB bulk-load it (sorted index
    builds, no undo record per row): a later statement into a table no longer
    empty would insert row by row, into random pages of a table larger than
    the buffer pool. The statement runs in a thread that the driver feeds
    from the pipe while this one converts the next batches; the pipe bounds
    memory. LOCAL turns the server's errors into warnings (it cannot stop
    the client mid-file), so any warning or any row missing fails the table,
    as strict-mode INSERT would: nothing truncated or skipped silently.
    """

    def __init__(self, w: Any, table: str, columns: Sequence[str]) -> None:
        import os
        import threading

        self._w = w
        self._table = table
        self._row = _mysql_tsv_row(len(columns))
        self._rows = 0
        self._error: BaseException | None = None
        self._result: tuple[int, int] = (0, 0)
        r, self._wfd = os.pipe()
        self._rfd: int | None = r
        cols = ", ".join(w.q(c) for c in columns)
        self._sql = (
            f"LOAD DATA LOCAL INFILE '/proc/self/fd/{r}' INTO TABLE {w.q(table)} CHARACTER SET utf8mb4 "
            f"FIELDS TERMINATED BY X'09' ESCAPED BY X'5C' LINES TERMINATED BY X'0A' ({cols})"
        )
        self._thread = threading.Thread(target=self._load, name="pmigrate-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        import os

        conn = self._w.conn
        cur = conn.cursor()
        allow_local_files(conn, True)  # only for our own pipe, only during this statement
        try:
            cur.execute(self._sql)
            self._result = (cur.rowcount, cur.warning_count)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer
            self._error = _driver_cause(exc)
        finally:
            allow_local_files(conn, False)
            cur.close()
            rfd, self._rfd = self._rfd, None
            if rfd is not None:
                os.close(rfd)  # a writer still writing gets EPIPE instead of waiting forever

    def write(self, rows: Sequence[Row]) -> int | None:
        import os

        try:
            data = "".join(map(self._row, rows)).encode("utf-8")
        except _NotText as exc:
            raise ValueError(f"{self._table}: a value of a type LOAD DATA cannot carry") from exc
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._wfd, view) :]
        except BrokenPipeError:
            self._finish()
            raise
        self._rows += len(rows)
        return None

    def _finish(self) -> None:
        import os

        if self._wfd is not None:
            os.close(self._wfd)  # end of file for the server
            self._wfd = None
        self._thread.join()
        if self._error is not None:
            raise self._error

    def close(self) -> int | None:
        self._finish()
        loaded, warnings = self._result
        if loaded != self._rows or warnings:
            import pymysql

            cur = self._w.conn.cursor()
            try:
                cur.execute("SHOW WARNINGS LIMIT 5")
                why = "; ".join(f"{m} ({c})" for _, c, m in cur.fetchall()) or "no warning given"
            finally:
                cur.close()
            raise pymysql.err.DataError(1265, f"bulk load into {self._table}: {loaded} of {self._rows} rows loaded: {why}")
        return None

    def abort(self, exc: BaseException) -> None:
        try:
            self._finish()
        except Exception:  # noqa: BLE001 - the first error is the one to report
            pass


def _driver_cause(exc: BaseException) -> BaseException:
    """The driver's error behind one it raised while failing: PyMySQL, cut off while sending a
    LOAD DATA LOCAL file, closes its socket and then trips over it (AttributeError)."""
    e: BaseException | None = exc
    while e is not None:
        if (type(e).__module__ or "").startswith("pymysql"):
            return e
        e = e.__context__
    return exc


# LOAD DATA's escapes; most values hold none of these, which one regex search tells.
_TSV_SPECIAL = re.compile(r"[\\\t\n\r\x00]")


def _tsv_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r").replace("\x00", "\\0")


def _tsv_other(v: Any) -> str:
    c = v.__class__
    if c is bool:
        return "1" if v else "0"
    if c is datetime:
        return v.isoformat(" ")
    if c is date:
        return v.isoformat()
    if c is float:
        return repr(v)
    from decimal import Decimal

    if c is Decimal:
        return str(v)
    raise _NotText


def _mysql_tsv_row(width: int):
    """One compiled function turning a row into a LOAD DATA line: text escaped, NULL as \\N."""
    env: dict[str, Any] = {"other": _tsv_other, "S": _TSV_SPECIAL.search, "E": _tsv_escape, "str": str, "int": int}
    field = "((E(v) if S(v) else v) if (v := r[{i}]).__class__ is str else str(v) if v.__class__ is int else '\\\\N' if v is None else other(v))"
    parts = ", ".join(field.format(i=i) for i in range(width))
    code = f"def row(r):\n    return '\\t'.join(({parts},)) + '\\n'\n"  # one join: no string per column added
    exec(compile(code, "<pmigrate mysql tsv row>", "exec"), env)  # noqa: S102 - built from column indexes only
    return env["row"]


def _mysql_statement_limit(w: Any) -> int:
    """Bytes per INSERT: well under max_allowed_packet (sizes are counted as 4 bytes a character)."""
    try:
        packet = int(w.all("SELECT @@max_allowed_packet")[0][0])
    except Exception:  # noqa: BLE001 - the server default since 5.6
        packet = 4 * 1024 * 1024
    return max(64 * 1024, min(packet - 64 * 1024, 16 * 1024 * 1024))


def _mysql_literal(conn: Any):
    """A fast SQL literal for the types the copier hands over; the driver's own for the rest."""
    escape = conn._escape_string  # honours NO_BACKSLASH_ESCAPES; PyMySQL has no public name for it

    def lit(v: Any) -> str:
        c = v.__class__
        if c is str:
            return "'" + escape(v) + "'"
        if v is None:
            return "NULL"
        if c is int:
            return str(v)
        if c is bool:
            return "1" if v else "0"
        if c is datetime:
            return "'" + v.isoformat(" ") + "'"
        if c is date:
            return "'" + v.isoformat() + "'"
        return conn.literal(v)

    return lit


def _mysql_row_literal(conn: Any, width: int):
    """One compiled function turning a row into ``(v1,v2,...)``: strings and ints inline, the rest via lit()."""
    from pymysql.constants import SERVER_STATUS
    from pymysql.converters import _escape_table

    env: dict[str, Any] = {"lit": _mysql_literal(conn), "T": _escape_table, "str": str, "int": int}
    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        env["T"] = {ord("'"): "''"}
    field = "(\"'\" + v.translate(T) + \"'\" if (v := r[{i}]).__class__ is str else str(v) if v.__class__ is int else lit(v))"
    parts = " + ',' + ".join(field.format(i=i) for i in range(width))
    code = f"def row(r):\n    return '(' + {parts} + ')'\n"
    exec(compile(code, "<pmigrate mysql row>", "exec"), env)  # noqa: S102 - built from column indexes only
    return env["row"]
