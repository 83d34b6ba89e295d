"""Blob audit through the real CLI: file and S3 targets, each kind of damage named, exit codes."""

from __future__ import annotations

import json

import pytest

from tests import verifykit as vk
from tests.dumps import load_dump

DUMP = "sqlite3/0011-stats.sqlite3.dump"
N = 12


@pytest.fixture
def deployment(tmp_path, dumps_dir):
    """A sqlite source (dump + N blobs in a file directory) and a faithful copy of it."""

    def make(*, target: str = "file", s3=None, md5: bool = True, prefix: str = ""):
        items = vk.blobs(N)
        (tmp_path / "src-db").mkdir()
        (tmp_path / "dst-db").mkdir()
        src_db = load_dump(dumps_dir / DUMP, tmp_dir=tmp_path / "src-db")
        vk.add_file_rows(src_db.url, items, md5=md5)
        src_dir = tmp_path / "src-files"
        vk.write_file_blobs(src_dir, items)
        dst_db = load_dump(dumps_dir / DUMP, tmp_dir=tmp_path / "dst-db")
        vk.add_file_rows(dst_db.url, items, md5=md5)
        src_cfg = vk.file_cfg(tmp_path / "src.cfg", db=src_db, directory=src_dir)
        if target == "file":
            dst_dir = tmp_path / "dst-files"
            vk.write_file_blobs(dst_dir, items)
            dst_cfg = vk.file_cfg(tmp_path / "dst.cfg", db=dst_db, directory=dst_dir)
            where = dst_dir
        else:
            bucket = s3.new_bucket()
            vk.write_s3_blobs(s3.client(), bucket, items, prefix=prefix)
            dst_cfg = vk.s3_cfg(tmp_path / "dst.cfg", db=dst_db, s3=s3, bucket=bucket, prefix=prefix)
            where = bucket
        return items, src_cfg, dst_cfg, where

    return make


def _verify(run_cli, src_cfg, dst_cfg, tmp_path, *extra):
    out = tmp_path / "report.json"
    proc = run_cli("verify", "--config", str(src_cfg), "--to", str(dst_cfg), "--json", str(out), "-q", "--workers", "2", *extra)
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    return proc, json.loads(out.read_text())


def _problems(report, area="verify-blobs"):
    return {(p["kind"], p["item"]) for p in report["problems"] if p["area"] == area and p["fatal"]}


def _dst_path(where, item):
    return where / item.file_id[:2] / item.file_id


def test_clean_file_target_exits_0(deployment, run_cli, tmp_path):
    items, src_cfg, dst_cfg, _ = deployment()
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--checksum", "md5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = report["sections"]["verify-blobs"]
    assert s["ok"] == N and s["files"] == N and s["unowned"] == 0
    assert s["bytes_read"] == 2 * sum(len(b.data) for b in items)  # target and source, no journal
    assert report["sections"]["verify-rows"]["tables"]["files"]["ok"] == N + 4
    assert "verify: OK" in proc.stdout


def test_damaged_file_target_each_named(deployment, run_cli, tmp_path):
    items, src_cfg, dst_cfg, where = deployment()
    vk.flip_byte(_dst_path(where, items[1]), 100)
    vk.truncate(_dst_path(where, items[2]), 10)
    _dst_path(where, items[3]).unlink()
    extra = where / "ZZ" / "ZZUNOWNEDXXXXXXX"
    extra.parent.mkdir()
    extra.write_bytes(b"nobody's")
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 1
    assert _problems(report) == {
        ("hash-mismatch", items[1].file_id),
        ("size-mismatch", items[2].file_id),
        ("missing", items[3].file_id),
        ("unowned", str(extra)),
    }
    s = report["sections"]["verify-blobs"]
    assert (s["ok"], s["hash-mismatch"], s["size-mismatch"], s["missing"], s["unowned"]) == (N - 3, 1, 1, 1, 1)
    assert "verify-rows" not in report["sections"]
    assert extra.read_bytes() == b"nobody's"  # reported, never deleted
    for fid in (items[1].file_id, items[2].file_id, items[3].file_id, "ZZUNOWNEDXXXXXXX"):
        assert fid in proc.stdout


def test_source_blob_no_longer_matching_its_md5(deployment, run_cli, tmp_path):
    items, src_cfg, dst_cfg, where = deployment()
    src_dir = tmp_path / "src-files"
    # Altered at the source after upload, and copied as it was: the copy is faithful, the source is not.
    vk.flip_byte(src_dir / items[4].file_id[:2] / items[4].file_id, 5)
    vk.flip_byte(_dst_path(where, items[4]), 5)
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only", "--checksum", "md5")
    assert proc.returncode == 1
    assert _problems(report) == {("corrupt-source", items[4].file_id)}
    # Without md5 the copy matches its source: nothing to say.
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 0, proc.stdout


def test_empty_md5_is_unverifiable_not_a_match(deployment, run_cli, tmp_path):
    items, src_cfg, dst_cfg, where = deployment(md5=False)
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only", "--checksum", "md5")
    assert proc.returncode == 0, proc.stdout
    s = report["sections"]["verify-blobs"]
    assert s["unverifiable_by_md5"] == N
    assert {p["item"] for p in report["problems"] if p["kind"] == "unverifiable"} == {b.file_id for b in items}


def test_damaged_s3_target_each_named(deployment, run_cli, tmp_path, s3_server):
    items, src_cfg, dst_cfg, bucket = deployment(target="s3", s3=s3_server, prefix="plik")
    c = s3_server.client()
    key = lambda b: f"plik/{b.file_id}"  # noqa: E731
    data = bytearray(items[1].data)
    data[7] ^= 0xFF
    c.put_object(Bucket=bucket, Key=key(items[1]), Body=bytes(data))
    c.put_object(Bucket=bucket, Key=key(items[2]), Body=items[2].data[:-1])
    c.delete_object(Bucket=bucket, Key=key(items[3]))
    c.put_object(Bucket=bucket, Key="plik/ZZUNOWNEDXXXXXXX", Body=b"nobody's")
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 1, proc.stderr
    assert _problems(report) == {
        ("hash-mismatch", items[1].file_id),
        ("size-mismatch", items[2].file_id),
        ("missing", items[3].file_id),
        ("unowned", "plik/ZZUNOWNEDXXXXXXX"),
    }
    assert c.get_object(Bucket=bucket, Key="plik/ZZUNOWNEDXXXXXXX")["Body"].read() == b"nobody's"


def test_s3_target_by_etag(deployment, run_cli, tmp_path, s3_server):
    items, src_cfg, dst_cfg, bucket = deployment(target="s3", s3=s3_server)
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--checksum", "md5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = report["sections"]["verify-blobs"]
    assert s["ok"] == N and s["verified_by_etag"] == N
    assert s["bytes_read"] == 0
    assert "verified by ETag" in proc.stdout
    # an object whose ETag disagrees is read, and named
    c = s3_server.client()
    c.put_object(Bucket=bucket, Key=items[5].file_id, Body=items[5].data[:-3] + b"xyz")
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--checksum", "md5", "--data-only")
    assert proc.returncode == 1
    assert _problems(report) == {("hash-mismatch", items[5].file_id)}


def test_after_pmigrate_journal_is_the_reference(deployment, run_cli, tmp_path):
    """Copied by pmigrate: verify reads the target only and compares with the journal's hashes."""
    import shutil

    items, src_cfg, dst_cfg, where = deployment()
    shutil.rmtree(where)
    out = tmp_path / "copy.json"
    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--data-only", "--verify", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads(out.read_text())["sections"]["verify-blobs"]
    assert s["ok"] == N and s["bytes_read"] == sum(len(b.data) for b in items)  # no source read
    assert s["reference"].startswith("copy journal")
    vk.flip_byte(_dst_path(where, items[6]), 0)
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 1
    assert _problems(report) == {("hash-mismatch", items[6].file_id)}
    assert "recorded when it was copied" in next(p["message"] for p in report["problems"] if p["kind"] == "hash-mismatch")
    assert report["sections"]["verify-blobs"]["dropped_from_journal"] == 1

    # The audit dropped the damaged blob from the journal: the next run repairs it.
    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--data-only", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())["sections"]["data"]
    assert (data["copied"], data["already_done"]) == (1, N - 1)
    assert _dst_path(where, items[6]).read_bytes() == items[6].data
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 0 and not _problems(report)


def test_full_migration_to_s3_verifies_clean(deployment, run_cli, tmp_path, s3_server):
    """pmigrate --verify: metadata and blobs copied to a new sqlite file and a bucket, then audited."""
    from tests.servers import sqlite_database

    items, src_cfg, _, _ = deployment()
    bucket = s3_server.new_bucket()
    dst_cfg = vk.s3_cfg(tmp_path / "full.cfg", db=sqlite_database(tmp_path / "full.db"), s3=s3_server, bucket=bucket, prefix="p")
    out = tmp_path / "full.json"
    proc = run_cli("--config", str(src_cfg), "--to", str(dst_cfg), "--verify", "--checksum", "md5", "-q", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    s = report["sections"]["verify-blobs"]
    assert (s["ok"], s["unowned"], s["objects_listed"]) == (N, 0, N)
    assert report["sections"]["verify-rows"]["tables"]["files"]["ok"] == N + 4
    assert not [p for p in report["problems"] if p["fatal"]]


def test_hostile_id_is_named_never_a_path(deployment, run_cli, tmp_path):
    """A files row whose id would escape the directory is reported, and nothing outside is read."""
    import sqlalchemy as sa

    items, src_cfg, dst_cfg, where = deployment()
    db = str(src_cfg.read_text()).split('ConnectionString = "')[1].split('"')[0]
    eng = sa.create_engine(f"sqlite:///{db}")
    with eng.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO files (id, upload_id, name, status, md5, type, size) "
            "VALUES ('../../etc/passwd', 'UPLOAD1XXXXXXXXX', 'x', 'uploaded', '', '', 10)"
        )
    eng.dispose()
    proc, report = _verify(run_cli, src_cfg, dst_cfg, tmp_path, "--data-only")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert _problems(report) == {("invalid-id", "../../etc/passwd")}
    assert report["sections"]["verify-blobs"]["ok"] == N
