"""Reading the source: every read of a run inside one read transaction, streamed with server-side cursors."""

from __future__ import annotations

import contextlib
import itertools
import queue
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pmigrate.metadata import rawtext
from pmigrate.metadata.dialects import mysql, postgres, sqlite
from pmigrate.metadata.dialects.base import Row, quote, raw_connection

_DRIVERS: dict[str, Any] = {"sqlite3": sqlite, "postgres": postgres, "mysql": mysql}


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
        if self.driver == "sqlite3":
            sqlite.begin_read(self.conn, text_factory=self._decode if self._tolerant else str)
        else:
            _DRIVERS[self.driver].begin_read(self.conn)
        self._open = True

    def close(self) -> None:
        if self._proxy is None:
            return
        try:
            if self._open:
                self.conn.rollback()
            _DRIVERS[self.driver].end_read(self.conn)
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
        cur = _DRIVERS[self.driver].server_cursor(self.conn, name=f"pmigrate_{next(self._cursors)}", batch=batch)

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
                with contextlib.suppress(sqlite3.ProgrammingError):  # a stream left unfinished outlived its connection
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
