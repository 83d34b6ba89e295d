"""What a copy asks of an S3 store: the requests it needs and no more, bodies not hashed for the signature.

Seen at the HTTP level through tests/s3proxy.py, which logs every request
with its headers, in front of a real moto server.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests import blobdeploy as bd

MiB = 1 << 20


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, name: str) -> dict:
    report = tmp_path / f"{name}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), timeout=120)
    assert cp.returncode == 0, cp.stderr
    return json.loads(report.read_text())


def test_a_copy_sends_unsigned_payloads_and_no_request_it_does_not_need(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    blobs = bd.make_blobs(3, seed=17, sizes=[4096, 0, 70_000])
    blobs[0].data = bytes(range(256)) * (6 * MiB // 256 + 1)  # above PartSize: an upload in parts
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket, extra="  PartSize = 5242880\n")
    doc = _run(run_cli, dep.config, target, tmp_path, "first")
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    assert doc["sections"]["data"]["copied"] == len(blobs)

    # Every body goes out with UNSIGNED-PAYLOAD, over plain http too: xxh3, the size check and --verify cover the bytes.
    writes = [e for e in s3_proxy.requests(method="PUT")]
    assert writes and all(e.headers.get("x-amz-content-sha256") == "UNSIGNED-PAYLOAD" for e in writes), [
        (e.path, e.headers.get("x-amz-content-sha256")) for e in writes
    ]
    # The bucket is looked at once (its checks made right before stand), no blob is looked up before it is written.
    heads = s3_proxy.requests(method="HEAD")
    assert len(heads) == 1, [e.path for e in heads]
    listings = [e for e in s3_proxy.requests(method="GET") if "uploads" in e.path]
    assert len(listings) == 2, [e.path for e in listings]  # open uploads, before and after the copy

    # A pass with nothing new: the journal vouches for every blob (unchanged rows), none is looked up or written.
    before = len(s3_proxy.requests())
    doc = _run(run_cli, dep.config, target, tmp_path, "again")
    seen = s3_proxy.requests()[before:]
    assert doc["sections"]["data"]["copied"] == 0
    blob_keys = {b.file_id for b in blobs}
    looked = [e for e in seen if e.method == "HEAD" and e.path.rsplit("/", 1)[-1] in blob_keys]
    assert looked == [], [(e.method, e.path) for e in seen]
    assert doc["sections"]["data"]["trusted"] == len(blobs)
    assert not [e for e in seen if e.method in ("PUT", "POST", "DELETE") and e.path.rsplit("/", 1)[-1].split("?")[0] in blob_keys]
