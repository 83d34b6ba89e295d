"""Writing the target: one transaction, committed by the caller; each driver's Sink does the bulk work."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from pmigrate.metadata import rawtext
from pmigrate.metadata.dialects import mysql, postgres, sqlite
from pmigrate.metadata.dialects.base import (
    Row,
    Sink,
    placeholder,
    quote,
    raw_connection,
)


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
    def from_engine(cls, engine: Any, driver: str) -> TargetWriter:
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
            return postgres.PgMerge(self, table, columns, pk) if upsert else postgres.PgCopy(self, table, columns)
        if self.driver == "mysql":
            if not upsert and text_only and mysql.can_load(self):
                return mysql.MysqlLoad(self, table, columns)
            return mysql.MysqlInsert(self, table, columns, pk, upsert=upsert)
        return sqlite.SqliteInsert(self, table, columns, pk, upsert=upsert)

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
