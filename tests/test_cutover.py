"""Passes during a cutover: a pass after the first costs what changed, through the real CLI, real stores.

Between passes the source changes as plikd changes it: new uploads with
blobs, files deleted (status ``deleted``, blob removed), uploads purged (rows
gone). The next pass copies the new blobs only, and asks the target nothing
about the blobs its journal lists from unchanged rows.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests import blobdeploy as bd

JOURNAL_GLOB = ".pmigrate-journal-*.db"


def _run(run_cli, dep: bd.Deployment, target: Path, report: Path, *extra: str):
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "2", "--json", str(report), *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp, doc


def _trust(run_cli, dep: bd.Deployment, target: Path, report: Path, *extra: str) -> tuple[int, int, int]:
    """(copied, trusted, checked on the target) of a pass that must succeed."""
    cp, doc = _run(run_cli, dep, target, report, *extra)
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    return data["copied"], data["trusted"], data["checked_on_target"]


def _copied_once(tmp_path: Path, run_cli, n: int, *, seed: int, sizes: list[int]) -> tuple[bd.Deployment, Path]:
    """A file deployment of n blobs, copied once to a file target."""
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(n, seed=seed, sizes=sizes))
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, dep, target, tmp_path / "p1.json")[0].returncode == 0
    return dep, target


def _churn(dep: bd.Deployment, *, seed: int, new: int, delete: int, purge: int) -> tuple[list[bd.Blob], list[bd.Blob], list[bd.Blob]]:
    """As plikd would: ``new`` uploads with a blob, ``delete`` files deleted, ``purge`` uploads purged."""
    rng = random.Random(seed)
    fresh = [bd.Blob(bd.new_id(rng), bd.new_id(rng), rng.randbytes(rng.randint(1, 5000))) for _ in range(new)]
    alive = [b for b in dep.with_blob()]
    rng.shuffle(alive)
    deleted, purged = alive[:delete], alive[delete : delete + purge]
    con = sqlite3.connect(dep.db)
    try:
        con.executemany("INSERT INTO uploads (id, created_at) VALUES (?, '2026-02-01 00:00:00+00:00')", [(b.upload_id,) for b in fresh])
        con.executemany(
            "INSERT INTO files (id, upload_id, name, status, md5, type, size, created_at) VALUES (?, ?, 'new', 'uploaded', '', ?, ?, "
            "'2026-02-01 00:00:00+00:00')",
            [(b.file_id, b.upload_id, b.content_type, len(b.data)) for b in fresh],
        )
        con.executemany("UPDATE files SET status = 'deleted' WHERE id = ?", [(b.file_id,) for b in deleted])
        con.executemany("DELETE FROM files WHERE id = ?", [(b.file_id,) for b in purged])
        con.executemany("DELETE FROM uploads WHERE id = ?", [(b.upload_id,) for b in purged])
        con.commit()
    finally:
        con.close()
    return fresh, deleted, purged


def _file_churn(dep: bd.Deployment, *, seed: int, new: int = 5, delete: int = 3, purge: int = 2):
    fresh, deleted, purged = _churn(dep, seed=seed, new=new, delete=delete, purge=purge)
    files = dep.config.parent / "files"
    for b in fresh:
        p = files / b.file_id[:2] / b.file_id
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b.data)
    for b in deleted + purged:
        (files / b.file_id[:2] / b.file_id).unlink()
    for b in deleted:
        b.status = "deleted"
    dep.blobs = [b for b in dep.blobs if b not in purged] + fresh
    return fresh, deleted, purged


def test_file_target_second_pass_copies_only_the_new_blobs_and_trusts_the_journal(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(40, seed=61, sizes=[10, 3000, 70_000]))
    target = bd.file_target(tmp_path / "dst")
    cp, doc = _run(run_cli, dep, target, tmp_path / "p1.json")
    assert cp.returncode == 0, cp.stderr
    assert doc["sections"]["data"]["copied"] == 40

    fresh, deleted, purged = _file_churn(dep, seed=62)
    cp, doc = _run(run_cli, dep, target, tmp_path / "p2.json")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    unchanged = 40 - len(deleted) - len(purged)
    assert (data["copied"], data["trusted"], data["checked_on_target"]) == (len(fresh), unchanged, 0)
    assert data["already_done"] == unchanged
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    for b in dep.with_blob():
        assert got[b.file_id] == b.data

    # A blob removed from the target by hand is not noticed: the journal is trusted ...
    lost = dep.with_blob()[0]
    (tmp_path / "dst" / "files" / lost.file_id[:2] / lost.file_id).unlink()
    assert _trust(run_cli, dep, target, tmp_path / "p3.json") == (0, len(dep.with_blob()), 0)
    assert lost.file_id not in bd.file_target_blobs(tmp_path / "dst" / "files")
    # ... until --recheck looks every journaled blob up on the target
    assert _trust(run_cli, dep, target, tmp_path / "p4.json", "--recheck") == (1, 0, len(dep.with_blob()))
    assert bd.file_target_blobs(tmp_path / "dst" / "files")[lost.file_id] == lost.data


def test_a_changed_source_row_is_looked_up_again(tmp_path, run_cli):
    dep, target = _copied_once(tmp_path, run_cli, 10, seed=63, sizes=[100])
    changed = dep.blobs[2]
    con = sqlite3.connect(dep.db)
    con.execute("UPDATE files SET type = 'text/plain' WHERE id = ?", (changed.file_id,))
    con.commit()
    con.close()
    assert _trust(run_cli, dep, target, tmp_path / "p2.json") == (0, 9, 1)


def test_a_journal_without_digests_is_checked_once_then_trusted(tmp_path, run_cli):
    dep, target = _copied_once(tmp_path, run_cli, 12, seed=64, sizes=[100, 2000])
    (journal,) = target.parent.glob(JOURNAL_GLOB)
    con = sqlite3.connect(journal)  # the journal as an older pmigrate wrote it: no src column
    con.executescript(
        "CREATE TABLE old (file_id TEXT PRIMARY KEY, size INTEGER NOT NULL, xxh3 TEXT NOT NULL, md5 TEXT NOT NULL DEFAULT '', "
        "seconds REAL NOT NULL DEFAULT 0, done_at REAL NOT NULL) WITHOUT ROWID;"
        "INSERT INTO old SELECT file_id, size, xxh3, md5, seconds, done_at FROM blobs; DROP TABLE blobs; ALTER TABLE old RENAME TO blobs;"
    )
    con.close()
    cp, doc = _run(run_cli, dep, target, tmp_path / "p2.json")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["copied"], data["trusted"], data["checked_on_target"], data["already_done"]) == (0, 0, 12, 12)
    assert _trust(run_cli, dep, target, tmp_path / "p3.json") == (0, 12, 0)


def test_s3_target_final_pass_sends_no_head_for_unchanged_blobs(tmp_path, run_cli, s3_proxy, s3_bucket):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(30, seed=65, sizes=[10, 4000]))
    target = bd.s3_target(tmp_path / "dst", server=s3_proxy.s3, bucket=s3_bucket)
    cp, doc = _run(run_cli, dep, target, tmp_path / "p1.json")
    assert cp.returncode == 0, cp.stderr
    fresh, deleted, purged = _file_churn(dep, seed=66, new=4, delete=2, purge=3)

    seen = len(s3_proxy.requests())
    cp, doc = _run(run_cli, dep, target, tmp_path / "p2.json")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    unchanged = 30 - len(deleted) - len(purged)
    assert (data["copied"], data["trusted"], data["checked_on_target"]) == (len(fresh), unchanged, 0)
    blob = re.compile(r"/[A-Za-z0-9]{16}(\?|$)")
    during = s3_proxy.requests()[seen:]
    heads = [e for e in during if e.method == "HEAD" and blob.search(e.path)]
    puts = {e.path.split("?")[0].rsplit("/", 1)[-1] for e in during if e.method == "PUT" and blob.search(e.path)}
    assert heads == []
    assert puts == {b.file_id for b in fresh}
    assert {k: v for k, v in bd.s3_target_blobs(s3_proxy.s3, s3_bucket).items() if k in {b.file_id for b in dep.with_blob()}} == {
        b.file_id: b.data for b in dep.with_blob()
    }

    # --recheck: one HEAD per journaled blob, nothing copied
    seen = len(s3_proxy.requests())
    cp, doc = _run(run_cli, dep, target, tmp_path / "p3.json", "--recheck")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["copied"], data["checked_on_target"]) == (0, len(dep.with_blob()))
    heads = {e.path.rsplit("/", 1)[-1] for e in s3_proxy.requests()[seen:] if e.method == "HEAD" and blob.search(e.path)}
    assert heads == {b.file_id for b in dep.with_blob()}


def test_a_target_store_made_anew_is_not_trusted(tmp_path, run_cli):
    dep, target = _copied_once(tmp_path, run_cli, 8, seed=67, sizes=[100])
    shutil.rmtree(tmp_path / "dst" / "files")  # the whole store wiped, its ownership record with it
    assert _trust(run_cli, dep, target, tmp_path / "p2.json") == (8, 0, 8)


def test_repeated_passes_stop_below_the_threshold(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(25, seed=68, sizes=[100, 900]))
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "--workers", "2", "--stats", "0",
                 "--repeat-until-delta", "5", "--json", str(report))  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    doc = json.loads(report.read_text())
    passes = doc["sections"]["passes"]["passes"]
    assert [p["copied"] for p in passes] == [25, 0]
    assert all(p["ok"] and p["seconds"] >= 0 for p in passes)
    assert "pass 1 copied 25 blobs" in cp.stderr  # said as it goes on
    final = f"pmigrate --config {dep.config} --to {target} --prune"
    assert f"pass 2 copied 0 blobs (< 5): stop plikd and run the final pass: {final}" in cp.stdout
    assert re.search(r"pass 1 copied 25 blobs, .* in [0-9.]+s", cp.stdout)
    assert doc["sections"]["data"]["trusted"] == 25  # the summary is the last pass's


@pytest.mark.parametrize(
    "extra, word",
    [(("--metadata-only",), "--metadata-only"), (("--dry-run",), "--dry-run"), (("--verify",), "--verify"), (("--prune",), "--prune")],
)
def test_repeat_refuses_options_it_cannot_go_with(tmp_path, run_cli, extra, word):
    cp = run_cli("--to", str(tmp_path / "t.cfg"), "--repeat-until-delta", "3", *extra)
    assert cp.returncode == 2
    assert len(cp.stderr.strip().splitlines()) == 1 and word in cp.stderr and "Traceback" not in cp.stderr
