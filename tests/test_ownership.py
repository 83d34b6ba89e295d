"""pmigrate never updates or deletes in a target it did not fill from this very source.

Swapped --config/--to after a first pass, another deployment as target, a
target filled from another source: refused with exit 2 before anything is
written, the target byte for byte as it was. --merge inserts and updates
into such a target and deletes nothing; --prune deletes only in a target
this source filled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from pmigrate import cli
from pmigrate.data.base import OWNER_MARKER
from pmigrate.ownership import OWNER_TABLE

SMALL = ("--users", "3", "--uploads", "12", "--files", "40", "--sizes", "small", "-q")


def make(out: Path, *, seed: int) -> Path:
    """A fake Plik deployment (sqlite3 + file) under out; its plikd.cfg."""
    assert cli.main(["fakedb", str(out), "--seed", str(seed), *SMALL]) == 0
    return out / "plikd.cfg"


def target_cfg(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "target.cfg"
    cfg.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{root / "files"}"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{root / "plik.db"}"\n'
    )
    return cfg


def fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file under root (database and blobs), journals aside."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if not n.startswith(".pmigrate-journal"):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def plikd_adds_an_upload(root: Path) -> None:
    """What plikd does between two passes: one more upload with one file and its blob."""
    con = sqlite3.connect(root / "plik.db")
    with con:
        cols = [r[1] for r in con.execute("PRAGMA table_info(uploads)")]
        row = dict(zip(cols, con.execute("SELECT * FROM uploads LIMIT 1").fetchone()))
        row["id"] = "NewUploadAbcdef1"
        con.execute(f"INSERT INTO uploads ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
        fcols = [r[1] for r in con.execute("PRAGMA table_info(files)")]
        frow = dict(zip(fcols, con.execute("SELECT * FROM files WHERE status = 'uploaded' LIMIT 1").fetchone()))
        data = b"written by plikd after the first pass"
        frow.update(id="NewFileAbcdefgh1", upload_id="NewUploadAbcdef1", size=len(data), md5=hashlib.md5(data).hexdigest())
        con.execute(f"INSERT INTO files ({', '.join(frow)}) VALUES ({', '.join('?' * len(frow))})", list(frow.values()))
    con.close()
    blob = root / "files" / "Ne" / "NewFileAbcdefgh1"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)


def one_line_refusal(res, *words: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pmigrate: error:"), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.mark.slow
def test_swapped_flags_after_a_pass_leave_the_live_source_untouched(tmp_path, run_cli):
    src = make(tmp_path / "src", seed=1)
    dst = target_cfg(tmp_path / "dst")
    first = run_cli("--config", str(src), "--to", str(dst), "-q")
    assert first.returncode == 0, first.stderr
    plikd_adds_an_upload(tmp_path / "src")  # plikd goes on serving from the source
    before = fingerprint(tmp_path / "src")

    for extra in ((), ("--dry-run",), ("--prune",), ("--data-only",), ("--metadata-only",)):
        swapped = run_cli("--config", str(dst), "--to", str(src), "-q", *extra)
        one_line_refusal(swapped, "pmigrate did not copy from", "--merge")
        assert fingerprint(tmp_path / "src") == before, extra
    assert not (tmp_path / "src" / "files" / OWNER_MARKER).exists()
    assert OWNER_TABLE not in {r[0] for r in rows(tmp_path / "src" / "plik.db", "SELECT name FROM sqlite_master")}


@pytest.mark.slow
def test_a_foreign_deployment_as_target_is_refused_and_merge_never_deletes(tmp_path, run_cli):
    a = make(tmp_path / "a", seed=1)
    b = make(tmp_path / "b", seed=2)  # another deployment, same schema level
    before = fingerprint(tmp_path / "b")
    b_files = rows(tmp_path / "b" / "plik.db", "SELECT id FROM files ORDER BY id")

    refused = run_cli("--config", str(a), "--to", str(b), "-q")
    one_line_refusal(refused, "already holds", str(tmp_path / "b" / "plik.db"))
    assert fingerprint(tmp_path / "b") == before
    dry = run_cli("--config", str(a), "--to", str(b), "--dry-run", "-q")
    one_line_refusal(dry, "already holds")
    pruned = run_cli("--config", str(a), "--to", str(b), "--merge", "--prune", "-q")
    one_line_refusal(pruned, "--prune")
    assert fingerprint(tmp_path / "b") == before

    report = tmp_path / "merge.json"
    merged = run_cli("--config", str(a), "--to", str(b), "--merge", "-q", "--json", str(report))
    assert merged.returncode == 0, merged.stderr
    a_files = rows(tmp_path / "a" / "plik.db", "SELECT id FROM files ORDER BY id")
    got = rows(tmp_path / "b" / "plik.db", "SELECT id FROM files ORDER BY id")
    assert set(got) == set(a_files) | set(b_files)  # inserted, nothing deleted
    for path, digest in before.items():  # every blob of b's own is still there, unchanged
        if path.startswith("files/"):
            assert hashlib.sha256((tmp_path / "b" / path).read_bytes()).hexdigest() == digest, path
    data = json.loads(report.read_text())
    assert data["sections"]["metadata"]["target_owner"] == "foreign"
    assert data["sections"]["data"]["target_owner"] == "foreign"
    # A merge claims nothing: the next plain run is refused all the same.
    assert OWNER_TABLE not in {r[0] for r in rows(tmp_path / "b" / "plik.db", "SELECT name FROM sqlite_master")}
    assert not (tmp_path / "b" / "files" / OWNER_MARKER).exists()
    one_line_refusal(run_cli("--config", str(a), "--to", str(b), "-q"), "already holds")


@pytest.mark.slow
def test_a_target_filled_from_another_source_is_refused(tmp_path, run_cli):
    a = make(tmp_path / "a", seed=1)
    c = make(tmp_path / "c", seed=3)
    dst = target_cfg(tmp_path / "dst")
    assert run_cli("--config", str(a), "--to", str(dst), "-q").returncode == 0
    before = fingerprint(tmp_path / "dst")
    res = run_cli("--config", str(c), "--to", str(dst), "-q")
    one_line_refusal(res, "filled by pmigrate from another source", str(tmp_path / "a" / "plik.db"))
    assert fingerprint(tmp_path / "dst") == before


def test_a_data_store_holding_objects_pmigrate_did_not_write_is_refused(tmp_path, run_cli):
    a = make(tmp_path / "a", seed=1)
    dst = target_cfg(tmp_path / "dst")
    stranger = tmp_path / "dst" / "files" / "ab" / "abStrangerBlob01"
    stranger.parent.mkdir(parents=True)
    stranger.write_bytes(b"not pmigrate's")
    res = run_cli("--config", str(a), "--to", str(dst), "--data-only", "-q")
    one_line_refusal(res, "data store", "ab/abStrangerBlob01")
    assert sorted(p.name for p in (tmp_path / "dst" / "files").rglob("*")) == ["ab", "abStrangerBlob01"]
    assert not (tmp_path / "dst" / "plik.db").exists()


@pytest.mark.slow
def test_re_runs_into_an_owned_target_merge_and_prune_only_on_request(tmp_path, run_cli):
    src = make(tmp_path / "src", seed=1)
    dst = target_cfg(tmp_path / "dst")
    assert run_cli("--config", str(src), "--to", str(dst), "-q").returncode == 0
    marker = json.loads((tmp_path / "dst" / "files" / OWNER_MARKER).read_text())
    assert str(tmp_path / "src" / "files") in marker["source"]
    owner = rows(tmp_path / "dst" / "plik.db", f"SELECT part, source FROM {OWNER_TABLE}")
    assert owner[0][0] == "metadata" and str(tmp_path / "src" / "plik.db") in owner[0][1]

    con = sqlite3.connect(tmp_path / "src" / "plik.db")  # plikd purges an expired upload
    with con:
        gone = con.execute("SELECT id FROM uploads WHERE id NOT IN (SELECT upload_id FROM files) LIMIT 1").fetchone()
        if gone is None:
            gone = con.execute("SELECT upload_id FROM files WHERE status NOT IN ('uploaded', 'removed') LIMIT 1").fetchone()
            con.execute("DELETE FROM files WHERE upload_id = ?", gone)
        con.execute("DELETE FROM uploads WHERE id = ?", gone)
    con.close()
    plikd_adds_an_upload(tmp_path / "src")

    dry = run_cli("--config", str(src), "--to", str(dst), "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert dry.returncode == 0, dry.stderr
    tables = json.loads((tmp_path / "dry.json").read_text())["sections"]["metadata"]["tables"]
    assert tables["uploads"]["would_insert"] == 1 and tables["uploads"]["would_keep"] == 1
    assert tables["files"]["would_insert"] == 1 and tables["users"]["would_update"] == 0

    kept = run_cli("--config", str(src), "--to", str(dst), "-q", "--json", str(tmp_path / "kept.json"))
    assert kept.returncode == 0, kept.stderr
    assert rows(tmp_path / "dst" / "plik.db", "SELECT count(*) FROM uploads WHERE id = ?".replace("?", f"'{gone[0]}'")) == [(1,)]
    assert json.loads((tmp_path / "kept.json").read_text())["sections"]["metadata"]["tables"]["uploads"]["kept"] == 1
    assert (tmp_path / "dst" / "files" / "Ne" / "NewFileAbcdefgh1").read_bytes() == b"written by plikd after the first pass"

    dry = run_cli("--config", str(src), "--to", str(dst), "--dry-run", "--prune", "--json", str(tmp_path / "dry2.json"))
    tables = json.loads((tmp_path / "dry2.json").read_text())["sections"]["metadata"]["tables"]
    assert tables["uploads"]["would_delete"] == 1 and tables["uploads"]["would_insert"] == 0

    pruned = run_cli("--config", str(src), "--to", str(dst), "--prune", "-q", "--verify")
    assert pruned.returncode == 0, pruned.stderr
    assert rows(tmp_path / "dst" / "plik.db", f"SELECT count(*) FROM uploads WHERE id = '{gone[0]}'") == [(0,)]


def test_plikd_started_once_on_the_target_counts_as_empty(tmp_path, run_cli):
    """Schema, migrations and plikd's own settings row, nothing else: filled and claimed."""
    src = make(tmp_path / "src", seed=1)
    dst = target_cfg(tmp_path / "dst")
    make(tmp_path / "fresh", seed=4)
    con = sqlite3.connect(tmp_path / "fresh" / "plik.db")
    with con:
        for t in ("files", "uploads", "tokens", "usage_stats", "download_stats_daily", "upload_stats_daily", "users"):
            con.execute(f"DELETE FROM {t}")
    con.close()
    os.replace(tmp_path / "fresh" / "plik.db", tmp_path / "dst" / "plik.db")
    res = run_cli("--config", str(src), "--to", str(dst), "-q", "--verify", "--json", str(tmp_path / "r.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "r.json").read_text())["sections"]["metadata"]["target_owner"] == "empty"
    assert rows(tmp_path / "dst" / "plik.db", f"SELECT part FROM {OWNER_TABLE}") == [("metadata",)]


@pytest.mark.slow
@pytest.mark.postgres
def test_swapped_postgres_and_s3_side_is_refused(tmp_path, run_cli, pg_db, s3_server, s3_bucket):
    """The live deployment on postgres + S3 given as the target of a pass from its own copy."""
    live = make(tmp_path / "live", seed=1)
    copy = tmp_path / "copy"
    copy.mkdir()
    copy_cfg = copy / "plikd.cfg"
    copy_cfg.write_text(
        f'DataBackend = "file"\n[DataBackendConfig]\n  Directory = "{copy / "files"}"\n'
        f'[MetadataBackendConfig]\n  Driver = "sqlite3"\n  ConnectionString = "{copy / "plik.db"}"\n'
    )
    pg_s3 = tmp_path / "pg_s3.cfg"
    pg_s3.write_text(s3_server.toml(s3_bucket) + pg_db.toml())
    # the deployment lives on postgres + S3, filled by a first pmigrate pass from the old host
    assert run_cli("--config", str(live), "--to", str(pg_s3), "-q").returncode == 0
    # its copy on the new host: filled from the postgres + S3 side
    assert run_cli("--config", str(pg_s3), "--to", str(copy_cfg), "-q").returncode == 0
    client = s3_server.client()
    keys_before = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", []))
    eng = sa.create_engine(pg_db.url)
    with eng.connect() as c:
        files_before = c.exec_driver_sql("SELECT count(*) FROM files").scalar()
    # swapped: the copy given as the source, the live postgres + S3 side as the target
    res = run_cli("--config", str(copy_cfg), "--to", str(pg_s3), "-q", "--prune")
    one_line_refusal(res, "filled by pmigrate from another source")
    res = run_cli("--config", str(copy_cfg), "--to", str(pg_s3), "-q", "--data-only")
    one_line_refusal(res, "data store")
    with eng.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM files").scalar() == files_before
    eng.dispose()
    assert sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket).get("Contents", [])) == keys_before


@pytest.mark.slow
@pytest.mark.mysql
def test_mysql_target_is_claimed_before_its_first_row_and_merged_on_a_re_run(tmp_path, run_cli, mysql_db, mysql_server):
    """mysql's DDL commits by itself: the record is there before any row, so a run cut short is still ours."""
    src = make(tmp_path / "src", seed=1)
    other = make(tmp_path / "other", seed=2)
    dst = tmp_path / "dst.cfg"
    dst.write_text(mysql_db.toml())
    first = run_cli("--config", str(src), "--to", str(dst), "--metadata-only", "-q")
    assert first.returncode == 0, first.stderr
    eng = sa.create_engine(mysql_db.url)
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql(f"SELECT part FROM {OWNER_TABLE}").all() == [("metadata",)]
            # a run killed after the DDL: tables there, rows not yet
            c.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
            for t in ("files", "uploads"):
                c.exec_driver_sql(f"DELETE FROM {t}")
            c.commit()
        again = run_cli("--config", str(src), "--to", str(dst), "--metadata-only", "-q", "--verify")
        assert again.returncode == 0, again.stdout + again.stderr
        refused = run_cli("--config", str(other), "--to", str(dst), "--metadata-only", "-q")
        one_line_refusal(refused, "filled by pmigrate from another source")
        with eng.connect() as c:
            assert c.exec_driver_sql("SELECT count(*) FROM files").scalar() == 40
    finally:
        eng.dispose()
