"""The dry run fails where the run fails, and the run refuses before writing what it could not finish.

Real mounts (a read-only tmpfs, a small one), real blob files deleted or
cut short at the source, a real S3 server refusing a read-only key; the
real CLI in a subprocess. Mounting needs root: without it these tests skip,
and under CI=true they fail.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from tests import blobdeploy as bd
from tests.servers import S3Server, start_moto, stop_process, unavailable
from tests.test_cli_errors import assert_usage_error

KiB = 1 << 10


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str, read_only: bool = False):
    """A tmpfs mounted at path for the test's length, unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        unavailable(f"cannot mount a tmpfs at {path} ({res.stderr.strip()}): these tests need root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def file_target(root: Path, directory: Path, *, metadata: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "target.cfg"
    text = bd.file_toml(directory)
    if metadata:
        text += bd.meta_toml(root / "plik.db")
    cfg.write_text(text)
    return cfg


def data_run(run_cli, dep: bd.Deployment, target: Path, *extra: str):
    return run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", *extra)


def journals(folder: Path) -> list[Path]:
    return list(folder.glob(".pmigrate-journal-*"))


# -- a target directory that refuses writes ------------------------------------------


def test_read_only_target_directory_is_refused_by_the_dry_run_as_by_the_run(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(5, seed=41))
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as ro:
        for directory, words in ((ro, ("is on a read-only file system", "remount it read-write")),
                                 (ro / "plik" / "files", ("cannot create Directory", "Read-only file system"))):  # fmt: skip
            target = file_target(tmp_path / "dst", directory)
            dry = assert_usage_error(data_run(run_cli, dep, target, "--dry-run"), str(directory), *words)
            real = assert_usage_error(data_run(run_cli, dep, target), str(directory), *words)
            assert dry == real
            assert journals(target.parent) == []


def test_full_run_into_a_read_only_directory_writes_no_row_either(tmp_path, run_cli):
    assert run_cli("fakedb", str(tmp_path / "src"), "--files", "30", "--sizes", "small", "-q").returncode == 0
    with tmpfs(tmp_path / "ro", size="1m", read_only=True) as ro:
        target = file_target(tmp_path / "dst", ro / "files", metadata=True)
        for extra in (("--dry-run",), ()):
            res = run_cli("--config", str(tmp_path / "src" / "plikd.cfg"), "--to", str(target), "-q", *extra)
            assert_usage_error(res, "cannot create Directory", "Read-only file system")
        # Refused in preflight, before the metadata stage wrote its first row.
        assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["target.cfg"]


# -- free space -------------------------------------------------------------------------


def test_small_target_filesystem_is_refused_before_anything_is_written(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(12, seed=42, sizes=[400 * KiB]))  # 4.7 MiB
    with tmpfs(tmp_path / "small", size="2m") as small:
        target = file_target(tmp_path / "dst", small / "files")
        words = ("target full: 2.0 MiB free on the filesystem of", "4.7 MiB still to copy", "--no-space-check")
        dry = assert_usage_error(data_run(run_cli, dep, target, "--dry-run"), *words)
        real = assert_usage_error(data_run(run_cli, dep, target), *words)
        assert dry == real
        assert list(small.iterdir()) == [] and journals(target.parent) == []

        # Told to go on, the dry run says what will happen, and is otherwise satisfied.
        report = tmp_path / "dry.json"
        res = data_run(run_cli, dep, target, "--dry-run", "--no-space-check", "--json", str(report))
        assert res.returncode == 0, res.stderr
        assert "warning: target full: 2.0 MiB free" in res.stdout and "the run would go on until the disk fills" in res.stdout
        data = json.loads(report.read_text())["sections"]["data"]
        assert (data["free_bytes"], data["to_copy"], data["to_copy_bytes"]) == (2 << 20, 12, 12 * 400 * KiB)
        assert list(small.iterdir()) == []


def test_what_the_journal_lists_as_done_is_not_counted_again(tmp_path, run_cli):
    blobs = bd.make_blobs(4, seed=43, sizes=[700 * KiB])
    src = tmp_path / "src"
    dep = bd.file_source(src, blobs[:2])
    with tmpfs(tmp_path / "t", size="3m") as fs:
        target = file_target(tmp_path / "dst", fs / "files")
        assert data_run(run_cli, dep, target).returncode == 0  # 1.4 MiB in, 1.6 MiB left
        # The deployment grew: 2.7 MiB in all, 1.4 MiB of it not copied yet.
        dep.db.unlink()
        dep = bd.file_source(src, blobs)
        # All of it would not fit: only what the journal does not list is counted.
        assert_usage_error(data_run(run_cli, dep, target, "--dry-run", "--restart"), "target full", "2.7 MiB still to copy")
        report = tmp_path / "dry.json"
        res = data_run(run_cli, dep, target, "--dry-run", "--json", str(report))
        assert res.returncode == 0, res.stdout + res.stderr
        data = json.loads(report.read_text())["sections"]["data"]
        assert (data["journal_done"], data["to_copy"], data["to_copy_bytes"]) == (2, 2, 1400 * KiB)
        res = data_run(run_cli, dep, target)
        assert res.returncode == 0, res.stdout + res.stderr
        assert bd.file_target_blobs(fs / "files") == {b.file_id: b.data for b in blobs}


# -- the source's blobs ---------------------------------------------------------------


def _blob_files(files: Path) -> dict[str, Path]:
    """file id -> its blob file, in either layout."""
    return {p.name: p for p in files.rglob("*") if p.is_file() and not p.name.startswith(".")}


def test_dry_run_lists_the_blobs_the_run_would_fail_on(tmp_path, run_cli):
    src = tmp_path / "src"
    assert run_cli("fakedb", str(src), "--files", "120", "--sizes", "small", "--seed", "4", "-q").returncode == 0
    found = _blob_files(src / "files")
    ids = sorted(found)
    for fid in ids[:7]:
        found[fid].unlink()
    short = ids[7]
    found[short].write_bytes(found[short].read_bytes()[:-1])
    target = file_target(tmp_path / "dst", tmp_path / "dst" / "files", metadata=True)
    args = ("--config", str(src / "plikd.cfg"), "--to", str(target), "-q")
    expected = {("missing", fid) for fid in ids[:7]} | {("size-mismatch", short)}

    dry = run_cli(*args, "--dry-run", "--json", str(tmp_path / "dry.json"))
    assert dry.returncode == 1, dry.stdout + dry.stderr
    doc = json.loads((tmp_path / "dry.json").read_text())
    assert {(p["kind"], p["item"]) for p in doc["problems"] if p["area"] == "data"} == expected
    data = doc["sections"]["data"]
    assert (data["blobs"], data["to_copy"], data["errors"]) == (len(ids), len(ids) - 8, 8)
    assert "errors the run would meet: 8 (7 missing, 1 size-mismatch)" in dry.stdout
    assert "migrate: FAILED" in dry.stdout
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["target.cfg"]

    # The run meets the very same ones.
    real = run_cli(*args, "--ignore-errors", "--json", str(tmp_path / "real.json"))
    assert real.returncode == 1, real.stdout + real.stderr
    doc = json.loads((tmp_path / "real.json").read_text())
    assert {(p["kind"], p["item"]) for p in doc["problems"] if p["area"] == "data"} == expected
    assert doc["sections"]["data"]["copied"] == len(ids) - 8


# -- object stores ------------------------------------------------------------------------


def test_missing_bucket_is_named_and_left_missing_and_a_probe_leaves_nothing(tmp_path, run_cli, s3_server, s3_bucket):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=44))
    client = s3_server.client()
    absent = f"{s3_bucket}-absent"
    target = bd.s3_target(tmp_path / "dst", server=s3_server, bucket=absent, prefix="plik")
    res = data_run(run_cli, dep, target, "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"blobs would go to s3://{absent}/plik at " in res.stdout
    assert "(not there yet: the run would create it)" in res.stdout
    assert absent not in {b["Name"] for b in client.list_buckets()["Buckets"]}

    target = bd.s3_target(tmp_path / "dst", server=s3_server, bucket=s3_bucket, prefix="plik")
    res = data_run(run_cli, dep, target, "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "not there yet" not in res.stdout
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


@pytest.fixture(scope="module")
def s3_with_iam():
    """A moto server of this module's own that enforces IAM after its first requests, as AWS does."""
    import boto3

    try:
        proc, admin = start_moto(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"})  # the four set-up requests below
    except Exception as exc:  # noqa: BLE001
        unavailable(f"moto server could not start: {exc}")
    try:
        kw = {"endpoint_url": admin.url, "aws_access_key_id": "a", "aws_secret_access_key": "b", "region_name": "us-east-1"}
        iam = boto3.client("iam", **kw)
        admin.client().create_bucket(Bucket="plik-ro")
        iam.create_user(UserName="reader")
        # AWS authorises HeadBucket as s3:ListBucket; moto asks for s3:HeadBucket.
        may_read = ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": may_read, "Resource": "*"}]}
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield S3Server(endpoint=admin.endpoint, url=admin.url, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    finally:
        stop_process(proc)


def test_read_only_s3_key_is_refused_by_the_dry_run_as_by_the_run(tmp_path, run_cli, s3_with_iam):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=45))
    target = bd.s3_target(tmp_path / "dst", server=s3_with_iam, bucket="plik-ro")
    words = ("refused a write (AccessDenied)", "s3:PutObject")
    dry = assert_usage_error(data_run(run_cli, dep, target, "--dry-run"), *words)
    real = assert_usage_error(data_run(run_cli, dep, target), *words)
    assert dry == real
    assert s3_with_iam.client().list_objects_v2(Bucket="plik-ro").get("KeyCount") == 0


def test_missing_gcs_bucket_is_refused_by_the_dry_run_as_by_the_run(tmp_path, run_cli, gcs_server, gcs_bucket):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(2, seed=46))
    target = tmp_path / "gcs.cfg"
    target.write_text(gcs_server.toml(f"{gcs_bucket}-absent"))
    words = (f"gcs bucket '{gcs_bucket}-absent' does not exist", "plikd does not create it either")
    dry = assert_usage_error(data_run(run_cli, dep, target, "--dry-run"), *words)
    assert assert_usage_error(data_run(run_cli, dep, target), *words) == dry
