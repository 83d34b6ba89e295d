"""A database failure during the metadata copy, named: a lost connection, a lock waited on too long.

The drivers' own words for these are poor (PyMySQL's ``(0, '')`` once a
connection is gone); the copy turns them into one line that says which
server went away, or which lock on whom it gave up on, and what the target
holds now. Each is also a problem in the report.
"""

from __future__ import annotations

from typing import Any

from pmigrate.errors import FatalError

LOST = "connection-lost"
LOCK_TIMEOUT = "lock-timeout"

# PyMySQL/server codes of a connection that is gone: server gone away, lost during a query, lost at
# reading the handshake, killed (MariaDB), shutting down, disconnected for inactivity (MySQL 8).
_MYSQL_LOST = {2006, 2013, 2055, 1927, 1053, 4031}
_MYSQL_LOCK_TIMEOUT = 1205  # lock_wait_timeout (table and metadata locks), innodb_lock_wait_timeout (rows)
_PG_LOCK_TIMEOUT = "55P03"  # lock_not_available: lock_timeout ran out


class DatabaseFault(FatalError):
    """A fatal database failure with its kind, for the report's problem list."""

    def __init__(self, message: str, *, kind: str, item: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.item = item


def _chain(exc: BaseException):
    """The exception and what it wraps or arose from (SQLAlchemy's .orig, causes, contexts), nearest first.

    The context counts: PyMySQL, failing to send a LOAD DATA LOCAL file, closes its socket and then
    trips over it (AttributeError), the real error left as the context.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__


def _driver_error(exc: BaseException) -> BaseException | None:
    for e in _chain(exc):
        if (type(e).__module__ or "").startswith(("pymysql", "psycopg")):
            return e
    return None


def is_lost(exc: BaseException) -> bool:
    """Does the error say that a server connection is gone?"""
    e = _driver_error(exc)
    if e is None:
        return False
    if type(e).__module__.startswith("pymysql"):
        import pymysql

        code = e.args[0] if e.args else None
        return code in _MYSQL_LOST or (isinstance(e, pymysql.err.InterfaceError) and code == 0)
    import psycopg

    state = getattr(e, "sqlstate", None) or ""
    return state.startswith(("08", "57P0")) or (isinstance(e, psycopg.OperationalError) and not state)


def is_lock_timeout(exc: BaseException) -> bool:
    e = _driver_error(exc)
    if e is None:
        return False
    if type(e).__module__.startswith("pymysql"):
        return bool(e.args) and e.args[0] == _MYSQL_LOCK_TIMEOUT
    return getattr(e, "sqlstate", None) == _PG_LOCK_TIMEOUT


def connection_gone(raw: Any) -> bool:
    """A DB-API connection (PyMySQL, psycopg) its driver knows to be closed or broken."""
    if raw is None:
        return False
    if hasattr(raw, "broken"):  # psycopg
        return bool(raw.broken or raw.closed)
    if hasattr(raw, "open"):  # PyMySQL
        return not raw.open
    return False


def detail(exc: BaseException) -> str:
    """The driver's own message, on one short line."""
    e = _driver_error(exc) or exc
    text = " ".join(str(e).split())
    if type(e).__module__.startswith("pymysql") and len(e.args) == 2:
        text = f"{e.args[1] or 'connection closed'} ({e.args[0]})" if e.args[0] else "connection closed"
    return text[:300]


def server(meta: Any, raw: Any = None) -> str:
    """'MariaDB at HOST:PORT', 'PostgreSQL at HOST:PORT': what the user knows the server as."""
    t = meta.translation()
    u = t.url
    if t.driver == "postgres":
        name, port = "PostgreSQL", 5432
    else:
        info = ""
        try:
            info = raw.get_server_info() if raw is not None else ""
        except Exception:  # noqa: BLE001 - only a name
            pass
        name, port = ("MariaDB" if "mariadb" in info.lower() else "MySQL" if info else "MySQL/MariaDB"), 3306
    host = u.host or u.query.get("host") or u.query.get("unix_socket") or "localhost"
    if isinstance(host, tuple):
        host = host[0]
    return f"{name} at {host}:{u.port or port}" if not str(host).startswith("/") else f"{name} at {host}"


def lost(side: str, meta: Any, exc: BaseException, *, raw: Any = None, state: str) -> DatabaseFault:
    """The one line for a lost connection: which server, the driver's words, what the target holds."""
    return DatabaseFault(
        f"lost the connection to the {side} {server(meta, raw)} during the metadata copy ({detail(exc)}). {state}",
        kind=LOST,
        item=f"{side} {meta.describe()}",
    )
