"""One run per target: a lock that the target's server, or the kernel, holds for the run and drops when it ends.

A run that writes takes, before any stage looks at the target:
- metadata on postgres: a session advisory lock (pg_try_advisory_lock) on a
  connection of its own, kept open for the whole run. Its application_name,
  ``pmigrate PID SINCE HOST``, names the holder (pg_locks + pg_stat_activity).
- metadata on mysql/mariadb: GET_LOCK('pmigrate:<database>', 0) on a
  connection of its own (lock names are server-wide, hence the database in
  the name). MariaDB shows no client details to other sessions by default, so
  the holder writes them to a file in the temporary folder, keyed by server
  and database, and trusted only while it names the connection that holds the
  lock (IS_USED_LOCK); a holder on another host is named by the server's
  processlist (client address, idle time).
- metadata on sqlite3, and the blob journal: flock on a file beside them
  (``<database>.pmigrate-lock``, ``<journal>.lock``) that holds the holder's
  details, removed when the run ends.

A server drops a session's locks when its connection closes, and the kernel
drops a process's flocks when it exits: a run that crashes or is killed with
SIGKILL leaves no stale lock. A dry run and ``pmigrate verify`` write nothing
and take no lock; they only warn when a run holds one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pmigrate.errors import ConfigError
from pmigrate.options import RunOptions
from pmigrate.report import Report

PG_KEY = (0x706D6967, 0x72617465)  # "pmig", "rate": the two int4 keys of the advisory lock
FILE_WAIT = 0.3  # seconds a file lock is retried: a dry run's look holds it for microseconds


class TargetBusy(ConfigError):
    """Another pmigrate holds the target: nothing was written."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: a pmigrate process, or what the server knows of the connection."""

    pid: int | None = None
    host: str = ""
    since: float | None = None  # epoch seconds
    via: str = ""  # what names the holder when its pid is unknown

    def who(self) -> str:
        if self.pid is not None:
            return f"pid {self.pid} on {self.host or 'an unknown host'}"
        return self.via or "unknown"

    def sentence(self, target: str) -> str:
        since = f" since {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(self.since))}" if self.since else ""
        return f"another pmigrate ({self.who()}) has been migrating into {target}{since}"

    @classmethod
    def me(cls) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(), since=time.time())

    def dumps(self, **extra: Any) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "since": self.since, **extra}) + "\n"

    @classmethod
    def loads(cls, text: str) -> tuple[Holder, dict] | None:
        try:
            d = json.loads(text)
            return cls(pid=int(d["pid"]), host=str(d["host"]), since=float(d["since"])), d
        except (ValueError, KeyError, TypeError):
            return None


class Lock(Protocol):
    target: str  # the target, described without secrets

    def acquire(self) -> Holder | None:
        """Take the lock (None), or name who holds it."""

    def probe(self) -> Holder | None:
        """Who holds the lock, without taking it; None when free."""

    def release(self) -> None: ...


# -- files: sqlite3 targets and the journal -------------------------------------


class FileLock:
    """flock on a file that holds its holder's details; removed on release."""

    def __init__(self, path: Path, target: str) -> None:
        self.path = path
        self.target = target
        self._fd: int | None = None

    def acquire(self) -> Holder | None:
        deadline = time.monotonic() + FILE_WAIT
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise ConfigError(f"cannot create the lock file {self.path} ({exc.strerror}): fix the folder's permissions") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() < deadline:
                    os.close(fd)
                    time.sleep(0.02)
                    continue
                holder = _read_holder(fd)
                os.close(fd)
                return holder
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed it as we opened it: take the new one
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, Holder.me().dumps().encode(), 0)
        except OSError:
            pass  # a full disk: the flock holds all the same, only a refused run's message lacks the details
        self._fd = fd
        return None

    def probe(self) -> Holder | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None  # absent (or unreadable): no run holds it that we can see
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while locked: a run that opened it meanwhile sees it gone and retries
        os.close(self._fd)
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read_holder(fd: int) -> Holder:
    parsed = Holder.loads(os.pread(fd, 4096, 0).decode(errors="replace"))
    return parsed[0] if parsed else Holder(via="holder unknown")


# -- servers: a connection of the run's own ------------------------------------------


class _SessionLock:
    """A lock that lives as long as one connection to the target's server."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta
        self.target = meta.describe()
        self._engine: Any = None
        self._conn: Any = None

    def _connect(self) -> Any:
        from pmigrate.metadata import db

        self._engine = db.engine(self.meta)
        return self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def _close(self, conn: Any) -> None:
        conn.close()  # the server drops the session's locks with it
        self._engine.dispose()

    def _holder(self, conn: Any) -> Holder | None:
        raise NotImplementedError

    def probe(self) -> Holder | None:
        conn = self._connect()
        try:
            return self._holder(conn)
        finally:
            self._close(conn)

    def release(self) -> None:
        if self._conn is not None:
            self._close(self._conn)
            self._conn = None


# -- postgres -----------------------------------------------------------------------


class PostgresLock(_SessionLock):
    """A session advisory lock; application_name carries the holder's details."""

    def acquire(self) -> Holder | None:
        conn = self._connect()
        me = Holder.me()
        conn.exec_driver_sql("SELECT set_config('application_name', %s, false)", (f"pmigrate {me.pid} {int(me.since)} {me.host}"[:63],))
        with contextlib.suppress(Exception):  # postgres 14+: a DBA's idle timeout would end the session, and the lock
            conn.exec_driver_sql("SELECT set_config('idle_session_timeout', '0', false)")
        for _ in range(3):
            if conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({PG_KEY[0]}, {PG_KEY[1]})").scalar():
                self._conn = conn
                return None
            holder = self._holder(conn)
            if holder is not None:
                break  # else it was released in between: try again
        self._close(conn)
        return holder or Holder(via="holder unknown")

    def _holder(self, conn: Any) -> Holder | None:
        row = conn.exec_driver_sql(
            "SELECT a.application_name, a.pid, host(a.client_addr), extract(epoch FROM a.backend_start)::float8 "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            f"AND l.classid = {PG_KEY[0]} AND l.objid = {PG_KEY[1]} "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).first()
        if row is None:
            return None
        name, backend, addr, started = row
        parts = (name or "").split(" ", 3)
        if len(parts) == 4 and parts[0] == "pmigrate" and parts[1].isdigit() and parts[2].isdigit():
            return Holder(pid=int(parts[1]), host=parts[3], since=float(parts[2]))
        return Holder(via=f"postgres backend {backend} from {addr or 'a local socket'}", since=started)


# -- mysql / mariadb ----------------------------------------------------------------


class MysqlLock(_SessionLock):
    """GET_LOCK on a connection of its own; the holder's details in a file keyed by server and database."""

    def __init__(self, meta: Any) -> None:
        from pmigrate import dsn
        from pmigrate.metadata.lockwait import mysql_lock_name

        super().__init__(meta)
        t = meta.translation()
        self.name = mysql_lock_name(t.url.database or "")
        digest = hashlib.sha256(repr(dsn.identity(t)).encode()).hexdigest()[:16]
        self.info = Path(tempfile.gettempdir()) / f"pmigrate-lock-{digest}.json"

    def acquire(self) -> Holder | None:
        conn = self._connect()
        # The server ends a connection idle for wait_timeout (8 hours by default), and its locks with it.
        conn.exec_driver_sql("SET SESSION wait_timeout = 31536000")
        for _ in range(3):
            if conn.exec_driver_sql("SELECT GET_LOCK(%s, 0)", (self.name,)).scalar() == 1:
                self._conn = conn
                self._write_info(conn)
                return None
            holder = self._holder(conn)
            if holder is not None:
                break
        self._close(conn)
        return holder or Holder(via="holder unknown")

    def _holder(self, conn: Any) -> Holder | None:
        cid = conn.exec_driver_sql("SELECT IS_USED_LOCK(%s)", (self.name,)).scalar()
        if cid is None:
            return None
        with contextlib.suppress(OSError):
            parsed = Holder.loads(self.info.read_text())
            if parsed and parsed[1].get("connection") == cid:
                return parsed[0]
        row = conn.exec_driver_sql("SELECT HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = %s", (cid,)).first()
        if row is None:
            return Holder(via=f"connection {cid}")
        host, idle = row
        client = (host or "").rsplit(":", 1)[0] or "a local socket"
        return Holder(via=f"connection {cid} from {client}", since=time.time() - (idle or 0))

    def _write_info(self, conn: Any) -> None:
        cid = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
        text = Holder.me().dumps(connection=cid, target=self.target)
        # Shared folder: never follow a link planted there; a file another user owns is left alone.
        with contextlib.suppress(OSError):
            fd = os.open(self.info, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                os.ftruncate(fd, 0)
                os.write(fd, text.encode())
            finally:
                os.close(fd)

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                parsed = Holder.loads(self.info.read_text())
                if parsed and parsed[0].pid == os.getpid():
                    self.info.unlink()
        super().release()


# -- the run's locks ------------------------------------------------------------------


def metadata_lock(meta: Any) -> Lock:
    """The lock of a metadata target, by its driver."""
    if meta.driver == "postgres":
        return PostgresLock(meta)
    if meta.driver == "mysql":
        return MysqlLock(meta)
    from pmigrate.metadata import db

    path = Path(os.path.realpath(db.sqlite_file(meta)))
    return FileLock(path.with_name(path.name + ".pmigrate-lock"), meta.describe())


def journal_lock(dst: Any, *, opts: RunOptions) -> Lock:
    """The lock of a data target: on its journal, which only one run may write."""
    from pmigrate.journal import locate

    path, _ = locate(dst, opts.journal)
    return FileLock(path.with_name(path.name + ".lock"), f"{dst.data.describe()} (journal {path})")


def _locks(dst: Any, *, opts: RunOptions) -> list[Lock]:
    out = []
    if opts.metadata:
        out.append(metadata_lock(dst.metadata))
    if opts.data:
        out.append(journal_lock(dst, opts=opts))
    return out


@contextlib.contextmanager
def hold(dst: Any, *, command: str, opts: RunOptions, report: Report) -> Iterator[None]:
    """The target's locks for the run; TargetBusy (exit 2) when another run holds one.

    A dry run and verify write nothing: they take no lock, and warn when a run holds one.
    """
    locks = _locks(dst, opts=opts)
    if command != "migrate" or opts.dry_run:
        for lk in locks:
            with contextlib.suppress(Exception):  # only a hint: the stages report an unreachable target
                holder = lk.probe()
                if holder is not None:
                    effect = "these figures will change as it goes" if opts.dry_run else "a difference may be its work in progress"
                    report.warn(f"{holder.sentence(lk.target)}: {effect}")
        yield
        return
    taken: list[Lock] = []
    try:
        for lk in locks:
            holder = lk.acquire()
            if holder is not None:
                raise TargetBusy(f"{holder.sentence(lk.target)}: let it finish (or stop it), then run this command again")
            taken.append(lk)
        yield
    finally:
        for lk in reversed(taken):
            lk.release()
