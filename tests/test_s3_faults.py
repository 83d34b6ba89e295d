"""S3 faults through the real CLI: random faults, throttling, cut answers and outages, all retried in one layer.

moto sits behind the fault-injecting proxy (tests/s3proxy.py), which fails
requests as real stores and networks do; its log shows what pmigrate sent.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections import defaultdict
from pathlib import Path

import pytest

from pmigrate.data.retry import ATTEMPTS, BACKOFF, THROTTLED
from tests import blobdeploy as bd
from tests.s3proxy import CUT, RESET_AFTER, STALL, Rule, outage, random_faults, s3_error

MiB = 1 << 20
PART = "  PartSize = 5242880\n"


def _run(run_cli, src: Path, dst: Path, tmp_path: Path, *extra: str, timeout: float = 120) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.randrange(1 << 30)}.json"
    cp = run_cli("--config", str(src), "--to", str(dst), "--data-only", "-q", "--json", str(report), *extra, timeout=timeout)
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stderr


def _key(path: str) -> str:
    """The object key a request is about: "/bucket/key?query" -> "key"."""
    return path.split("?", 1)[0].split("/", 2)[2] if path.count("/") >= 2 else ""


def _journal(target: Path) -> set[str]:
    (path,) = target.parent.glob(".pmigrate-journal-*.db")
    con = sqlite3.connect(path)
    try:
        return {r[0] for r in con.execute("SELECT file_id FROM blobs")}
    finally:
        con.close()


@pytest.mark.slow
def test_random_faults_cost_a_bounded_number_of_requests_and_every_blob_verifies(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    """10% of requests fail (500, 503, resets before and after the server acted, stalls); stalls are not waited out."""
    blobs = bd.make_blobs(100, seed=131, sizes=[3_000, 40_000, 0, 700_000])
    blobs[0].data = random.Random(131).randbytes(11 * MiB)  # multipart: creation, parts and completion meet faults too
    dep = bd.file_source(tmp_path / "src", blobs)
    s3_proxy.add(random_faults(0.10, seed=3, seconds=60))  # a stall outlasts the test: it must be cut
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket, extra=PART)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2", "--verify")
    assert code == 0, err
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    assert doc["sections"]["data"]["copied"] == len(blobs)

    faults = s3_proxy.acted()
    assert len(faults) >= 15 and {f.action for f in faults} >= {"respond", "reset-before", "reset-after", STALL}
    by_key: dict[str, list] = defaultdict(list)
    for e in s3_proxy.requests():
        by_key[_key(e.path)].append(e)
    small = {b.file_id for b in blobs[1:]}
    for f in faults:
        key = _key(f.path)
        if key in small:
            # one PutObject: its tries, and at most one hedge with tries of its own; stacked layers sent up to 15
            puts = [e for e in by_key[key] if e.method == "PUT"]
            assert len(puts) <= 2 * ATTEMPTS, (key, [(e.action, e.status) for e in puts])
        if f.action == STALL:
            # not waited out: another copy of the request (sent again, or a hedge beside it) was answered
            answered = [e for e in by_key[key] if e is not f and e.method == f.method and 200 <= e.status < 300]
            assert answered, (f.method, f.path, [(e.action, e.status) for e in by_key[key]])


@pytest.mark.slow
def test_a_503_slowdown_is_retried_with_a_growing_backoff_until_it_passes(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    blobs = bd.make_blobs(3, seed=132)
    dep = bd.file_source(tmp_path / "src", blobs)
    victim = blobs[1].file_id
    throttled = ATTEMPTS + 1  # more than the tries a transient error gets: a throttling store is waited for
    s3_proxy.add(s3_error(503, "SlowDown", "Please reduce your request rate.", method="PUT", path=f"/{victim}$", times=throttled))
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket)
    code, _, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "1")
    assert code == 0, err
    assert bd.s3_target_blobs(s3_server, s3_bucket)[victim] == blobs[1].data
    puts = s3_proxy.requests(method="PUT", path=f"/{victim}$")
    assert [e.status for e in puts] == [503] * throttled + [200]  # one layer: no hedge, no second try of the blob
    gaps = [b.at - a.at for a, b in zip(puts, puts[1:])]
    backoff = BACKOFF[THROTTLED]
    for k, gap in enumerate(gaps):
        least = min(backoff.most, backoff.first * 2**k) / 2  # the policy's shortest wait before retry k
        assert gap >= least, (k, gaps)


def test_a_download_cut_short_is_read_on_from_where_it_stopped(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    blobs = bd.make_blobs(4, seed=133, sizes=[300_000, 2_000_000])
    dep = bd.s3_source(tmp_path / "src", blobs, server=s3_proxy.s3, bucket=s3_bucket)
    cut = s3_proxy.add(Rule(CUT, method="GET", path=r"^/[^/?]+/[^?]+$", times=3))
    target = bd.file_target(tmp_path / "t")
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "1")
    assert code == 0, err
    assert bd.file_target_blobs(tmp_path / "t" / "files") == {b.file_id: b.data for b in blobs}
    assert cut.hits == 3
    ranged = [e.headers.get("range", "") for e in s3_proxy.requests(method="GET")]
    resumed = [r for r in ranged if re.fullmatch(r"bytes=[1-9]\d*-", r)]
    assert len(resumed) == 3, ranged  # each cut read on from its first missing byte, not from the start
    assert doc["sections"]["data"]["copied"] == len(blobs)


def test_a_completion_whose_answer_was_cut_is_written_again(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    """The store completes the upload, the answer is lost, the retry finds no such upload: the blob goes again, whole.

    moto would complete it again; other stores answer NoSuchUpload, as the proxy does here.
    """
    blobs = bd.make_blobs(2, seed=134)
    blobs[0].data = random.Random(134).randbytes(11 * MiB)
    dep = bd.file_source(tmp_path / "src", blobs)
    lost = s3_proxy.add(Rule(RESET_AFTER, method="POST", path=r"\?uploadId=", times=1))
    s3_proxy.add(s3_error(404, "NoSuchUpload", "The specified upload does not exist.", method="POST", path=r"\?uploadId=", times=1))
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket, extra=PART)
    code, _, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "1")
    assert code == 0, err
    assert lost.hits == 1
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    assert s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.slow
def test_outages_at_the_start_and_in_the_middle_are_ridden_out(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    """Every request fails for 18 s from the first one (the checks before any blob), then for 3 s mid-copy."""
    blobs = bd.make_blobs(60, seed=135, sizes=[2_000, 30_000])
    dep = bd.file_source(tmp_path / "src", blobs)
    start = s3_proxy.add(outage(18, seed=1))  # longer than the 15 s botocore's own five tries could wait
    middle = s3_proxy.add(outage(3, after=25, seed=2))  # once 25 requests were answered after the first
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2", "--verify")
    assert code == 0, err
    assert start.hits > 0 and middle.hits > 0
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    assert doc["sections"]["data"]["copied"] == len(blobs)


@pytest.mark.slow
def test_an_outage_longer_than_retry_for_stops_with_one_line_then_the_run_resumes(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    blobs = bd.make_blobs(60, seed=136, sizes=[2_000, 30_000])
    dep = bd.file_source(tmp_path / "src", blobs)
    down = s3_proxy.add(outage(3600, after=30, seed=3))  # down for good, until the test clears it
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket)
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2", "--retry-for", "2s")
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(rf"target S3 endpoint {re.escape(s3_proxy.endpoint)} unreachable for [23] s \(", lines[0]), lines[0]
    assert "then run the same command again to resume" in lines[0] and "--retry-for" in lines[0], lines[0]
    assert {p["kind"] for p in doc["problems"]} == {"target-unreachable"}
    assert down.hits > 0
    on_target = bd.s3_target_blobs(s3_server, s3_bucket)
    assert 0 < len(on_target) < len(blobs)
    assert _journal(target) <= set(on_target)  # journaled blobs are on the target

    s3_proxy.clear()  # the store is back
    code, doc, err = _run(run_cli, dep.config, target, tmp_path, "--workers", "2")
    assert code == 0, err
    data = doc["sections"]["data"]
    assert data["already_done"] > 0 and data["already_done"] + data["copied"] == len(blobs)
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
