"""The blob engine through the real CLI against a real HTTP S3 server (moto, its own process)."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest
import xxhash

from tests import blobdeploy as bd

MiB = 1 << 20
PART = 'PartSize = 5242880\n'


def _run(run_cli, src_cfg: Path, dst_cfg: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.random()}.json"
    cp = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--data-only", "-q", "--json", str(report), *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stderr


def _journal(target_cfg: Path) -> dict[str, tuple]:
    (j,) = target_cfg.parent.glob(".pmigrate-journal-*.db")
    con = sqlite3.connect(j)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT file_id, size, xxh3 FROM blobs")}
    finally:
        con.close()


def _blobs(seed: int) -> list[bd.Blob]:
    blobs = bd.make_blobs(12, seed=seed)
    blobs[0].data = b""
    blobs[1].data = random.Random(seed).randbytes(11 * MiB + 123)  # three parts of 5 MiB
    blobs[2].content_type = "text/plain; charset=utf-8"
    blobs[3].status = "deleted"
    return blobs


def _no_open_uploads(server, bucket: str) -> None:
    assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.slow
def test_file_to_s3_then_s3_to_file(tmp_path, run_cli, s3_server):
    blobs = _blobs(31)
    dep = bd.file_source(tmp_path / "src", blobs)
    bucket = f"pmt-new-{random.randrange(1 << 30)}"  # created by the run, as plikd would
    target = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=bucket, extra=PART)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2")
    assert code == 0, err
    expected = {b.file_id: b.data for b in dep.with_blob()}
    assert bd.s3_target_blobs(s3_server, bucket) == expected
    client = s3_server.client()
    head = client.head_object(Bucket=bucket, Key=blobs[2].file_id)
    assert head["ContentType"] == "text/plain; charset=utf-8"
    assert client.head_object(Bucket=bucket, Key=blobs[1].file_id)["ETag"].endswith('-3"')  # multipart, 3 parts
    _no_open_uploads(s3_server, bucket)
    assert _journal(target) == {b.file_id: (len(b.data), xxhash.xxh3_128_hexdigest(b.data)) for b in dep.with_blob()}
    assert doc["sections"]["data"]["copied"] == 11

    # and back: this S3 deployment as a source, to files
    s3dep_cfg = tmp_path / "s3src.cfg"
    s3dep_cfg.write_text(target.read_text() + bd.meta_toml(dep.db))
    back = bd.file_target(tmp_path / "back")
    code, doc, err = _run(run_cli, s3dep_cfg, back, tmp_path, "--workers", "2")
    assert code == 0, err
    assert bd.file_target_blobs(tmp_path / "back" / "files") == expected


@pytest.mark.slow
def test_s3_to_s3_server_side_with_and_without_prefix(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = _blobs(32)
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_server, bucket=s3_bucket, extra=PART)
    expected = {b.file_id: b.data for b in dep.with_blob()}
    # same endpoint and credentials: CopyObject / UploadPartCopy, no byte through pmigrate
    target = bd.s3_target(tmp_path / "t1", server=s3_server, bucket=s3_bucket, prefix="moved/here", extra=PART)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2")
    assert code == 0, err
    assert bd.s3_target_blobs(s3_server, s3_bucket, prefix="moved/here") == expected
    data = doc["sections"]["data"]
    assert data["server_side"] == data["copied"] == 11
    assert set(_journal(target).values()) == {(len(b.data), "server-side") for b in dep.with_blob()}
    _no_open_uploads(s3_server, s3_bucket)

    # prefixed source to another bucket without prefix
    src2 = tmp_path / "src2.cfg"
    src2.write_text(target.read_text() + bd.meta_toml(dep.db))
    other = s3_server.new_bucket()
    t2 = bd.s3_target(tmp_path / "t2", server=s3_server, bucket=other, extra=PART)
    code, doc, err = _run(run_cli, src2, t2, tmp_path, "--workers", "1")
    assert code == 0, err
    assert bd.s3_target_blobs(s3_server, other) == expected


def test_s3_to_s3_streamed_when_endpoints_differ(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = _blobs(33)
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_server, bucket=s3_bucket, prefix="p", extra=PART)
    other = s3_server.new_bucket()
    port = s3_server.endpoint.rsplit(":", 1)[1]
    cfg = bd.s3_target(tmp_path / "t", server=s3_server, bucket=other, extra=PART)
    cfg.write_text(cfg.read_text().replace(s3_server.endpoint, f"localhost:{port}"))
    code, doc, err = _run(run_cli, dep.config, cfg, tmp_path, "--workers", "2")
    assert code == 0, err
    assert doc["sections"]["data"]["server_side"] == 0
    assert bd.s3_target_blobs(s3_server, other) == {b.file_id: b.data for b in dep.with_blob()}
    assert _journal(cfg) == {b.file_id: (len(b.data), xxhash.xxh3_128_hexdigest(b.data)) for b in dep.with_blob()}
    _no_open_uploads(s3_server, other)


@pytest.mark.slow
def test_sse_c_round_trip(tmp_path, run_cli, s3_server, s3_bucket):
    rng = random.Random(34)
    blobs = bd.make_blobs(5, seed=34)
    blobs[1].data = rng.randbytes(6 * MiB)  # two parts
    for b in blobs:
        b.backend_details = json.dumps({"SSEKey": "".join(rng.choice(bd._ALNUM) for _ in range(32))})
    client = s3_server.client()
    for b in blobs:
        key = json.loads(b.backend_details)["SSEKey"]
        client.put_object(Bucket=s3_bucket, Key=b.file_id, Body=b.data, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    (tmp_path / "src").mkdir()
    db = tmp_path / "src" / "plik.db"
    bd.create_db(db, blobs)
    sse = PART + '  SSE = "SSE-C"\n'
    src = tmp_path / "src" / "plikd.cfg"
    src.write_text(s3_server.toml(s3_bucket, extra=sse) + bd.meta_toml(db))

    # SSE-C to SSE-C (server-side, each file's own key on both sides), then SSE-C to files (read with the keys)
    other = s3_server.new_bucket()
    t = bd.s3_target(tmp_path / "t", server=s3_server, bucket=other, extra=sse)
    code, doc, err = _run(run_cli, src, t, tmp_path)
    assert code == 0, err
    for b in blobs:
        key = json.loads(b.backend_details)["SSEKey"]
        got = client.get_object(Bucket=other, Key=b.file_id, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
        assert got["Body"].read() == b.data
    back = bd.file_target(tmp_path / "back")
    code, doc, err = _run(run_cli, src, back, tmp_path)
    assert code == 0, err
    assert bd.file_target_blobs(tmp_path / "back" / "files") == {b.file_id: b.data for b in blobs}


@pytest.mark.slow
def test_missing_s3_blob_with_ignore_errors(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = bd.make_blobs(8, seed=35)
    blobs[5].store = False
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_server, bucket=s3_bucket)
    target = bd.file_target(tmp_path / "t")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--ignore-errors")
    assert code == 1
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("missing", blobs[5].file_id)]
    assert bd.file_target_blobs(tmp_path / "t" / "files") == {b.file_id: b.data for b in blobs if b.store}

    # the same to S3, server-side: the missing source is found by the copy itself
    other = s3_server.new_bucket()
    t2 = bd.s3_target(tmp_path / "t2", server=s3_server, bucket=other)
    code, doc, err = _run(run_cli, dep.config, t2, tmp_path)
    assert code == 1
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("missing", blobs[5].file_id)]
    assert "pass --ignore-errors" in err
    _no_open_uploads(s3_server, other)


def test_unreachable_target_is_refused_before_anything_is_written(tmp_path, run_cli, s3_server):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=36))
    from tests.servers import free_port

    target = bd.s3_target(tmp_path / "t", server=s3_server, bucket="nowhere")
    target.write_text(target.read_text().replace(s3_server.endpoint, f"127.0.0.1:{free_port()}"))
    code, doc, err = _run(run_cli, dep.config, target, tmp_path)
    assert code == 2, err
    assert "cannot reach" in err
    assert not list((tmp_path / "t").glob(".pmigrate-journal-*"))


def test_discard_partial_aborts_only_that_blobs_open_uploads(s3_server, s3_bucket):
    """What the parent does when a worker died mid-upload: S3 would bill the parts until then."""
    from pmigrate.data.base import BlobRef
    from pmigrate.data.s3 import S3Backend

    client = s3_server.client()
    for key in ("pre/AbCdEfGh12345678", "pre/AbCdEfGh12345678x"):
        up = client.create_multipart_upload(Bucket=s3_bucket, Key=key)
        client.upload_part(Bucket=s3_bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"part")
    backend = S3Backend({"Endpoint": s3_server.endpoint, "AccessKeyID": s3_server.access_key,
                         "SecretAccessKey": s3_server.secret_key, "Bucket": s3_bucket, "Prefix": "pre"})  # fmt: skip
    try:
        backend.discard_partial(BlobRef("AbCdEfGh12345678", "Up00000000000001", size=10))
        backend.discard_partial(BlobRef("NothingOpen00001", "Up00000000000001", size=10))
    finally:
        backend.close()
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])]
    assert left == ["pre/AbCdEfGh12345678x"]


def test_the_parent_of_a_copy_to_s3_never_loads_boto3(tmp_path, s3_server, s3_bucket):
    """Only the workers (and a short-lived check process) need an S3 client: ~25 MiB the parent saves."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    blobs = _blobs(41)
    dep = bd.file_source(tmp_path / "src", blobs)
    bucket = f"pmt-parent-{random.randrange(1 << 30)}"
    target = bd.s3_target(tmp_path / "s3", server=s3_server, bucket=bucket, extra=PART)
    code = (
        "import sys\n"
        "from pmigrate.cli import main\n"
        f"rc = main(['--config', {str(dep.config)!r}, '--to', {str(target)!r}, '--data-only', '-q', '--workers', '2'])\n"
        "print(rc, 'botocore' in sys.modules, 'boto3' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.stdout.splitlines()[-1].split() == ["0", "False", "False"], out.stdout + out.stderr
    expected = {b.file_id: b.data for b in dep.with_blob()}
    assert bd.s3_target_blobs(s3_server, bucket) == expected
