"""pmigrate fakedb: deterministic, plausible Plik deployments that plikd could serve."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy

from pmigrate import cli, config
from pmigrate.fake.tables import ALL, MIGRATIONS
from pmigrate.metadata import db

SMALL = ("--users", "6", "--uploads", "40", "--files", "150", "--sizes", "small", "--legacy-fraction", "0.1", "-q")
ID = re.compile(r"[A-Za-z0-9]{16}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[4-7][0-9a-f]{3}-[0-9a-f]{12}")
SQLITE_TS = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])?[+-]\d\d:\d\d")
EMPTY_MD5 = hashlib.md5(b"").hexdigest()


def make(out: Path, *args: str, seed: int = 7) -> Path:
    assert cli.main(["fakedb", str(out), "--seed", str(seed), *SMALL, *args]) == 0
    return out


def rows(db: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT * FROM `{table}` ORDER BY 1, 2").fetchall() if table != "migrations" else \
            con.execute("SELECT id FROM migrations ORDER BY rowid").fetchall()
    finally:
        con.close()


def query(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def instant(sqlite_ts: str) -> datetime:
    """gorm's sqlite text (nanoseconds) as an aware datetime, truncated to microseconds."""
    m = re.fullmatch(r"(.{19})(?:\.(\d+))?(.{6})", sqlite_ts)
    frac = (m.group(2) or "").ljust(9, "0")[:6]
    return datetime.fromisoformat(f"{m.group(1)}.{frac}{m.group(3)}")


def blob_tree(files_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(files_dir)): p.read_bytes() for p in sorted(files_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("fakedb") / "dep")


def test_same_seed_gives_same_rows_and_bytes(tmp_path, deployment):
    again = make(tmp_path / "again")
    for table in ALL:
        assert rows(again / "plik.db", table.name) == rows(deployment / "plik.db", table.name), table.name
    assert blob_tree(again / "files") == blob_tree(deployment / "files")
    other = make(tmp_path / "other", seed=8)
    assert rows(other / "plik.db", "files") != rows(deployment / "plik.db", "files")
    assert blob_tree(other / "files") != blob_tree(deployment / "files")


def test_parts_made_by_worker_processes(tmp_path):
    """Parts made in one process or by workers: the same rows, every count exact, statistics summed across parts."""
    one = make(tmp_path / "one", "--parts", "3")
    two = make(tmp_path / "two", "--parts", "3", "--jobs", "2")
    for table in ALL:
        assert rows(one / "plik.db", table.name) == rows(two / "plik.db", table.name), table.name
    assert blob_tree(one / "files") == blob_tree(two / "files")
    assert query(one / "plik.db", "SELECT count(*), count(DISTINCT upload_id) > 3 FROM files") == [(150, 1)]
    check_usage(one / "plik.db")
    check_blobs(one)
    check_foreign_keys(one)


def check_usage(db: Path) -> None:
    """usage_stats per user (token '') and __anonymous__ add up to the uploads and files tables."""
    per_user = "FROM usage_stats WHERE token = ''"
    assert query(db, f"SELECT sum(lifetime_uploads), sum(current_uploads) {per_user}") == query(
        db, "SELECT count(*), sum(deleted_at IS NULL) FROM uploads")
    assert query(db, f"SELECT sum(current_files), sum(current_size) {per_user}") == query(
        db, "SELECT count(*), sum(size) FROM files JOIN uploads ON uploads.id = files.upload_id "
            "WHERE status = 'uploaded' AND deleted_at IS NULL")
    assert query(db, f"SELECT sum(lifetime_users) {per_user}") == query(db, "SELECT count(*) FROM users")
    assert query(db, "SELECT sum(uploads) FROM upload_stats_daily WHERE token = ''") == query(
        db, "SELECT count(*) FROM uploads")


def test_usage_stats_add_up(deployment):
    check_usage(deployment / "plik.db")


def test_counts_statuses_and_soft_deleted_uploads(deployment):
    db = deployment / "plik.db"
    assert query(db, "SELECT count(*) FROM users")[0][0] == 6
    assert query(db, "SELECT count(*) FROM uploads")[0][0] == 40
    assert query(db, "SELECT count(*) FROM files")[0][0] == 150
    statuses = {s for (s,) in query(db, "SELECT DISTINCT status FROM files")}
    assert statuses == {"missing", "uploading", "uploaded", "removed", "deleted"}
    assert query(db, "SELECT count(*) FROM uploads WHERE deleted_at IS NOT NULL")[0][0] >= 1
    assert query(db, "SELECT count(*) FROM uploads WHERE user = ''")[0][0] == round(0.3 * 40)
    assert [m for (m,) in rows(db, "migrations")] == list(MIGRATIONS)
    for table in ("tokens", "settings", "usage_stats", "upload_stats_daily", "download_stats_daily"):
        assert query(db, f"SELECT count(*) FROM {table}")[0][0] > 0, table


def test_blobs_are_where_plikd_reads_them_with_their_md5(deployment):
    check_blobs(deployment)


def check_blobs(deployment: Path) -> None:
    files_dir = deployment / "files"
    stored = query(deployment / "plik.db", "SELECT id, upload_id, md5, size, status FROM files")
    on_disk = set()
    layouts = {"current": 0, "legacy": 0}
    for file_id, upload_id, md5, size, status in stored:
        current = files_dir / file_id[:2] / file_id
        legacy = files_dir / upload_id[:2] / upload_id / file_id
        found = [p for p in (current, legacy) if p.is_file()]
        if status in ("uploaded", "removed"):
            assert len(found) == 1, (file_id, status)
            data = found[0].read_bytes()
            assert len(data) == size
            assert hashlib.md5(data).hexdigest() == md5
            layouts["current" if found[0] == current else "legacy"] += 1
            on_disk.add(found[0])
        else:
            assert not found, (file_id, status)
    assert layouts["current"] > 0 and layouts["legacy"] > 0
    assert on_disk == {p for p in files_dir.rglob("*") if p.is_file()}


def test_zero_byte_files_are_present(deployment):
    zero = query(deployment / "plik.db", "SELECT md5 FROM files WHERE size = 0 AND status IN ('uploaded', 'removed')")
    assert zero and all(md5 == EMPTY_MD5 for (md5,) in zero)


def test_unicode_names_survive(deployment):
    names = " ".join(n for (n,) in query(deployment / "plik.db", "SELECT name FROM files"))
    for script in (r"[\u0600-\u06ff]", r"[\uac00-\ud7af]", r"[\u0900-\u097f]", r"[\U0001F300-\U0001FAFF]"):
        assert re.search(script, names), script


def test_foreign_keys_hold(deployment):
    check_foreign_keys(deployment)


def check_foreign_keys(deployment: Path) -> None:
    db = deployment / "plik.db"
    assert query(db, "SELECT count(*) FROM files WHERE upload_id NOT IN (SELECT id FROM uploads)") == [(0,)]
    assert query(db, "SELECT count(*) FROM tokens WHERE user_id NOT IN (SELECT id FROM users)") == [(0,)]
    assert query(db, "SELECT count(*) FROM uploads WHERE user <> '' AND user NOT IN (SELECT id FROM users)") == [(0,)]
    assert query(db, "SELECT count(*) FROM uploads WHERE token <> '' AND token NOT IN "
                     "(SELECT token FROM tokens WHERE tokens.user_id = uploads.user)") == [(0,)]


def test_values_have_plikd_shapes(deployment):
    db = deployment / "plik.db"
    for (upload_id, upload_token) in query(db, "SELECT id, upload_token FROM uploads"):
        assert ID.fullmatch(upload_id) and re.fullmatch(r"[A-Za-z0-9]{32}", upload_token)
    assert all(ID.fullmatch(f) for (f,) in query(db, "SELECT id FROM files"))
    assert all(UUID.fullmatch(t) for (t,) in query(db, "SELECT token FROM tokens"))
    for user_id, provider, login in query(db, "SELECT id, provider, login FROM users"):
        assert user_id == f"{provider}:{login}" and provider in ("local", "google", "ovh")
    for (created, expire, deleted) in query(db, "SELECT created_at, expire_at, deleted_at FROM uploads"):
        for ts in (created, expire, deleted):
            assert ts is None or SQLITE_TS.fullmatch(ts), ts
    assert all(len(c) < 256 for (c,) in query(db, "SELECT comments FROM uploads"))
    assert query(db, "SELECT DISTINCT backend_details FROM files") == [("",)]
    assert query(db, "SELECT count(*) FROM files WHERE status IN ('uploaded', 'removed', 'deleted') "
                     "AND length(md5) <> 32") == [(0,)]


def test_plikd_cfg_points_at_what_was_made(deployment):
    cfg = tomllib.loads((deployment / "plikd.cfg").read_text(encoding="utf-8"))
    assert cfg["DataBackend"] == "file"
    assert cfg["DataBackendConfig"]["Directory"] == str(deployment / "files")
    assert cfg["MetadataBackendConfig"] == {"Driver": "sqlite3", "ConnectionString": str(deployment / "plik.db")}
    loaded = config.load(deployment / "plikd.cfg")
    assert (loaded.data.backend, loaded.data.options["Directory"]) == ("file", str(deployment / "files"))
    assert db.sqlite_file(loaded.metadata) == deployment / "plik.db"


def test_metadata_only_writes_no_blob(tmp_path):
    out = make(tmp_path / "meta", "--metadata-only")
    assert not any((out / "files").iterdir())
    md5s = query(out / "plik.db", "SELECT md5 FROM files WHERE status IN ('uploaded', 'removed')")
    assert md5s and all(re.fullmatch(r"[0-9a-f]{32}", m) for (m,) in md5s)


def test_refuses_a_non_empty_dir(tmp_path, run_cli):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run_cli("fakedb", str(out), "--files", "5")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "not an empty folder" in res.stderr and "Traceback" not in res.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _counts(engine: sqlalchemy.Engine) -> dict[str, int]:
    try:
        with engine.connect() as conn:
            q = '"{}"' if engine.dialect.name == "postgresql" else "`{}`"
            return {t.name: conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {q.format(t.name)}")).scalar() for t in ALL}
    finally:
        engine.dispose()


@pytest.mark.parametrize("server", ["pg_db", "mysql_db"])
def test_on_a_database_server(request, tmp_path, deployment, server):
    db = request.getfixturevalue(server)
    out = make(tmp_path / "dep", "--metadata-url", db.url)
    counts = _counts(sqlalchemy.create_engine(db.url))
    expected = {t.name: query(deployment / "plik.db", f"SELECT count(*) FROM `{t.name}`")[0][0] for t in ALL}
    assert counts == expected
    cfg = tomllib.loads((out / "plikd.cfg").read_text(encoding="utf-8"))
    assert cfg["MetadataBackendConfig"]["Driver"] == db.driver
    assert not (out / "plik.db").exists()
    assert blob_tree(out / "files") == blob_tree(deployment / "files")
    # The same rows, timestamps as native types holding the same instants.
    engine = sqlalchemy.create_engine(db.url)
    try:
        with engine.connect() as conn:
            served = conn.execute(sqlalchemy.text("SELECT id, name, md5, size, created_at FROM files ORDER BY id")).all()
    finally:
        engine.dispose()
    local = query(deployment / "plik.db", "SELECT id, name, md5, size, created_at FROM files ORDER BY id")
    assert sorted(r[:4] for r in served) == sorted(r[:4] for r in local)
    precision = timedelta(microseconds=1 if server == "pg_db" else 1000)
    by_id = {r[0]: r[4] for r in local}
    for file_id, *_, created in served:
        expected = instant(by_id[file_id])
        got = created if created.tzinfo else created.replace(tzinfo=UTC)  # mysql: loc=UTC
        assert timedelta(0) <= expected - got < precision, (file_id, expected, got)


def test_into_the_database_a_plikd_cfg_names(tmp_path, pg_db, run_cli, deployment):
    """--metadata-config, and the written plikd.cfg read back by pmigrate's own config loader."""
    cfg = tmp_path / "given.cfg"
    cfg.write_text(pg_db.toml(), encoding="utf-8")
    out = make(tmp_path / "dep", "--metadata-config", str(cfg), "--metadata-only")
    written = config.load(out / "plikd.cfg")
    assert (written.metadata.driver, written.metadata.connection_string) == ("postgres", pg_db.go_dsn)
    assert _counts(db.engine(written.metadata))["files"] == 150
    again = run_cli("fakedb", str(tmp_path / "again"), "--metadata-config", str(cfg), "--files", "5")
    assert again.returncode == 2 and "already holds Plik tables" in again.stderr
    assert again.stderr.count("\n") == 1 and not (tmp_path / "again").exists()


def test_usage_errors_are_one_line(tmp_path, run_cli):
    for args in (["--metadata-url", "sqlite:////tmp/x.db", "--metadata-config", "x.cfg"],
                 ["--metadata-url", "oracle://u:hunter22@h/db"],
                 ["--anon-uploads", "12", "--uploads", "10"],
                 ["--uploads", "0", "--files", "3"]):
        res = run_cli("fakedb", str(tmp_path / "dep"), *args)
        assert res.returncode == 2, args
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr and "hunter22" not in res.stderr, res.stderr
        assert not (tmp_path / "dep").exists()


def test_parts_written_by_workers_on_postgres(tmp_path, pg_db):
    """Workers write their parts straight into the server; uploads before files, counts exact."""
    make(tmp_path / "dep", "--metadata-url", pg_db.url, "--parts", "3", "--jobs", "2", "--metadata-only")
    engine = sqlalchemy.create_engine(pg_db.url)
    counts = _counts(engine)
    assert (counts["users"], counts["uploads"], counts["files"]) == (6, 40, 150)
    engine = sqlalchemy.create_engine(pg_db.url)
    try:
        with engine.connect() as conn:
            orphans = conn.execute(sqlalchemy.text(
                "SELECT count(*) FROM files WHERE upload_id NOT IN (SELECT id FROM uploads)")).scalar()
            daily = conn.execute(sqlalchemy.text("SELECT sum(uploads) FROM upload_stats_daily WHERE token = ''")).scalar()
    finally:
        engine.dispose()
    assert (orphans, daily) == (0, 40)
