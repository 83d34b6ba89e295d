"""Lock waits on the metadata databases: named while they last, ended by --lock-timeout.

Another session holding a table (``LOCK TABLE files IN ACCESS EXCLUSIVE
MODE`` on PostgreSQL, ``LOCK TABLES files WRITE`` on MariaDB, a transaction
holding rows) makes a statement of the copy wait, silently and, by the
servers' defaults, for a day or forever. So:

- every connection of the copy, source and target, gets a lock timeout as it
  opens (db.engine: PostgreSQL ``lock_timeout``, MySQL ``lock_wait_timeout``
  for table and metadata locks and ``innodb_lock_wait_timeout`` for rows):
  the server ends the wait, the copy rolls the target back and says on whom
  it gave up;
- a watcher per server (a thread with a connection of its own) looks once a
  second at what the copy's connections wait for, and after WARN_AFTER
  seconds of one wait says on stderr what and on whom: PostgreSQL names the
  holder (pg_blocking_pids, pg_stat_activity: pid, user, application, state,
  query start); MySQL/MariaDB names it for a row lock (InnoDB's lock waits)
  and for a table lock where the server tells (MariaDB's metadata_lock_info
  plugin, MySQL's performance_schema), else lists the other sessions.

The holder's query text is never shown: another session's statement may
hold a secret.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pmigrate.metadata import faults
from pmigrate.quote import shown

log = logging.getLogger("pmigrate.lockwait")

WARN_AFTER = 3.0  # seconds a statement waits before the wait is named
POLL = 1.0  # seconds between two looks
NAMED = 3  # sessions listed when the server does not say which one holds a table lock

_OURS: set[int] = set()  # server connection ids (pids) of the run's own sessions, on every side
_OURS_LOCK = threading.Lock()
MYSQL_NAME_MAX = 64  # characters in a GET_LOCK name (mysql 5.7+)


def mysql_lock_name(database: str) -> str:
    """The GET_LOCK name of a target database (names are server-wide, hence the database in it).

    Here, not in pmigrate.lock which takes it: the run's own lock is one of the sessions a wait names.
    """
    name = f"pmigrate:{database}"
    if len(name) > MYSQL_NAME_MAX:
        name = "pmigrate:" + hashlib.sha256(database.encode()).hexdigest()[:32]
    return name


@dataclass(frozen=True)
class Wait:
    """One wait of one of the run's connections, as last seen."""

    conn: int
    seconds: float
    what: str  # "a lock on table files (RowExclusiveLock)"
    holders: str  # "pid 4242 (user ..., ...)", or what is known of them
    key: tuple = ()  # what makes it the same wait from one look to the next


def sentence(side: str, where: str, w: Wait) -> str:
    return f"the {side} {where} has waited {w.seconds:.0f} s for {w.what}, held by {w.holders}"


class Watch:
    """The run's connections to one server, and one thread that looks at what they wait for."""

    def __init__(self, side: str, meta: Any, engine: Any, *, timeout: float, warn_after: float = WARN_AFTER) -> None:
        from sqlalchemy import event

        self.side = side
        self.meta = meta
        self.driver = meta.driver
        self.where = meta.describe()
        self.timeout = timeout
        self.warn_after = min(warn_after, timeout / 2)
        self.last: Wait | None = None
        self.last_at = 0.0
        self.warnings: list[str] = []
        self._ids: dict[int, int] = {}
        self._mutex = threading.Lock()
        self._warned: set[tuple] = set()
        self._stop = threading.Event()
        self._engine = engine
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "checkin", self._checkin)
        self._thread = threading.Thread(target=self._run, name=f"pmigrate-lockwait-{side}", daemon=True)
        self._thread.start()

    # -- the run's connections

    def _checkout(self, dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        cid = session_id(dbapi_conn)
        if cid is not None:
            with self._mutex:
                self._ids[cid] = self._ids.get(cid, 0) + 1
            with _OURS_LOCK:
                _OURS.add(cid)

    def _checkin(self, dbapi_conn: Any, _record: Any) -> None:
        cid = session_id(dbapi_conn) if dbapi_conn is not None else None
        if cid is None:
            return
        with self._mutex:
            n = self._ids.get(cid, 0) - 1
            if n > 0:
                self._ids[cid] = n
            else:
                self._ids.pop(cid, None)

    def stop(self) -> None:
        from sqlalchemy import event

        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            event.remove(self._engine, "checkout", self._checkout)
            event.remove(self._engine, "checkin", self._checkin)

    # -- looking

    def _run(self) -> None:
        from pmigrate.metadata import db

        engine = None
        conn = None
        try:
            while not self._stop.wait(POLL):
                with self._mutex:
                    ids = sorted(self._ids)
                if not ids:
                    continue
                try:
                    if conn is None:
                        engine = engine or db.engine(self.meta)
                        conn = _autocommit(engine.raw_connection())
                    waits = _look(self.driver, conn.driver_connection, ids)
                except Exception:  # a server gone away is the copy's to report
                    log.debug("lock watch on %s failed", self.where, exc_info=True)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                    conn = None
                    continue
                for w in waits:
                    self.last, self.last_at = w, time.monotonic()
                    if w.seconds >= self.warn_after and w.key not in self._warned:
                        self._warned.add(w.key)
                        text = f"{sentence(self.side, self.where, w)}; pmigrate gives up after {self.timeout:g} s (--lock-timeout)"
                        self.warnings.append(text)
                        log.warning("%s", text)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.dispose()


class Watches:
    """The watches of one copy, by side ('source', 'target')."""

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout
        self.sides: dict[str, tuple[Any, Watch | None]] = {}

    def watch(self, side: str, meta: Any, engine: Any) -> None:
        w = Watch(side, meta, engine, timeout=self.timeout) if meta.driver in ("postgres", "mysql") else None
        self.sides[side] = (meta, w)

    @property
    def warnings(self) -> list[str]:
        return [text for _, w in self.sides.values() if w is not None for text in w.warnings]

    def stop(self) -> None:
        for _, w in self.sides.values():
            if w is not None:
                w.stop()

    def fault(self, exc: BaseException, *, state: str, raws: dict[str, Any] | None = None) -> faults.DatabaseFault | None:
        """The named failure for a lock timeout or a lost connection; None for any other error.

        A stop (Ctrl-C, SIGTERM, SIGHUP) that cut a statement short is the stop, not a fault.
        """
        if isinstance(exc, KeyboardInterrupt):
            return None
        if faults.is_lock_timeout(exc):
            return self._timeout(exc, state=state)
        raws = raws or {}
        if faults.is_lost(exc) or any(faults.connection_gone(r) for r in raws.values()):
            side = _lost_side(raws, list(self.sides))
            if side in self.sides:
                return faults.lost(side, self.sides[side][0], exc, raw=raws.get(side), state=state)
        return None

    def _timeout(self, exc: BaseException, *, state: str) -> faults.DatabaseFault:
        now = time.monotonic()
        # The wait last seen, if seen just before the server ended it (not an older one since let go).
        seen = [w for _, w in self.sides.values() if w is not None and w.last is not None and now - w.last_at < 3 * POLL]
        watch = max(seen, key=lambda w: w.last_at) if seen else None
        if watch is not None:
            last = watch.last
            where = f"on the {watch.side} {watch.where}: {last.what}, held by {last.holders}"
            item = f"{watch.side} {watch.where}"
        else:
            where = f"for a lock ({faults.detail(exc)})"
            item = "metadata"
        return faults.DatabaseFault(
            f"gave up after waiting {self.timeout:g} s (--lock-timeout) {where}. {state} "
            "Let that session finish (or end it), or raise --lock-timeout.",
            kind=faults.LOCK_TIMEOUT,
            item=item,
        )


def _lost_side(raws: dict[str, Any], sides: Sequence[str]) -> str:
    """Which side's connection went: the one its driver knows to be gone, else the target."""
    for side in ("target", "source"):
        if faults.connection_gone(raws.get(side)):
            return side
    return "target" if "target" in sides else (sides[0] if sides else "target")


def _autocommit(proxy: Any) -> Any:
    raw = proxy.driver_connection
    if hasattr(raw, "autocommit") and not callable(raw.autocommit):  # psycopg
        raw.rollback()
        raw.autocommit = True
    else:
        raw.autocommit(True)
    return proxy


def session_id(dbapi_conn: Any) -> int | None:
    """The server's id of a connection (postgres pid, mysql connection id), without a query."""
    try:
        info = getattr(dbapi_conn, "info", None)
        if info is not None and hasattr(info, "backend_pid"):
            return int(info.backend_pid)
        if hasattr(dbapi_conn, "thread_id"):
            return int(dbapi_conn.thread_id())
    except Exception:  # noqa: BLE001 - a closed connection has none
        return None
    return None


def _look(driver: str, raw: Any, ids: Sequence[int]) -> list[Wait]:
    return _pg_waits(raw, ids) if driver == "postgres" else _mysql_waits(raw, ids)


def _rows(raw: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
    cur = raw.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


def _when(ts: Any) -> str:
    return ts.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if ts is not None else "unknown"


# -- postgres -------------------------------------------------------------------


def _pg_waits(raw: Any, ids: Sequence[int]) -> list[Wait]:
    since = "COALESCE(l.waitstart, a.query_start)" if raw.info.server_version >= 140000 else "a.query_start"
    rows = _rows(
        raw,
        f"SELECT a.pid, pg_blocking_pids(a.pid), extract(epoch FROM clock_timestamp() - {since})::float8, "
        "l.locktype, l.mode, CASE WHEN l.relation IS NOT NULL THEN l.relation::regclass::text END "
        "FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted "
        "WHERE a.pid = ANY(%s) AND a.wait_event_type = 'Lock'",
        (list(ids),),
    )
    out = []
    for pid, blockers, seconds, locktype, mode, relation in rows:
        blockers = list(blockers or [])
        if relation:
            what = f"a lock on table {shown(relation)} ({mode})"
        elif locktype == "transactionid":
            what = f"a row lock ({mode} on another transaction)"
        else:
            what = f"a {locktype or 'lock'} lock ({mode})" if mode else "a lock"
        out.append(Wait(pid, float(seconds or 0), what, _pg_holders(raw, blockers), key=(pid, relation, tuple(blockers))))
    return out


def _pg_holders(raw: Any, pids: Sequence[int]) -> str:
    if not pids:
        return "a session that just let go"
    rows = _rows(
        raw,
        "SELECT pid, usename, application_name, state, query_start, host(client_addr) FROM pg_stat_activity WHERE pid = ANY(%s) ORDER BY pid",
        (list(pids),),
    )
    return _listed(
        "pid",
        pids,
        rows,
        lambda _pid, user, app, state, started, addr: f"user {shown(user or '?')}, application {shown(app) if app else 'none'}, "
        f"{state or 'state unknown'}, query started {_when(started)}, from {addr or 'a local socket'}",
    )


def _listed(label: str, ids: Sequence[int], rows: Sequence[Sequence[Any]], describe: Any) -> str:
    """'label N (details), ...' for the sessions ids in order; rows are (id, ...) as found, one gone says only its id."""
    known = {r[0]: r for r in rows}
    return ", ".join(f"{label} {i} ({describe(*known[i])})" if i in known else f"{label} {i}" for i in ids)


# -- mysql / mariadb ----------------------------------------------------------------

_TABLE_IN = re.compile(r"\b(?:INTO|FROM|TABLE|UPDATE|JOIN|LIKE)\s+(?:TABLE\s+)?`((?:[^`]|``)+)`", re.I)


def _mysql_waits(raw: Any, ids: Sequence[int]) -> list[Wait]:
    marks = ", ".join(["%s"] * len(ids))
    out = {w.conn: w for w in _innodb_waits(raw, ids, marks)}
    rows = _rows(
        raw,
        f"SELECT ID, STATE, TIME, INFO FROM information_schema.PROCESSLIST WHERE ID IN ({marks}) "
        "AND STATE LIKE 'Waiting for%%lock%%'",
        tuple(ids),
    )
    for cid, state, seconds, info in rows:
        if cid in out:
            continue
        m = _TABLE_IN.search(info or "")
        table = m.group(1).replace("``", "`") if m else None
        # A statement on a table also locks the tables its foreign keys tie it to (MariaDB, MySQL 8).
        what = f"a lock ({state}) to use table {shown(table)} or one its foreign keys tie it to" if table else f"a lock ({state})"
        holders = _mysql_table_holders(raw, table, ids) if table else None
        if holders is None:
            holders = _mysql_others(raw, ids)
        out[cid] = Wait(cid, float(seconds or 0), what, holders, key=(cid, table))
    return list(out.values())


def _innodb_waits(raw: Any, ids: Sequence[int], marks: str) -> list[Wait]:
    """Row lock waits, holder named (MariaDB, MySQL 5.7: information_schema's InnoDB lock tables)."""
    try:
        rows = _rows(
            raw,
            "SELECT r.trx_mysql_thread_id, TIMESTAMPDIFF(SECOND, r.trx_wait_started, NOW()), b.trx_mysql_thread_id, "
            "rl.lock_table, rl.lock_mode FROM information_schema.INNODB_LOCK_WAITS w "
            "JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id "
            "JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id "
            "LEFT JOIN information_schema.INNODB_LOCKS rl ON rl.lock_id = w.requested_lock_id "
            f"WHERE r.trx_mysql_thread_id IN ({marks})",
            tuple(ids),
        )
    except Exception:  # noqa: BLE001 - MySQL 8 moved them to performance_schema: the table lock path still names the wait
        return []
    by_conn: dict[int, list] = {}
    for cid, seconds, blocker, table, mode in rows:
        by_conn.setdefault(cid, [seconds, set(), table, mode])[1].add(blocker)
    out = []
    for cid, (seconds, blockers, table, mode) in by_conn.items():
        what = f"a row lock in table {shown(table)} ({mode})" if table else "a row lock"
        holders = _mysql_sessions(raw, sorted(blockers)) or ", ".join(f"connection {b}" for b in sorted(blockers))
        out.append(Wait(cid, float(seconds or 0), what, holders, key=(cid, table, tuple(sorted(blockers)))))
    return out


def _mysql_table_holders(raw: Any, table: str, ids: Sequence[int]) -> str | None:
    """Who holds a table lock, where the server tells: MariaDB's metadata_lock_info, MySQL's performance_schema."""
    ours = _ours(raw, ids)
    marks = ", ".join(["%s"] * len(ours))
    queries = (
        "SELECT THREAD_ID FROM information_schema.METADATA_LOCK_INFO WHERE TABLE_SCHEMA = DATABASE() "
        f"AND TABLE_NAME = %s AND THREAD_ID NOT IN ({marks})",
        "SELECT t.PROCESSLIST_ID FROM performance_schema.metadata_locks m JOIN performance_schema.threads t "
        "ON t.THREAD_ID = m.OWNER_THREAD_ID WHERE m.OBJECT_SCHEMA = DATABASE() AND m.OBJECT_NAME = %s "
        f"AND m.LOCK_STATUS = 'GRANTED' AND t.PROCESSLIST_ID NOT IN ({marks})",
    )
    for sql in queries:
        try:
            holders = sorted({r[0] for r in _rows(raw, sql, (table, *ours)) if r[0] is not None})
        except Exception:  # noqa: BLE001 - not on this server
            continue
        if holders:
            return _mysql_sessions(raw, holders)
    return None


def _ours(raw: Any, ids: Sequence[int]) -> list[int]:
    """The run's sessions on this server: the watched ones, the watcher, the run's own target lock."""
    with _OURS_LOCK:
        out = set(_OURS) | set(ids)
    with contextlib.suppress(Exception):
        out.add(int(_rows(raw, "SELECT CONNECTION_ID()")[0][0]))
    with contextlib.suppress(Exception):
        cur_db = _rows(raw, "SELECT DATABASE()")[0][0] or ""
        holder = _rows(raw, "SELECT IS_USED_LOCK(%s)", (mysql_lock_name(cur_db),))[0][0]
        if holder is not None:
            out.add(int(holder))
    return sorted(out)


def _mysql_others(raw: Any, ids: Sequence[int]) -> str:
    """The sessions that may hold a table lock, when the server does not say which: same database first."""
    ours = _ours(raw, ids)
    marks = ", ".join(["%s"] * len(ours))
    rows = _rows(
        raw,
        "SELECT ID FROM information_schema.PROCESSLIST "
        f"WHERE ID NOT IN ({marks}) AND USER <> 'system user' AND COMMAND NOT IN ('Daemon', 'Binlog Dump', 'Killed') "
        "AND (STATE IS NULL OR STATE NOT LIKE 'Waiting for%%') "
        f"ORDER BY (DB <=> DATABASE()) DESC, TIME DESC LIMIT {NAMED + 1}",
        tuple(ours),
    )
    found = [r[0] for r in rows]
    if not found:
        return "a session the server does not name"
    more = ", and others" if len(found) > NAMED else ""
    listed = _mysql_sessions(raw, found[:NAMED])
    return (
        "another session, which the server does not name (MariaDB does with its metadata_lock_info plugin); "
        f"the sessions that may hold it, on this database first: {listed}{more}"
    )


def _mysql_sessions(raw: Any, cids: Sequence[int]) -> str:
    marks = ", ".join(["%s"] * len(cids))
    rows = _rows(
        raw,
        f"SELECT ID, USER, HOST, DB, COMMAND, TIME FROM information_schema.PROCESSLIST WHERE ID IN ({marks})",
        tuple(cids),
    )
    return _listed(
        "connection",
        cids,
        rows,
        lambda _cid, user, host, dbname, command, seconds: f"user {shown(user or '?')}, from {shown(host or '?')}, "
        f"database {shown(dbname or 'none')}, {shown(command or '?')} for {seconds or 0} s",
    )

