"""SSE = "S3" through the real CLI on moto over HTTP: the store encrypts, and every read still works."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests import blobdeploy as bd

MiB = 1 << 20
SSE_S3 = 'PartSize = 5242880\n  SSE = "S3"\n'


def _run(run_cli, *args: str, tmp_path: Path) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.randrange(1 << 30)}.json"
    cp = run_cli(*args, "--data-only", "-q", "--workers", "2", "--json", str(report))
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stdout + cp.stderr


def _blobs(seed: int) -> list[bd.Blob]:
    blobs = bd.make_blobs(6, seed=seed)
    blobs[0].data = b""
    blobs[1].data = random.Random(seed).randbytes(11 * MiB + 5)  # multipart: CreateMultipartUpload, UploadPart
    return blobs


def test_to_an_sse_s3_target_with_verify(tmp_path, run_cli, s3_server, s3_bucket):
    dep = bd.file_source(tmp_path / "src", _blobs(71))
    target = bd.s3_target(tmp_path / "t", server=s3_server, bucket=s3_bucket, extra=SSE_S3)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--verify", tmp_path=tmp_path)
    assert code == 0, out
    assert doc["problems"] == []
    assert doc["sections"]["verify-blobs"]["ok"] == len(dep.with_blob())
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.with_blob()}
    client = s3_server.client()
    for b in dep.with_blob():
        assert client.head_object(Bucket=s3_bucket, Key=b.file_id)["ServerSideEncryption"] == "AES256"


@pytest.mark.slow
def test_from_an_sse_s3_source(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = _blobs(72)
    client = s3_server.client()
    for b in blobs:  # as plikd with SSE = "S3" stores them
        client.put_object(Bucket=s3_bucket, Key=b.file_id, Body=b.data, ServerSideEncryption="AES256")
    (tmp_path / "src").mkdir()
    db = tmp_path / "src" / "plik.db"
    bd.create_db(db, blobs)
    src = tmp_path / "src" / "plikd.cfg"
    src.write_text(s3_server.toml(s3_bucket, extra=SSE_S3) + bd.meta_toml(db))
    expected = {b.file_id: b.data for b in blobs}

    back = bd.file_target(tmp_path / "back")
    code, doc, out = _run(run_cli, "--config", str(src), "--to", str(back), "--verify", tmp_path=tmp_path)
    assert code == 0, out
    assert bd.file_target_blobs(tmp_path / "back" / "files") == expected

    # and to another SSE-S3 bucket on the same endpoint: server-side copies, encrypted again
    other = s3_server.new_bucket()
    t2 = bd.s3_target(tmp_path / "t2", server=s3_server, bucket=other, extra=SSE_S3)
    code, doc, out = _run(run_cli, "--config", str(src), "--to", str(t2), "--verify", tmp_path=tmp_path)
    assert code == 0, out
    assert doc["sections"]["data"]["server_side"] == len(blobs)
    assert bd.s3_target_blobs(s3_server, other) == expected
    assert {client.head_object(Bucket=other, Key=k)["ServerSideEncryption"] for k in expected} == {"AES256"}
