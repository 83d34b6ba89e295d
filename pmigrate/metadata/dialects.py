"""Per-driver reading and bulk writing on raw DB-API connections.

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

from __future__ import annotations

import itertools
import queue
import re
import sqlite3
import threading
from datetime import date, datetime
from typing import Any, Iterator, Sequence

from pmigrate.metadata import rawtext

Row = tuple[Any, ...]


def quote(driver: str, name: str) -> str:
    if driver == "mysql":
        return "`" + name.replace("`", "``") + "`"
    return '"' + name.replace('"', '""') + '"'


def placeholder(driver: str) -> str:
    return "?" if driver == "sqlite3" else "%s"


def raw_connection(engine: Any) -> tuple[Any, Any]:
    """(pool proxy, driver connection): the proxy goes back to the pool on close()."""
    proxy = engine.raw_connection()
    return proxy, proxy.driver_connection


# -- reading -----------------------------------------------------------------


class SnapshotReader:
    """Every read of a run inside one read transaction of the source.

    sqlite3 text is decoded by the driver's own str until a value is not
    UTF-8; from then on every text goes through rawtext.decode (slower), and
    ``raw_texts`` counts the values read as RawText.
    """

    def __init__(self, engine: Any, driver: str) -> None:
        self.driver = driver
        self._proxy, self.conn = raw_connection(engine)
        self._cursors = itertools.count()
        self._open = False
        self.raw_texts = 0
        self._tolerant = False

    def begin(self) -> None:
        c = self.conn
        if self.driver == "sqlite3":
            if c.in_transaction:
                c.rollback()
            c.text_factory = self._decode if self._tolerant else str
            c.execute("BEGIN")
            c.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # takes the read snapshot now
        elif self.driver == "postgres":
            import psycopg

            c.rollback()
            c.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            c.read_only = True
            c.execute("SELECT 1").fetchall()  # the snapshot starts at the first query
        else:
            c.rollback()
            with c.cursor() as cur:
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        self._open = True

    def close(self) -> None:
        if self._proxy is None:
            return
        try:
            if self._open:
                self.conn.rollback()
            if self.driver == "sqlite3":
                self.conn.text_factory = rawtext.decode  # the engine's own, for the pool's next user
            if self.driver == "postgres":
                self.conn.read_only = None
                self.conn.isolation_level = None
        except Exception:  # noqa: BLE001 - a stop amid a read leaves the connection unusable: closed, not pooled
            self._proxy.invalidate()
        finally:
            self._open = False
            self._proxy.close()
            self._proxy = None

    def q(self, name: str) -> str:
        return quote(self.driver, name)

    def _decode(self, value: bytes) -> str | rawtext.RawText:
        text = rawtext.decode(value)
        if text.__class__ is rawtext.RawText:
            self.raw_texts += 1
        return text

    def _tolerate(self, exc: Exception) -> bool:
        """After text that is not UTF-8: decode every text with _decode from now on; True to read again."""
        if self._tolerant or not rawtext.undecodable(exc):
            return False
        self._tolerant = True
        self.conn.text_factory = self._decode
        return True

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """A small result, buffered."""
        if self.driver == "sqlite3":
            try:
                return self.conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:
                if not self._tolerate(exc):
                    raise
                return self.conn.execute(sql, tuple(params)).fetchall()
        cur = self.conn.cursor()
        try:
            cur.execute(sql, tuple(params) if params else None)
            return list(cur.fetchall())
        finally:
            cur.close()

    def count(self, table: str) -> int:
        return int(self.all(f"SELECT COUNT(*) FROM {self.q(table)}")[0][0])

    def stream(self, sql: str, *, batch: int) -> Iterator[list[Row]]:
        """Batches of rows from a server-side cursor, read ahead in a thread (a server's source)."""
        if self.driver == "sqlite3":
            # In-process reads: a second thread only trades the GIL row by row with the
            # writer (half the time went to that, in futex calls); read between writes.
            return self._sqlite_batches(sql, batch)
        if self.driver == "postgres":
            cur = self.conn.cursor(name=f"pmigrate_{next(self._cursors)}")
            cur.itersize = batch
        else:
            import pymysql.cursors

            cur = self.conn.cursor(pymysql.cursors.SSCursor)
        def batches() -> Iterator[list[Row]]:
            try:
                cur.execute(sql)
                while rows := cur.fetchmany(batch):
                    yield rows
            finally:
                cur.close()

        return prefetch(batches())

    def _sqlite_batches(self, sql: str, batch: int) -> Iterator[list[Row]]:
        """The statement runs again past the rows already given when a text is not UTF-8 (see _tolerate)."""
        given = 0
        while True:
            cur = self.conn.cursor()
            cur.arraysize = batch
            try:
                cur.execute(sql)
                skip = given
                while skip > 0 and (rows := cur.fetchmany(min(skip, batch))):
                    skip -= len(rows)
                while rows := cur.fetchmany(batch):
                    given += len(rows)
                    yield rows
                return
            except sqlite3.OperationalError as exc:
                if not self._tolerate(exc):
                    raise
            finally:
                cur.close()


def prefetch(source: Iterator[list[Row]], *, depth: int = 2) -> Iterator[list[Row]]:
    """Read the next batches in a thread while the caller writes this one (the drivers release the GIL).

    Bounded: at most ``depth`` batches wait in memory. The source's connection
    must not be used by anyone else until the iterator is exhausted or closed.
    """
    done = object()
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def pump() -> None:
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                q.put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)
        finally:
            if stop.is_set():
                source.close()  # type: ignore[attr-defined]

    thread = threading.Thread(target=pump, name="pmigrate-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


# -- writing -----------------------------------------------------------------


class Sink:
    """Writes one table's batches; returns changed-row counts when the driver tells them."""

    def write(self, rows: Sequence[Row]) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> int | None:
        return None


class TargetWriter:
    """The target side of a load: one transaction, committed by the caller."""

    def __init__(self, conn: Any, driver: str, *, proxy: Any = None, tables: dict[str, str] | None = None) -> None:
        self.driver = driver
        self.conn = conn  # the driver's own connection
        self._proxy = proxy
        self._stage = itertools.count()
        self._tables = tables or {}  # table -> the name its rows go to during the load (staging.py)

    def target(self, table: str) -> str:
        """The table a table's rows go to: its own, or its staging table."""
        return self._tables.get(table, table)

    @classmethod
    def from_engine(cls, engine: Any, driver: str) -> "TargetWriter":
        proxy, conn = raw_connection(engine)
        return cls(conn, driver, proxy=proxy)

    def q(self, name: str) -> str:
        return quote(self.driver, name)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        cur = self.conn.cursor()
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, tuple(params))
        return cur

    def all(self, sql: str, params: Sequence[Any] | None = None) -> list[Row]:
        cur = self.execute(sql, params)
        try:
            return list(cur.fetchall())
        finally:
            cur.close()

    def count(self, table: str) -> int:
        return int(self.all(f"SELECT COUNT(*) FROM {self.q(self.target(table))}")[0][0])

    def sink(self, table: str, columns: Sequence[str], pk: Sequence[str], *, upsert: bool, text_only: bool = False) -> Sink:
        """``text_only``: every value is str, int, bool, float, datetime or None (Plik's own tables)."""
        table = self.target(table)
        if self.driver == "postgres":
            return _PgMerge(self, table, columns, pk) if upsert else _PgCopy(self, table, columns)
        if self.driver == "mysql":
            if not upsert and text_only and _mysql_can_load(self):
                return _MysqlLoad(self, table, columns)
            return _MysqlInsert(self, table, columns, pk, upsert=upsert)
        return _SqliteInsert(self, table, columns, pk, upsert=upsert)

    def keys(self, table: str, pk: Sequence[str], *, batch: int) -> Iterator[list[Row]]:
        """The target's primary keys, in batches (for deletes on a re-run)."""
        cols = ", ".join(self.q(c) for c in pk)
        cur = self.execute(f"SELECT {cols} FROM {self.q(self.target(table))}")
        try:
            while rows := cur.fetchmany(batch):
                yield rows
        finally:
            cur.close()

    def restore_text(self, table: str, columns: Sequence[str], pk: Sequence[str], rows: Sequence[Row]) -> None:
        """sqlite3: make the rawtext.RawText values just written TEXT again, their bytes unchanged.

        Python's driver binds bytes only as a BLOB; CAST(... AS TEXT) takes a
        BLOB's bytes as they are.
        """
        keys = list(pk) or list(columns)
        where = " AND ".join(f"{self.q(c)} IS ?" for c in keys)
        at = [columns.index(c) for c in keys]
        for row in rows:
            raw = [c for c, v in zip(columns, row) if v.__class__ is rawtext.RawText]
            if raw:
                sets = ", ".join(f"{self.q(c)} = CAST({self.q(c)} AS TEXT)" for c in raw)
                self.conn.execute(f"UPDATE {self.q(table)} SET {sets} WHERE {where}", [row[i] for i in at])

    def delete(self, table: str, pk: Sequence[str], keys: Sequence[Row]) -> None:
        ph = placeholder(self.driver)
        where = " AND ".join(f"{self.q(c)} = {ph}" for c in pk)
        cur = self.conn.cursor()
        try:
            cur.executemany(f"DELETE FROM {self.q(self.target(table))} WHERE {where}", [tuple(k) for k in keys])
        finally:
            cur.close()

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.close()


def _assignments(w: TargetWriter, columns: Sequence[str], pk: Sequence[str], fmt: str) -> list[str]:
    return [f"{w.q(c)} = {fmt.format(w.q(c))}" for c in columns if c not in pk]


class _PgCopy(Sink):
    """COPY FROM STDIN for the whole table: the fastest way into a fresh table."""

    def __init__(self, w: TargetWriter, table: str, columns: Sequence[str]) -> None:
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


class _PgMerge(Sink):
    """COPY each batch into a temporary table, then one INSERT ... ON CONFLICT DO UPDATE."""

    def __init__(self, w: TargetWriter, table: str, columns: Sequence[str], pk: Sequence[str]) -> None:
        self._w = w
        self._stage = f"pmigrate_stage_{next(w._stage)}"
        cols = ", ".join(w.q(c) for c in columns)
        w.execute(f"CREATE TEMPORARY TABLE {self._stage} (LIKE {w.q(table)} INCLUDING DEFAULTS) ON COMMIT DROP").close()
        self._copy_sql = f"COPY {self._stage} ({cols}) FROM STDIN"
        sets = _assignments(w, columns, pk, "EXCLUDED.{}")
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


class _SqliteInsert(Sink):
    def __init__(self, w: TargetWriter, table: str, columns: Sequence[str], pk: Sequence[str], *, upsert: bool) -> None:
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


class _MysqlInsert(Sink):
    """Multi-row INSERT statements, each below the server's max_allowed_packet."""

    def __init__(self, w: TargetWriter, table: str, columns: Sequence[str], pk: Sequence[str], *, upsert: bool) -> None:
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


def _mysql_can_load(w: TargetWriter) -> bool:
    """LOAD DATA LOCAL works when this connection may send files and the server accepts them."""
    from pymysql.constants import CLIENT

    if not getattr(w.conn, "client_flag", 0) & CLIENT.LOCAL_FILES:
        return False
    try:
        return bool(int(w.all("SELECT @@local_infile")[0][0]))
    except Exception:  # noqa: BLE001 - a server without the variable: INSERT it is
        return False


class _MysqlLoad(Sink):
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

    def __init__(self, w: TargetWriter, table: str, columns: Sequence[str]) -> None:
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
        conn._local_infile = True  # only for our own pipe, only during this statement
        try:
            cur.execute(self._sql)
            self._result = (cur.rowcount, cur.warning_count)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer
            self._error = _driver_cause(exc)
        finally:
            conn._local_infile = False
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
    parts = " + '\\t' + ".join(field.format(i=i) for i in range(width))
    code = f"def row(r):\n    return {parts} + '\\n'\n"
    exec(compile(code, "<pmigrate mysql tsv row>", "exec"), env)  # noqa: S102 - built from column indexes only
    return env["row"]


def _mysql_statement_limit(w: TargetWriter) -> int:
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

