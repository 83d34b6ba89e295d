"""Migrations across backends through the real CLI, each checked byte for byte:
file -> gcs, gcs -> s3, s3 -> swift, swift -> file (GCS emulator, moto and
Swift each in their own processes)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pmigrate.data.base import OWNER_MARKER
from tests import blobdeploy as bd

KiB = 1024
CHUNK = 256 * KiB  # small resumable chunks and Swift segments: large paths at a few hundred KiB
UNICODE_TYPE = 'text/plain; charset=utf-8; name="café-日本.txt"'


def _blobs(seed: int) -> list[bd.Blob]:
    blobs = bd.make_blobs(10, seed=seed)
    rng = random.Random(seed)
    blobs[0].data = b""
    blobs[1].data = rng.randbytes(3 * CHUNK + 123)  # resumable upload / static large object
    blobs[2].content_type = UNICODE_TYPE
    blobs[3].status = "deleted"  # no blob: nothing to copy
    blobs[4].status = "removed"  # hidden from users, blob still stored
    return blobs


def _expected(blobs: list[bd.Blob]) -> dict[str, bytes]:
    """plikd's object names for gcs and swift: {upload id}.{file id}."""
    return {f"{b.upload_id}.{b.file_id}": b.data for b in blobs if b.status in ("uploaded", "removed")}


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"report-{random.randrange(1 << 30)}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), "--workers", "2", *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stdout + cp.stderr


def _verify(run_cli, src: Path, dst: Path) -> None:
    cp = run_cli("verify", "--config", str(src), "--to", str(dst), "--data-only", "-q", "--workers", "2")
    assert cp.returncode == 0, cp.stdout + cp.stderr


def _gcs_toml(bucket: str, folder: str) -> str:
    return f'DataBackend = "gcs"\n[DataBackendConfig]\n  Bucket = "{bucket}"\n  Folder = "{folder}"\n  ChunkSize = {CHUNK}\n'


def _swift_toml(server, container: str) -> str:
    return server.toml(container, extra=f"  SegmentSize = {CHUNK}\n")


def _gcs_blobs(server, bucket: str, folder: str) -> dict[str, bytes]:
    out = {}
    for blob in server.client().list_blobs(bucket, prefix=f"{folder}/" if folder else None):
        out[blob.name[len(folder) + 1 :] if folder else blob.name] = blob.download_as_bytes()
    out.pop(OWNER_MARKER, None)  # pmigrate's ownership record, not a blob
    return out


def _swift_blobs(server, container: str) -> dict[str, bytes]:
    conn = server.connection()
    _h, objects = conn.get_container(container, full_listing=True)
    return {o["name"]: conn.get_object(container, o["name"])[1] for o in objects if o["name"] != OWNER_MARKER}


def _deployment(root: Path, blobs: list[bd.Blob], data_toml: str) -> Path:
    """A source whose blobs are already in place: metadata beside a plikd.cfg."""
    root.mkdir(parents=True, exist_ok=True)
    db = root / "plik.db"
    bd.create_db(db, blobs)
    cfg = root / "plikd.cfg"
    cfg.write_text(data_toml + bd.meta_toml(db))
    return cfg


def test_file_to_gcs(tmp_path, run_cli, gcs_server, gcs_bucket):
    blobs = _blobs(61)
    dep = bd.file_source(tmp_path / "src", blobs)
    target = tmp_path / "gcs.cfg"
    target.write_text(_gcs_toml(gcs_bucket, "plik"))
    code, doc, out = _run(run_cli, dep.config, target, tmp_path, "--verify")
    assert code == 0, out
    assert _gcs_blobs(gcs_server, gcs_bucket, "plik") == _expected(blobs)
    stored = gcs_server.client().bucket(gcs_bucket).get_blob(f"plik/{blobs[2].upload_id}.{blobs[2].file_id}")
    assert stored.content_type == UNICODE_TYPE
    assert doc["sections"]["data"]["copied"] == 9
    _verify(run_cli, dep.config, target)


def test_gcs_to_s3(tmp_path, run_cli, gcs_server, gcs_bucket, s3_server):
    blobs = _blobs(62)
    bucket = gcs_server.client().bucket(gcs_bucket)
    for b in blobs:
        if b.status in ("uploaded", "removed"):
            bucket.blob(f"plik/{b.upload_id}.{b.file_id}").upload_from_string(b.data, content_type="application/x-test")
    src = _deployment(tmp_path / "src", blobs, _gcs_toml(gcs_bucket, "plik"))
    s3_bucket = f"pmt-e2e-{random.randrange(1 << 30)}"  # created by the run, as plikd would
    target = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=s3_bucket, extra="  PartSize = 5242880\n")
    code, doc, out = _run(run_cli, src, target, tmp_path)
    assert code == 0, out
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs if b.status in ("uploaded", "removed")}
    _verify(run_cli, src, target)


@pytest.mark.slow
def test_s3_to_swift(tmp_path, run_cli, s3_server, s3_bucket, swift_server):
    blobs = _blobs(63)
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_server, bucket=s3_bucket)
    container = swift_server.new_container_name()  # created by the run, as plikd would
    target = tmp_path / "swift.cfg"
    target.write_text(_swift_toml(swift_server, container))
    code, doc, out = _run(run_cli, dep.config, target, tmp_path)
    assert code == 0, out
    assert _swift_blobs(swift_server, container) == _expected(blobs)
    conn = swift_server.connection()
    large = conn.head_object(container, f"{blobs[1].upload_id}.{blobs[1].file_id}")
    assert large["x-static-large-object"] == "True"  # segmented, as a blob over 5 GiB would be
    assert conn.head_object(container, f"{blobs[2].upload_id}.{blobs[2].file_id}")["content-type"] == UNICODE_TYPE
    _verify(run_cli, dep.config, target)


def test_swift_to_file(tmp_path, run_cli, swift_server):
    blobs = _blobs(64)
    container = swift_server.new_container_name()
    conn = swift_server.connection()
    conn.put_container(container)
    for b in blobs:
        if b.status in ("uploaded", "removed"):
            conn.put_object(container, f"{b.upload_id}.{b.file_id}", contents=b.data, content_type=b.content_type)
    src = _deployment(tmp_path / "src", blobs, _swift_toml(swift_server, container))
    target = bd.file_target(tmp_path / "dst")
    code, doc, out = _run(run_cli, src, target, tmp_path)
    assert code == 0, out
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {
        b.file_id: b.data for b in blobs if b.status in ("uploaded", "removed")
    }
    _verify(run_cli, src, target)


def test_gcs_to_gcs_server_side(tmp_path, run_cli, gcs_server, gcs_bucket):
    blobs = _blobs(65)
    bucket = gcs_server.client().bucket(gcs_bucket)
    for b in blobs:
        if b.status in ("uploaded", "removed"):
            bucket.blob(f"old/{b.upload_id}.{b.file_id}").upload_from_string(b.data)
    src = _deployment(tmp_path / "src", blobs, _gcs_toml(gcs_bucket, "old"))
    other = gcs_server.new_bucket()
    target = tmp_path / "gcs.cfg"
    target.write_text(_gcs_toml(other, ""))
    code, doc, out = _run(run_cli, src, target, tmp_path, "--verify")
    assert code == 0, out
    data = doc["sections"]["data"]
    assert data["server_side"] == data["copied"] == 9  # rewritten by GCS, no byte through pmigrate
    assert _gcs_blobs(gcs_server, other, "") == _expected(blobs)


@pytest.mark.slow
def test_swift_to_swift_server_side_except_large_objects(tmp_path, run_cli, swift_server):
    blobs = _blobs(66)
    container = swift_server.new_container_name()
    src_cfg = tmp_path / "src.cfg"
    src_cfg.write_text(_swift_toml(swift_server, container))
    first = tmp_path / "first"
    dep = bd.file_source(first, blobs)
    code, doc, out = _run(run_cli, dep.config, src_cfg, tmp_path)  # onto swift, the large blob segmented
    assert code == 0, out
    src = _deployment(tmp_path / "src", blobs, _swift_toml(swift_server, container))
    other = swift_server.new_container_name()
    target = tmp_path / "swift2.cfg"
    target.write_text(_swift_toml(swift_server, other))
    code, doc, out = _run(run_cli, src, target, tmp_path)
    assert code == 0, out
    data = doc["sections"]["data"]
    assert data["copied"] == 9 and data["server_side"] == 8  # the segmented one is streamed
    assert _swift_blobs(swift_server, other) == _expected(blobs)
    _verify(run_cli, src, target)
