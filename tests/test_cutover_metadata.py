"""A merge into a target pmigrate filled writes only the rows that changed, and counts them exactly."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa

from tests.metadata_helpers import assert_same_rows, migrate
from tests.servers import sqlite_database

pytestmark = [pytest.mark.dumps]


@pytest.fixture
def source(load_dump, dumps_dir):
    """plikd's 0011 sqlite3 dump, loaded: (Database, sqlite3 connection)."""
    db = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    con = sqlite3.connect(db.go_dsn, isolation_level=None)
    con.execute("PRAGMA foreign_keys = OFF")
    yield db, con
    con.close()


def _xmins(db, table: str) -> dict[str, str]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return dict(c.exec_driver_sql(f"SELECT id, xmin::text FROM {table}").all())
    finally:
        eng.dispose()


@pytest.mark.postgres
@pytest.mark.mysql
@pytest.mark.parametrize("target", ["sqlite3", "postgres", "mysql"])
def test_second_pass_writes_only_inserted_and_updated_rows(target, source, request, tmp_path):
    db, con = source
    dst = sqlite_database(tmp_path / "t.db") if target == "sqlite3" else request.getfixturevalue("pg_db" if target == "postgres" else "mysql_db")
    assert migrate(db, dst, tmp_path / "1").exit_code == 0
    before = _xmins(dst, "uploads") if target == "postgres" else {}
    uploads = con.execute("SELECT count(*) FROM uploads").fetchone()[0]
    files = con.execute("SELECT count(*) FROM files").fetchone()[0]
    # plikd goes on: a comment changes, an upload with a file arrives
    con.execute("UPDATE uploads SET comments = 'changed', download_count = 7 WHERE id = 'UPLOAD1XXXXXXXXX'")
    con.execute("INSERT INTO uploads (id, ttl, comments, created_at) VALUES ('UPLOAD5XXXXXXXXX', 60, 'new', '2026-07-09 08:00:00+02:00')")
    con.execute("INSERT INTO files (id, upload_id, name, status, size) VALUES ('FILE5XXXXXXXXXXX', 'UPLOAD5XXXXXXXXX', 'n', 'uploaded', 5)")

    second = migrate(db, dst, tmp_path / "2")
    assert second.exit_code == 0, "\n".join(t for _, t in second.lines)
    tables = second.sections["metadata"]["tables"]
    pick = lambda t: (tables[t]["inserted"], tables[t]["updated"], tables[t]["unchanged"])  # noqa: E731
    assert pick("uploads") == (1, 1, uploads - 1)
    assert pick("files") == (1, 0, files)
    assert pick("users") == (0, 0, tables["users"]["source"])
    lines = [t for a, t in second.lines if a == "metadata"]
    assert any(line.startswith("uploads") and f"1 inserted, 1 updated, {uploads - 1} unchanged" in line for line in lines), lines
    assert_same_rows(db, dst)
    if target == "postgres":  # rows left alone were not written: their row version is the first pass's
        after = _xmins(dst, "uploads")
        assert {k: v for k, v in after.items() if k not in ("UPLOAD1XXXXXXXXX", "UPLOAD5XXXXXXXXX")} == {
            k: v for k, v in before.items() if k != "UPLOAD1XXXXXXXXX"
        }
        assert after["UPLOAD1XXXXXXXXX"] != before["UPLOAD1XXXXXXXXX"]

    third = migrate(db, dst, tmp_path / "3")
    assert third.exit_code == 0
    assert all(v.get("inserted", 0) + v.get("updated", 0) == 0 for v in third.sections["metadata"]["tables"].values())
