"""Open multipart uploads on an S3 target: a run aborts those of its own blobs, and only those; verify names them.

An open upload is invisible among the objects and billed by real stores. The
ways a run leaves one are real here: a connection cut by the fault-injecting
proxy (tests/s3proxy.py) after moto created an upload, and a SIGKILL of the
whole CLI process group while a part upload is held in the proxy.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import blobdeploy as bd
from tests.conftest import REPO
from tests.s3proxy import RESET_AFTER, STALL, Rule

MiB = 1 << 20
PART = "PartSize = 5242880\n"
PREFIX = "plik"


def _run(run_cli, *args: str, tmp_path: Path) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.randrange(1 << 30)}.json"
    cp = run_cli(*args, "--data-only", "-q", "--workers", "2", "--json", str(report))
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stdout + cp.stderr


def _open(server, bucket: str) -> dict[str, int]:
    """Key -> number of uploads open under it."""
    out: dict[str, int] = {}
    for u in server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        out[u["Key"]] = out.get(u["Key"], 0) + 1
    return out


def _dangle(server, bucket: str, key: str) -> None:
    """An upload begun, given a part, and left open: what a killed writer leaves."""
    client = server.client()
    up = client.create_multipart_upload(Bucket=bucket, Key=key)
    client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"left behind")


@pytest.mark.slow
def test_a_run_aborts_the_open_uploads_of_its_own_blobs_and_no_other(tmp_path, run_cli, s3_server, s3_bucket):
    blobs = bd.make_blobs(6, seed=91)
    blobs[5].status = "deleted"  # no blob: pmigrate never writes its key
    dep = bd.file_source(tmp_path / "src", blobs)
    ours = f"{PREFIX}/{blobs[0].file_id}"
    swapped = f"{PREFIX}/{blobs[1].file_id.swapcase()}"  # the same letters, another id
    foreign = [f"{PREFIX}/{bd.new_id(random.Random(1))}", f"{PREFIX}/{blobs[5].file_id}", f"{PREFIX}/notes.txt", swapped]
    elsewhere = f"other/{blobs[0].file_id}"  # outside the target's prefix
    for key in [ours, *foreign, elsewhere]:
        _dangle(s3_server, s3_bucket, key)
    target = bd.s3_target(tmp_path / "t", server=s3_server, bucket=s3_bucket, prefix=PREFIX)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 0, out
    assert _open(s3_server, s3_bucket) == {k: 1 for k in [*foreign, elsewhere]}
    assert bd.s3_target_blobs(s3_server, s3_bucket, prefix=PREFIX) == {b.file_id: b.data for b in dep.with_blob()}
    start = doc["sections"]["data"]["open_uploads"]["start"]
    assert (start["found"], start["aborted"], start["not_ours"]) == (5, 1, 4)
    assert sorted(start["not_ours_keys"]) == sorted(foreign)
    assert doc["sections"]["data"]["open_uploads"]["end"]["found"] == 4
    assert f"aborted 1 open multipart upload(s) of this source's blobs, left by an interrupted upload: {ours}" in out
    assert "4 open multipart upload(s) under the target's prefix are not this source's blobs, left in place" in out

    # verify names every open upload under the prefix, and fails as for any object nobody owns
    cp = run_cli("verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--json", str(tmp_path / "v.json"))
    assert cp.returncode == 1, cp.stdout + cp.stderr
    problems = json.loads((tmp_path / "v.json").read_text())["problems"]
    assert sorted(p["item"] for p in problems if p["kind"] == "open-upload") == sorted(foreign)
    assert "4 open multipart uploads under the target's prefix" in cp.stdout


def test_an_upload_whose_creation_answer_was_cut_is_aborted_at_the_end(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    """moto creates the upload, the answer is lost, botocore asks again and completes the second one."""
    blobs = bd.make_blobs(3, seed=92)
    blobs[0].data = random.Random(92).randbytes(11 * MiB)
    dep = bd.file_source(tmp_path / "src", blobs)
    cut = s3_proxy.add(Rule(RESET_AFTER, method="POST", path=r"\?uploads$", times=1))
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket, extra=PART)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 0, out
    assert cut.hits == 1
    assert _open(s3_server, s3_bucket) == {}
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    end = doc["sections"]["data"]["open_uploads"]["end"]
    assert (end["found"], end["aborted"]) == (1, 1)


@pytest.mark.slow
def test_kill_9_of_the_process_group_mid_upload_then_rerun_leaves_no_open_upload(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    blobs = bd.make_blobs(3, seed=93)
    big = blobs[0]
    big.data = random.Random(93).randbytes(16 * MiB)  # four parts of 5 MiB, and a short one
    dep = bd.file_source(tmp_path / "src", blobs)
    held = s3_proxy.add(Rule(STALL, method="PUT", path=r"[?&]partNumber=", seconds=120))  # parts never arrive
    target = bd.s3_target(tmp_path / "t", server=s3_proxy.s3, bucket=s3_bucket, extra=PART)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO)
    args = [sys.executable, "-m", "pmigrate", "--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "2"]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (held.hits and _open(s3_server, s3_bucket)):
            assert proc.poll() is None, "the run ended before its upload could be killed"
            assert time.monotonic() < deadline, "no multipart upload began"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI, its fork server and its workers
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert _open(s3_server, s3_bucket) == {big.file_id: 1}  # what the killed run left

    s3_proxy.clear()
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 0, out
    assert _open(s3_server, s3_bucket) == {}
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in blobs}
    assert doc["sections"]["data"]["open_uploads"]["start"]["aborted"] == 1


def test_an_id_that_differs_only_in_case_is_not_ours_on_mariadb(mysql_db):
    """MariaDB compares ids without case: an open upload on a swapped-case key must not pass for one of ours."""
    import sqlalchemy as sa

    from pmigrate.transfer.uploads import own_blobs

    ours, removed, deleted = "AbCdEfGh12345678", "RmVdEfGh12345678", "DlTdEfGh12345678"
    engine = sa.create_engine(mysql_db.url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE files (id varchar(256) PRIMARY KEY, status varchar(256))")
            conn.exec_driver_sql(f"INSERT INTO files VALUES ('{ours}', 'uploaded'), ('{removed}', 'removed'), ('{deleted}', 'deleted')")
        asked = [ours, ours.swapcase(), removed, deleted, "NotInTheSource01"]
        assert own_blobs(engine, asked) == {ours, removed}
        assert own_blobs(engine, [ours.swapcase()]) == set()
    finally:
        engine.dispose()
