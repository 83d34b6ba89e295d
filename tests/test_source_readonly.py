"""The source is only ever read: the servers themselves refuse any write through pmigrate's connections to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate import config
from pmigrate.metadata import copier, db, dialects
from pmigrate.options import RunOptions
from tests import dumps as dumps_mod
from tests import verifykit as vk
from tests.servers import sqlite_database

pytestmark = [pytest.mark.dumps]

DRIVERS = [
    pytest.param("sqlite3", id="sqlite3"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]

WRITES = ("INSERT INTO settings VALUES ('probe', 'written')", "CREATE TABLE pmigrate_probe (a integer)")
# What each server says when it refuses a write in a read-only connection or transaction.
REFUSED = {"sqlite3": "readonly database", "postgres": "read-only transaction", "mysql": "READ ONLY transaction"}


def _source(request, tmp_path: Path, dumps_dir: Path, driver: str):
    pg = request.getfixturevalue("pg_server") if driver == "postgres" else None
    my = request.getfixturevalue("mysql_server") if driver == "mysql" else None
    folder = tmp_path / "src"
    folder.mkdir()
    return dumps_mod.load_dump(dumps_dir / driver / f"0011-stats.{driver}.dump", tmp_dir=folder, pg=pg, my=my)


def _refused(engine: sa.Engine, driver: str) -> None:
    for autocommit in (False, True):
        for sql in WRITES:
            with engine.connect() as conn:
                if autocommit:
                    conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(sa.exc.DBAPIError, match=REFUSED[driver]):
                    conn.exec_driver_sql(sql)
                    conn.commit()


def _tables_and_settings(src) -> tuple[list[str], int]:
    eng = sa.create_engine(src.url)
    try:
        with eng.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names()), conn.exec_driver_sql("SELECT COUNT(*) FROM settings").scalar()
    finally:
        eng.dispose()


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_statement_can_write_the_source(request, tmp_path, dumps_dir, driver):
    src = _source(request, tmp_path, dumps_dir, driver)
    before = _tables_and_settings(src)
    src_cfg = config.load(vk.file_cfg(tmp_path / "src.cfg", db=src, directory=tmp_path / "a"))
    dst_cfg = config.load(vk.file_cfg(tmp_path / "dst.cfg", db=sqlite_database(tmp_path / "dst.db"), directory=tmp_path / "b"))

    plan = copier.preflight(src_cfg, dst_cfg, opts=RunOptions(data=False, quiet=True))
    try:
        _refused(plan.src_engine, driver)  # the metadata copy's engine
        for sql in WRITES:  # and its reader, inside its own transaction
            reader = dialects.SnapshotReader(plan.src_engine, driver)
            try:
                reader.begin()
                with pytest.raises(Exception, match=REFUSED[driver]):
                    reader.all(sql)
            finally:
                reader.close()
    finally:
        plan.src_engine.dispose()
        plan.dst_engine.dispose()
    engine = db.source_engine(src_cfg.metadata)  # the blob enumeration's and verify's
    try:
        _refused(engine, driver)
    finally:
        engine.dispose()
    assert _tables_and_settings(src) == before


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state(src, blobs: Path) -> dict:
    """The source as bytes: the sqlite3 folder's files, or every row of every table, and every blob."""
    if src.driver == "sqlite3":
        folder = Path(src.go_dsn).parent
        database = {p.name: _sha256(p) for p in sorted(folder.iterdir())}  # no journal or WAL left behind either
    else:
        eng = sa.create_engine(src.url)
        try:
            with eng.connect() as conn:
                insp = sa.inspect(conn)
                database = {}
                for t in sorted(insp.get_table_names()):
                    rows = sorted(repr(r) for r in conn.exec_driver_sql(f"SELECT * FROM {dialects.quote(src.driver, t)}"))
                    database[t] = ([c["name"] for c in insp.get_columns(t)], hashlib.sha256("\n".join(rows).encode()).hexdigest())
        finally:
            eng.dispose()
    return {"database": database, "blobs": {str(p.relative_to(blobs)): _sha256(p) for p in sorted(blobs.rglob("*")) if p.is_file()}}


@pytest.mark.slow
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_full_migration_leaves_the_source_as_it_was(request, tmp_path, dumps_dir, run_cli, driver):
    src = _source(request, tmp_path, dumps_dir, driver)
    items = vk.blobs(4)
    vk.add_file_rows(src.url, items)
    vk.write_file_blobs(tmp_path / "src-files", items)
    src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src, directory=tmp_path / "src-files")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=sqlite_database(tmp_path / "dst.db"), directory=tmp_path / "dst-files")
    before = _state(src, tmp_path / "src-files")

    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--verify", "-q", "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "r.json").read_text())["sections"]["data"]["copied"] == len(items)
    assert _state(src, tmp_path / "src-files") == before
