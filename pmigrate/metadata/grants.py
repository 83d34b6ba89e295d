"""Whether the target database user may do what the metadata copy will do, asked before anything is written.

Without this, a user who may connect and read but not create tables or
write rows passes every check and fails halfway through the load. The
server is asked in ways that write nothing:
- postgres: has_schema_privilege, has_table_privilege and
  has_database_privilege, which follow role membership.
- mysql/mariadb: each statement the copy will run is sent in a form that
  fails either on the privilege (error 1142) or right after it: CREATE TABLE
  naming a column twice (1060), EXPLAIN of INSERT, UPDATE and DELETE with
  WHERE 1=0. SHOW GRANTS and information_schema were rejected: MariaDB's
  information_schema leaves out what roles grant, and both would need the
  server's wildcard matching redone here.
- sqlite3: the file and its folder writable (sqlite writes its journal beside it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from pmigrate import ownership
from pmigrate.errors import ConfigError
from pmigrate.metadata import dialects
from pmigrate.options import RunOptions

DENIED = {1142, 1044}  # mysql: command denied for a table; access denied to a database
ROWS = ("SELECT", "INSERT", "UPDATE")  # a merge by primary key
RECORD = ("SELECT", "INSERT", "DELETE")  # pmigrate's record: its row replaced on every run


@dataclass
class Needs:
    create: bool = False  # new tables: Plik's schema on an empty target, pmigrate's record, unknown tables
    temp: bool = False  # postgres merges each table through a temporary one
    # (table, one of its columns, privileges) for each table rows go into; one the target lacks
    # yet stands for what the user may do on any table of the database (mysql; postgres skips it)
    write: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


def needs(plan: Any, *, opts: RunOptions) -> Needs:
    """What the copy planned in ``plan`` (copier.Plan) will ask of the target user."""
    fresh = plan.state == "empty"
    claim = plan.owner.state in (ownership.OWNED, ownership.EMPTY)
    out = Needs(create=fresh or claim)
    prune = opts.prune and plan.owner.owned
    for t in [] if fresh else plan.tables:
        if t.dst_types is None:
            out.create = True  # an unknown table the target lacks
            continue
        out.write.append((t.name, t.columns[0].name, ROWS + ("DELETE",) if prune or not t.pk else ROWS))
        out.temp = out.temp or bool(t.pk)
    if claim:
        out.write.append((ownership.OWNER_TABLE, "part", RECORD))
    return out


def check(plan: Any, meta: Any, *, opts: RunOptions) -> str:
    """ConfigError naming what the target user may not do; returns the postgres schema written to ("" elsewhere).

    ``plan`` is the copier's, ``meta`` the target's MetadataConfig.
    """
    need = needs(plan, opts=opts)
    driver = plan.dst_driver
    if driver == "sqlite3":
        _sqlite(meta)
        return ""
    with plan.dst_engine.connect() as conn:
        try:
            if driver == "postgres":
                schema, user, database, missing = _postgres(conn, need)
            else:
                schema, database = "", conn.engine.url.database
                user, missing = _mysql(conn, need, database)
        finally:
            conn.rollback()
    if missing:
        raise ConfigError(
            f"the target user {user} lacks {'; '.join(missing)} in {plan.dst_desc}; nothing written: "
            f"{'; '.join(_grants(driver, missing, schema=schema, user=user, database=database))}, or use a user that has them"
        )
    return schema


def _sqlite(meta: Any) -> None:
    from pmigrate.metadata import db

    path = db.sqlite_file(meta)
    if path is None or not path.exists():
        return  # created by the run: its folder was checked already
    for p in (path, path.parent):
        if not os.access(p, os.W_OK):
            raise ConfigError(
                f"sqlite3 database {path} is not writable by this user ({'the file' if p == path else 'its folder'}): "
                "fix the permissions (sqlite writes its journal beside the file), or choose another ConnectionString"
            )


def _postgres(conn: Any, need: Needs) -> tuple[str, str, str, list[str]]:
    schema, user, database = conn.exec_driver_sql("SELECT current_schema(), current_user, current_database()").one()
    if schema is None:
        raise ConfigError(
            f"the target user {user} has no schema to write to in database {database} (its search_path names none "
            "that exists): create one, or set search_path in the ConnectionString"
        )
    missing = []
    ask = sa.text("SELECT has_schema_privilege(:s, 'USAGE'), has_schema_privilege(:s, 'CREATE')")
    usage, create = conn.execute(ask, {"s": schema}).one()
    if not usage:
        missing.append(f"USAGE on schema {schema}")
    if need.create and not create:
        missing.append(f"CREATE on schema {schema}")
    if need.temp and not conn.exec_driver_sql("SELECT has_database_privilege(current_database(), 'TEMPORARY')").scalar():
        missing.append(f"TEMPORARY on database {database}")
    q = lambda n: dialects.quote("postgres", n)  # noqa: E731
    lacking: dict[str, list[str]] = {}  # privilege -> tables
    for table, _column, privileges in need.write:
        name = f"{q(schema)}.{q(table)}"
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": name}).scalar() is None:
            continue  # created by the run, and so owned by this user
        # One privilege per call: given a list, has_table_privilege answers whether any is held.
        for p in privileges:
            if not conn.execute(sa.text("SELECT has_table_privilege(:t, :p)"), {"t": name, "p": p}).scalar():
                lacking.setdefault(p, []).append(table)
    return schema, user, database, missing + _on_tables(lacking)


def _mysql(conn: Any, need: Needs, database: str | None) -> tuple[str, list[str]]:
    user = conn.exec_driver_sql("SELECT CURRENT_USER()").scalar() or ""
    name, _, host = user.rpartition("@")
    user = f"'{name}'@'{host}'" if name else user
    q = lambda n: dialects.quote("mysql", n)  # noqa: E731
    missing = []
    # Never created: a column named twice fails right after the privilege check.
    probe = f"CREATE TABLE {q(ownership.OWNER_TABLE)} (pmigrate_probe INT, pmigrate_probe INT)"
    if need.create and _denied(conn, probe):
        missing.append(f"CREATE on database {database}")
    # The key-collision check (collisions.py) streams the source's keys into a temporary table;
    # a fresh target is loaded into staging tables renamed at the end, a stopped run's dropped.
    probes = [("CREATE TEMPORARY TABLES", f"CREATE TEMPORARY TABLE {q('pmigrate_probe')} (pmigrate_probe INT, pmigrate_probe INT)")]
    if need.create:
        probes += [
            ("ALTER", f"ALTER TABLE {q('pmigrate_probe_absent')} ADD COLUMN pmigrate_probe INT"),
            ("DROP", f"DROP TABLE {q('pmigrate_probe_absent')}"),
        ]
    for privilege, sql in probes:
        if _denied(conn, sql):
            missing.append(f"{privilege} on database {database}")
    lacking: dict[str, list[str]] = {}  # privilege -> tables
    for table, column, privileges in need.write:
        t, c = q(table), q(column)
        for p in privileges:
            if _denied(conn, _EXPLAIN[p].format(t=t, c=c)):
                lacking.setdefault(p, []).append(table)
    return user, missing + _on_tables(lacking)


# Checked by the server, table missing or not, before it plans anything; nothing runs.
_EXPLAIN = {
    "SELECT": "EXPLAIN SELECT {c} FROM {t} WHERE 1 = 0",
    "INSERT": "EXPLAIN INSERT INTO {t} ({c}) VALUES (NULL)",
    "UPDATE": "EXPLAIN UPDATE {t} SET {c} = {c} WHERE 1 = 0",
    "DELETE": "EXPLAIN DELETE FROM {t} WHERE 1 = 0",
}


def _on_tables(lacking: dict[str, list[str]]) -> list[str]:
    """'UPDATE on users, tokens, uploads and 6 more', one entry per privilege."""
    out = []
    for privilege, tables in lacking.items():
        more = f" and {len(tables) - 3} more" if len(tables) > 3 else ""
        out.append(f"{privilege} on {', '.join(tables[:3])}{more}")
    return out


def _denied(conn: Any, sql: str) -> bool:
    """True when mysql refuses sql for a privilege; any other outcome, error or not, means it may."""
    try:
        conn.exec_driver_sql(sql).close()
    except sa.exc.DBAPIError as exc:
        code = getattr(exc.orig, "args", (None,))[0]
        return code in DENIED
    return False


def _grants(driver: str, missing: list[str], *, schema: str, user: str, database: str | None) -> list[str]:
    """The grants that would do, for the message."""
    lacking = " ".join(missing)
    tables = ["SELECT", "INSERT", "UPDATE", *(["DELETE"] if "DELETE" in lacking else [])]
    if driver == "postgres":
        out = []
        if "on schema" in lacking:
            out.append(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {user}")
        if "TEMPORARY" in lacking:
            out.append(f"GRANT TEMPORARY ON DATABASE {database} TO {user}")
        if any(" on " in m and "schema" not in m and "database" not in m for m in missing):
            out.append(f"GRANT {', '.join(tables)} ON ALL TABLES IN SCHEMA {schema} TO {user}")
        return out
    extra = [p for p in ("CREATE", "CREATE TEMPORARY TABLES", "ALTER", "DROP") if f"{p} on database" in lacking]
    return [f"GRANT {', '.join(extra + tables)} ON `{database}`.* TO {user}"]
