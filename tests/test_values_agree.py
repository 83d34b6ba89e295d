"""Copier and verify read a driver's values the same way.

A MariaDB target with loc=Local holds wall times in plikd's zone, with its
daylight saving: verify must read them as the copy wrote them, winter and
summer alike, and still see a timestamp changed afterwards. A sqlite boolean
spelled "" is carried as false, and verify agrees.
"""

from __future__ import annotations

import json

import sqlalchemy as sa

from tests import dumps as dumps_mod
from tests import verifykit as vk

LEVEL = "0011-stats"
PARIS = {"TZ": "Europe/Paris"}


def _source(tmp_path, dumps_dir):
    src = dumps_mod.load_dump(dumps_dir / "sqlite3" / f"{LEVEL}.sqlite3.dump", tmp_dir=tmp_path)
    vk.execute(
        src,
        "INSERT INTO uploads (id, ttl, extend_ttl, stream, one_shot, removable, protected_by_password, created_at) "
        "VALUES ('UPWINTERXXXXXXXX', 0, 0, 0, 0, 0, 0, '2025-01-15 10:20:30.123+01:00')",
        "INSERT INTO uploads (id, ttl, extend_ttl, stream, one_shot, removable, protected_by_password, created_at) "
        "VALUES ('UPSUMMERXXXXXXXX', 0, 0, 0, 0, 0, 0, '2025-07-15 10:20:30.456+02:00')",
        "INSERT INTO uploads (id, ttl, extend_ttl, stream, one_shot, removable, protected_by_password, created_at) "
        "VALUES ('UPEMPTYBOOLXXXXX', 0, '', 0, 0, 0, 0, '2025-03-30 01:30:00+00:00')",
    )
    return src


def _migrate(tmp_path, run_cli, src, dst, env):
    (tmp_path / "a").mkdir()
    src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src, directory=tmp_path / "a")
    dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=dst, directory=tmp_path / "b")
    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "-q", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return src_cfg, dst_cfg


def _verify(run_cli, src_cfg, dst_cfg, out, env):
    proc = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--metadata-only", "--json", str(out), env=env)
    return proc, json.loads(out.read_text())


def test_mysql_local_zone_verifies_clean_across_daylight_saving(tmp_path, dumps_dir, run_cli, mysql_db):
    assert "loc=Local" in mysql_db.go_dsn
    src = _source(tmp_path, dumps_dir)
    src_cfg, dst_cfg = _migrate(tmp_path, run_cli, src, mysql_db, PARIS)

    # The target holds Paris wall times: winter +01:00, summer +02:00.
    eng = sa.create_engine(mysql_db.url)
    try:
        with eng.connect() as conn:
            got = dict(conn.exec_driver_sql("SELECT id, created_at FROM uploads WHERE id IN ('UPWINTERXXXXXXXX', 'UPSUMMERXXXXXXXX')").fetchall())
    finally:
        eng.dispose()
    assert str(got["UPWINTERXXXXXXXX"]) == "2025-01-15 10:20:30.123000"
    assert str(got["UPSUMMERXXXXXXXX"]) == "2025-07-15 10:20:30.456000"

    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path / "r.json", PARIS)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["sections"]["verify-rows"]["tables"]["uploads"]["changed"] == 0

    vk.execute(mysql_db, "UPDATE uploads SET created_at = '2025-07-15 11:20:30.456' WHERE id = 'UPSUMMERXXXXXXXX'")
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path / "r2.json", PARIS)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    changed = [p for p in report["problems"] if p["fatal"]]
    assert [(p["kind"], p["item"]) for p in changed] == [("changed", "uploads:UPSUMMERXXXXXXXX")]
    assert "created_at (source 2025-07-15 08:20:30.456000000Z, target 2025-07-15 09:20:30.456000000Z)" in changed[0]["message"]


def test_empty_boolean_is_false_for_copy_and_verify(tmp_path, dumps_dir, run_cli, pg_db):
    src = _source(tmp_path, dumps_dir)
    src_cfg, dst_cfg = _migrate(tmp_path, run_cli, src, pg_db, None)
    eng = sa.create_engine(pg_db.url)
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("SELECT extend_ttl FROM uploads WHERE id = 'UPEMPTYBOOLXXXXX'").scalar() is False
    finally:
        eng.dispose()
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path / "r.json", None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["sections"]["verify-rows"]["tables"]["uploads"]["ok"] == 7
