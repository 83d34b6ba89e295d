"""A store that refuses a kind of request (501 NotImplemented, or not allowed): no retries, another way if there is one.

moto copies anything, so the refusals come from the fault-injecting proxy
(tests/s3proxy.py) in front of it, answering as Ceph RGW and others do.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests import blobdeploy as bd
from tests.s3proxy import s3_error

MiB = 1 << 20
SSE_C = 'PartSize = 5242880\n  SSE = "SSE-C"\n'


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.randrange(1 << 30)}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), *extra)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stdout + cp.stderr


def _sse_c_source(tmp_path: Path, server, bucket: str, n: int, seed: int) -> tuple[Path, list[bd.Blob]]:
    """plikd's SSE-C deployment: each object encrypted with the key its row holds."""
    rng = random.Random(seed)
    blobs = bd.make_blobs(n, seed=seed)
    blobs[1].data = rng.randbytes(6 * MiB)  # a multipart copy: UploadPartCopy
    client = server.client()
    for b in blobs:
        key = "".join(rng.choice(bd._ALNUM) for _ in range(32))
        b.backend_details = json.dumps({"SSEKey": key})
        client.put_object(Bucket=bucket, Key=b.file_id, Body=b.data, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    (tmp_path / "src").mkdir()
    db = tmp_path / "src" / "plik.db"
    bd.create_db(db, blobs)
    cfg = tmp_path / "src" / "plikd.cfg"
    cfg.write_text(server.toml(bucket, extra=SSE_C) + bd.meta_toml(db))
    return cfg, blobs


@pytest.mark.parametrize(
    "status, code",
    [(501, "NotImplemented"), (403, "AccessDenied"), (400, "InvalidRequest")],
)
def test_a_refused_server_side_copy_is_streamed_instead(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy, status, code):
    """SSE-C to SSE-C on one endpoint, whose server refuses to copy: every blob streamed, one note, exit 0."""
    s3_proxy.add(s3_error(status, code, "copying is not possible here", header="x-amz-copy-source"))
    src, blobs = _sse_c_source(tmp_path, s3_proxy.s3, s3_bucket, 24, seed=81)
    other = s3_server.new_bucket()
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=other, extra=SSE_C)
    code_, doc, out = _run(run_cli, src, target, tmp_path, "--workers", "2")
    assert code_ == 0, out
    data = doc["sections"]["data"]
    assert (data["copied"], data["server_side"], data["errors"]) == (len(blobs), 0, 0)
    client = s3_server.client()
    for b in blobs:
        key = json.loads(b.backend_details)["SSEKey"]
        got = client.get_object(Bucket=other, Key=b.file_id, SSECustomerAlgorithm="AES256", SSECustomerKey=key)
        assert got["Body"].read() == b.data
    notes = [w for w in doc["warnings"] if "refuses server-side copies" in w]
    assert len(notes) == 1 and f"{status} {code}" in notes[0], doc["warnings"]
    # each worker asked once, then streamed: no retries, no copy per blob
    assert 1 <= len(s3_proxy.acted()) <= 2
    assert client.list_multipart_uploads(Bucket=other).get("Uploads", []) == []


def test_a_request_the_store_does_not_implement_is_not_retried(tmp_path, run_cli, s3_proxy, s3_bucket):
    blobs = bd.make_blobs(4, seed=82)
    dep = bd.file_source(tmp_path / "src", blobs)
    victim = blobs[2].file_id
    s3_proxy.add(s3_error(501, "NotImplemented", method="PUT", path=f"/{victim}$"))
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket)
    code, doc, out = _run(run_cli, dep.config, target, tmp_path, "--workers", "1", "--ignore-errors")
    assert code == 1, out
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("unsupported", victim)]
    assert len(s3_proxy.acted()) == 1  # one request: a 501 is an answer, not a fault
    assert set(bd.s3_target_blobs(s3_proxy.s3, s3_bucket)) == {b.file_id for b in blobs} - {victim}
