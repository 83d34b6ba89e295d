"""SQLAlchemy engines for plikd's metadata databases, and a connection check with a useful error."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event

from pmigrate import dsn
from pmigrate.errors import ConfigError
from pmigrate.metadata import rawtext
from pmigrate.metadata.dialects.mysql import allow_local_files
from pmigrate.redact import redact

CONNECT_TIMEOUT = 10  # seconds, when the connection string sets none (PyMySQL's default too)


def source_engine(meta, *, lock_timeout: int | None = None) -> sa.Engine:
    """An engine on a migration's source: read-only on every driver (see engine())."""
    return engine(meta, read_only=True, lock_timeout=lock_timeout)


def engine(
    meta, *, echo: bool = False, local_infile: bool = False, read_only: bool = False, lock_timeout: int | None = None
) -> sa.Engine:
    """An engine on the database a MetadataConfig names, set up as plikd's driver would be.

    sqlite3: busy timeout (go-sqlite3's default 5 s or _busy_timeout) and
    foreign keys on, as plikd runs it; text that is not UTF-8 is read as
    rawtext.RawText instead of failing. postgres: psycopg 3. mysql: PyMySQL,
    utf8mb4, session time zone UTC (plikd's DATETIME(3) values are naive; see
    values.zone_of() for the zone they are read in). ``local_infile`` (mysql) lets the
    connection send files for LOAD DATA LOCAL; the driver refuses a server's
    request for one except while pmigrate's own bulk load runs
    (dialects.mysql.MysqlLoad).

    ``read_only``: the server itself refuses every write, whatever the
    statement: sqlite3 opened with mode=ro (and from meta.snapshot, the
    private copy of a live source, when there is one), every postgres and
    mysql session's transactions READ ONLY.

    ``lock_timeout``: seconds a statement may wait
    for a lock before the server ends it (postgres lock_timeout; mysql
    lock_wait_timeout and innodb_lock_wait_timeout), set on each connection.
    """
    t = meta.translation()
    url = _sqlite_read_only(meta, t) if read_only and t.driver == "sqlite3" else t.url
    kwargs: dict = {"echo": echo, "pool_pre_ping": t.driver != "sqlite3", "future": True}
    connect_args = dict(t.connect_args)
    if t.driver == "mysql":
        init = ["time_zone='+00:00'"]
        if lock_timeout is not None:
            init.append(f"lock_wait_timeout={int(lock_timeout)}, innodb_lock_wait_timeout={int(lock_timeout)}")
        extra = connect_args.pop("init_command", "")
        if extra:
            init.append(extra[len("SET ") :])  # the DSN's own variables win: they come last
        connect_args["init_command"] = "SET " + ", ".join(init)
        ssl = connect_args.get("ssl")
        if isinstance(ssl, dict):
            connect_args["ssl"] = dict(ssl)
        if local_infile:
            connect_args["local_infile"] = True
    if t.driver == "postgres" and "connect_timeout" not in t.url.query:
        # libpq waits forever for a silent host; a check must end with a message.
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    kwargs["connect_args"] = connect_args
    eng = sa.create_engine(url, **kwargs)
    if t.driver == "mysql" and local_infile:

        @event.listens_for(eng, "connect")
        def _no_local_files(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
            allow_local_files(dbapi_conn, False)  # the capability stays; sending waits for our own LOAD DATA

    if t.driver == "postgres" and lock_timeout is not None:

        @event.listens_for(eng, "connect")
        def _lock_timeout(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
            dbapi_conn.execute(f"SET lock_timeout = '{int(lock_timeout)}s'")
            dbapi_conn.commit()  # a SET rolled back with its transaction would be undone

    if t.driver == "sqlite3":

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
            dbapi_conn.text_factory = rawtext.decode
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys = ON")
            if read_only:
                cur.execute("PRAGMA query_only = ON")
            cur.close()

    elif read_only:
        session = {"postgres": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", "mysql": "SET SESSION TRANSACTION READ ONLY"}

        @event.listens_for(eng, "connect")
        def _read_only(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
            cur = dbapi_conn.cursor()
            cur.execute(session[t.driver])
            cur.close()
            dbapi_conn.commit()  # postgres: a SET rolled back would be undone

    return eng


def _sqlite_read_only(meta, t: dsn.Translation) -> sa.URL:
    """mode=ro on the live file, or mode=ro and immutable (no locking at all) on a snapshot."""
    snapshot = getattr(meta, "snapshot", None)
    if snapshot is not None:
        return t.url.set(database="file:" + quote(str(snapshot)), query={"mode": "ro", "immutable": "1", "uri": "true"})
    return t.url.set(database="file:" + quote(str(dsn.sqlite_path(t))), query={**t.url.query, "mode": "ro", "uri": "true"})


def _sqlite_check(meta, t: dsn.Translation, *, must_exist: bool) -> None:
    path = dsn.sqlite_path(t)
    if must_exist:
        if not path.exists():
            raise ConfigError(f"sqlite3 database {path} does not exist: check MetadataBackendConfig.ConnectionString")
        if path.is_dir():
            raise ConfigError(f"sqlite3 database {path} is a directory: name the database file")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"sqlite3 database {path} is not readable: run as a user who can read it")
    else:
        parent = path.parent
        if not parent.is_dir():
            raise ConfigError(f"folder {parent} for the sqlite3 database does not exist: create it first")
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"folder {parent} for the sqlite3 database is not writable: fix its permissions")


def check_connect(meta, *, must_exist: bool = True, read_only: bool = False) -> None:
    """Open and close one connection; a one-line ConfigError naming the cause and the fix.

    must_exist: a source sqlite3 file must exist (sqlite would silently create
    an empty one); a target may be created. read_only: opened as a source is.
    """
    t = meta.translation()
    if t.driver == "sqlite3":
        _sqlite_check(meta, t, must_exist=must_exist)
        if not dsn.sqlite_path(t).exists():
            return  # opening would create the file: a check writes nothing
    eng = engine(meta, read_only=read_only)
    try:
        with eng.connect() as conn:
            # sqlite3 opens any file lazily: reading its schema proves it is a database.
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master" if t.driver == "sqlite3" else "SELECT 1")
    except sa.exc.SQLAlchemyError as exc:
        raise ConfigError(explain(exc, meta)) from None
    finally:
        eng.dispose()


def explain(exc: BaseException, meta) -> str:
    """One redacted line for a failure to reach a metadata database."""
    where = meta.describe()
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    low = text.lower()
    code = getattr(orig, "args", (None,))[0] if meta.driver == "mysql" else None
    if meta.driver == "mysql" and code == 1045 or "password authentication failed" in low or "access denied" in low:
        fix = "wrong user or password: fix the credentials in the ConnectionString"
    elif code == 1049 or ("database" in low and "does not exist" in low) or "unknown database" in low:
        fix = "the database does not exist: create it, or fix dbname in the ConnectionString"
    elif code in (2002, 2003, 2005) or any(
        s in low for s in ("connection refused", "could not connect", "can't connect", "name or service not known",
                           "could not translate host", "timeout", "timed out", "no route to host")
    ):  # fmt: skip
        fix = "server unreachable: check host and port, and that the server is running"
    elif "unable to open database file" in low:
        fix = "cannot open the sqlite3 file: check the path and its folder's permissions"
    elif "file is not a database" in low:
        fix = "the file is not an SQLite database: check the ConnectionString"
    else:
        fix = "check the ConnectionString and the server"
    return redact(f"cannot connect to {where}: {fix} ({text})")


def sqlite_file(meta) -> Path | None:
    """The database file of a sqlite3 config, else None."""
    t = meta.translation()
    return dsn.sqlite_path(t) if t.driver == "sqlite3" else None
