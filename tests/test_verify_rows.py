"""Row audit on real databases: clean pairs match, every changed, missing and extra row is named."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from pmigrate.report import Report
from pmigrate.verify import rows
from tests import dumps as dumps_mod
from tests import verifykit as vk

LEVEL = "0011-stats"


def _pair(request, tmp_path, folder: str):
    """The same dump loaded into two databases of its driver."""
    path = dumps_mod.dumps_dir() / folder / f"{LEVEL}.{folder}.dump"
    driver = dumps_mod.dump_driver(path)
    pg = request.getfixturevalue("pg_server") if driver == "postgres" else None
    my = request.getfixturevalue("mysql_server") if driver == "mysql" else None
    out = []
    for side in ("src", "dst"):
        d = tmp_path / side
        d.mkdir()
        out.append(dumps_mod.load_dump(path, tmp_dir=d, pg=pg, my=my))
    return out


def _side(db) -> rows.Side:
    import datetime as dt

    return rows.Side(engine=sa.create_engine(db.url), driver=db.driver, zone=dt.UTC)


def _audit(src, dst):
    report = Report("verify")
    s, d = _side(src), _side(dst)
    try:
        clean = rows.audit(s, d, report=report)
    finally:
        s.engine.dispose()
        d.engine.dispose()
    return clean, report


@pytest.mark.parametrize("folder", ["sqlite3", "postgres", "mysql"])
def test_rows_changed_missing_extra_named(request, tmp_path, dumps_dir, folder):
    src, dst = _pair(request, tmp_path, folder)
    clean, report = _audit(src, dst)
    assert clean and not report.failed, [p for p in report.problems]
    figures = report.sections["verify-rows"]["tables"]
    assert figures["files"]["ok"] == figures["files"]["source_rows"] > 0
    assert figures["files"]["source_digest"] == figures["files"]["target_digest"]

    q = '"' if folder != "mysql" else "`"
    vk.execute(
        dst,
        "UPDATE files SET name = 'renamed' WHERE id = 'FILE1XXXXXXXXXXX'",
        "DELETE FROM tokens WHERE comment = 'user token'",
        f"INSERT INTO settings ({q}key{q}, {q}value{q}) VALUES ('added', 'x')",
    )
    clean, report = _audit(src, dst)
    assert not clean and report.exit_code == 1
    found = {(p.kind, p.item) for p in report.problems}
    assert found == {
        ("changed", "files:FILE1XXXXXXXXXXX"),
        ("missing", "tokens:8cbaeacd-6a3e-4636-4200-607a6e240688"),
        ("extra", "settings:added"),
    }
    changed = next(p for p in report.problems if p.kind == "changed")
    assert changed.message.startswith("columns differ: name (source")
    t = report.sections["verify-rows"]["tables"]
    assert (t["tokens"]["missing"], t["settings"]["extra"], t["files"]["changed"]) == (1, 1, 1)
    assert t["tokens"]["first_keys"] == {"missing": ["8cbaeacd-6a3e-4636-4200-607a6e240688"]}


def test_same_instant_other_spelling_is_equal(tmp_path, dumps_dir):
    """An offset rewritten to UTC, 0/1 booleans spelled true/false: same values."""
    src, dst = _pair(None, tmp_path, "sqlite3")
    vk.execute(
        dst,
        "UPDATE uploads SET created_at = '2026-07-08 10:00:28.111626847Z' WHERE id = 'UPLOAD2XXXXXXXXX'",
        "UPDATE uploads SET one_shot = 'true' WHERE id = 'UPLOAD1XXXXXXXXX'",
    )
    clean, report = _audit(src, dst)
    assert clean, report.problems
    vk.execute(dst, "UPDATE uploads SET created_at = '2026-07-08 10:00:28.111626848Z' WHERE id = 'UPLOAD2XXXXXXXXX'")
    clean, report = _audit(src, dst)
    assert {(p.kind, p.item) for p in report.problems} == {("changed", "uploads:UPLOAD2XXXXXXXXX")}
    assert "created_at" in report.problems[0].message


def test_empty_is_not_null(tmp_path, dumps_dir):
    src, dst = _pair(None, tmp_path, "sqlite3")
    vk.execute(dst, "UPDATE uploads SET comments = NULL WHERE id = 'UPLOAD2XXXXXXXXX'")
    clean, report = _audit(src, dst)
    assert not clean
    assert "comments (source '', target NULL)" in report.problems[0].message


def test_timestamp_keys_and_missing_table(tmp_path, dumps_dir):
    """upload_stats_daily is keyed by a timestamp: sorted on disk, still named by key."""
    src, dst = _pair(None, tmp_path, "sqlite3")
    vk.execute(
        dst,
        "UPDATE upload_stats_daily SET day = '2026-07-08 02:00:00+02:00' WHERE user_id = '' AND day LIKE '2026%'",
        "DELETE FROM upload_stats_daily WHERE user_id = 'google:googleuser' AND token = ''",
        "DROP TABLE settings",
    )
    clean, report = _audit(src, dst)
    found = {(p.kind, p.item) for p in report.problems}
    assert found == {
        ("missing", "upload_stats_daily:2026-07-08 00:00:00Z/google:googleuser/"),
        ("missing-table", "settings"),
    }


def test_cli_rows_only(tmp_path, dumps_dir, run_cli):
    src, dst = _pair(None, tmp_path, "sqlite3")
    for name, db in (("src", src), ("dst", dst)):
        (tmp_path / f"{name}.cfg").write_text(f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{tmp_path}/{name}-files"\n' + db.toml())
    out = tmp_path / "r.json"
    proc = run_cli("verify", "--config", str(tmp_path / "src.cfg"), "--to", str(tmp_path / "dst.cfg"), "--metadata-only", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vk.execute(dst, "UPDATE users SET email = 'x@y' WHERE id = 'local:admin'")
    proc = run_cli("verify", "--config", str(tmp_path / "src.cfg"), "--to", str(tmp_path / "dst.cfg"), "--metadata-only", "--json", str(out))
    assert proc.returncode == 1
    report = json.loads(out.read_text())
    assert [(p["kind"], p["item"]) for p in report["problems"]] == [("changed", "users:local:admin")]
    assert "users: 2 source rows, 2 target rows, 1 ok, 1 changed (first: local:admin)" in proc.stdout
    assert "verify-blobs" not in report["sections"]


def test_sessions_compared_only_when_copied(tmp_path, dumps_dir):
    src, dst = _pair(None, tmp_path, "sqlite3")
    vk.execute(src, "INSERT INTO cli_auth_sessions (code, secret, status) VALUES ('CODE1', 's', 'pending')")
    clean, report = _audit(src, dst)
    assert clean, report.problems
    assert report.sections["verify-rows"]["tables"]["cli_auth_sessions"]["skipped"]
    vk.execute(dst, "INSERT INTO cli_auth_sessions (code, secret, status) VALUES ('CODE2', 's', 'pending')")
    clean, report = _audit(src, dst)
    assert {(p.kind, p.item) for p in report.problems} == {
        ("missing", "cli_auth_sessions:CODE1"),
        ("extra", "cli_auth_sessions:CODE2"),
    }
