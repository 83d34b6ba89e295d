"""Staging tables on a MySQL/MariaDB target: the tables of a run appear whole, or not at all.

MySQL commits every DDL statement by itself, and InnoDB bulk-loads a table
only in a transaction of its own, so a load there cannot be one transaction.
Instead each table this run creates is made and filled under a name of
pmigrate's own (``pmigrate_staging_<name>``, its foreign keys pointing at
the other staging tables), and one ``RENAME TABLE a TO b, c TO d, ...``
publishes them all at the end: atomic, and InnoDB moves the foreign keys of
the children along with a renamed parent. On a fresh target the ownership
record (pmigrate.ownership) is staged and renamed with them, so whoever sees
Plik's tables sees whose they are.

A run stopped before the rename leaves staging tables only. The next run
finds them in its preflight and drops them before its own load; it holds the
target's lock (pmigrate.lock) by then, and nothing but pmigrate writes under
that prefix, so they are a stopped run's leftovers.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pmigrate.metadata.dialects import quote

PREFIX = "pmigrate_staging_"
NAME_MAX = 64  # characters in a MySQL table name
SESSION_END = 30.0  # seconds a cut-off session's statement is given to end on the server


def staged_name(name: str) -> str:
    """The staging name of a table: the prefix and its name, or a digest of a name too long for both."""
    full = PREFIX + name
    if len(full) <= NAME_MAX:
        return full
    return PREFIX + hashlib.sha256(name.encode()).hexdigest()[:32]


def is_staging(name: str) -> bool:
    return name.startswith(PREFIX)


def leftovers(names: Iterable[str]) -> list[str]:
    """The staging tables among a target's tables: what a stopped run left."""
    return sorted(n for n in names if is_staging(n))


def drop(cursor: Any, names: Sequence[str]) -> None:
    """Drop staging tables, children and parents alike (foreign key checks off for the statement's session)."""
    names = [n for n in names if is_staging(n)]  # never anything else, whatever the caller hands over
    if not names:
        return
    cursor.execute("SET SESSION foreign_key_checks = 0")
    try:
        cursor.execute("DROP TABLE IF EXISTS " + ", ".join(quote("mysql", n) for n in names))
    finally:
        cursor.execute("SET SESSION foreign_key_checks = 1")


_NAMED = re.compile(r"(CREATE TABLE|REFERENCES) `((?:[^`]|``)+)`")


class Staging:
    """The tables one run loads under staging names, and their publication in one RENAME TABLE."""

    def __init__(self, tables: Iterable[str]) -> None:
        self.names: dict[str, str] = {t: staged_name(t) for t in tables}  # final name -> staging name
        self.published = False
        self._renaming = False

    def __bool__(self) -> bool:
        return bool(self.names)

    def name(self, table: str) -> str:
        """Where a table's rows go during the load: its staging name, or its own when it is not staged."""
        return self.names.get(table, table)

    def ddl(self, statements: Iterable[str]) -> list[str]:
        """Plik's DDL for MySQL with its tables, and the tables its foreign keys reference, renamed."""

        def rename(m: re.Match) -> str:
            table = m.group(2).replace("``", "`")
            return f"{m.group(1)} {quote('mysql', self.name(table))}"

        return [_NAMED.sub(rename, s) for s in statements]

    def publish(self, cursor: Any) -> None:
        """Every staging table under its final name, at once."""
        if not self.names:
            return
        pairs = ", ".join(f"{quote('mysql', s)} TO {quote('mysql', t)}" for t, s in self.names.items())
        self._renaming = True
        cursor.execute(f"RENAME TABLE {pairs}")
        self.published = True

    def discard(self, engine: Any, *, session: int | None = None) -> bool:
        """Drop what this run staged, on a connection of its own (the load's may be gone); False if it could not.

        ``session``: the server's id of the load's connection. A lost connection's statement may
        still run on the server: its end is awaited first (up to SESSION_END seconds). A RENAME
        cut off so is then done or not, all or nothing, which the tables there tell
        (``published`` then says which).
        """
        if self.published or not self.names:
            return True
        try:
            with engine.connect() as conn:
                cur = conn.connection.driver_connection.cursor()
                try:
                    if session is not None:
                        _await_end(cur, session)
                    if self._renaming:
                        cur.execute("SHOW TABLES")
                        present = {r[0] for r in cur.fetchall()}
                        if set(self.names) <= present and not present & set(self.names.values()):
                            self.published = True
                            return True
                    drop(cur, list(self.names.values()))
                finally:
                    cur.close()
        except Exception:  # noqa: BLE001 - the next run drops them; the caller says so
            return False
        return True


def _await_end(cursor: Any, session: int) -> None:
    """Wait until the server has ended a session (a killed one finishes or undoes its statement first)."""
    deadline = time.monotonic() + SESSION_END
    while time.monotonic() < deadline:
        cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (session,))
        if not cursor.fetchone()[0]:
            return
        time.sleep(0.1)
