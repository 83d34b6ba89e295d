"""Encrypting while migrating: files without an SSE-C key get one, in their target row and on every request.

moto takes SSE-C headers over plain HTTP but neither encrypts nor checks
them, so the keys on the wire are read from the fault-injecting proxy's log
of every request (tests/s3proxy.py), as a real store would receive them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from pmigrate.data.ssekeys import ALPHABET, Keyring
from pmigrate.journal import Journal
from tests import blobdeploy as bd
from tests.dumps import load_dump
from tests.verifykit import UPLOAD

MiB = 1 << 20
SSE_C = 'PartSize = 5242880\n  SSE = "SSE-C"\n'
KEY = re.compile(r"[a-zA-Z0-9]{32}")
PLIKD_KEY = "".join(random.Random(7).choice(bd._ALNUM) for _ in range(32))  # one file had a key already


# -- the keys ------------------------------------------------------------------


def test_keys_have_plikds_form_and_come_out_the_same_every_time():
    ring = Keyring(bytes(range(32)))
    keys = [ring.key(bd.new_id(random.Random(i))) for i in range(300)]
    assert all(KEY.fullmatch(k) for k in keys) and len(set(keys)) == 300
    assert set("".join(keys)) == set(ALPHABET)  # every one of plikd's 62 characters is drawn
    assert Keyring(bytes(range(32))).key("AbCdEfGh12345678") == ring.key("AbCdEfGh12345678")
    assert Keyring(bytes(range(1, 33))).key("AbCdEfGh12345678") != ring.key("AbCdEfGh12345678")
    assert ring.key("AbCdEfGh12345678") != ring.key("abCdEfGh12345678")


def test_a_key_goes_into_backend_details_as_plikd_writes_it():
    ring = Keyring(b"s" * 32)
    assert ring.details("", "AbCdEfGh12345678") == f'{{"SSEKey":"{ring.key("AbCdEfGh12345678")}"}}'
    assert json.loads(ring.details('{"Other":1}', "AbCdEfGh12345678")) == {"Other": 1, "SSEKey": ring.key("AbCdEfGh12345678")}
    kept = json.dumps({"SSEKey": PLIKD_KEY})
    assert ring.details(kept, "AbCdEfGh12345678") == kept
    assert ring.details("not json", "AbCdEfGh12345678") == "not json"  # left for the copy to name as an error
    assert ring.made == 2


def test_the_secret_is_durable_private_and_survives_restart(tmp_path):
    path = tmp_path / "j.db"
    journal = Journal.open(path, identity="t")
    assert journal.secret("k") is None
    made = journal.secret("k", create=True)
    assert len(made) == 32 and journal.secret("k", create=True) == made
    journal.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Journal.open(path, identity="t", restart=True)
    assert again.secret("k") == made
    again.close()
    peek = Journal.peek(path, identity="t")
    assert peek.secret("k", create=True) == made  # read-only: never makes one
    peek.close()


# -- through the CLI -----------------------------------------------------------


def _deployment(tmp_path: Path, dumps_dir: Path, seed: int) -> bd.Deployment:
    """A whole Plik 0011 database (plikd's own dump) on the file backend, with these files and blobs."""
    blobs = bd.make_blobs(8, seed=seed)
    blobs[0].data = random.Random(seed).randbytes(11 * MiB)  # multipart: create, three parts, complete
    blobs[1].data = b""
    blobs[2].status = "deleted"  # no blob: its row stays as it is
    blobs[3].backend_details = json.dumps({"SSEKey": PLIKD_KEY})  # keeps its own key
    for b in blobs:
        b.upload_id = UPLOAD
    (tmp_path / "src").mkdir()
    db = Path(load_dump(dumps_dir / "sqlite3/0011-stats.sqlite3.dump", tmp_dir=tmp_path / "src").go_dsn)
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO files (id, upload_id, name, status, md5, type, size, backend_details, reference) "
        "VALUES (?, ?, 'name', ?, ?, 'application/octet-stream', ?, ?, '')",
        [(b.file_id, b.upload_id, b.status, hashlib.md5(b.data).hexdigest(), len(b.data), b.backend_details) for b in blobs],
    )
    con.execute("UPDATE files SET status = 'deleted' WHERE id = 'FILE1XXXXXXXXXXX'")  # the dump's own, without a blob
    con.commit()
    con.close()
    files = tmp_path / "src" / "files"
    for b in blobs:
        if b.status in ("uploaded", "removed"):
            (files / b.file_id[:2]).mkdir(parents=True, exist_ok=True)
            (files / b.file_id[:2] / b.file_id).write_bytes(b.data)
    cfg = tmp_path / "src" / "plikd.cfg"
    cfg.write_text(bd.file_toml(files) + bd.meta_toml(db))
    return bd.Deployment(tmp_path / "src", cfg, db, blobs)


def _target(tmp_path: Path, proxy, bucket: str, *, metadata: bool = True) -> Path:
    cfg = bd.s3_target(tmp_path / "t", server=proxy.s3, bucket=bucket, extra=SSE_C)
    if metadata:
        cfg.write_text(cfg.read_text() + bd.meta_toml(tmp_path / "t" / "plik.db"))
    return cfg


def _run(run_cli, *args: str, tmp_path: Path) -> tuple[int, dict, str]:
    report = tmp_path / f"r{random.randrange(1 << 30)}.json"
    cp = run_cli(*args, "-q", "--workers", "2", "--json", str(report))
    doc = json.loads(report.read_text()) if report.exists() else {}
    return cp.returncode, doc, cp.stdout + cp.stderr


def _row_keys(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return {fid: details for fid, details in con.execute("SELECT id, backend_details FROM files")}
    finally:
        con.close()


def _sent_keys(proxy, bucket: str) -> dict[str, set[tuple[str, str]]]:
    """file id -> (method, key) of every request on its object, the key decoded from the SSE-C header ("" if none)."""
    out: dict[str, set[tuple[str, str]]] = {}
    for e in proxy.log:
        m = re.fullmatch(rf"/{bucket}/([A-Za-z0-9]{{16}})(\?.*)?", e.path)
        if not m:
            continue
        header = e.headers.get("x-amz-server-side-encryption-customer-key", "")
        key = base64.b64decode(header).decode() if header else ""
        if key:
            md5 = base64.b64encode(hashlib.md5(key.encode()).digest()).decode()
            assert e.headers["x-amz-server-side-encryption-customer-key-md5"] == md5
        out.setdefault(m.group(1), set()).add((e.method, key))
    return out


def _key_of(details: str) -> str:
    return json.loads(details)["SSEKey"]


@pytest.mark.slow
def test_a_source_without_keys_into_an_sse_c_target(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy, dumps_dir):
    dep = _deployment(tmp_path, dumps_dir, seed=101)
    target = _target(tmp_path, s3_proxy, s3_bucket)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--verify", tmp_path=tmp_path)
    assert code == 0, out
    assert doc["sections"]["verify-blobs"]["ok"] == len(dep.with_blob())
    assert doc["sections"]["metadata"]["sse_keys_made"] == len(dep.with_blob()) - 1

    rows = _row_keys(tmp_path / "t" / "plik.db")
    with_blob = {b.file_id for b in dep.with_blob()}
    keys = {fid: _key_of(rows[fid]) for fid in with_blob}
    assert all(KEY.fullmatch(k) for k in keys.values()) and len(set(keys.values())) == len(keys)
    assert keys[dep.blobs[3].file_id] == PLIKD_KEY
    assert rows[dep.blobs[2].file_id] == ""  # deleted: nothing stored, no key

    # every request on an object, writes and verify's reads, carried that object's key from its row
    sent = _sent_keys(s3_proxy, s3_bucket)
    assert set(sent) == with_blob
    for fid, requests in sent.items():
        assert {key for _, key in requests} == {keys[fid]}, fid
        assert {"PUT", "GET"} <= {method for method, _ in requests}
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.with_blob()}

    # the same again: nothing to copy, the rows keep their keys
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--verify", tmp_path=tmp_path)
    assert code == 0, out
    assert doc["sections"]["data"]["already_done"] == len(with_blob)
    assert _row_keys(tmp_path / "t" / "plik.db") == rows

    # a row whose key is not the one its blob was encrypted with fails verify, and the key is not shown
    con = sqlite3.connect(tmp_path / "t" / "plik.db")
    other = Keyring(b"x" * 32).details("", dep.blobs[4].file_id)
    con.execute("UPDATE files SET backend_details = ? WHERE id = ?", (other, dep.blobs[4].file_id))
    con.commit()
    con.close()
    code, doc, out = _run(run_cli, "verify", "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 1, out
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("changed", f"files:{dep.blobs[4].file_id}")]
    assert _key_of(other) not in out and keys[dep.blobs[4].file_id] not in out


@pytest.mark.slow
def test_blobs_first_then_metadata_give_each_row_the_key_its_blob_was_encrypted_with(tmp_path, run_cli, s3_bucket, s3_proxy, dumps_dir):
    """The stages apart (as after a crash between them): the key is the same whichever comes first."""
    dep = _deployment(tmp_path, dumps_dir, seed=102)
    target = _target(tmp_path, s3_proxy, s3_bucket)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--data-only", tmp_path=tmp_path)
    assert code == 0, out
    assert doc["sections"]["data"]["sse_keys_made"] == len(dep.with_blob()) - 1
    sent = _sent_keys(s3_proxy, s3_bucket)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--metadata-only", tmp_path=tmp_path)
    assert code == 0, out
    rows = _row_keys(tmp_path / "t" / "plik.db")
    for fid, requests in sent.items():
        assert {key for _, key in requests} == {_key_of(rows[fid])}, fid

    code, doc, out = _run(run_cli, "verify", "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 0, out
    # without the journal, the keys made cannot be known: verify says where they were kept
    (journal,) = (tmp_path / "t").glob(".pmigrate-journal-*.db")
    journal.rename(journal.with_name("moved.db"))
    code, doc, out = _run(run_cli, "verify", "--config", str(dep.config), "--to", str(target), tmp_path=tmp_path)
    assert code == 1 and f"journal {journal}, which is missing" in out, out


def test_a_target_without_metadata_cannot_receive_the_keys(tmp_path, run_cli, s3_bucket, s3_proxy, dumps_dir):
    dep = _deployment(tmp_path, dumps_dir, seed=103)
    target = _target(tmp_path, s3_proxy, s3_bucket, metadata=False)
    code, doc, out = _run(run_cli, "--config", str(dep.config), "--to", str(target), "--data-only", tmp_path=tmp_path)
    assert code == 2, out
    assert "needs its [MetadataBackendConfig]" in out and "Traceback" not in out
    assert s3_proxy.s3.client().list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


@pytest.mark.parametrize("sse", ["S3", "SSE-C"])
def test_an_sse_c_source_keeps_its_keys(tmp_path, sse):
    """Keys are made only where none exists: an SSE-C source's files have theirs."""
    from pmigrate.config import DataConfig, MetadataConfig, PlikConfig
    from pmigrate.data.ssekeys import needed

    def cfg(backend: str, **options) -> PlikConfig:
        return PlikConfig(path=tmp_path / "x.cfg", data=DataConfig(backend, options), metadata=MetadataConfig("sqlite3", "x.db"))

    assert needed(cfg("file"), cfg("s3", SSE="SSE-C"))
    assert needed(cfg("s3", SSE=sse), cfg("s3", SSE="SSE-C")) is (sse != "SSE-C")
    assert not needed(cfg("s3", SSE="SSE-C"), cfg("file"))
    assert not needed(cfg("file"), cfg("s3", SSE="S3"))
