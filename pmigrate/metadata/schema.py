"""Plik's metadata tables per schema level and driver, as plikd itself creates them.

A schema level is the last gormigrate migration applied to a database
(``0001-initial`` ... ``0011-stats``), or ``gorm-v2-1.3.5`` for a database made
by plik 1.3.5 (gorm v2 tables, ``migrations`` holding only ``SCHEMA_INIT``).
The DDL for each (driver, level) is packaged under ``ddl/<driver>/<level>.sql``,
extracted once from plikd's own dumps (see ``ddl/README.md``), so a target is
created exactly as plikd would have created it and plikd starts on it without
migrating anything.

Every function takes a SQLAlchemy ``Connection`` and runs inside the caller's
transaction. MySQL/MariaDB commit implicitly on every DDL statement, so there
``create_schema`` cannot be rolled back: whoever calls it cleans up on failure.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pmigrate.errors import ConfigError
from pmigrate.words import plural

DRIVERS = ("sqlite3", "postgres", "mysql")
_DIALECT_OF = {"sqlite3": "sqlite", "postgres": "postgresql", "mysql": "mysql"}

# gormigrate ids plikd applies, in order. A level is named after the last one applied.
MIGRATION_IDS: tuple[str, ...] = (
    "0001-initial",
    "0002-user-limits",
    "0003-extend-ttl",
    "0004-max-user-size",
    "0005-cli-auth-sessions",
    "0006-user-profile-picture",
    "0007-upload-e2ee",
    "0008-user-theme",
    "0009-file-is-text",
    "0010-user-language",
    "0011-stats",
)
GORM_V2_INIT = "gorm-v2-1.3.5"
LEVELS: tuple[str, ...] = (GORM_V2_INIT, *MIGRATION_IDS)
# Rows that carry no schema change: gormigrate's marker, and a cleaning step some
# plikd builds recorded before 0001-initial.
_NEUTRAL_IDS = frozenset({"SCHEMA_INIT", "0000-cleaning"})

# Foreign-key order (PLIK.md): parents before children, migrations last.
_TABLE_ORDER: tuple[str, ...] = (
    "users",
    "tokens",
    "uploads",
    "files",
    "settings",
    "cli_auth_sessions",
    "usage_stats",
    "download_stats_daily",
    "upload_stats_daily",
    "migrations",
)
_PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "users": ("id",),
    "tokens": ("token",),
    "uploads": ("id",),
    "files": ("id",),
    "settings": ("key",),
    "cli_auth_sessions": ("code",),
    "usage_stats": ("user_id", "token"),
    "download_stats_daily": ("day", "entity_type", "entity_id"),
    "upload_stats_daily": ("day", "user_id", "token"),
    "migrations": ("id",),
}
# Columns only plik <= 1.3.2 (gorm v1) had on uploads.
_GORM_V1_UPLOAD_COLUMNS = frozenset({"download_domain", "is_admin"})

GORM_V1_HELP = (
    "this database was made by plik 1.3.2 or older (gorm v1: its migrations table holds only "
    "SCHEMA_INIT and uploads still has gorm v1 columns), which pmigrate does not copy. Start "
    "plikd 1.3.6 or newer once on this source: its migration 0001-initial upgrades the schema "
    "(and drops orphan rows); then run pmigrate again. Or move it with plikd's own import/export"
)


@dataclass(frozen=True)
class SchemaLevel:
    """Where a source stands: the level name and its ``migrations`` ids as found."""

    name: str  # one of LEVELS
    migrations: tuple[str, ...]  # the source's migrations.id values, sorted

    @property
    def rank(self) -> int:
        """Position in LEVELS, for comparisons between levels."""
        return LEVELS.index(self.name)


TargetState = Literal["empty", "same-level"]


# -- static facts ------------------------------------------------------------


def _check_level(level: str | SchemaLevel) -> str:
    name = level.name if isinstance(level, SchemaLevel) else level
    if name not in LEVELS:
        raise ValueError(f"unknown schema level {name!r}; known: {', '.join(LEVELS)}")
    return name


def ddl(*, driver: str, level: str | SchemaLevel) -> list[str]:
    """The statements creating every table, index and foreign key of ``level`` on ``driver``."""
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
    name = _check_level(level)
    text = resources.files("pmigrate.metadata").joinpath("ddl", driver, f"{name}.sql").read_text(encoding="utf-8")
    return [s.strip() for s in text.split(";\n") if s.strip().rstrip(";")]


@functools.cache
def _layout(level: str) -> dict[str, tuple[str, ...]]:
    """table -> column names at ``level``, read from the sqlite3 DDL run in memory."""
    con = sqlite3.connect(":memory:")
    try:
        for stmt in ddl(driver="sqlite3", level=level):
            con.execute(stmt)
        names = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: tuple(r[1] for r in con.execute(f'PRAGMA table_info("{t}")')) for t in names}
    finally:
        con.close()


def known_tables(level: str | SchemaLevel) -> list[str]:
    """Plik's tables at ``level``, parents before children (the order to copy them in)."""
    layout = _layout(_check_level(level))
    return [t for t in _TABLE_ORDER if t in layout]


def expected_columns(level: str | SchemaLevel, table: str) -> tuple[str, ...]:
    """The columns plikd gives ``table`` at ``level`` (a source may hold more: legacy leftovers)."""
    layout = _layout(_check_level(level))
    if table not in layout:
        raise KeyError(f"{table} is not a Plik table at level {_check_level(level)}")
    return layout[table]


def primary_key(table: str) -> tuple[str, ...]:
    """Primary key columns of a Plik table (the same at every level that has it)."""
    try:
        return _PRIMARY_KEYS[table]
    except KeyError:
        raise KeyError(f"{table} is not a Plik table") from None


# -- reading a database ------------------------------------------------------


def _tables(conn: Connection) -> set[str]:
    return set(sa.inspect(conn).get_table_names())


def _columns(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def _migration_ids(conn: Connection) -> list[str]:
    table = sa.table("migrations", sa.column("id"))
    return sorted(r[0] for r in conn.execute(sa.select(table.c.id)))


def _level_of(ids: list[str], *, where: str) -> str | None:
    """The level named by a set of migration ids; None when only SCHEMA_INIT is there."""
    unknown = sorted(set(ids) - _NEUTRAL_IDS - set(MIGRATION_IDS))
    if unknown:
        raise ConfigError(
            f"{where} has schema migrations pmigrate does not know: {', '.join(unknown)} "
            "(made by a newer or forked plikd); use a pmigrate release that knows them"
        )
    applied = [m for m in MIGRATION_IDS if m in ids]
    if applied != list(MIGRATION_IDS[: len(applied)]):
        missing = [m for m in MIGRATION_IDS[: MIGRATION_IDS.index(applied[-1])] if m not in ids]
        raise ConfigError(
            f"{where} has a broken migration history: {applied[-1]} is applied but not "
            f"{', '.join(missing)}; let plikd start on it once to complete its migrations"
        )
    return applied[-1] if applied else None


def detect_level(conn: Connection) -> SchemaLevel:
    """Read a source's schema level from its ``migrations`` rows and tables.

    Raises ConfigError for an empty database, a plik 1.3.2 (gorm v1) database,
    migration ids pmigrate does not know, or tables missing for the level.
    """
    tables = _tables(conn)
    if not tables:
        raise ConfigError("the source database is empty: no Plik tables; check the source MetadataBackendConfig")
    if "migrations" not in tables:
        if "uploads" in tables:
            raise ConfigError(
                "the source has Plik tables but no migrations table (plik older than 1.3); "
                "start plikd once on it so it records its schema, then run pmigrate again"
            )
        raise ConfigError(
            f"the source holds no Plik tables (found: {', '.join(sorted(tables))}); "
            "check the source MetadataBackendConfig"
        )
    ids = _migration_ids(conn)
    name = _level_of(ids, where="the source")
    if name is None:
        if "uploads" in tables and _columns(conn, "uploads") & _GORM_V1_UPLOAD_COLUMNS:
            raise ConfigError(GORM_V1_HELP)
        if "SCHEMA_INIT" not in ids:
            raise ConfigError(
                "the source's migrations table is empty: plikd never finished creating this schema; "
                "start plikd once on it, then run pmigrate again"
            )
        name = GORM_V2_INIT
    missing = [t for t in known_tables(name) if t not in tables]
    if missing:
        raise ConfigError(
            f"the source is at schema level {name} but lacks {plural(len(missing), 'table')}: {', '.join(missing)}; "
            "it was altered by hand or is not a Plik database"
        )
    for table in known_tables(name):
        lacking = [c for c in expected_columns(name, table) if c not in _columns(conn, table)]
        if lacking:
            raise ConfigError(
                f"the source is at schema level {name} but {table} lacks {plural(len(lacking), 'column')}: {', '.join(lacking)}; "
                "it was altered by hand or is not a Plik database"
            )
    return SchemaLevel(name=name, migrations=tuple(ids))


# -- writing a target --------------------------------------------------------


def _check_driver(conn: Connection, driver: str) -> None:
    if driver not in DRIVERS:
        raise ValueError(f"unknown driver {driver!r}; known: {', '.join(DRIVERS)}")
    if conn.dialect.name != _DIALECT_OF[driver]:
        raise ValueError(f"driver {driver} but the connection speaks {conn.dialect.name}")


def create_schema(conn: Connection, *, driver: str, level: str | SchemaLevel) -> None:
    """Create every Plik table, index and foreign key of ``level`` on an empty target.

    Runs in the caller's transaction on postgres (and sqlite when the engine
    begins transactions itself); on mysql each statement commits on its own.
    Writes no rows: the ``migrations`` rows come from the source with the rest.
    """
    _check_driver(conn, driver)
    for stmt in ddl(driver=driver, level=level):
        conn.exec_driver_sql(stmt)


def check_target(conn: Connection, *, level: str | SchemaLevel, extra_tables: tuple[str, ...] = ()) -> TargetState:
    """'empty' (no tables at all) or 'same-level' (Plik's tables at ``level``: re-run by primary key).

    ``extra_tables`` are the source's unknown tables, which an earlier run may
    have created on the target. Anything else is refused with ConfigError.
    """
    from pmigrate.metadata.staging import is_staging
    from pmigrate.ownership import OWNER_TABLE

    name = _check_level(level)
    # pmigrate's own record (whose the rows are is checked apart), and what a stopped run staged (dropped by the next)
    tables = {t for t in _tables(conn) - {OWNER_TABLE} if not is_staging(t)}
    if not tables:
        return "empty"
    expected = set(known_tables(name))
    foreign = sorted(tables - expected - set(extra_tables))
    if foreign:
        raise ConfigError(
            f"the target database holds tables that are not Plik's: {', '.join(foreign)}; "
            "use an empty database (or one a previous pmigrate run filled from this source)"
        )
    absent = sorted(expected - tables)
    if "migrations" in tables:
        ids = _migration_ids(conn)  # none yet: an earlier run stopped before copying them
        target_level = (_level_of(ids, where="the target") or GORM_V2_INIT) if ids else name
        if target_level != name:
            raise ConfigError(
                f"the target is at schema level {target_level} but the source is at {name}; "
                "use an empty target database (or bring both to the same plikd version first)"
            )
    if absent:
        raise ConfigError(
            f"the target holds some Plik tables but not {', '.join(absent)} (schema level other than "
            f"the source's {name}, or a half-created schema); use an empty target database"
        )
    for table in sorted(expected):
        want = set(expected_columns(name, table))
        have = _columns(conn, table)
        if want != have:
            diff = sorted(want ^ have)
            raise ConfigError(
                f"the target's {table} table differs from Plik's at level {name} (columns {', '.join(diff)}); "
                "use an empty target database"
            )
    return "same-level"


# -- tables pmigrate does not know -------------------------------------------


def unknown_tables(conn: Connection, level: str | SchemaLevel) -> list[str]:
    """Source tables that are not Plik's at ``level`` (e.g. a fork's ``events``), parents first."""
    from pmigrate.metadata.staging import is_staging
    from pmigrate.ownership import OWNER_TABLE

    known = set(known_tables(level))
    # a target pmigrate filled, now a source: its record and any staging table are pmigrate's, not the deployment's
    names = sorted(t for t in _tables(conn) - known - {OWNER_TABLE} if not is_staging(t))
    if not names:
        return []
    md = sa.MetaData()
    md.reflect(bind=conn, only=names)
    return [t.name for t in md.sorted_tables if t.name in names]


def _target_type(col_type: sa.types.TypeEngine, driver: str) -> sa.types.TypeEngine:
    """A source column type as the target driver should spell it, in gorm's habits."""
    try:
        generic = col_type.as_generic()
    except NotImplementedError:
        generic = sa.Text()
    if isinstance(generic, sa.DateTime):
        if driver == "postgres":
            return sa.DateTime(timezone=True)
        if driver == "mysql":
            from sqlalchemy.dialects.mysql import DATETIME

            return DATETIME(fsp=3)
        return sa.DateTime()
    if isinstance(generic, sa.String) and not isinstance(generic, sa.Text) and generic.length is None:
        return sa.Text() if driver != "mysql" else sa.String(256)
    if isinstance(generic, sa.Text) and driver == "mysql" and generic.length is None:
        return sa.Text()
    if isinstance(generic, sa.String):
        return type(generic)(length=generic.length)  # drop source collation
    return generic


def reflect_unknown_table(src: Connection, table: str, *, driver: str, name_of: Callable[[str], str] | None = None) -> sa.Table:
    """The definition of a source table, retyped for ``driver``, in a fresh MetaData.

    Columns, nullability, primary key, indexes and foreign keys survive; server
    defaults, collations and table options do not (they are the source's).
    ``name_of`` names the target tables, this one and those it references
    (staging names on mysql: pmigrate.metadata.staging).
    """
    rename = name_of or (lambda n: n)
    md_src = sa.MetaData()
    t_src = sa.Table(table, md_src, autoload_with=src)
    md = sa.MetaData()
    # MySQL cannot key a TEXT column: keyed strings get gorm's default varchar(256)
    keyed = {c.name for c in t_src.primary_key.columns}
    keyed |= {c.name for fk in t_src.foreign_key_constraints for c in fk.columns}
    keyed |= {c.name for ix in t_src.indexes for c in ix.columns}

    def retype(c: sa.Column) -> sa.types.TypeEngine:
        target = _target_type(c.type, driver)
        if driver == "mysql" and c.name in keyed and isinstance(target, sa.Text):
            return sa.String(256)
        return target

    cols = [
        sa.Column(
            c.name,
            retype(c),
            primary_key=c.primary_key,
            nullable=c.nullable if not c.primary_key else False,
            # a generated key (serial, AUTO_INCREMENT, sqlite's INTEGER PRIMARY KEY) stays one
            autoincrement=c.autoincrement if c.primary_key and len(t_src.primary_key.columns) == 1 else False,
        )
        for c in t_src.columns
    ]
    options = {"mysql_engine": "InnoDB", "mysql_default_charset": "utf8mb4"} if driver == "mysql" else {}
    out = sa.Table(rename(table), md, *cols, **options)
    for fk in t_src.foreign_key_constraints:
        referred = rename(fk.referred_table.name)
        out.append_constraint(
            sa.ForeignKeyConstraint(
                [c.name for c in fk.columns],
                [f"{referred}.{e.column.name}" for e in fk.elements],
                name=fk.name,
            )
        )
        # the referred table only needs to exist on the target, not in this MetaData
        if referred not in md.tables:
            sa.Table(
                referred,
                md,
                *[sa.Column(e.column.name, _target_type(e.column.type, driver), primary_key=True) for e in fk.elements],
            )
    for ix in t_src.indexes:
        sa.Index(ix.name, *[out.c[c.name] for c in ix.columns], unique=ix.unique)
    return out


def create_unknown_table(
    src: Connection, dst: Connection, table: str, *, driver: str, name_of: Callable[[str], str] | None = None
) -> sa.Table:
    """Create on the target a source table pmigrate does not know; returns its target definition."""
    _check_driver(dst, driver)
    t = reflect_unknown_table(src, table, driver=driver, name_of=name_of)
    t.create(dst, checkfirst=True)
    return t


def sync_autoincrement(dst: Connection, table: sa.Table, *, driver: str) -> None:
    """After copying rows with their keys, move a postgres sequence past the largest key.

    MySQL's AUTO_INCREMENT and SQLite's rowid follow explicit keys by themselves.
    """
    _check_driver(dst, driver)
    if driver != "postgres":
        return
    name = dst.dialect.identifier_preparer.quote(table.name)  # the function parses its argument as SQL
    for col in table.primary_key.columns:
        seq = dst.execute(sa.select(sa.func.pg_get_serial_sequence(name, col.name))).scalar()
        if seq:
            top = dst.execute(sa.select(sa.func.max(table.c[col.name]))).scalar()
            dst.execute(sa.select(sa.func.setval(seq, top if top is not None else 1, top is not None)))
