"""Text a sqlite3 source holds that is not UTF-8 (plikd stores a Go string's bytes as they are)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests import verifykit as vk
from tests.metadata_helpers import table_rows
from tests.servers import sqlite_database

pytestmark = [pytest.mark.dumps]

COMMENT = b"A\xff\xfeB"  # on UPLOAD2XXXXXXXXX, parent of FILE2XXXXXXXXXXX
NAME = "filé.txt".encode("latin-1")  # on FILE3XXXXXXXXXXX
TYPE = b"text/\xe9"  # on a file with a blob
ITEMS = vk.blobs(3)


@pytest.fixture
def source(load_dump, dumps_dir, tmp_path):
    """plikd's 0011 sqlite3 dump with blobs, and bytes that do not decode in three columns."""
    db = load_dump(dumps_dir / "sqlite3" / "0011-stats.sqlite3.dump")
    vk.add_file_rows(db.url, ITEMS)
    vk.write_file_blobs(tmp_path / "src-files", ITEMS)
    con = sqlite3.connect(db.go_dsn)
    try:
        with con:
            con.execute("UPDATE uploads SET comments = CAST(? AS TEXT) WHERE id = 'UPLOAD2XXXXXXXXX'", (COMMENT,))
            con.execute("UPDATE files SET name = CAST(? AS TEXT) WHERE id = 'FILE3XXXXXXXXXXX'", (NAME,))
            con.execute("UPDATE files SET type = CAST(? AS TEXT) WHERE id = ?", (TYPE, ITEMS[1].file_id))
    finally:
        con.close()
    return db, vk.file_cfg(tmp_path / "src.cfg", db=db, directory=tmp_path / "src-files")


def _raw(path, sql: str, *args) -> tuple:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql, args).fetchone()
    finally:
        con.close()


def test_sqlite_to_sqlite_keeps_the_bytes(source, tmp_path, run_cli):
    db, src_cfg = source
    target = sqlite_database(tmp_path / "target.db")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=target, directory=tmp_path / "dst-files")
    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--verify", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    for table, column, key in (("uploads", "comments", "UPLOAD2XXXXXXXXX"), ("files", "name", "FILE3XXXXXXXXXXX"),
                               ("files", "type", ITEMS[1].file_id)):
        sql = f"SELECT typeof({column}), hex({column}) FROM {table} WHERE id = ?"
        assert _raw(target.go_dsn, sql, key) == _raw(db.go_dsn, sql, key)
        assert _raw(target.go_dsn, sql, key)[0] == "text"
    assert (tmp_path / "dst-files" / ITEMS[1].file_id[:2] / ITEMS[1].file_id).read_bytes() == ITEMS[1].data
    r = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "-q")
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("driver", [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)])
def test_utf8_only_targets_name_the_row_or_skip_it(source, tmp_path, run_cli, request, driver):
    _, src_cfg = source
    target = request.getfixturevalue("pg_db" if driver == "postgres" else "mysql_db")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=target, directory=tmp_path / "dst-files")

    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert (
        "uploads:UPLOAD2XXXXXXXXX: column comments: text that is not valid UTF-8 ('A\\xff\\xfeB'), "
        f"which {driver} cannot store; fix it at the source, or pass --ignore-errors to skip such rows" in r.stderr
    )
    assert table_rows(target, digits=3) == {}

    report = tmp_path / "r.json"
    r = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q", "--ignore-errors", "--json", str(report))
    assert r.returncode == 1, r.stdout + r.stderr  # rows are missing: not a success
    skipped = {p["item"]: p["message"] for p in json.loads(report.read_text())["problems"] if p["kind"] == "skipped-row"}
    assert sorted(skipped) == ["files:FILE2XXXXXXXXXXX", "files:FILE3XXXXXXXXXXX", f"files:{ITEMS[1].file_id}", "uploads:UPLOAD2XXXXXXXXX"]
    assert "column comments: text that is not valid UTF-8" in skipped["uploads:UPLOAD2XXXXXXXXX"]
    assert "names a row skipped above" in skipped["files:FILE2XXXXXXXXXXX"]  # its upload is not there
    assert "column name: text that is not valid UTF-8 ('fil\\xe9.txt')" in skipped["files:FILE3XXXXXXXXXXX"]
    assert "column type" in skipped[f"files:{ITEMS[1].file_id}"]
    assert "skipped-row uploads:UPLOAD2XXXXXXXXX" in r.stdout
    rows = table_rows(target, digits=3)
    assert sorted(key for (key,) in rows["uploads"]) == ["UPLOAD1XXXXXXXXX", "UPLOAD3XXXXXXXXX", "UPLOAD4XXXXXXXXX"]
    assert sorted(key for (key,) in rows["files"]) == sorted(["FILE1XXXXXXXXXXX", "VFDELETEDXXXXXXX", ITEMS[0].file_id, ITEMS[2].file_id])

    r = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q", "--json", str(report))
    assert r.returncode == 1 and r.stderr == "", r.stdout + r.stderr
    missing = {p["item"] for p in json.loads(report.read_text())["problems"] if p["kind"] == "missing"}
    assert missing == {"uploads:UPLOAD2XXXXXXXXX", "files:FILE2XXXXXXXXXXX", "files:FILE3XXXXXXXXXXX", f"files:{ITEMS[1].file_id}"}
