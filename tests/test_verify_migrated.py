"""After a real `pmigrate` between drivers: verify passes, and names what is changed afterwards.

The copier changes how values are spelled between drivers (0/1 and booleans,
timestamp text with offsets and nanoseconds, datetime(3)); verify must see the
same rows, and still see a row changed, removed or added on the target.
"""

from __future__ import annotations

import json

import pytest

from tests import dumps as dumps_mod
from tests import verifykit as vk
from tests.servers import sqlite_database

LEVEL = "0011-stats"

DIRECTIONS = [("sqlite3", "postgres"), ("sqlite3", "mysql"), ("postgres", "mysql"), ("mysql", "sqlite3")]


def _target(request, tmp_path, driver):
    if driver == "sqlite3":
        return sqlite_database(tmp_path / "target.db")
    return request.getfixturevalue("pg_db" if driver == "postgres" else "mysql_db")


@pytest.mark.parametrize("src_driver,dst_driver", DIRECTIONS, ids=[f"{a}-{b}" for a, b in DIRECTIONS])
def test_verify_after_metadata_migration(request, tmp_path, dumps_dir, run_cli, src_driver, dst_driver):
    folder = src_driver
    path = dumps_dir / folder / f"{LEVEL}.{folder}.dump"
    pg = request.getfixturevalue("pg_server") if src_driver == "postgres" else None
    my = request.getfixturevalue("mysql_server") if src_driver == "mysql" else None
    src = dumps_mod.load_dump(path, tmp_dir=tmp_path, pg=pg, my=my)
    dst = _target(request, tmp_path, dst_driver)
    (tmp_path / "a").mkdir()
    src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src, directory=tmp_path / "a")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=dst, directory=tmp_path / "b")
    out = tmp_path / "r.json"

    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "--verify", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tables = json.loads(out.read_text())["sections"]["verify-rows"]["tables"]
    assert tables["uploads"]["ok"] == tables["uploads"]["source_rows"] == 4
    assert tables["uploads"]["source_digest"] == tables["uploads"]["target_digest"]

    q = "`" if dst_driver == "mysql" else '"'
    vk.execute(
        dst,
        "UPDATE uploads SET comments = 'edited' WHERE id = 'UPLOAD1XXXXXXXXX'",
        "DELETE FROM files WHERE id = 'FILE3XXXXXXXXXXX'",
        f"INSERT INTO settings ({q}key{q}, {q}value{q}) VALUES ('added', 'x')",
    )
    proc = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "--json", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert {(p["kind"], p["item"]) for p in report["problems"] if p["fatal"]} == {
        ("changed", "uploads:UPLOAD1XXXXXXXXX"),
        ("missing", "files:FILE3XXXXXXXXXXX"),
        ("extra", "settings:added"),
    }
    assert "comments (source" in next(p["message"] for p in report["problems"] if p["kind"] == "changed")
