"""Fatal target errors through the real CLI: a full disk, a read-only file system, an S3 bucket gone or refusing.

Each stops the run at once with one line naming the cause and its fix, one
problem in the report (not one per blob), and a journal that lists exactly
the blobs complete on the target: a clean stop hands every finished copy back
to the parent before it commits. Only a blob whose worker was killed, or a
commit that could not be written, is missing from it; those are copied again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xxhash

from tests import blobdeploy as bd
from tests import heldfs
from tests.conftest import REPO
from tests.s3proxy import BLOB_WRITES, FORWARD, Proxy, Rule, s3_error
from tests.servers import unavailable


class Mounts:
    """Mounts made for one test (root only), undone in reverse order after it."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def _mount(self, *args: str, at: Path) -> Path:
        r = subprocess.run(["mount", *args, str(at)], capture_output=True, text=True)
        if r.returncode != 0:
            unavailable(f"cannot mount at {at}: {r.stderr.strip() or r.returncode}")
        self.made.append(at)
        return at

    def tmpfs(self, path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        return self._mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", at=path)

    def read_only(self, path: Path) -> Path:
        """path, and only it, read-only from now on (a read-only bind mount onto itself)."""
        self._mount("--bind", str(path), at=path)
        self.made.pop()  # one mount to undo, remounted read-only just below
        return self._mount("-o", "remount,bind,ro", at=path)

    def undo(self) -> None:
        for path in reversed(self.made):
            if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], check=True)
        self.made.clear()


@pytest.fixture
def mounts():
    m = Mounts()
    yield m
    m.undo()


def _remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)


def _journal_rows(target_cfg: Path) -> dict[str, tuple[int, str]]:
    (path,) = target_cfg.parent.glob(".pmigrate-journal-*.db")
    con = sqlite3.connect(path)
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT file_id, size, xxh3 FROM blobs")}
    finally:
        con.close()


def _complete_on_target(files: Path, dep: bd.Deployment) -> dict[str, bytes]:
    """The blobs under their final names, each checked whole; no temporary name may be left."""
    got = bd.file_target_blobs(files)
    assert not [k for k in got if k.startswith(".")], "a stopped write left its temporary file"
    by_id = {b.file_id: b.data for b in dep.blobs}
    for fid, data in got.items():
        assert data == by_id[fid], f"{fid} is visible under its final name but not whole"
    return got


def _as_journal(blobs: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    return {fid: (len(data), xxhash.xxh3_128_hexdigest(data)) for fid, data in blobs.items()}


def _copy(run_cli, dep: bd.Deployment, target_cfg: Path, report: Path, *extra: str):
    cp = run_cli("--config", str(dep.config), "--to", str(target_cfg), "--data-only", "-q", "--json", str(report), *extra)
    return cp, json.loads(report.read_text()) if report.exists() else {}


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _stops(run_cli, dep: bd.Deployment, target_cfg: Path, report: Path, kind: str, *extra: str):
    """A run stopped by a store refusing every write: exit 1, one line on stderr, that one problem listed once."""
    cp, doc = _copy(run_cli, dep, target_cfg, report, *extra)
    assert cp.returncode == 1, cp.stderr
    assert [p["kind"] for p in doc["problems"]] == [kind], doc["problems"]
    return _one_line(cp.stderr), doc, cp.stdout


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_full_disk_names_the_cause_and_journals_every_blob_on_the_target(tmp_path, run_cli, mounts):
    blobs = bd.make_blobs(150, seed=31, sizes=[40_000, 7_000, 90_000, 1])
    dep = bd.file_source(tmp_path / "src", blobs)
    mnt = mounts.tmpfs(tmp_path / "mnt", "2m")
    target = tmp_path / "dst" / "target.cfg"  # the journal beside it, on another disk than the blobs
    target.parent.mkdir()
    target.write_text(bd.file_toml(mnt / "files"))
    total = sum(len(b.data) for b in blobs)

    # --no-space-check: the check before the copy would refuse it (tests/test_dry_run_checks.py); this is the disk
    # filling up mid-run, as when another writer takes the room meanwhile.
    line, doc, out = _stops(run_cli, dep, target, tmp_path / "r1.json", "target-full", "--workers", "2", "--no-space-check")
    on_target = _complete_on_target(mnt / "files", dep)
    assert 10 < len(on_target) < len(blobs)
    remaining = total - sum(len(d) for d in on_target.values())
    free = _free(mnt)
    m = re.search(r"target full: (.+) free, (.+) still to copy", line)
    assert m, line
    assert "free space" in line and "another target" in line and "run the same command again" in line
    data = doc["sections"]["data"]
    assert data["stopped"] == {"kind": "target-full", "free_bytes": free, "remaining_bytes": remaining}
    assert data["complete"] is False and data["copied"] == len(on_target)
    assert f"stopped before the end: {line.removeprefix('pmigrate: error: ')}" in out
    # the journal lists exactly the blobs complete on the target
    assert _journal_rows(target) == _as_journal(on_target)

    _remount(mnt, "size=16m")
    cp, doc = _copy(run_cli, dep, target, tmp_path / "r2.json", "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["already_done"], data["copied"]) == (len(on_target), len(blobs) - len(on_target))
    assert _complete_on_target(mnt / "files", dep) == {b.file_id: b.data for b in blobs}
    verify = run_cli("verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _own_folder(blobs: list[bd.Blob], start: int) -> int:
    """The index, from start on, of the first blob whose folder (id[:2]) no earlier blob shares."""
    for k in range(start, len(blobs)):
        if blobs[k].file_id[:2] not in {b.file_id[:2] for b in blobs[:k]}:
            return k
    raise AssertionError("no blob with a folder of its own: choose another seed")


def _stopped_at(blob_k: int, dep: bd.Deployment, files: Path, target: Path) -> None:
    """One worker copies in row order: exactly the blobs before k are on the target, and journaled."""
    before = {b.file_id: b.data for b in dep.blobs[:blob_k]}
    assert _complete_on_target(files, dep) == before
    assert _journal_rows(target) == _as_journal(before)


def _resumed(run_cli, dep: bd.Deployment, target: Path, files: Path, report: Path, *, done: int) -> None:
    cp, doc = _copy(run_cli, dep, target, report, "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["already_done"], data["copied"]) == (done, len(dep.blobs) - done)
    assert _complete_on_target(files, dep) == {b.file_id: b.data for b in dep.blobs}


def test_read_only_file_system_is_refused_before_anything_is_written(tmp_path, run_cli, mounts):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(5, seed=32))
    mnt = mounts.tmpfs(tmp_path / "mnt", "1m")
    (mnt / "files").mkdir()
    _remount(mnt, "ro")
    target = tmp_path / "dst" / "target.cfg"
    target.parent.mkdir()
    target.write_text(bd.file_toml(mnt / "files"))
    cp, _ = _copy(run_cli, dep, target, tmp_path / "r.json")
    assert cp.returncode == 2, cp.stderr
    line = _one_line(cp.stderr)
    assert "read-only file system" in line and "remount it read-write" in line, line
    assert list((mnt / "files").iterdir()) == []
    assert list(target.parent.glob(".pmigrate-journal-*")) == []


def test_read_only_folder_mid_run_stops_at_once_with_the_journal_right(tmp_path, run_cli, mounts):
    blobs = bd.make_blobs(60, seed=33, sizes=[3_000, 20_000])
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    files = tmp_path / "dst" / "files"
    k = _own_folder(blobs, 20)
    folder = files / blobs[k].file_id[:2]
    folder.mkdir(parents=True)
    mounts.read_only(folder)

    line, doc, _ = _stops(run_cli, dep, target, tmp_path / "r1.json", "target-read-only", "--workers", "1")
    assert "target on a read-only file system" in line and "remount it read-write" in line, line
    assert doc["problems"][0]["item"] == blobs[k].file_id
    assert doc["sections"]["data"]["stopped"] == {"kind": "target-read-only"}
    _stopped_at(k, dep, files, target)

    mounts.undo()
    _resumed(run_cli, dep, target, files, tmp_path / "r2.json", done=k)


def _run_without_dac_override(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real CLI as root without CAP_DAC_OVERRIDE: file modes bind it as they bind any user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    probe = subprocess.run([*drop, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"cannot drop CAP_DAC_OVERRIDE with setpriv: {probe.stderr.strip()}")
    return subprocess.run([*drop, sys.executable, "-m", "pmigrate", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_permission_denied_is_refused_first_then_stops_a_run_at_once(tmp_path, run_cli):
    if os.geteuid() != 0:
        unavailable("needs root, to drop CAP_DAC_OVERRIDE and stay the owner of the test's files")
    blobs = bd.make_blobs(60, seed=34, sizes=[3_000, 20_000])
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    files = tmp_path / "dst" / "files"
    args = ["--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "1"]

    files.mkdir(mode=0o555)
    cp = _run_without_dac_override([*args, "--json", str(tmp_path / "r0.json")], tmp_path)
    assert cp.returncode == 2, cp.stderr
    line = _one_line(cp.stderr)
    assert "is not writable by user" in line and "give that user write access" in line, line
    assert list(files.iterdir()) == []

    files.chmod(0o755)
    k = _own_folder(blobs, 20)
    (files / blobs[k].file_id[:2]).mkdir(mode=0o555)  # left by another user, say
    report = tmp_path / "r1.json"
    cp = _run_without_dac_override([*args, "--json", str(report)], tmp_path)
    assert cp.returncode == 1, cp.stderr
    line = _one_line(cp.stderr)
    assert "target permission denied" in line and "give the user pmigrate runs as write access" in line, line
    doc = json.loads(report.read_text())
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("target-permission", blobs[k].file_id)]
    _stopped_at(k, dep, files, target)

    (files / blobs[k].file_id[:2]).chmod(0o755)
    _resumed(run_cli, dep, target, files, tmp_path / "r2.json", done=k)


def _s3_blobs(seed: int) -> list[bd.Blob]:
    return bd.make_blobs(40, seed=seed, sizes=[5_000, 20_000, 1])


def _stored(proxy: Proxy) -> set[str]:
    """The file ids whose blob PUT the server accepted."""
    return {e.path.split("/", 2)[2] for e in proxy.requests(**BLOB_WRITES) if e.status == 200}


@pytest.mark.slow
def test_s3_bucket_deleted_mid_run_stops_at_once_then_the_rerun_copies_all_again(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    from botocore.exceptions import ClientError

    dep = bd.file_source(tmp_path / "src", _s3_blobs(35))
    client = s3_server.client()

    def delete_bucket() -> None:
        for obj in client.list_objects_v2(Bucket=s3_bucket).get("Contents", []):
            client.delete_object(Bucket=s3_bucket, Key=obj["Key"])
        client.delete_bucket(Bucket=s3_bucket)

    # writes one at a time: the bucket goes after exactly ten blobs, none slips past
    s3_proxy.add(Rule(FORWARD, after=10, serial=True, first=delete_bucket, **BLOB_WRITES))
    target = bd.s3_target(tmp_path / "dst", server=s3_proxy.s3, bucket=s3_bucket)
    line, _, _ = _stops(run_cli, dep, target, tmp_path / "r1.json", "target-gone", "--workers", "2")
    assert "target bucket gone" in line and "NoSuchBucket" in line and "create it again" in line, line
    with pytest.raises(ClientError):
        client.head_bucket(Bucket=s3_bucket)
    # the journal lists the blobs stored before the bucket went, and no other
    by_id = {b.file_id: b.data for b in dep.blobs}
    stored = _stored(s3_proxy)
    assert len(stored) == 10
    assert _journal_rows(target) == _as_journal({fid: by_id[fid] for fid in stored})

    s3_proxy.clear()  # the bucket is created again by the next run, as plikd would
    cp, doc = _copy(run_cli, dep, target, tmp_path / "r2.json", "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["already_done"], data["copied"]) == (0, len(dep.blobs))
    assert bd.s3_target_blobs(s3_server, s3_bucket) == by_id
    verify = run_cli("verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_s3_access_denied_mid_run_stops_at_once_with_the_journal_right(tmp_path, run_cli, s3_server, s3_bucket, s3_proxy):
    dep = bd.file_source(tmp_path / "src", _s3_blobs(36))
    refusal = s3_proxy.add(s3_error(403, "AccessDenied", "refused by the test proxy", after=10, serial=True, **BLOB_WRITES))
    target = bd.s3_target(tmp_path / "dst", server=s3_proxy.s3, bucket=s3_bucket)
    line, _, _ = _stops(run_cli, dep, target, tmp_path / "r1.json", "target-denied", "--workers", "2")
    assert "target refuses writes" in line and "403 AccessDenied" in line and "grant them write access" in line, line
    assert refusal.hits <= 2  # one refusal per worker at most: none is retried
    on_target = bd.s3_target_blobs(s3_server, s3_bucket)
    assert len(on_target) == 10
    assert _journal_rows(target) == _as_journal(on_target)

    s3_proxy.clear()
    cp, doc = _copy(run_cli, dep, target, tmp_path / "r2.json", "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["already_done"], data["copied"]) == (10, len(dep.blobs) - 10)
    assert bd.s3_target_blobs(s3_server, s3_bucket) == {b.file_id: b.data for b in dep.blobs}


def _wait_rows(journal: Path, proc: subprocess.Popen, rows: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            con = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
            try:
                if con.execute("SELECT count(*) FROM blobs").fetchone()[0] >= rows:
                    return
            finally:
                con.close()
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the journal never listed {rows} blob(s)")


def test_journal_on_a_disk_that_fills_up_names_it_and_the_rerun_completes(tmp_path, run_cli, mounts):
    blobs = bd.make_blobs(40, seed=37, sizes=[3_000, 20_000])
    k = 15
    blobs[k].data = os.urandom(8 << 20)  # a large blob ahead: the worker reports what it has done first
    used = {b.file_id[:2] for b in blobs if b is not blobs[k]}
    prefix = next(a + b for a in bd._ALNUM for b in bd._ALNUM if a + b not in used)
    blobs[k].file_id = prefix + blobs[k].file_id[2:]  # alone in its folder, which the mount covers
    dep = bd.file_source(tmp_path / "src", blobs)
    held = tmp_path / "src" / "files" / prefix / blobs[k].file_id
    held.unlink()
    if heldfs.available():
        unavailable(f"a stalled blob needs FUSE: {heldfs.available()}")
    # the worker waits in read() there until the test feeds it, with the blobs before it journaled
    stall = heldfs.HeldFile(held.parent, held.name, blobs[k].data)
    target = bd.file_target(tmp_path / "dst")
    files = tmp_path / "dst" / "files"
    jdir = mounts.tmpfs(tmp_path / "jdisk", "256k")
    journal = jdir / "journal.db"
    report = tmp_path / "r1.json"
    args = ["--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen([sys.executable, "-m", "pmigrate", *args, "--journal", str(journal), "--json", str(report)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _wait_rows(journal, proc, k)
        with open(jdir / "filler", "wb", buffering=0) as f:  # the journal's disk is full from now on
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        stall.allow()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stall.close()
    held.write_bytes(blobs[k].data)
    assert proc.returncode == 1, err
    line = _one_line(err)
    assert f"journal {journal} full" in line and "pass --journal with a path on another disk" in line, line
    assert f"({len(blobs) - k} blob(s) copied since its last commit are not listed and will be copied again)" in line
    # every blob reached the target; the journal keeps what it committed before its disk filled
    assert _complete_on_target(files, dep) == {b.file_id: b.data for b in blobs}
    con = sqlite3.connect(journal)
    done = {r[0] for r in con.execute("SELECT file_id FROM blobs")}
    con.close()
    assert done == {b.file_id for b in blobs[:k]}

    (jdir / "filler").unlink()
    cp, doc = _copy(run_cli, dep, target, tmp_path / "r2.json", "--journal", str(journal))
    assert cp.returncode == 0, cp.stderr
    data = doc["sections"]["data"]
    assert (data["already_done"], data["copied"]) == (k, len(blobs) - k)


def test_journal_on_a_full_disk_is_refused_before_any_blob_is_copied(tmp_path, run_cli, mounts):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(5, seed=38))
    target = bd.file_target(tmp_path / "dst")
    jdir = mounts.tmpfs(tmp_path / "jdisk", "64k")
    with open(jdir / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    cp, _ = _copy(run_cli, dep, target, tmp_path / "r.json", "--journal", str(jdir / "journal.db"))
    assert cp.returncode == 2, cp.stderr
    line = _one_line(cp.stderr)
    assert f"journal {jdir / 'journal.db'} cannot be written: its disk is full" in line, line
    assert "pass --journal with a path on another disk" in line
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {}
