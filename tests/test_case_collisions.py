"""Keys a MariaDB target takes for one (case, accents): refused or skipped, never merged into another row.

Sources on sqlite3 and postgres tell ``CaseCollideAbCdE`` and
``casecollideabcde`` apart; MariaDB's default collation does not. Every case
runs the real CLI (or the copier) against a real MariaDB and checks the rows
a user would look at.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate.errors import ConfigError
from pmigrate.metadata import dialects
from tests.metadata_helpers import migrate, write_cfg
from tests.servers import MY_HOST, MY_PORT

pytestmark = [pytest.mark.dumps, pytest.mark.mysql]

OLD = "CaseCollideAbCdE"
NEW = "casecollideabcde"


@pytest.fixture
def source(load_dump, dumps_dir):
    """plikd's 0011 sqlite3 dump, loaded: (Database, autocommit connection)."""
    db = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    con = sqlite3.connect(db.go_dsn, isolation_level=None)
    yield db, con
    con.close()


def _add_upload(con, upload: str, comment: str, file_id: str) -> None:
    con.execute("INSERT INTO uploads (id, comments, created_at) VALUES (?, ?, '2026-07-08 12:00:00+02:00')", (upload, comment))
    con.execute(
        "INSERT INTO files (id, upload_id, name, status, size, created_at) VALUES (?, ?, ?, 'missing', 0, '2026-07-08 12:00:00+02:00')",
        (file_id, upload, f"name of {upload}"),
    )


def snapshot(db) -> dict[str, tuple]:
    """Every table of a database: its definition and its rows, exactly as the server returns them."""
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            out = {}
            for t in sorted(sa.inspect(c).get_table_names()):
                create = c.exec_driver_sql(f"SHOW CREATE TABLE `{t}`").one()[1]
                rows = sorted((tuple(r) for r in c.exec_driver_sql(f"SELECT * FROM `{t}`")), key=repr)
                out[t] = (create, rows)
            return out
    finally:
        eng.dispose()


def rows_where(db, sql: str) -> list[tuple]:
    eng = sa.create_engine(db.url)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.exec_driver_sql(sql)]
    finally:
        eng.dispose()


def cli(run_cli, src_cfg, dst_cfg, *args):
    return run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "-q", *args)


def test_rerun_refuses_a_new_key_that_differs_only_by_case(source, mysql_db, tmp_path, run_cli):
    db, con = source
    _add_upload(con, OLD, "first", "FILEOFOLDXXXXXXX")
    src_cfg, dst_cfg = write_cfg(db, tmp_path / "src.cfg"), write_cfg(mysql_db, tmp_path / "dst.cfg")
    first = cli(run_cli, src_cfg, dst_cfg, "--metadata-only")
    assert first.returncode == 0, first.stdout + first.stderr
    _add_upload(con, NEW, "second", "FILEOFNEWXXXXXXX")
    before = snapshot(mysql_db)

    second = cli(run_cli, src_cfg, dst_cfg, "--metadata-only")
    assert second.returncode == 2, second.stdout + second.stderr
    error = second.stderr.strip()
    assert error.count("\n") == 0 and "Traceback" not in error
    assert f"uploads id {NEW} and {OLD} (already in the target)" in error
    assert "nothing written" in error and "--ignore-errors" in error
    assert snapshot(mysql_db) == before

    dry = cli(run_cli, src_cfg, dst_cfg, "--metadata-only", "--dry-run", "--ignore-errors")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would skip: uploads:{NEW}: one key with {OLD} (already in the target)" in dry.stdout
    assert snapshot(mysql_db) == before

    report = tmp_path / "r.json"
    third = cli(run_cli, src_cfg, dst_cfg, "--metadata-only", "--ignore-errors", "--json", str(report))
    assert third.returncode == 1, third.stdout + third.stderr
    problems = {(p["kind"], p["item"]): p["message"] for p in json.loads(report.read_text())["problems"]}
    assert f"one key with {OLD} (already in the target)" in problems[("key-collision", f"uploads:{NEW}")]
    assert "names a row skipped above" in problems[("skipped-row", "files:FILEOFNEWXXXXXXX")]
    assert f"key-collision uploads:{NEW}" in third.stdout
    # the old row holds its own values, byte for byte; the new upload's file is not hung on it
    assert rows_where(mysql_db, f"SELECT * FROM uploads WHERE id = '{OLD}'") == [r for r in before["uploads"][1] if r[0] == OLD]
    assert rows_where(mysql_db, f"SELECT id FROM files WHERE upload_id = '{OLD}'") == [("FILEOFOLDXXXXXXX",)]

    verify = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q")
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert f"missing uploads:{NEW}: in the source, not in the target: the target's {OLD} is the same key in its collation" in verify.stdout


def test_rerun_never_writes_into_a_row_whose_key_left_the_source(source, mysql_db, tmp_path, run_cli):
    """plikd purged the old upload, then made one whose id differs only by case."""
    db, con = source
    _add_upload(con, OLD, "first", "FILEOFOLDXXXXXXX")
    src_cfg, dst_cfg = write_cfg(db, tmp_path / "src.cfg"), write_cfg(mysql_db, tmp_path / "dst.cfg")
    assert cli(run_cli, src_cfg, dst_cfg, "--metadata-only").returncode == 0
    con.execute(f"DELETE FROM files WHERE upload_id = '{OLD}'")
    con.execute(f"DELETE FROM uploads WHERE id = '{OLD}'")
    _add_upload(con, NEW, "second", "FILEOFNEWXXXXXXX")
    before = snapshot(mysql_db)

    refused = cli(run_cli, src_cfg, dst_cfg, "--metadata-only")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"uploads id {NEW} and {OLD} (in the target, gone from the source)" in refused.stderr
    assert snapshot(mysql_db) == before

    skipped = cli(run_cli, src_cfg, dst_cfg, "--metadata-only", "--ignore-errors")
    assert skipped.returncode == 1, skipped.stdout + skipped.stderr
    assert f"key-collision uploads:{NEW}: one key with {OLD} (in the target, gone from the source)" in skipped.stdout
    # whatever became of the old row, it never holds the new upload's values
    assert rows_where(mysql_db, "SELECT CAST(id AS BINARY), comments FROM uploads WHERE comments = 'second'") == []
    assert rows_where(mysql_db, "SELECT id FROM files WHERE id = 'FILEOFNEWXXXXXXX'") == []


def test_first_pass_refuses_keys_that_collide_with_each_other(source, mysql_db, tmp_path, run_cli):
    db, con = source
    _add_upload(con, OLD, "first", "FILEOFOLDXXXXXXX")
    _add_upload(con, NEW, "second", "FILEOFNEWXXXXXXX")
    src_cfg, dst_cfg = write_cfg(db, tmp_path / "src.cfg"), write_cfg(mysql_db, tmp_path / "dst.cfg")
    refused = cli(run_cli, src_cfg, dst_cfg, "--metadata-only")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"uploads id {OLD} and {NEW} (collation utf8mb4_general_ci)" in refused.stderr
    assert snapshot(mysql_db) == {}

    skipped = cli(run_cli, src_cfg, dst_cfg, "--metadata-only", "--ignore-errors")
    assert skipped.returncode == 1, skipped.stdout + skipped.stderr
    assert f"key-collision uploads:{NEW}: one key with {OLD} (copied)" in skipped.stdout
    assert rows_where(mysql_db, "SELECT CAST(id AS BINARY), comments FROM uploads WHERE id = 'casecollideabcde'") == [(OLD.encode(), "first")]
    assert rows_where(mysql_db, f"SELECT id FROM files WHERE upload_id = '{OLD}'") == [("FILEOFOLDXXXXXXX",)]
    # and the next pass keeps that choice
    again = cli(run_cli, src_cfg, dst_cfg, "--metadata-only", "--ignore-errors")
    assert again.returncode == 1 and f"one key with {OLD} (already in the target)" in again.stdout


@pytest.mark.postgres
def test_every_string_key_from_a_postgres_source(load_dump, dumps_dir, mysql_db, tmp_path, pg_server):
    """users, tokens (their child), settings (accents), usage_stats and upload_stats_daily (a day in the key)."""
    src = load_dump(dumps_dir / "postgres" / "0011-stats.postgres.dump")
    pg_server.psql(
        src,
        """
        INSERT INTO users (id, provider, login) VALUES ('local:ADMIN', 'local', 'ADMIN');
        INSERT INTO tokens (token, comment, user_id) VALUES ('token-of-upper-admin', 'x', 'local:ADMIN');
        INSERT INTO settings (key, value) VALUES ('clé', 'accent'), ('cle', 'plain');
        INSERT INTO usage_stats (user_id, token) VALUES ('LOCAL:admin', '');
        INSERT INTO upload_stats_daily (day, user_id, token, uploads, bytes)
          VALUES ('2026-07-08 00:00:00+00', 'Google:GoogleUser', '', 1, 0),
                 ('2026-07-09 00:00:00+00', 'Google:GoogleUser', '', 1, 0);
        """,
    )
    with pytest.raises(ConfigError) as err:
        migrate(src, mysql_db, tmp_path / "refused")
    assert "users id local:ADMIN and local:admin" in str(err.value)
    assert snapshot(mysql_db) == {}

    report = migrate(src, mysql_db, tmp_path / "skipped", ignore_errors=True)
    assert report.exit_code == 1
    skipped = {p.item for p in report.problems if p.kind == "key-collision"}
    assert skipped == {
        "users:local:admin",  # 'local:ADMIN' < 'local:admin': the first in code-point order is kept
        "settings:clé",
        "usage_stats:local:admin/",
        "upload_stats_daily:2026-07-08 00:00:00+00:00/google:googleuser/",
    }
    children = {p.item for p in report.problems if p.kind == "skipped-row"}
    assert children == {"tokens:e78415ed-883e-4d0b-5d0e-fe2d03757520"}  # the admin token of the skipped user
    assert rows_where(mysql_db, "SELECT CAST(`key` AS BINARY), value FROM settings WHERE `key` = 'cle'") == [(b"cle", "plain")]
    # another day is another key: copied
    assert rows_where(mysql_db, "SELECT COUNT(*) FROM upload_stats_daily WHERE user_id = 'google:googleuser' AND day >= '2026-07-09'") == [(1,)]


def test_colliding_file_ids_are_refused_with_the_blobs(source, mysql_db, tmp_path, run_cli):
    """Blob keys are case-sensitive on this file system and on S3: only the database collides."""
    db, con = source
    con.execute("UPDATE files SET status = 'deleted' WHERE id = 'FILE1XXXXXXXXXXX'")  # the dump's file has no blob
    src_cfg, dst_cfg = write_cfg(db, tmp_path / "src.cfg"), write_cfg(mysql_db, tmp_path / "dst.cfg")
    src_files, dst_files = tmp_path / "src-files", tmp_path / "dst-files"
    blobs = {"FileCollideAbCdE": b"old bytes", "filecollideabcde": b"new bytes, other size"}
    for fid, data in blobs.items():
        (src_files / fid[:2]).mkdir(parents=True, exist_ok=True)
        (src_files / fid[:2] / fid).write_bytes(data)

    def add_file(fid: str) -> None:
        con.execute(
            "INSERT INTO files (id, upload_id, name, status, size, created_at) "
            "VALUES (?, 'UPLOAD1XXXXXXXXX', ?, 'uploaded', ?, '2026-07-08 12:00:00+02:00')",
            (fid, fid, len(blobs[fid])),
        )

    add_file("FileCollideAbCdE")
    add_file("filecollideabcde")
    first = cli(run_cli, src_cfg, dst_cfg)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "files id FileCollideAbCdE and filecollideabcde" in first.stderr
    assert snapshot(mysql_db) == {} and not dst_files.exists()

    con.execute("DELETE FROM files WHERE id = 'filecollideabcde'")
    assert cli(run_cli, src_cfg, dst_cfg).returncode == 0
    add_file("filecollideabcde")
    before, blobs_before = snapshot(mysql_db), _tree(dst_files)
    again = cli(run_cli, src_cfg, dst_cfg)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "files id filecollideabcde and FileCollideAbCdE (already in the target)" in again.stderr
    assert snapshot(mysql_db) == before and _tree(dst_files) == blobs_before

    skipped = cli(run_cli, src_cfg, dst_cfg, "--ignore-errors")
    assert skipped.returncode == 1, skipped.stdout + skipped.stderr
    assert "key-collision files:filecollideabcde: one key with FileCollideAbCdE (already in the target)" in skipped.stdout
    assert rows_where(mysql_db, "SELECT CAST(id AS BINARY), size FROM files WHERE id = 'filecollideabcde'") == [(b"FileCollideAbCdE", 9)]
    assert (dst_files / "Fi" / "FileCollideAbCdE").read_bytes() == b"old bytes"


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_upsert_never_writes_one_keys_values_into_another_keys_row(mysql_db):
    """The merge's own statement, whatever preflight found: a row changes only under its own spelling."""
    eng = sa.create_engine(mysql_db.url)
    try:
        with eng.begin() as c:
            c.exec_driver_sql("CREATE TABLE t (id varchar(256) NOT NULL PRIMARY KEY, v varchar(256)) DEFAULT CHARSET=utf8mb4")
            c.exec_driver_sql(f"INSERT INTO t VALUES ('{OLD}', 'first')")
        writer = dialects.TargetWriter.from_engine(eng, "mysql")
        try:
            sink = writer.sink("t", ["id", "v"], ["id"], upsert=True)
            sink.write([(NEW, "second")])
            assert writer.all("SELECT CAST(id AS BINARY), v FROM t") == [(OLD.encode(), "first")]
            sink.write([(OLD, "third")])
            writer.commit()
            assert writer.all("SELECT CAST(id AS BINARY), v FROM t") == [(OLD.encode(), "third")]
        finally:
            writer.close()
    finally:
        eng.dispose()


def test_a_target_user_without_temporary_tables_is_told_what_to_grant(source, mysql_db, mysql_server, tmp_path, run_cli):
    db, _ = source
    user, password = f"pmt_{mysql_db.name[-10:]}", "pw-Collide-1"
    admin = mysql_server.admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'")
            cur.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, REFERENCES ON `{mysql_db.name}`.* TO '{user}'@'%'"
            )
        limited = dataclasses.replace(
            mysql_db,
            go_dsn=f"{user}:{password}@tcp({MY_HOST}:{MY_PORT})/{mysql_db.name}?charset=utf8mb4&parseTime=True&loc=Local",
            url=f"mysql+pymysql://{user}:{password}@{MY_HOST}:{MY_PORT}/{mysql_db.name}?charset=utf8mb4",
        )
        r = cli(run_cli, write_cfg(db, tmp_path / "src.cfg"), write_cfg(limited, tmp_path / "dst.cfg"), "--metadata-only")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "GRANT CREATE TEMPORARY TABLES" in r.stderr and password not in r.stderr + r.stdout
        assert snapshot(mysql_db) == {}
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()
