"""Plik's schema per level and driver: detection, creation as plikd does it, target checks.

Schemas are compared by reflection (columns with types, nullability and
defaults, primary keys, foreign keys, indexes). Normalisations, each cosmetic:
- MySQL table options (charset, collation) are left out of the comparison:
  the MySQL 5.7 dumps made ``migrations`` latin1 (that server's default), the
  MariaDB 11 dumps use the uca1400 collations the loader maps; pmigrate
  creates every table utf8mb4, which a separate test asserts.
- Index order inside a table is ignored (MySQL 5.7 and MariaDB list them
  differently); index columns keep their order.
Both MySQL 5.7 and MariaDB 11 dumps load into this machine's MariaDB, which
shows display widths (bigint(20)) for the pmigrate DDL and the dumps alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate.errors import ConfigError
from pmigrate.metadata import schema
from tests.dumps import all_dumps, dump_driver, dump_level
from tests.servers import sqlite_database

DUMPS = all_dumps()
CURRENT = [d for d in DUMPS if not dump_level(d).startswith("gorm-v1")]
LEGACY = [d for d in DUMPS if dump_level(d).startswith("gorm-v1")]
INTERMEDIATE = [lvl for lvl in schema.LEVELS if "0005" <= lvl[:4] <= "0010"]


def _ids(paths):
    return [f"{p.parent.name}/{p.name}" for p in paths]


@pytest.fixture
def fresh_db(request, tmp_path):
    """fresh_db(driver) -> an empty database of that driver (one per driver per test)."""

    def _make(driver: str):
        if driver == "sqlite3":
            return sqlite_database(tmp_path / f"fresh-{len(list(tmp_path.glob('fresh-*')))}.db")
        return request.getfixturevalue({"postgres": "pg_db", "mysql": "mysql_db"}[driver])

    return _make


def _engine(db) -> sa.Engine:
    return sa.create_engine(db.url, poolclass=sa.pool.NullPool)


def _snapshot(engine: sa.Engine) -> dict:
    """Everything plikd's schema is made of, as reflected."""
    out = {}
    with engine.connect() as c:
        insp = sa.inspect(c)
        for t in sorted(insp.get_table_names()):
            cols = {
                col["name"]: (
                    str(col["type"].compile(dialect=c.dialect)).lower(),
                    col["nullable"],
                    col.get("default"),
                )
                for col in insp.get_columns(t)
            }
            pk = tuple(insp.get_pk_constraint(t)["constrained_columns"])
            fks = sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"], tuple(fk["referred_columns"]), fk.get("name"))
                for fk in insp.get_foreign_keys(t)
            )
            idx = sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"])) for ix in insp.get_indexes(t))
            out[t] = {"columns": cols, "pk": pk, "fks": fks, "indexes": idx}
    return out


def _created(driver: str, level: str, fresh_db) -> tuple[sa.Engine, object]:
    db = fresh_db(driver)
    engine = _engine(db)
    with engine.begin() as c:
        schema.create_schema(c, driver=driver, level=level)
    return engine, db


def _insert_migrations(engine: sa.Engine, ids) -> None:
    with engine.begin() as c:
        for i in ids:
            c.execute(sa.text("INSERT INTO migrations (id) VALUES (:id)"), {"id": i})


def _ids_up_to(level: str) -> list[str]:
    if level == schema.GORM_V2_INIT:
        return ["SCHEMA_INIT"]
    return ["SCHEMA_INIT", *schema.MIGRATION_IDS[: schema.MIGRATION_IDS.index(level) + 1]]


# -- detection ----------------------------------------------------------------


@pytest.mark.dumps
@pytest.mark.parametrize("dump", CURRENT, ids=_ids(CURRENT))
def test_detect_level_of_every_dump(dump: Path, load_dump):
    engine = _engine(load_dump(dump))
    with engine.connect() as c:
        level = schema.detect_level(c)
    assert level.name == dump_level(dump)
    assert "SCHEMA_INIT" in level.migrations


@pytest.mark.dumps
@pytest.mark.parametrize("dump", LEGACY, ids=_ids(LEGACY))
def test_gorm_v1_source_is_refused_with_the_way_out(dump: Path, load_dump):
    engine = _engine(load_dump(dump))
    with engine.connect() as c, pytest.raises(ConfigError) as err:
        schema.detect_level(c)
    assert "1.3.2" in str(err.value) and "0001-initial" in str(err.value)


def test_empty_source_is_refused(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "empty.db"))
    with engine.connect() as c, pytest.raises(ConfigError, match="empty"):
        schema.detect_level(c)


def test_unknown_migration_ids_are_named(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "newer.db"))
    with engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0011-stats")
    _insert_migrations(engine, [*_ids_up_to("0011-stats"), "0012-shiny", "0013-shinier"])
    with engine.connect() as c, pytest.raises(ConfigError, match="0012-shiny, 0013-shinier"):
        schema.detect_level(c)


def test_gap_in_migration_history_is_refused(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "gap.db"))
    with engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0003-extend-ttl")
    _insert_migrations(engine, ["SCHEMA_INIT", "0001-initial", "0003-extend-ttl"])
    with engine.connect() as c, pytest.raises(ConfigError, match="0002-user-limits"):
        schema.detect_level(c)


def test_level_without_its_tables_is_refused(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "short.db"))
    with engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0004-max-user-size")
    _insert_migrations(engine, _ids_up_to("0011-stats"))
    with engine.connect() as c, pytest.raises(ConfigError, match="cli_auth_sessions"):
        schema.detect_level(c)


# -- creation equals plikd's own schema ---------------------------------------


@pytest.mark.dumps
@pytest.mark.parametrize("dump", CURRENT, ids=_ids(CURRENT))
def test_created_schema_equals_plikd_dump(dump: Path, load_dump, fresh_db):
    driver = dump_driver(dump)
    created, _ = _created(driver, dump_level(dump), fresh_db)
    plikd = _engine(load_dump(dump))
    assert _snapshot(created) == _snapshot(plikd)


@pytest.mark.dumps
@pytest.mark.parametrize("driver", schema.DRIVERS)
@pytest.mark.parametrize("level", INTERMEDIATE)
def test_intermediate_level_is_0011_minus_later_migrations(driver: str, level: str, fresh_db, load_dump, dumps_dir):
    """0005..0010 have no dump: each is plikd's 0011 schema without what later migrations add."""
    engine, _ = _created(driver, level, fresh_db)
    mine = _snapshot(engine)
    full = _snapshot(_engine(load_dump(dumps_dir / driver / f"0011-stats.{driver}.dump")))
    assert sorted(mine) == sorted(schema.known_tables(level))
    for table, shape in mine.items():
        assert tuple(shape["columns"]) == tuple(c for c in full[table]["columns"] if c in shape["columns"])
        assert set(shape["columns"]) == set(schema.expected_columns(level, table))
        for col, spec in shape["columns"].items():
            assert spec == full[table]["columns"][col], (table, col)
        assert shape["pk"] == full[table]["pk"] == schema.primary_key(table)
        assert shape["fks"] == full[table]["fks"]
        extra = set(shape["indexes"]) - set(full[table]["indexes"])
        # InnoDB keeps its own index for files' foreign key until 0011 adds idx_file_upload_id
        assert extra <= {("fk_uploads_files", ("upload_id",), False)}, (table, extra)
    _insert_migrations(engine, _ids_up_to(level))
    with engine.connect() as c:
        assert schema.detect_level(c).name == level


@pytest.mark.parametrize("level", ["0001-initial", "0011-stats"])
def test_mysql_tables_are_utf8mb4_innodb(level: str, fresh_db):
    engine, db = _created("mysql", level, fresh_db)
    with engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT t.table_name, t.engine, c.character_set_name FROM information_schema.tables t "
                "JOIN information_schema.collation_character_set_applicability c "
                "ON c.collation_name = t.table_collation WHERE t.table_schema = :db"
            ),
            {"db": db.name},
        ).all()
    assert sorted(r[0] for r in rows) == sorted(schema.known_tables(level))
    assert {(r[1], r[2]) for r in rows} == {("InnoDB", "utf8mb4")}


@pytest.mark.parametrize("driver", ["postgres", "sqlite3"])
def test_create_schema_rolls_back_with_the_callers_transaction(driver: str, fresh_db):
    db = fresh_db(driver)
    engine = _engine(db)
    if driver == "sqlite3":
        # pysqlite only begins before DML; the documented recipe makes DDL transactional
        @sa.event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _rec):
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN")

    with pytest.raises(RuntimeError), engine.begin() as c:
        schema.create_schema(c, driver=driver, level="0011-stats")
        raise RuntimeError("copy failed")
    with engine.connect() as c:
        assert sa.inspect(c).get_table_names() == []


def test_create_schema_checks_the_driver(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "x.db"))
    with engine.begin() as c, pytest.raises(ValueError, match="postgres"):
        schema.create_schema(c, driver="postgres", level="0011-stats")


# -- target checks ------------------------------------------------------------


@pytest.mark.parametrize("driver", schema.DRIVERS)
def test_check_target_empty_then_same_level(driver: str, fresh_db):
    db = fresh_db(driver)
    engine = _engine(db)
    with engine.connect() as c:
        assert schema.check_target(c, level="0004-max-user-size") == "empty"
    with engine.begin() as c:
        schema.create_schema(c, driver=driver, level="0004-max-user-size")
    with engine.connect() as c:  # schema made, migrations rows not copied yet
        assert schema.check_target(c, level="0004-max-user-size") == "same-level"
    _insert_migrations(engine, _ids_up_to("0004-max-user-size"))
    with engine.connect() as c:
        assert schema.check_target(c, level="0004-max-user-size") == "same-level"
        with pytest.raises(ConfigError, match="0004-max-user-size.*0011-stats"):
            schema.check_target(c, level="0011-stats")
        with pytest.raises(ConfigError, match="0004-max-user-size.*0003-extend-ttl"):
            schema.check_target(c, level="0003-extend-ttl")


def test_check_target_refuses_foreign_tables_but_takes_the_sources_extras(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "t.db"))
    with engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0011-stats")
        c.exec_driver_sql("CREATE TABLE events (id text PRIMARY KEY)")
    with engine.connect() as c:
        with pytest.raises(ConfigError, match="not Plik's: events"):
            schema.check_target(c, level="0011-stats")
        assert schema.check_target(c, level="0011-stats", extra_tables=("events",)) == "same-level"


def test_check_target_refuses_an_unrelated_database(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "other.db"))
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE invoices (id integer PRIMARY KEY)")
    with engine.connect() as c, pytest.raises(ConfigError, match="invoices"):
        schema.check_target(c, level="0011-stats")


def test_check_target_refuses_a_changed_table(tmp_path):
    engine = _engine(sqlite_database(tmp_path / "changed.db"))
    with engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0002-user-limits")
        c.exec_driver_sql("ALTER TABLE users ADD COLUMN nickname text")
    with engine.connect() as c, pytest.raises(ConfigError, match="nickname"):
        schema.check_target(c, level="0002-user-limits")


# -- static facts ---------------------------------------------------------------


def test_known_tables_in_foreign_key_order():
    assert schema.known_tables("0011-stats") == [
        "users", "tokens", "uploads", "files", "settings", "cli_auth_sessions",
        "usage_stats", "download_stats_daily", "upload_stats_daily", "migrations",
    ]  # fmt: skip
    assert schema.known_tables("gorm-v2-1.3.5") == ["users", "tokens", "uploads", "files", "settings", "migrations"]
    assert schema.primary_key("usage_stats") == ("user_id", "token")
    with pytest.raises(KeyError):
        schema.primary_key("events")


def test_ddl_ships_for_every_driver_and_level():
    for driver in schema.DRIVERS:
        for level in schema.LEVELS:
            stmts = schema.ddl(driver=driver, level=level)
            assert sum(s.upper().startswith("CREATE TABLE") for s in stmts) == len(schema.known_tables(level))


# -- tables pmigrate does not know ------------------------------------------------


@pytest.mark.dumps
@pytest.mark.parametrize("driver", schema.DRIVERS)
def test_unknown_table_is_recreated_on_the_target(driver: str, load_dump, dumps_dir, fresh_db):
    src_engine = _engine(load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump"))
    with src_engine.begin() as c:
        c.exec_driver_sql(
            "CREATE TABLE `events` (`id` integer NOT NULL,`upload_id` text,`kind` varchar(32) NOT NULL,"
            "`payload` text,`ok` boolean,`at` datetime,PRIMARY KEY (`id`),"
            "CONSTRAINT `fk_events_upload` FOREIGN KEY (`upload_id`) REFERENCES `uploads`(`id`))"
        )
        c.exec_driver_sql("CREATE INDEX `idx_events_at` ON `events`(`at`)")
    with src_engine.connect() as src:
        level = schema.detect_level(src)
        assert schema.unknown_tables(src, level) == ["events"]
        engine, _ = _created(driver, level.name, fresh_db)
        with engine.begin() as dst:
            schema.create_unknown_table(src, dst, "events", driver=driver)
    with engine.connect() as c:
        assert schema.check_target(c, level=level, extra_tables=("events",)) == "same-level"
        insp = sa.inspect(c)
        cols = {col["name"]: col for col in insp.get_columns("events")}
        assert list(cols) == ["id", "upload_id", "kind", "payload", "ok", "at"]
        assert not cols["kind"]["nullable"] and cols["payload"]["nullable"]
        assert insp.get_pk_constraint("events")["constrained_columns"] == ["id"]
        fk = insp.get_foreign_keys("events")
        assert [(f["constrained_columns"], f["referred_table"], f["referred_columns"]) for f in fk] == [
            (["upload_id"], "uploads", ["id"])
        ]
        assert [(i["name"], i["column_names"]) for i in insp.get_indexes("events") if i["name"] == "idx_events_at"] == [
            ("idx_events_at", ["at"])
        ]
        if driver == "postgres":
            assert str(cols["at"]["type"]).upper() == "TIMESTAMP WITH TIME ZONE" or cols["at"]["type"].timezone


@pytest.mark.parametrize("driver", schema.DRIVERS)
def test_unknown_table_keeps_its_generated_key(driver: str, tmp_path, fresh_db):
    src_engine = _engine(sqlite_database(tmp_path / "fork.db"))
    with src_engine.begin() as c:
        schema.create_schema(c, driver="sqlite3", level="0011-stats")
        c.exec_driver_sql("CREATE TABLE `audit` (`id` integer PRIMARY KEY,`what` text)")
    engine, _ = _created(driver, "0011-stats", fresh_db)
    with src_engine.connect() as src, engine.begin() as dst:
        t = schema.create_unknown_table(src, dst, "audit", driver=driver)
        dst.execute(t.insert(), [{"id": 7, "what": "copied"}])
        schema.sync_autoincrement(dst, t, driver=driver)
        dst.execute(t.insert(), [{"what": "new after the move"}])
        assert dst.execute(sa.select(t.c.id).order_by(t.c.id)).scalars().all() == [7, 8]


@pytest.mark.dumps
def test_legacy_columns_left_by_an_upgrade_do_not_matter(load_dump, dumps_dir):
    """plikd never drops a column: a 1.3.2 database upgraded by 0001-initial keeps download_domain."""
    engine = _engine(load_dump(dumps_dir / "sqlite3" / "0001-initial.sqlite3.dump"))
    with engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE uploads ADD COLUMN download_domain varchar(255)")
    with engine.connect() as c:
        assert schema.detect_level(c).name == "0001-initial"
    assert "download_domain" not in schema.expected_columns("0001-initial", "uploads")
