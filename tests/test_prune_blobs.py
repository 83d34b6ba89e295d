"""--prune for blobs, through the real CLI: what plikd deleted or purged leaves the target, nothing else does.

Between two passes plikd deletes a file (status ``deleted``, blob gone at the
source) and purges an upload (rows gone). The final pass with --prune removes
those blobs from the target and from the journal; an object someone put in
the target by hand survives, since the journal never listed it; the dry run
counts and lists and deletes nothing; a target pmigrate did not fill from
this source is refused.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from tests import blobdeploy as bd

HAND = "HandPlacedAbcdef"  # a blob id the journal never saw


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.random()}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), "--workers", "2", *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stderr


def _journal_ids(target_cfg: Path) -> set[str]:
    (j,) = target_cfg.parent.glob(".pmigrate-journal-*.db")
    con = sqlite3.connect(j)
    try:
        return {r[0] for r in con.execute("SELECT file_id FROM blobs")}
    finally:
        con.close()


def _churn(dep: bd.Deployment, *, blob_gone) -> tuple[str, set[str]]:  # noqa: ANN001
    """As plikd: one file deleted (status and blob), one upload purged (rows and blobs). (deleted id, purged ids)."""
    live = dep.with_blob()
    deleted = live[0]
    uploads = {b.upload_id for b in live[1:]}
    purged_upload = sorted(uploads)[0]
    purged = {b.file_id for b in live if b.upload_id == purged_upload}
    con = sqlite3.connect(dep.db)
    with con:
        con.execute("UPDATE files SET status = 'deleted' WHERE id = ?", (deleted.file_id,))
        con.execute("DELETE FROM files WHERE upload_id = ?", (purged_upload,))
        con.execute("DELETE FROM uploads WHERE id = ?", (purged_upload,))
    con.close()
    for fid in {deleted.file_id, *purged}:
        blob_gone(fid)
    return deleted.file_id, purged


def _blobs(seed: int) -> list[bd.Blob]:
    blobs = bd.make_blobs(10, seed=seed)
    blobs[3].upload_id = blobs[4].upload_id  # an upload of two files
    return blobs


def _file_gone(dep: bd.Deployment):  # noqa: ANN202
    return lambda fid: (dep.root / "files" / fid[:2] / fid).unlink()


def test_prune_on_a_file_target(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", _blobs(61))
    target = bd.file_target(tmp_path / "dst")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path)
    assert code == 0, err
    files = tmp_path / "dst" / "files"
    hand = files / HAND[:2] / HAND
    hand.parent.mkdir(parents=True, exist_ok=True)
    hand.write_bytes(b"put here by hand, not by pmigrate")
    deleted, purged = _churn(dep, blob_gone=_file_gone(dep))
    gone = {deleted, *purged}
    before = bd.file_target_blobs(files)
    assert gone <= set(before) and gone <= _journal_ids(target)

    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune", "--dry-run")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["would_prune"] == len(gone) and set(data["would_prune_blobs"]) == gone
    assert data["would_prune_by_reason"] == {"deleted": 1, "purged": len(purged)}
    assert bd.file_target_blobs(files) == before, "the dry run deleted something"
    assert gone <= _journal_ids(target)

    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["pruned"] == len(gone)
    assert data["pruned_bytes"] == sum(len(before[f]) for f in gone)
    after = bd.file_target_blobs(files)
    assert set(after) == set(before) - gone
    assert after[HAND] == b"put here by hand, not by pmigrate"
    assert not gone & _journal_ids(target)
    # A pass more finds nothing left to prune.
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune")
    assert code == 0, err
    assert doc["sections"]["data"]["pruned"] == 0


def test_prune_on_an_s3_target(tmp_path, run_cli, s3_server):
    dep = bd.file_source(tmp_path / "src", _blobs(62))
    bucket = f"pmt-prune-{random.randrange(1 << 30)}"
    target = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=bucket)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path)
    assert code == 0, err
    s3_server.client().put_object(Bucket=bucket, Key=HAND, Body=b"by hand")
    deleted, purged = _churn(dep, blob_gone=_file_gone(dep))
    gone = {deleted, *purged}
    before = bd.s3_target_blobs(s3_server, bucket)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune", "--dry-run")
    assert code == 0, err
    assert doc["sections"]["data"]["would_prune"] == len(gone)
    assert bd.s3_target_blobs(s3_server, bucket) == before

    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune")
    assert code == 0, err
    assert doc["sections"]["data"]["pruned"] == len(gone)
    after = bd.s3_target_blobs(s3_server, bucket)
    assert set(after) == set(before) - gone and after[HAND] == b"by hand"
    assert not gone & _journal_ids(target)


def test_without_prune_nothing_is_deleted(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", _blobs(63))
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, dep.config, target, tmp_path)[0] == 0
    _churn(dep, blob_gone=_file_gone(dep))
    before = bd.file_target_blobs(tmp_path / "dst" / "files")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path)
    assert code == 0, err
    assert "pruned" not in doc["sections"]["data"]
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == before


@pytest.mark.parametrize("merge", [False, True])
def test_prune_refused_in_a_target_filled_from_another_source(tmp_path, run_cli, merge):
    other = bd.file_source(tmp_path / "other", _blobs(64))
    dep = bd.file_source(tmp_path / "src", _blobs(65))
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, other.config, target, tmp_path)[0] == 0
    before = bd.file_target_blobs(tmp_path / "dst" / "files")
    code, _doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune", *(["--merge"] if merge else []))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == before


def test_prune_on_a_gcs_target_finds_purged_keys_by_their_upload(tmp_path, run_cli, gcs_server, gcs_bucket):
    """GCS keys name the upload: a purged row's key comes from the upload id the journal kept."""
    from google.cloud import storage

    dep = bd.file_source(tmp_path / "src", _blobs(66))
    root = tmp_path / "gcs"
    root.mkdir()
    target = root / "target.cfg"
    target.write_text(gcs_server.toml(gcs_bucket))
    code, _doc, err = _run(run_cli, dep.config, target, tmp_path)
    assert code == 0, err
    bucket = storage.Client().bucket(gcs_bucket)
    hand = f"HandUploadAbcde1.{HAND}"
    bucket.blob(hand).upload_from_string(b"by hand")
    deleted, purged = _churn(dep, blob_gone=_file_gone(dep))
    gone = {f"{b.upload_id}.{b.file_id}" for b in dep.blobs if b.file_id in {deleted, *purged}}
    before = {b.name for b in bucket.list_blobs()}
    assert gone <= before
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune")
    assert code == 0, err
    assert doc["sections"]["data"]["pruned"] == len(gone)
    assert {b.name for b in bucket.list_blobs()} == before - gone
    assert bucket.blob(hand).download_as_bytes() == b"by hand"


def test_a_journal_older_than_upload_ids_still_prunes_a_file_target(tmp_path, run_cli):
    """A journal without the upload_id column is extended on open; a file target's keys need the file id only."""
    dep = bd.file_source(tmp_path / "src", _blobs(67))
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, dep.config, target, tmp_path)[0] == 0
    (j,) = target.parent.glob(".pmigrate-journal-*.db")
    con = sqlite3.connect(j)
    with con:
        con.execute("ALTER TABLE blobs DROP COLUMN upload_id")
    con.close()
    deleted, purged = _churn(dep, blob_gone=_file_gone(dep))
    gone = {deleted, *purged}
    before = bd.file_target_blobs(tmp_path / "dst" / "files")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--prune")
    assert code == 0, err
    assert doc["sections"]["data"]["pruned"] == len(gone)
    assert set(bd.file_target_blobs(tmp_path / "dst" / "files")) == set(before) - gone
