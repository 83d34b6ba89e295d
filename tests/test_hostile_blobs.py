"""A file source whose blobs are not what they claim: FIFOs, devices, directories, symlinks out of Directory.

Real FIFOs, sockets and symlinks on disk, the real CLI in a subprocess. A
FIFO once hung the run forever: every CLI run here has a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
from pathlib import Path

import pytest

from pmigrate.data.base import BlobRef
from pmigrate.data.file import FileBackend
from pmigrate.errors import ItemError
from tests import blobdeploy as bd

TIMEOUT = 60  # seconds; a hang fails the test instead of the suite


def _path(dep: bd.Deployment, blob: bd.Blob) -> Path:
    return dep.root / "files" / blob.file_id[:2] / blob.file_id


def _run(run_cli, dep: bd.Deployment, target: Path, *extra: str, json_path: Path | None = None):
    args = ["--config", str(dep.config), "--to", str(target), "--data-only", "-q", *extra]
    if json_path is not None:
        args += ["--json", str(json_path)]
    return run_cli(*args, timeout=TIMEOUT)


def _problems(report: Path) -> dict[str, str]:
    return {p["item"]: p["kind"] for p in json.loads(report.read_text())["problems"]}


@pytest.fixture
def alarm():
    """In-process reads: SIGALRM ends a read that would block forever."""

    def _hang(*_):
        raise TimeoutError("the read blocked")

    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _replace_with_special(dep: bd.Deployment, blobs: list[bd.Blob], tmp_path: Path) -> dict[str, str]:
    """blobs[0..3] become a FIFO, a device, a socket and a directory (blobs[3] in the legacy layout)."""
    fifo, device, sock, folder = blobs[:4]
    p = _path(dep, fifo)
    p.unlink()
    os.mkfifo(p)
    p = _path(dep, device)
    p.unlink()
    if os.geteuid() == 0:
        os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # a real /dev/zero: reading it never ends
    else:
        os.symlink("/dev/zero", p)
    p = _path(dep, sock)
    p.unlink()
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()
    p = dep.root / "files" / folder.upload_id[:2] / folder.upload_id / folder.file_id
    p.unlink()
    p.mkdir()
    return {b.file_id: "not-a-file" for b in (fifo, device, sock, folder)}


def test_fifo_device_socket_and_directory_are_errors_not_hangs(tmp_path, run_cli):
    blobs = bd.make_blobs(8, seed=41)
    blobs[3].legacy = True
    dep = bd.file_source(tmp_path / "src", blobs)
    expected = _replace_with_special(dep, blobs, tmp_path)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"

    cp = _run(run_cli, dep, target, "--ignore-errors", json_path=report)

    assert cp.returncode == 1, cp.stderr
    assert _problems(report) == expected
    assert "is a FIFO, not a regular file" in cp.stdout
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    assert got == {b.file_id: b.data for b in blobs[4:]}  # the regular blobs, and nothing of the others


def test_a_fifo_stops_the_run_without_ignore_errors(tmp_path, run_cli):
    blobs = bd.make_blobs(3, seed=42)
    dep = bd.file_source(tmp_path / "src", blobs)
    p = _path(dep, blobs[1])
    p.unlink()
    os.mkfifo(p)
    cp = _run(run_cli, dep, bd.file_target(tmp_path / "dst"))
    assert cp.returncode == 1
    assert cp.stderr.splitlines() == [
        f"pmigrate: error: blob copy stopped: {blobs[1].file_id}: {p} is a FIFO, not a regular file: not read "
        "(pass --ignore-errors to go on past such blobs)"
    ]


def test_verify_reports_a_fifo_on_either_side(tmp_path, run_cli):
    blobs = bd.make_blobs(4, seed=43)
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, dep, target).returncode == 0
    for journal in (tmp_path / "dst").glob(".pmigrate-journal-*"):
        journal.unlink()  # verify then reads the source blobs as the reference
    src_fifo = _path(dep, blobs[0])
    src_fifo.unlink()
    os.mkfifo(src_fifo)
    dst_fifo = tmp_path / "dst" / "files" / blobs[1].file_id[:2] / blobs[1].file_id
    dst_fifo.unlink()
    os.mkfifo(dst_fifo)
    report = tmp_path / "v.json"

    cp = run_cli("verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--json", str(report), timeout=TIMEOUT)

    assert cp.returncode == 1, cp.stderr
    doc = json.loads(report.read_text())
    assert {p["item"]: (p["kind"], p["message"]) for p in doc["problems"]} == {
        blobs[0].file_id: ("not-a-file", f"{src_fifo} is a FIFO, not a regular file: not read"),
        blobs[1].file_id: ("not-a-file", f"{dst_fifo} is a FIFO, not a regular file: not read"),
    }
    assert doc["sections"]["verify-blobs"]["ok"] == 2


def test_open_read_refuses_a_fifo_without_blocking(tmp_path, alarm):
    """Even when stat saw a regular file and a FIFO took its place before the open."""
    fid, uid = "F" * 16, "U" * 16
    folder = tmp_path / "files" / fid[:2]
    folder.mkdir(parents=True)
    os.mkfifo(folder / fid)
    backend = FileBackend({"Directory": str(tmp_path / "files")})
    real_stat = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 3, 0, 0, 0))
    ref = BlobRef(fid, uid, size=3)
    backend._existing = lambda _ref: (str(folder / fid), real_stat)  # what a stat before the swap saw
    with pytest.raises(ItemError) as err:
        backend.open_read(ref)
    assert err.value.kind == "not-a-file" and "is a FIFO" in str(err.value)


# -- symlinks ---------------------------------------------------------------------------


def _symlinked_source(tmp_path: Path) -> tuple[bd.Deployment, list[bd.Blob], Path]:
    """blobs[0] a symlink to a file outside Directory with the very bytes the row promises;
    blobs[1] a symlink to another file inside Directory; blobs[2] behind a symlinked folder leading out."""
    blobs = bd.make_blobs(5, seed=44)
    blobs[2].file_id = "Zz" + blobs[2].file_id[2:]  # alone in its folder
    dep = bd.file_source(tmp_path / "src", blobs)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret").write_bytes(blobs[0].data)  # size and md5 match files
    p = _path(dep, blobs[0])
    p.unlink()
    p.symlink_to(outside / "secret")
    inner = dep.root / "files" / "kept" / "same-bytes"
    inner.parent.mkdir()
    inner.write_bytes(blobs[1].data)
    p = _path(dep, blobs[1])
    p.unlink()
    p.symlink_to(Path("..") / "kept" / "same-bytes")  # relative, inside Directory
    folder = dep.root / "files" / "Zz"
    (outside / "Zz").mkdir()
    (folder / blobs[2].file_id).rename(outside / "Zz" / blobs[2].file_id)
    folder.rmdir()
    folder.symlink_to(outside / "Zz")
    return dep, blobs, outside


def test_symlinks_out_of_directory_are_refused_inside_ones_followed(tmp_path, run_cli):
    dep, blobs, outside = _symlinked_source(tmp_path)
    target = bd.file_target(tmp_path / "dst")
    report = tmp_path / "r.json"

    cp = _run(run_cli, dep, target, "--ignore-errors", json_path=report)

    assert cp.returncode == 1, cp.stderr
    assert _problems(report) == {blobs[0].file_id: "symlink-outside", blobs[2].file_id: "symlink-outside"}
    assert f"leads to {outside / 'secret'}, outside {dep.root / 'files'}: not read" in cp.stdout
    assert "--follow-outside-symlinks" in cp.stdout
    got = bd.file_target_blobs(tmp_path / "dst" / "files")
    assert got == {b.file_id: b.data for b in (blobs[1], *blobs[3:])}  # nothing from outside reached the target


def test_follow_outside_symlinks_reads_them(tmp_path, run_cli):
    dep, blobs, _ = _symlinked_source(tmp_path)
    target = bd.file_target(tmp_path / "dst")
    cp = _run(run_cli, dep, target, "--follow-outside-symlinks", "--verify")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert bd.file_target_blobs(tmp_path / "dst" / "files") == {b.file_id: b.data for b in blobs}


@pytest.mark.slow
def test_verify_refuses_a_source_symlink_out_of_directory(tmp_path, run_cli):
    dep, blobs, _ = _symlinked_source(tmp_path)
    target = bd.file_target(tmp_path / "dst")
    assert _run(run_cli, dep, target, "--follow-outside-symlinks").returncode == 0
    for journal in (tmp_path / "dst").glob(".pmigrate-journal-*"):
        journal.unlink()  # verify then reads the source blobs as the reference
    args = ["verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q"]
    report = tmp_path / "v.json"
    cp = run_cli(*args, "--json", str(report), timeout=TIMEOUT)
    assert cp.returncode == 1, cp.stderr
    assert _problems(report) == {blobs[0].file_id: "symlink-outside", blobs[2].file_id: "symlink-outside"}
    assert run_cli(*args, "--follow-outside-symlinks", timeout=TIMEOUT).returncode == 0


@pytest.mark.parametrize("proc", [True, False], ids=["proc-fd", "without-proc"])
def test_open_read_checks_the_file_it_opened(tmp_path, monkeypatch, proc):
    """The check is on the opened descriptor: a blob swapped for a symlink after the stat is still refused."""
    from pmigrate.data import file as file_mod

    monkeypatch.setattr(file_mod, "_proc_fd", proc and file_mod._proc_fd)
    fid, uid = "F" * 16, "U" * 16
    folder = tmp_path / "files" / fid[:2]
    folder.mkdir(parents=True)
    (tmp_path / "outside").write_bytes(b"abc")
    (folder / fid).symlink_to(tmp_path / "outside")
    backend = FileBackend({"Directory": str(tmp_path / "files")})
    regular = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 3, 0, 0, 0))
    backend._existing = lambda _ref: (str(folder / fid), regular)  # what a stat before the swap saw
    with pytest.raises(ItemError) as err:
        backend.open_read(BlobRef(fid, uid, size=3))
    assert err.value.kind == "symlink-outside"
    inside = FileBackend({"Directory": str(tmp_path / "files"), file_mod.FOLLOW_OUTSIDE: True})
    with inside.open_read(BlobRef(fid, uid, size=3)) as f:
        assert f.read() == b"abc"


def test_a_leased_blob_is_read_once_its_holder_lets_go(tmp_path):
    """A lease (as Samba or an NFS server takes) makes a non-blocking open fail: the read waits for it instead."""
    import fcntl
    import threading

    fid, uid = "F" * 16, "U" * 16
    folder = tmp_path / "files" / fid[:2]
    folder.mkdir(parents=True)
    (folder / fid).write_bytes(b"leased bytes")
    backend = FileBackend({"Directory": str(tmp_path / "files")})
    broken = threading.Event()
    old = signal.signal(signal.SIGIO, lambda *_: broken.set())  # the kernel asks the holder to let go
    holder = os.open(folder / fid, os.O_RDONLY)
    try:
        fcntl.fcntl(holder, getattr(fcntl, "F_SETLEASE", 1024), fcntl.F_WRLCK)
        got: list[bytes | BaseException] = []

        def read() -> None:
            try:
                with backend.open_read(BlobRef(fid, uid, size=12)) as f:
                    got.append(f.read())
            except BaseException as exc:  # noqa: BLE001 - checked below
                got.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        assert broken.wait(TIMEOUT) or got, "the reader neither waited nor failed"
        fcntl.fcntl(holder, getattr(fcntl, "F_SETLEASE", 1024), fcntl.F_UNLCK)
        reader.join(TIMEOUT)
    finally:
        os.close(holder)
        signal.signal(signal.SIGIO, old)
    assert got == [b"leased bytes"]
