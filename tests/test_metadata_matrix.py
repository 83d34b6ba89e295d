"""Every direction between sqlite3, postgres and mysql, on plikd's dumps of every supported level.

Each copy is checked row by row against its source (canonical values:
bool, aware UTC datetime at the coarser precision of the two sides, str,
int, None), and by the copier's own per-table counts.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pmigrate.ownership import OWNER_TABLE
from tests.dumps import all_dumps, dump_driver, dump_level
from tests.metadata_helpers import assert_same_rows, counts, migrate
from tests.servers import sqlite_database


def _supported(path) -> bool:
    if dump_level(path).startswith("gorm-v1"):
        return False  # refused by design: see test_metadata_cases
    # MariaDB dumps load into the same driver as the mysql ones: the latest level is enough.
    return path.parent.name != "mariadb" or dump_level(path) == "0011-stats"


DUMPS = [p for p in all_dumps() if _supported(p)]
DRIVERS = ("sqlite3", "postgres", "mysql")
FULL = ("0011-stats", "gorm-v2-1.3.5")  # the newest and the oldest level: all three targets


def _targets(path) -> tuple[str, ...]:
    """The full 3x3 at the newest and oldest levels; a cycle of directions at the levels between.

    sqlite3 -> postgres, postgres -> mysql, mysql -> sqlite3 at each middle level:
    every source driver and every target driver still meets every level.
    """
    if dump_level(path) in FULL:
        return DRIVERS
    src = dump_driver(path)
    return (DRIVERS[(DRIVERS.index(src) + 1) % 3],)


def _target(driver, request, tmp_path, name):
    if driver == "sqlite3":
        return sqlite_database(tmp_path / f"{name}.db")
    return request.getfixturevalue("pg_db" if driver == "postgres" else "mysql_db")


def _migrations(db) -> set[str]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return {r[0] for r in c.exec_driver_sql("SELECT id FROM migrations")}
    finally:
        eng.dispose()


@pytest.mark.slow
@pytest.mark.dumps
@pytest.mark.postgres
@pytest.mark.mysql
@pytest.mark.parametrize("dump", DUMPS, ids=[f"{p.parent.name}/{dump_level(p)}" for p in DUMPS])
def test_every_direction(dump, load_dump, request, tmp_path):
    src = load_dump(dump)
    for driver in _targets(dump):
        dst = _target(driver, request, tmp_path, f"to-{driver}")
        report = migrate(src, dst, tmp_path / f"run-{driver}")
        assert report.exit_code == 0, report.problems
        table_counts = counts(report)
        assert table_counts and all(s == t for s, t in table_counts.values()), table_counts
        assert table_counts["uploads"][0] >= 1
        assert_same_rows(src, dst)
        assert _migrations(dst) == _migrations(src)  # plikd starts on the target without migrating


@pytest.mark.dumps
@pytest.mark.postgres
@pytest.mark.mysql
def test_round_trip_ends_where_it_started(load_dump, dumps_dir, pg_db, mysql_db, tmp_path):
    """sqlite3 -> postgres -> mysql -> sqlite3: same rows, same values, same column types."""
    start = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    end = sqlite_database(tmp_path / "end.db")
    for a, b in ((start, pg_db), (pg_db, mysql_db), (mysql_db, end)):
        report = migrate(a, b, tmp_path / f"{a.driver}-{b.driver}")
        assert report.exit_code == 0, report.problems
    assert_same_rows(start, end, digits=3)  # mysql's datetime(3) was on the way

    def types(db):
        eng = sa.create_engine(db.url)
        try:
            with eng.connect() as c:
                insp = sa.inspect(c)
                names = [t for t in insp.get_table_names() if t != OWNER_TABLE]  # pmigrate's record, not Plik's
                return {t: [(col["name"], str(col["type"])) for col in insp.get_columns(t)] for t in names}
        finally:
            eng.dispose()

    assert types(end) == types(start)
    # booleans are sqlite numeric 0/1 again, timestamps go-sqlite3 text with an offset
    import sqlite3

    con = sqlite3.connect(tmp_path / "end.db")
    try:
        one_shot, created = con.execute("SELECT one_shot, created_at FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'").fetchone()
    finally:
        con.close()
    assert one_shot == 1 and type(one_shot) is int
    assert created == "2000-01-01 00:00:00+00:00"


def test_matrix_covers_every_level_and_driver():
    levels = {dump_level(p) for p in DUMPS}
    assert {"0001-initial", "0002-user-limits", "0003-extend-ttl", "0004-max-user-size", "0011-stats", "gorm-v2-1.3.5"} <= levels
    assert {dump_driver(p) for p in DUMPS} == set(DRIVERS)
    pairs = {(dump_driver(p), t) for p in DUMPS if dump_level(p) == "0011-stats" for t in _targets(p)}
    assert len(pairs) == 9
