"""Bulk writes of fake rows, with values in the types gorm stores on each driver.

sqlite3 keeps timestamps as text in plikd's local zone with nanoseconds
(``2026-07-08 12:00:28.111626847+02:00``), postgres as ``timestamp with time
zone`` (microseconds), mysql as ``datetime(3)`` in the DSN's ``loc`` (UTC in
the DSNs fakedb writes). The local zone is Central European time with its summer
offset, computed by rule so that the output does not depend on tzdata.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from pmigrate.fake.rows import Clock
from pmigrate.fake.tables import Table

NS = 1_000_000_000
EPOCH = datetime(1970, 1, 1)
EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def _eu_transitions(first: int = 1996, last: int = 2100) -> list[int]:
    """Epoch seconds of every CET->CEST and CEST->CET switch (last Sundays of March and October, 01:00 UTC)."""
    out = []
    for year in range(first, last + 1):
        for month in (3, 10):
            d = datetime(year, month, 31)
            d -= timedelta(days=(d.weekday() + 1) % 7)
            out.append(int((d.replace(hour=1) - EPOCH).total_seconds()))
    return out


_TRANSITIONS = _eu_transitions()


def local_offset(sec: int) -> int:
    """Seconds east of UTC in Europe/Paris at that instant."""
    return 7200 if bisect.bisect_right(_TRANSITIONS, sec) % 2 else 3600


class SqliteClock:
    """gorm's sqlite3 text: local time, offset, nanoseconds without trailing zeros."""

    def __init__(self) -> None:
        self._hours: dict[int, tuple[str, str]] = {}  # hour since epoch -> ("YYYY-MM-DD HH:", "+02:00")

    def _hour(self, hour: int) -> tuple[str, str]:
        off = local_offset(hour * 3600)  # zones here change on the hour
        head = (EPOCH + timedelta(seconds=hour * 3600 + off)).isoformat(" ")[:14]
        parts = self._hours[hour] = (head, f"+{off // 3600:02d}:00")
        return parts

    def local(self, ns: int) -> str:
        sec, frac = divmod(ns, NS)
        hour, rem = divmod(sec, 3600)
        head, zone = self._hours.get(hour) or self._hour(hour)
        minute, second = divmod(rem, 60)
        if frac:
            return f"{head}{minute:02d}:{second:02d}.{frac:09d}".rstrip("0") + zone
        return f"{head}{minute:02d}:{second:02d}{zone}"

    @staticmethod
    def utc(ns: int) -> str:
        return (EPOCH + timedelta(microseconds=ns // 1000)).isoformat(" ") + "+00:00"


def postgres_ts(ns: int) -> datetime:
    return EPOCH_UTC + timedelta(microseconds=ns // 1000)


def mysql_clock(tz: tzinfo | None) -> Callable[[int], datetime]:
    """Naive datetime(3) values in the DSN's loc, as go-sql-driver writes them."""
    if tz is None or tz == UTC:
        return lambda ns: EPOCH + timedelta(milliseconds=ns // 1_000_000)
    return lambda ns: (EPOCH_UTC + timedelta(milliseconds=ns // 1_000_000)).astimezone(tz).replace(tzinfo=None)


def clock_for(driver: str, *, mysql_zone: tzinfo | None = None) -> Clock:
    if driver == "sqlite3":
        c = SqliteClock()
        return Clock(local=c.local, utc=c.utc)
    if driver == "postgres":
        return Clock(local=postgres_ts, utc=postgres_ts)
    if driver == "mysql":
        ts = mysql_clock(mysql_zone)
        return Clock(local=ts, utc=ts)
    raise ValueError(f"no clock for driver {driver!r}")


class Writer:
    """Inserts batches of rows through one DBAPI connection; counts what it wrote."""

    def __init__(self, *, dbapi_conn: Any, driver: str) -> None:
        self.conn = dbapi_conn
        self.driver = driver
        self.quote = '"' if driver == "postgres" else "`"
        self.counts: dict[str, int] = {}
        if driver == "sqlite3":
            # A throwaway deployment: no need to wait for the disk on each commit.
            cur = self.conn.cursor()
            for pragma in ("synchronous=OFF", "journal_mode=MEMORY", "cache_size=-65536"):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()
        self._deferred: list[str] = []

    def _q(self, name: str) -> str:
        return f"{self.quote}{name}{self.quote}"

    def insert(self, table: Table, rows: Iterable[tuple]) -> int:
        batch = rows if isinstance(rows, list) else list(rows)
        if not batch:
            return 0
        cols = ", ".join(self._q(c) for c in table.columns)
        cur = self.conn.cursor()
        try:
            if self.driver == "postgres":
                with cur.copy(f"COPY {self._q(table.name)} ({cols}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
            else:
                mark = "?" if self.driver == "sqlite3" else "%s"
                sql = f"INSERT INTO {self._q(table.name)} ({cols}) VALUES ({', '.join([mark] * len(table.columns))})"
                cur.executemany(sql, batch)
        finally:
            cur.close()
        self.counts[table.name] = self.counts.get(table.name, 0) + len(batch)
        return len(batch)

    def insert_all(self, table: Table, rows: Iterable[tuple], *, batch: int) -> None:
        """Insert a stream of rows in batches, committing after each."""
        pending: list[tuple] = []
        for row in rows:
            pending.append(row)
            if len(pending) >= batch:
                self.insert(table, pending)
                self.commit()
                pending = []
        self.insert(table, pending)
        self.commit()

    def defer_indexes(self) -> None:
        """SQLite: drop secondary indexes for the bulk load; restore_indexes() rebuilds them as they were."""
        if self.driver != "sqlite3":
            return
        cur = self.conn.cursor()
        cur.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        found = cur.fetchall()
        for name, sql in found:
            cur.execute(f"DROP INDEX {self._q(name)}")
            self._deferred.append(sql)
        cur.close()
        self.commit()

    def restore_indexes(self) -> None:
        cur = self.conn.cursor()
        for sql in self._deferred:
            cur.execute(sql)
        cur.close()
        self._deferred.clear()
        self.commit()

    def commit(self) -> None:
        self.conn.commit()
