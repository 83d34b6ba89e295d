"""The blob engine through the real CLI, file backend to file backend, real processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import xxhash

from pmigrate.errors import EXIT_INTERRUPTED
from tests import blobdeploy as bd
from tests import heldfs
from tests.conftest import REPO
from tests.servers import unavailable


def _journal_rows(path: Path) -> dict[str, tuple]:
    con = sqlite3.connect(path)
    try:
        return {r[0]: r[1:] for r in con.execute("SELECT file_id, size, xxh3, md5 FROM blobs")}
    finally:
        con.close()


def _journal(target_cfg: Path) -> Path:
    found = list(target_cfg.parent.glob(".pmigrate-journal-*.db"))
    assert len(found) == 1, found
    return found[0]


def _copy(run_cli, dep: bd.Deployment, target_cfg: Path, *extra: str, json_path: Path | None = None):
    args = ["--config", str(dep.config), "--to", str(target_cfg), "--data-only", "-q", *extra]
    if json_path is not None:
        args += ["--json", str(json_path)]
    return run_cli(*args)


def _assert_target_complete(dep: bd.Deployment, files_dir: Path) -> None:
    got = bd.file_target_blobs(files_dir)
    assert {k for k in got if k.startswith(".")} == set(), "temporary names left behind"
    assert got == {b.file_id: b.data for b in dep.with_blob()}


def test_file_to_file_copies_every_blob_with_hashes(tmp_path, run_cli):
    blobs = bd.make_blobs(40, seed=11)
    blobs[0].data = b""  # zero-byte blob
    blobs[1].legacy = True  # pre-1.3 layout at the source
    blobs[2].status = "removed"  # still has a blob
    for b, status in zip(blobs[3:8], ("deleted", "missing", "uploading", "", "deleted")):
        b.status = status
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "report.json"

    cp = _copy(run_cli, dep, target, "--workers", "2", json_path=report)
    assert cp.returncode == 0, cp.stderr

    _assert_target_complete(dep, tmp_path / "dst" / "files")
    # the current layout on the target, whatever the source's
    legacy = blobs[1]
    assert (tmp_path / "dst" / "files" / legacy.file_id[:2] / legacy.file_id).read_bytes() == legacy.data
    rows = _journal_rows(_journal(target))
    assert rows == {b.file_id: (len(b.data), xxhash.xxh3_128_hexdigest(b.data), "") for b in dep.with_blob()}
    data = json.loads(report.read_text())["sections"]["data"]
    assert data["copied"] == 35 and data["errors"] == 0
    assert data["bytes"] == sum(len(b.data) for b in dep.with_blob())
    assert data["skipped"] == {"status (empty)": 1, "status deleted": 2, "status missing": 1, "status uploading": 1}
    assert "copied 35 blobs" in cp.stdout


def test_resume_trusts_the_journal_and_recheck_recopies_what_the_target_lost(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(20, seed=12))
    target = bd.file_target(tmp_path / "dst")
    assert _copy(run_cli, dep, target).returncode == 0
    lost = dep.blobs[3]
    (tmp_path / "dst" / "files" / lost.file_id[:2] / lost.file_id).unlink()
    shrunk = dep.blobs[4]
    (tmp_path / "dst" / "files" / shrunk.file_id[:2] / shrunk.file_id).write_bytes(b"short")

    report = tmp_path / "again.json"
    # The journal is trusted for blobs whose source row is unchanged: nothing is looked up, nothing copied.
    cp = _copy(run_cli, dep, target, json_path=report)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(report.read_text())["sections"]["data"]
    assert (data["copied"], data["already_done"], data["trusted"], data["checked_on_target"]) == (0, 20, 20, 0)
    # --recheck looks every journaled blob up on the target and copies again what it lost.
    cp = _copy(run_cli, dep, target, "--recheck", json_path=report)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(report.read_text())["sections"]["data"]
    assert (data["copied"], data["already_done"], data["trusted"], data["checked_on_target"]) == (2, 18, 0, 20)
    _assert_target_complete(dep, tmp_path / "dst" / "files")

    cp = _copy(run_cli, dep, target, "--restart", json_path=report)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(report.read_text())["sections"]["data"]["copied"] == 20


def test_workers_1_and_4_give_the_same_target(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(60, seed=13))
    t1 = bd.file_target(tmp_path / "one")
    t4 = bd.file_target(tmp_path / "four")
    assert _copy(run_cli, dep, t1, "--workers", "1").returncode == 0
    assert _copy(run_cli, dep, t4, "--workers", "4").returncode == 0
    one = bd.file_target_blobs(tmp_path / "one" / "files")
    assert one == bd.file_target_blobs(tmp_path / "four" / "files")
    assert len(one) == 60
    assert _journal_rows(_journal(t1)) == _journal_rows(_journal(t4))


@pytest.mark.parametrize("ignore", [False, True])
def test_missing_source_blob(tmp_path, run_cli, ignore):
    blobs = bd.make_blobs(30, seed=14)
    gone = blobs[10]
    gone.store = False
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--workers", "2", *(["--ignore-errors"] if ignore else []), json_path=report)
    assert cp.returncode == 1
    doc = json.loads(report.read_text())
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("missing", gone.file_id)]
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    assert gone.file_id not in got
    if ignore:
        assert got == {b.file_id: b.data for b in blobs if b is not gone}
        assert doc["sections"]["data"]["copied"] == 29
        assert doc["sections"]["data"]["complete"] is True
    else:
        assert "pass --ignore-errors" in cp.stderr
        assert doc["sections"]["data"]["complete"] is False
        assert not any(k.startswith(".") for k in got)


def test_wrong_size_is_an_error_and_leaves_nothing(tmp_path, run_cli):
    blobs = bd.make_blobs(6, seed=15, sizes=[3000])
    blobs[2].size = 2999  # the metadata says less than the blob holds
    blobs[4].size = 3001  # ... and more
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--ignore-errors", json_path=report)
    assert cp.returncode == 1
    doc = json.loads(report.read_text())
    assert sorted((p["kind"], p["item"]) for p in doc["problems"]) == sorted(
        [("size-mismatch", blobs[2].file_id), ("size-mismatch", blobs[4].file_id)]
    )
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    assert got == {b.file_id: b.data for b in blobs if b.size is None}


def test_md5_checksum_is_recorded_and_checked(tmp_path, run_cli):
    import hashlib

    blobs = bd.make_blobs(5, seed=16)
    dep = bd.file_source(tmp_path / "src", blobs)
    with sqlite3.connect(dep.db) as con:  # plikd recorded another MD5 for one file
        con.execute("UPDATE files SET md5 = ? WHERE id = ?", ("0" * 32, blobs[1].file_id))
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--checksum", "md5", json_path=report)
    assert cp.returncode == 1  # reported, not hidden
    doc = json.loads(report.read_text())
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("md5-mismatch", blobs[1].file_id)]
    rows = _journal_rows(_journal(target))
    assert {k: v[2] for k, v in rows.items()} == {b.file_id: hashlib.md5(b.data).hexdigest() for b in blobs}
    _assert_target_complete(dep, tmp_path / "dst" / "files")  # copied as they are


def test_invalid_ids_never_become_paths(tmp_path, run_cli):
    blobs = bd.make_blobs(4, seed=17)
    dep = bd.file_source(tmp_path / "src", blobs)
    with sqlite3.connect(dep.db) as con:
        con.execute("INSERT INTO uploads (id) VALUES ('UUUUUUUUUUUUUUUU')")
        con.execute(
            "INSERT INTO files (id, upload_id, status, size) VALUES ('../../../etc/pwn', 'UUUUUUUUUUUUUUUU', 'uploaded', 1)"
        )
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--ignore-errors", json_path=report)
    assert cp.returncode == 1
    doc = json.loads(report.read_text())
    assert [(p["kind"], p["item"]) for p in doc["problems"]] == [("invalid-id", "../../../etc/pwn")]
    _assert_target_complete(dep, tmp_path / "dst" / "files")


def test_dry_run_touches_nothing(tmp_path, run_cli):
    blobs = bd.make_blobs(10, seed=18, sizes=[1000])
    blobs[0].status = "deleted"
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--dry-run", json_path=report)
    assert cp.returncode == 0, cp.stderr
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["target.cfg"]
    data = json.loads(report.read_text())["sections"]["data"]
    assert (data["to_copy"], data["to_copy_bytes"], data["journal_done"]) == (9, 9000, 0)
    assert data["by_status"] == {"deleted": 1, "uploaded": 9}
    assert "would copy 9 blobs" in cp.stdout

    assert _copy(run_cli, dep, target).returncode == 0
    cp = _copy(run_cli, dep, target, "--dry-run", json_path=report)
    data = json.loads(report.read_text())["sections"]["data"]
    assert (data["to_copy"], data["journal_done"], data["journal_done_bytes"]) == (0, 9, 9000)


def test_journal_of_another_target_is_refused(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=19))
    a = bd.file_target(tmp_path / "a")
    b = bd.file_target(tmp_path / "b")
    journal = tmp_path / "j.db"
    assert _copy(run_cli, dep, a, "--journal", str(journal)).returncode == 0
    cp = _copy(run_cli, dep, b, "--journal", str(journal))
    assert cp.returncode == 2
    assert "belongs to another target" in cp.stderr
    assert not (tmp_path / "b" / "files").exists()


def test_stream_target_is_refused_and_stream_source_skipped(tmp_path, run_cli):
    dep = bd.file_source(tmp_path / "src", bd.make_blobs(3, seed=20))
    stream = tmp_path / "stream.cfg"
    stream.write_text('DataBackend = "stream"\n')
    cp = _copy(run_cli, dep, stream)
    assert cp.returncode == 2 and "stores nothing" in cp.stderr

    src = tmp_path / "streamsrc.cfg"
    src.write_text('DataBackend = "stream"\n' + bd.meta_toml(dep.db))
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"
    cp = run_cli("--config", str(src), "--to", str(target), "--data-only", "-q", "--json", str(report))
    assert cp.returncode == 0, cp.stderr
    assert json.loads(report.read_text())["sections"]["data"]["skipped"] == {"no data at source": 3}


# -- crashes -------------------------------------------------------------------------


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLIKD_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as at a terminal, even when this test runs where SIGINT is ignored
    (a background job of a non-interactive shell), which Python would inherit and keep."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _copying(
    tmp_path: Path, *, report: Path | None = None, output: bool = True, target: Path | None = None,
    held_size: int | None = None, popen: dict | None = None,
):  # fmt: skip
    """(held, target, proc): the CLI copying a deployment whose one blob is held back (_Held) to a fresh
    folder (or ``target``) with 2 workers, once 50 blobs are journaled; a process the test signals, killed
    if still running after. ``popen`` overrides arguments of subprocess.Popen."""
    held = _Held(tmp_path, size=held_size)
    target = target or bd.file_target(tmp_path / "dst")
    args = [sys.executable, "-m", "pmigrate", "--config", str(held.dep.config), "--to", str(target), "--data-only", "-q",
            "--workers", "2"]  # fmt: skip
    if report is not None:
        args += ["--json", str(report)]
    out = subprocess.PIPE if output else subprocess.DEVNULL
    kw = dict(env=_cli_env(), cwd=tmp_path, stdout=out, stderr=out, text=True, preexec_fn=_default_sigint) | (popen or {})
    proc = subprocess.Popen(args, **kw)
    try:
        _wait_journal(target.parent, proc, rows=50)
        yield held, target, proc
    except BaseException:
        held.file.close()  # no mount left behind by a failing test
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        held.file.allow()  # nothing left waiting on the mount


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _workers_of(pid: int) -> list[int]:
    """Worker processes: children of the forkserver that the CLI process started."""
    out = []
    for p in _descendants(pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"forkserver" in cmd and Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] != str(pid):
            out.append(p)
    return out


def _wait_journal(journal_dir: Path, proc: subprocess.Popen, *, rows: int = 1, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be interrupted: make it longer"
        for j in journal_dir.glob(".pmigrate-journal-*.db"):
            try:
                con = sqlite3.connect(f"file:{j}?mode=ro", uri=True)
                n = con.execute("SELECT count(*) FROM blobs").fetchone()[0]
                con.close()
            except sqlite3.Error:
                continue
            if n >= rows:
                return
        time.sleep(0.05)
    raise AssertionError("the journal showed no progress")


def _until(condition, what: str, timeout: float = 60):
    """condition()'s first true value, polled until the deadline; fails saying what never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if _running(p)]:
            return True
        time.sleep(0.1)
    return False


class _Held:
    """A deployment whose first blob stalls: the run cannot finish until the test feeds it.

    That blob is a regular file on a FUSE mount served by this process
    (tests/heldfs.py): the worker that takes it blocks in read() like on a
    stalled disk or network; everything else is copied and journaled meanwhile.
    """

    def __init__(self, tmp_path: Path, *, size: int | None = None) -> None:
        blobs = bd.make_blobs(300, seed=21, sizes=[200_000, 3, 0, 600_000])
        if size is not None:  # the held blob's size
            blobs[0].data = random.Random(21).randbytes(size)
        used = {b.file_id[:2] for b in blobs[1:]}
        prefix = next(a + b for a in bd._ALNUM for b in bd._ALNUM if a + b not in used)
        blobs[0].file_id = prefix + blobs[0].file_id[2:]  # alone in its folder, which the mount covers
        self.dep = bd.file_source(tmp_path / "src", blobs)
        self.blob = blobs[0]
        self.path = tmp_path / "src" / "files" / prefix / self.blob.file_id
        self.path.unlink()
        reason = heldfs.available()
        if reason:
            unavailable(f"a stalled blob needs FUSE: {reason}")
        self.file = heldfs.HeldFile(self.path.parent, self.path.name, self.blob.data)

    def feed(self) -> None:
        """Let the blob's reads through, now and from now on."""
        self.file.allow()

    def feed_part(self, n: int, *, rest: bool = False) -> threading.Event:
        """Let the first n bytes through; reads past them wait for feed(), or (with ``rest``) for the returned event."""
        self.file.allow(n)
        done = threading.Event()
        if rest:

            def release() -> None:
                if done.wait(120):
                    self.file.allow()

            threading.Thread(target=release, daemon=True).start()
        return done

    def reader(self, pids: list[int]) -> int | None:
        """The process among pids that holds the blob open."""
        for p in pids:
            try:
                fds = os.listdir(f"/proc/{p}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}") == str(self.path):
                        return p
                except OSError:
                    continue
        return None

    def settle(self) -> None:
        """Unmount, and make the blob an ordinary file for the next run."""
        self.file.close()
        self.path.write_bytes(self.blob.data)


def _final_names_whole(files: Path, dep: bd.Deployment) -> dict[str, bytes]:
    """Every blob under a final name is complete; returns them."""
    by_id = {b.file_id: b.data for b in dep.blobs}
    got = {k: v for k, v in bd.file_target_blobs(files).items() if not k.startswith(".")}
    for name, data in got.items():
        assert data == by_id[name], f"{name} is not whole"
    return got


def test_kill_9_of_the_parent_then_rerun_completes(tmp_path, run_cli):
    with _copying(tmp_path, output=False) as (held, target, proc):
        dep = held.dep
        workers = _workers_of(proc.pid)
        others = _descendants(proc.pid)
        assert workers, "no worker process found"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held.feed()  # the worker blocked on the stalled blob reads on, finds its parent gone, and quits
        assert _gone(others), "worker processes outlived the parent"
    held.settle()
    done_before = len(_journal_rows(_journal(target)))
    assert 50 <= done_before < 300
    files = tmp_path / "dst" / "files"
    assert held.blob.file_id not in _final_names_whole(files, dep)

    report = tmp_path / "r.json"
    cp = _copy(run_cli, dep, target, "--workers", "2", json_path=report)
    assert cp.returncode == 0, cp.stderr
    data = json.loads(report.read_text())["sections"]["data"]
    assert data["already_done"] >= done_before and data["copied"] + data["already_done"] == 300
    assert _final_names_whole(files, dep) == {b.file_id: b.data for b in dep.blobs}
    rows = _journal_rows(_journal(target))
    assert rows == {b.file_id: (len(b.data), xxhash.xxh3_128_hexdigest(b.data), "") for b in dep.blobs}


def test_kill_9_of_a_worker_is_survived(tmp_path):
    report = tmp_path / "r.json"
    with _copying(tmp_path, report=report) as (held, target, proc):
        dep = held.dep
        victims = _workers_of(proc.pid)
        assert len(victims) == 2, victims
        os.kill(victims[0], signal.SIGKILL)
        assert _gone(victims[:1])
        held.feed()
        out, err = proc.communicate(timeout=300)
    held.settle()
    assert proc.returncode == 0, err
    doc = json.loads(report.read_text())
    assert doc["sections"]["data"]["worker_deaths"] == 1
    assert any(f"worker pid {victims[0]} killed by signal 9" in w for w in doc["warnings"])
    got = _final_names_whole(tmp_path / "dst" / "files", dep)
    assert got == {b.file_id: b.data for b in dep.blobs}
    assert len(_journal_rows(_journal(target))) == 300


def test_a_worker_killed_mid_write_leaves_no_temporary_file(tmp_path):
    report = tmp_path / "r.json"
    with _copying(tmp_path, report=report) as (held, target, proc):
        dep = held.dep
        folder = tmp_path / "dst" / "files" / held.blob.file_id[:2]
        held.feed_part(len(held.blob.data) // 2)
        _until(lambda: list(folder.glob(f".{held.blob.file_id}.partial-*")), "the held blob's write never started")
        victim = held.reader(_workers_of(proc.pid))
        assert victim is not None
        os.kill(victim, signal.SIGKILL)  # half read, blocked on the rest
        assert _gone([victim])
        held.feed()  # the retry gets the whole blob
        out, err = proc.communicate(timeout=300)
    held.settle()
    assert proc.returncode == 0, err
    assert json.loads(report.read_text())["sections"]["data"]["worker_deaths"] == 1
    _assert_target_complete(dep, tmp_path / "dst" / "files")  # no .partial file of the dead write


def test_discard_partial_removes_only_that_blobs_temporary_files(tmp_path):
    from pmigrate.data.base import BlobRef
    from pmigrate.data.file import FileBackend

    backend = FileBackend({"Directory": str(tmp_path)})
    ref = BlobRef("AbCdEfGh12345678", "Up00000000000001", size=3)
    folder = tmp_path / "Ab"
    folder.mkdir()
    (folder / ".AbCdEfGh12345678.partial-0a1b2c3d4e5f").write_bytes(b"x")
    (folder / ".AbCdEfGh12345678.partial-ffffffffffff").write_bytes(b"")
    (folder / ".AbCdEfGh12345679.partial-0a1b2c3d4e5f").write_bytes(b"other blob")
    (folder / "AbCdEfGh12345678").write_bytes(b"old")
    backend.discard_partial(ref)
    assert sorted(p.name for p in folder.iterdir()) == [".AbCdEfGh12345679.partial-0a1b2c3d4e5f", "AbCdEfGh12345678"]
    backend.discard_partial(BlobRef("ZzNoFolderHere00", "Up00000000000001"))  # nothing there: no error


def test_ctrl_c_stops_cleanly_and_the_run_resumes(tmp_path, run_cli):
    with _copying(tmp_path) as (held, target, proc):
        dep = held.dep
        family = _descendants(proc.pid)
        workers = _workers_of(proc.pid)
        reader = _until(lambda: held.reader(workers), "no worker holds the stalled blob open")
        proc.send_signal(signal.SIGINT)  # the parent owns Ctrl-C; workers ignore it and are stopped by it
        # The parent raises the cancel flag before it sends each worker its stop: once the
        # worker not blocked on the stalled blob has ended, the flag is up.
        assert _gone([p for p in workers if p != reader], timeout=60), "the other worker was never stopped"
        held.feed()  # the blocked worker reads on, sees the cancel flag and drops the blob
        out, err = proc.communicate(timeout=90)
    held.settle()
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert _gone(family, timeout=10)
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    assert not [k for k in got if k.startswith(".")], "a stopped write left its temporary file"
    assert held.blob.file_id not in got
    _final_names_whole(tmp_path / "dst" / "files", dep)
    assert 50 <= len(_journal_rows(_journal(target))) < 300

    cp = _copy(run_cli, dep, target, "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in dep.blobs}


def test_ctrl_c_is_reported_as_interrupted_then_rerun_completes(tmp_path, run_cli):
    report = tmp_path / "r.json"
    with _copying(tmp_path, report=report) as (held, target, proc):
        dep = held.dep
        proc.send_signal(signal.SIGINT)
        held.feed()  # the worker blocked on the stalled blob gets its bytes and sees the cancel
        out, err = proc.communicate(timeout=60)
    held.settle()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "INTERRUPTED" in out and "Traceback" not in err
    doc = json.loads(report.read_text())
    assert doc["ok"] is False and doc["interrupted"] is True and doc["exit_code"] == EXIT_INTERRUPTED
    assert doc["sections"]["data"]["complete"] is False

    cp = _copy(run_cli, dep, target, "--workers", "2", json_path=report)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(report.read_text())["sections"]["data"]["complete"] is True
    assert _final_names_whole(tmp_path / "dst" / "files", dep) == {b.file_id: b.data for b in dep.blobs}
