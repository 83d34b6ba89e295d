"""The metadata copy's hard cases: orphans, values that do not fit, re-runs, refusals, dry runs, the CLI."""

from __future__ import annotations

import json
import sqlite3

import pytest
import sqlalchemy as sa

from pmigrate.errors import ConfigError, FatalError
from tests.metadata_helpers import assert_same_rows, counts, migrate, write_cfg
from tests.servers import sqlite_database

pytestmark = [pytest.mark.dumps]


@pytest.fixture
def source(load_dump, dumps_dir):
    """plikd's 0011 sqlite3 dump, loaded: returns (Database, sqlite3 connection with foreign keys off)."""
    db = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    con = sqlite3.connect(db.go_dsn, isolation_level=None)
    con.execute("PRAGMA foreign_keys = OFF")
    yield db, con
    con.close()


def _tables(db) -> list[str]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return sorted(sa.inspect(c).get_table_names())
    finally:
        eng.dispose()


def _scalar(db, sql):
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return c.exec_driver_sql(sql).scalar()
    finally:
        eng.dispose()


@pytest.mark.postgres
def test_orphans_are_reported_and_skipped(source, pg_db, tmp_path):
    db, con = source
    con.execute("INSERT INTO files (id, upload_id, name, status, size) VALUES ('ORPHANFILEXXXXXX', 'GONEUPLOADXXXXXX', 'lost', 'uploaded', 1)")
    con.execute("INSERT INTO tokens VALUES ('orphan-token', 'lost', 'local:ghost', '2026-07-08 12:00:00+02:00')")
    report = migrate(db, pg_db, tmp_path)
    assert report.exit_code == 0  # orphans are reported, not failures
    orphans = {p.item for p in report.problems if p.kind == "orphan"}
    assert orphans == {"files:ORPHANFILEXXXXXX", "tokens:orphan-token"}
    assert all(not p.fatal for p in report.problems)
    tables = report.sections["metadata"]["tables"]
    assert tables["files"] == {"source": 4, "target": 3, "orphans": 1, "skipped": 0, "ok": True}
    assert tables["tokens"]["orphans"] == 1 and tables["tokens"]["target"] == 2
    assert _scalar(pg_db, "SELECT COUNT(*) FROM files WHERE id = 'ORPHANFILEXXXXXX'") == 0
    # the target's foreign keys are real and hold
    assert _scalar(pg_db, "SELECT COUNT(*) FROM pg_constraint WHERE contype = 'f'") == 2


LONG = "é" * 300


@pytest.mark.mysql
def test_oversized_value_is_refused_before_anything_is_written(source, mysql_db, tmp_path):
    db, con = source
    con.execute("UPDATE uploads SET comments = ? WHERE id = 'UPLOAD2XXXXXXXXX'", (LONG,))
    with pytest.raises(ConfigError) as err:
        migrate(db, mysql_db, tmp_path)
    message = str(err.value)
    assert "uploads id=UPLOAD2XXXXXXXXX column comments: 300 characters, the target holds 256" in message
    assert "--ignore-errors" in message
    assert _tables(mysql_db) == []


@pytest.mark.mysql
def test_oversized_value_skipped_with_ignore_errors(source, mysql_db, tmp_path):
    db, con = source
    con.execute("UPDATE uploads SET comments = ? WHERE id = 'UPLOAD2XXXXXXXXX'", (LONG,))
    report = migrate(db, mysql_db, tmp_path, ignore_errors=True)
    assert report.exit_code == 1  # the target lacks rows: not a success
    skipped = {p.item: p.message for p in report.problems if p.kind == "skipped-row"}
    assert "300 characters do not fit the target's 256" in skipped["uploads:UPLOAD2XXXXXXXXX"]
    assert "names a row skipped above" in skipped["files:FILE2XXXXXXXXXXX"]  # its file would break the foreign key
    tables = report.sections["metadata"]["tables"]
    assert tables["uploads"]["target"] == 3 and tables["uploads"]["skipped"] == 1 and tables["uploads"]["ok"]
    assert _scalar(mysql_db, "SELECT COUNT(*) FROM uploads WHERE id = 'UPLOAD2XXXXXXXXX'") == 0
    assert _scalar(mysql_db, "SELECT MAX(CHAR_LENGTH(comments)) FROM uploads") < 256  # nothing truncated


def _on_every_target(test):
    """The test runs with a sqlite3, a postgres and a mysql target (its ``target`` argument)."""
    for mark in (pytest.mark.parametrize("target", ["sqlite3", "postgres", "mysql"]), pytest.mark.mysql, pytest.mark.postgres):
        test = mark(test)
    return test


def _target(driver: str, request, tmp_path):
    """An empty target database of ``driver``."""
    return sqlite_database(tmp_path / "t.db") if driver == "sqlite3" else request.getfixturevalue("pg_db" if driver == "postgres" else "mysql_db")


@_on_every_target
def test_rerun_moves_only_what_changed(target, source, request, tmp_path):
    db, con = source
    dst = _target(target, request, tmp_path)
    first = migrate(db, dst, tmp_path / "1")
    assert first.exit_code == 0
    # plikd goes on: a comment changes, an upload with a file arrives, an expired upload is purged
    con.execute("UPDATE uploads SET comments = 'changed ✓', download_count = 7 WHERE id = 'UPLOAD1XXXXXXXXX'")
    con.execute(
        "INSERT INTO uploads (id, ttl, comments, created_at, one_shot) VALUES ('UPLOAD5XXXXXXXXX', 60, 'new', '2026-07-09 08:00:00.123456789+02:00', 1)"
    )
    con.execute("INSERT INTO files (id, upload_id, name, status, size) VALUES ('FILE5XXXXXXXXXXX', 'UPLOAD5XXXXXXXXX', 'n', 'uploaded', 5)")
    con.execute("DELETE FROM uploads WHERE id = 'UPLOAD4XXXXXXXXX'")
    kept = migrate(db, dst, tmp_path / "2a")  # deletions are opt-in: the purged upload stays
    assert kept.exit_code == 0, "\n".join(t for _, t in kept.lines)
    assert kept.sections["metadata"]["target_owner"] == "owned"
    assert kept.sections["metadata"]["tables"]["uploads"]["kept"] == 1
    assert kept.sections["metadata"]["tables"]["uploads"]["target"] == kept.sections["metadata"]["tables"]["uploads"]["source"] + 1
    second = migrate(db, dst, tmp_path / "2", prune=True)
    assert second.exit_code == 0, "\n".join(t for _, t in second.lines)
    assert second.sections["metadata"]["target_state"] == "same-level"
    tables = second.sections["metadata"]["tables"]
    assert all(s == t for s, t in counts(second).values())
    assert tables["uploads"]["deleted"] == 1
    if target != "mysql":  # mysql does not tell inserted from unchanged rows
        assert tables["uploads"]["changed"] == 0  # written by the pass that kept the purged row
        assert tables["files"]["changed"] == 0
        assert tables["users"]["changed"] == 0 and tables["migrations"]["changed"] == 0
    assert_same_rows(db, dst)
    third = migrate(db, dst, tmp_path / "3")
    assert third.exit_code == 0
    if target != "mysql":
        assert all(v["changed"] == 0 for v in third.sections["metadata"]["tables"].values())


@pytest.mark.postgres
def test_target_with_foreign_tables_is_refused(source, pg_db, tmp_path):
    db, _ = source
    eng = sa.create_engine(pg_db.url)
    with eng.begin() as c:
        c.exec_driver_sql("CREATE TABLE invoices (id int primary key)")
    eng.dispose()
    with pytest.raises(ConfigError, match="not Plik's: invoices"):
        migrate(db, pg_db, tmp_path)
    assert _tables(pg_db) == ["invoices"]


@pytest.mark.postgres
def test_target_at_another_level_is_refused(source, load_dump, dumps_dir, tmp_path):
    db, _ = source
    older = load_dump(dumps_dir / "postgres" / "0004-max-user-size.postgres.dump")
    before = _scalar(older, "SELECT COUNT(*) FROM uploads")
    with pytest.raises(ConfigError, match="level"):
        migrate(db, older, tmp_path)
    assert _scalar(older, "SELECT COUNT(*) FROM uploads") == before


def test_plik_132_source_is_explained(load_dump, dumps_dir, tmp_path):
    db = load_dump(dumps_dir / "sqlite3" / "gorm-v1-1.3.2-brokenfk.sqlite3.dump")
    target = tmp_path / "t.db"
    with pytest.raises(ConfigError, match="1.3.2"):
        migrate(db, sqlite_database(target), tmp_path / "run")
    assert not target.exists()


def test_sessions_only_with_the_option(source, tmp_path):
    db, con = source
    con.execute("INSERT INTO cli_auth_sessions VALUES ('CODE1', 's', 'pending', '', '2026-07-08 12:00:00+02:00', '2026-07-08 12:05:00+02:00')")
    plain = sqlite_database(tmp_path / "plain.db")
    report = migrate(db, plain, tmp_path / "a")
    assert "cli_auth_sessions" not in report.sections["metadata"]["tables"]
    assert report.sections["metadata"]["skipped_tables"] == {"cli_auth_sessions": 1}
    assert _scalar(plain, "SELECT COUNT(*) FROM cli_auth_sessions") == 0  # the table exists: plikd needs it
    full = sqlite_database(tmp_path / "full.db")
    report = migrate(db, full, tmp_path / "b", with_sessions=True)
    assert report.sections["metadata"]["tables"]["cli_auth_sessions"]["target"] == 1
    assert_same_rows(db, full, skip=())


@pytest.mark.postgres
def test_unknown_table_is_copied_with_a_warning(source, pg_db, tmp_path):
    db, con = source
    con.execute("CREATE TABLE events (id integer PRIMARY KEY, upload_id text REFERENCES uploads(id), what text, at datetime)")
    con.execute("INSERT INTO events VALUES (1, 'UPLOAD1XXXXXXXXX', 'created 愛', '2026-07-08 12:00:00.5+02:00')")
    report = migrate(db, pg_db, tmp_path)
    assert report.exit_code == 0, report.problems
    assert any("events" in w for w in report.warnings)
    assert list(report.sections["metadata"]["tables"])[-1] == "events"  # after Plik's tables
    assert_same_rows(db, pg_db)


@pytest.mark.mysql
def test_failure_midway_leaves_a_fresh_target_empty(source, mysql_db, tmp_path):
    """A timestamp that is no time fails the load of files, after the tables and their parents were written."""
    db, con = source
    con.execute("UPDATE files SET created_at = 'not a time' WHERE id = 'FILE3XXXXXXXXXXX'")
    with pytest.raises(FatalError) as err:
        migrate(db, mysql_db, tmp_path)
    assert "empty as before" in str(err.value)
    assert _tables(mysql_db) == []


def test_dry_run_writes_nothing(source, tmp_path, run_cli):
    db, _ = source
    target = tmp_path / "target.db"
    src_cfg = write_cfg(db, tmp_path / "src.cfg")
    dst_cfg = write_cfg(sqlite_database(target), tmp_path / "dst.cfg")
    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "--dry-run", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "would create Plik's schema at level 0011-stats" in r.stdout
    assert "uploads" in r.stdout and "nothing written" in r.stdout
    assert not target.exists()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["sections"]["metadata"]["tables"]["uploads"]["source"] == 4


@pytest.mark.slow
@pytest.mark.mysql
def test_cli_copies_and_proves_with_counts(source, mysql_db, tmp_path, run_cli):
    db, _ = source
    src_cfg = write_cfg(db, tmp_path / "src.cfg")
    dst_cfg = write_cfg(mysql_db, tmp_path / "dst.cfg")
    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q", "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "uploads" in r.stdout and "target created at level 0011-stats" in r.stdout
    assert r.stderr == ""  # -q: no progress bars
    section = json.loads((tmp_path / "r.json").read_text())["sections"]["metadata"]
    assert section["ok"] and section["tables"]["files"] == {"source": 3, "target": 3, "orphans": 0, "skipped": 0, "ok": True}
    assert_same_rows(db, mysql_db)
    # and again: the target is now at the same level, merged, still equal
    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q")
    assert r.returncode == 0, r.stderr
    assert "merged by primary key" in r.stdout


AWKWARD = "tab\there\nnew line\r\\back\\slash \\N not null ' \" `; 愛 الحب 🙂"


@pytest.mark.postgres
@pytest.mark.mysql
def test_awkward_text_null_and_empty_survive(source, pg_db, mysql_db, tmp_path):
    db, con = source
    con.execute("UPDATE uploads SET comments = ?, login = '', password = NULL WHERE id = 'UPLOAD1XXXXXXXXX'", (AWKWARD,))
    con.execute("UPDATE uploads SET created_at = '2026-07-08 12:00:28Z', expire_at = '2026-07-08 12:00:28.5' WHERE id = 'UPLOAD2XXXXXXXXX'")
    for dst in (pg_db, mysql_db):
        report = migrate(db, dst, tmp_path / dst.driver)
        assert report.exit_code == 0, report.problems
        assert_same_rows(db, dst)
        row = (_scalar(dst, "SELECT comments FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'"),
               _scalar(dst, "SELECT login FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'"),
               _scalar(dst, "SELECT password FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'"))
        assert row == (AWKWARD, "", None)


@pytest.mark.slow
@pytest.mark.mysql
def test_mysql_datetimes_are_wall_times_in_the_dsn_loc(load_dump, dumps_dir, mysql_db, tmp_path, run_cli):
    """plikd's dumps were made in Europe/Paris with loc=Local: mysql holds Paris wall times, sqlite3 the instants.

    Read with the same zone, the mysql dump's instants are the sqlite3 dump's, winter (+01) and summer (+02) alike;
    written with it, sqlite3's instants become the wall times plikd itself wrote to mysql.
    """
    paris = {"TZ": "Europe/Paris"}
    my_src = load_dump(dumps_dir / "mysql" / "0011-stats.mysql.dump")
    lite = sqlite_database(tmp_path / "from-mysql.db")
    r = run_cli("--config", str(write_cfg(my_src, tmp_path / "my.cfg")), "--to", str(write_cfg(lite, tmp_path / "lite.cfg")),
                "--metadata-only", "-q", env=paris)
    assert r.returncode == 0, r.stderr
    assert "read as Europe/Paris" in r.stdout
    con = sqlite3.connect(tmp_path / "from-mysql.db")
    try:
        created, expire = con.execute("SELECT created_at, expire_at FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'").fetchone()
        days = sorted({d for (d,) in con.execute("SELECT day FROM upload_stats_daily")})
    finally:
        con.close()
    assert (created, expire) == ("2000-01-01 01:00:00+01:00", "2000-01-01 02:00:00+01:00")  # = 00:00Z and 01:00Z
    assert days == ["2000-01-01 01:00:00+01:00", "2026-07-08 02:00:00+02:00"]  # midnight UTC, as in the sqlite3 dump

    lite_src = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    r = run_cli("--config", str(write_cfg(lite_src, tmp_path / "l2.cfg")), "--to", str(write_cfg(mysql_db, tmp_path / "m2.cfg")),
                "--metadata-only", "-q", env=paris)
    assert r.returncode == 0, r.stderr
    eng = sa.create_engine(mysql_db.url)
    try:
        with eng.connect() as c:
            days = sorted({str(d) for (d,) in c.exec_driver_sql("SELECT day FROM upload_stats_daily")})
    finally:
        eng.dispose()
    assert days == ["2000-01-01 01:00:00", "2026-07-08 02:00:00"]  # what plikd wrote in the mysql dump
    assert str(_scalar(mysql_db, "SELECT created_at FROM uploads WHERE id = 'UPLOAD1XXXXXXXXX'")) == "2000-01-01 01:00:00"


@pytest.mark.postgres
def test_nul_in_text_is_refused_for_postgres_or_skipped(source, pg_db, tmp_path):
    db, con = source
    con.execute("UPDATE files SET name = 'a' || char(0) || 'b' WHERE id = 'FILE3XXXXXXXXXXX'")
    with pytest.raises(ConfigError, match="files id=FILE3XXXXXXXXXXX column name"):
        migrate(db, pg_db, tmp_path / "a")
    assert _tables(pg_db) == []
    report = migrate(db, pg_db, tmp_path / "b", ignore_errors=True)
    assert [p.item for p in report.problems if p.kind == "skipped-row"] == ["files:FILE3XXXXXXXXXXX"]
    assert report.sections["metadata"]["tables"]["files"]["target"] == 2


def _xmins(db, table: str) -> dict[str, str]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return dict(c.exec_driver_sql(f"SELECT id, xmin::text FROM {table}").all())
    finally:
        eng.dispose()


@_on_every_target
def test_second_pass_writes_only_inserted_and_updated_rows(target, source, request, tmp_path):
    db, con = source
    dst = _target(target, request, tmp_path)
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
