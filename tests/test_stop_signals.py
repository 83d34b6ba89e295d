"""SIGTERM (systemd stop) and SIGHUP (a closed terminal) end a run as Ctrl-C does, real processes and signals.

Each is sent to the parent alone (kill PID) and to the whole process group
(systemd's KillMode=control-group, a terminal's hangup): every process of
the run receives it, the fork server and the resource tracker included.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import blobdeploy as bd
from tests import heldfs
from tests.metadata_helpers import engine, write_cfg
from tests.servers import unavailable
from tests.test_engine_file import (
    _cli_env,
    _copying,
    _default_sigint,
    _descendants,
    _final_names_whole,
    _gone,
    _journal,
    _journal_rows,
)

MiB = 1 << 20
PART = "PartSize = 5242880\n"
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGHUP, id="SIGHUP")]
WHOM = ["parent", "group"]


def _send(proc: subprocess.Popen, sig: int, whom: str) -> None:
    if whom == "group":
        os.killpg(proc.pid, sig)  # the CLI leads its own group: start_new_session
    else:
        proc.send_signal(sig)


def _assert_ended_as_ctrl_c(proc: subprocess.Popen, out: str, err: str, report: Path, sig: int) -> dict:
    """Exit 128+signal, the summary, the JSON report, one line on stderr and nothing else."""
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert "migrate: INTERRUPTED (run the same command again to resume)" in out, out
    assert err.strip() == f"pmigrate: stopped by {name}; run the same command again to resume", err
    doc = json.loads(report.read_text())
    assert (doc["ok"], doc["interrupted"], doc["exit_code"]) == (False, True, 128 + sig)
    return doc


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    """The CLI in its own process group, output captured."""
    return subprocess.Popen([sys.executable, "-m", "pmigrate", *args], env=_cli_env(), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip


def _rerun_and_verify(run_cli, config: Path, target: Path, *only: str) -> None:
    cp = run_cli("--config", str(config), "--to", str(target), "-q", "--workers", "2", *only)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = run_cli("verify", "--config", str(config), "--to", str(target), "-q", "--workers", "2", *only)
    assert cp.returncode == 0, cp.stdout + cp.stderr


@pytest.mark.slow
@pytest.mark.parametrize("whom", WHOM)
@pytest.mark.parametrize("sig", SIGNALS)
def test_stop_signal_mid_copy_ends_as_ctrl_c_then_the_run_resumes(tmp_path, run_cli, sig, whom):
    report = tmp_path / "r.json"
    with _copying(tmp_path, report=report, popen={"start_new_session": True}) as (held, target, proc):
        family = _descendants(proc.pid)
        _send(proc, sig, whom)
        time.sleep(0.5)
        held.feed()  # the worker blocked on the stalled blob reads on, sees the cancel flag and drops the blob
        out, err = proc.communicate(timeout=90)
    held.settle()
    doc = _assert_ended_as_ctrl_c(proc, out, err, report, sig)
    assert doc["sections"]["data"]["complete"] is False
    assert _gone(family, timeout=10), "a worker, the fork server or the resource tracker outlived the run"
    files = tmp_path / "dst" / "files"
    assert not [k for k in bd.file_target_blobs(files) if k.startswith(".")], "a stopped write left its temporary file"
    assert held.blob.file_id not in _final_names_whole(files, held.dep)
    done = len(_journal_rows(_journal(target)))
    assert 50 <= done < 300 and doc["sections"]["data"]["copied"] >= done

    _rerun_and_verify(run_cli, held.dep.config, target, "--data-only")
    assert _final_names_whole(files, held.dep) == {b.file_id: b.data for b in held.dep.blobs}


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.parametrize("whom", WHOM)
def test_sigterm_mid_multipart_upload_aborts_it_then_the_run_resumes(tmp_path, run_cli, s3_server, s3_bucket, whom):
    report = tmp_path / "r.json"
    target = bd.s3_target(tmp_path / "dst", server=s3_server, bucket=s3_bucket, extra=PART)
    client = s3_server.client()
    with _copying(tmp_path, report=report, target=target, held_size=11 * MiB + 7, popen={"start_new_session": True}) as (
        held,
        _,
        proc,
    ):
        release = held.feed_part(6 * MiB, rest=True)  # one 5 MiB part uploaded, the next one being read
        deadline = time.monotonic() + 60
        while not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
            assert time.monotonic() < deadline, "the held blob's multipart upload never began"
            time.sleep(0.05)
        _send(proc, signal.SIGTERM, whom)
        time.sleep(0.5)
        release.set()
        out, err = proc.communicate(timeout=90)
    held.settle()
    _assert_ended_as_ctrl_c(proc, out, err, report, signal.SIGTERM)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == [], "the open upload was left behind"
    got = bd.s3_target_blobs(s3_server, s3_bucket)
    assert held.blob.file_id not in got
    by_id = {b.file_id: b.data for b in held.dep.blobs}
    assert all(data == by_id[k] for k, data in got.items())

    _rerun_and_verify(run_cli, held.dep.config, target, "--data-only")
    assert bd.s3_target_blobs(s3_server, s3_bucket) == by_id


def _controlling_tty() -> None:
    """In the child before exec: the pty on its stdin becomes the terminal of its new session."""
    _default_sigint()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_a_closed_terminal_still_commits_and_writes_the_report(tmp_path, run_cli):
    """The terminal goes away: SIGHUP from the kernel, and stdout and stderr answer EIO from then on."""
    report = tmp_path / "r.json"
    master, slave = pty.openpty()
    tty = {"stdin": slave, "stdout": slave, "stderr": slave, "start_new_session": True, "preexec_fn": _controlling_tty}
    try:
        with _copying(tmp_path, report=report, popen=tty) as (held, target, proc):
            os.close(slave)
            slave = -1
            os.close(master)  # hangs up the terminal
            master = -1
            time.sleep(0.5)
            held.feed()
            proc.wait(timeout=90)
    finally:
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    held.settle()
    assert proc.returncode == 128 + signal.SIGHUP
    doc = json.loads(report.read_text())
    assert (doc["interrupted"], doc["exit_code"], doc["sections"]["data"]["complete"]) == (True, 129, False)
    assert 50 <= len(_journal_rows(_journal(target))) < 300

    _rerun_and_verify(run_cli, held.dep.config, target, "--data-only")


def _fake_source(run_cli, root: Path, files: int) -> Path:
    cp = run_cli("fakedb", str(root), "--files", str(files), "--metadata-only", "-q")
    assert cp.returncode == 0, cp.stderr
    (root / "files").mkdir(exist_ok=True)  # no blob at all: the blob stage is never reached
    return root / "plikd.cfg"


def _tables(db) -> list[str]:
    eng = engine(db)
    try:
        return sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()


LOADING = {
    # postgres: one transaction, DDL included; rows go in by COPY
    "postgres": "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND xact_start IS NOT NULL AND query LIKE 'COPY %%'",
    # mysql commits DDL at once: the tables are there as soon as the load begins
    "mysql": "SELECT count(*) FROM information_schema.tables WHERE table_schema = :db",
}


def _loading(db) -> bool:
    """The run is writing rows into the target database."""
    eng = engine(db)
    try:
        with eng.connect() as c:
            return c.execute(sa.text(LOADING[db.driver]), {"db": db.name}).scalar() > 0
    finally:
        eng.dispose()


@pytest.mark.slow
@pytest.mark.parametrize(
    "db_fixture", [pytest.param("pg_db", marks=pytest.mark.postgres), pytest.param("mysql_db", marks=pytest.mark.mysql)]
)
def test_sigterm_during_the_metadata_copy_leaves_the_target_empty(tmp_path, run_cli, request, db_fixture):
    """Sent to the whole group while the blob workers, started early, wait for the metadata to be copied."""
    db = request.getfixturevalue(db_fixture)
    src = _fake_source(run_cli, tmp_path / "src", 30_000)
    target = write_cfg(db, tmp_path / "dst.cfg")
    report = tmp_path / "r.json"
    proc = _start(tmp_path, "--config", str(src), "--to", str(target), "-q", "--workers", "2", "--json", str(report))
    try:
        deadline = time.monotonic() + 60
        while not _loading(db):
            assert proc.poll() is None, "the run ended before it could be stopped: make the source larger"
            assert time.monotonic() < deadline, "the metadata copy never began"
            time.sleep(0.02)
        family = _descendants(proc.pid)
        assert family, "no blob worker was started before the metadata copy"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _assert_ended_as_ctrl_c(proc, out, err, report, signal.SIGTERM)
    assert _gone(family, timeout=10), "the idle blob workers outlived the run"
    assert _tables(db) == [], "the target is not empty as before"

    _rerun_and_verify(run_cli, src, target, "--metadata-only")


def test_sigterm_during_verify_ends_as_ctrl_c(tmp_path, run_cli):
    """verify reads every blob: one that stalls (tests/heldfs.py) holds it until the signal."""
    if heldfs.available():
        unavailable(f"a stalled blob needs FUSE: {heldfs.available()}")
    blobs = bd.make_blobs(60, seed=23, sizes=[300_000, 5])
    used = {b.file_id[:2] for b in blobs[1:]}
    prefix = next(a + b for a in bd._ALNUM for b in bd._ALNUM if a + b not in used)
    blobs[0].file_id = prefix + blobs[0].file_id[2:]  # alone in its folder, which the mount covers
    dep = bd.file_source(tmp_path / "src", blobs)
    target = bd.file_target(tmp_path / "dst")
    cp = run_cli("--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "2")
    assert cp.returncode == 0, cp.stderr
    # Without a journal verify hashes the source blob too: that one stalls (the target's folders are listed,
    # which a mount of one file cannot serve).
    for journal in (tmp_path / "dst").glob(".pmigrate-journal-*"):
        journal.unlink()
    stuck = tmp_path / "src" / "files" / prefix / blobs[0].file_id
    stuck.unlink()
    stall = heldfs.HeldFile(stuck.parent, stuck.name, blobs[0].data)
    report = tmp_path / "r.json"
    proc = _start(tmp_path, "verify", "--config", str(dep.config), "--to", str(target), "--data-only", "-q", "--workers", "2",
                  "--json", str(report))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _readers(stuck, _descendants(proc.pid)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "verify never read the held blob"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(0.5)
        stall.allow()  # the worker reads on to the end and sees the cancel flag
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stall.close()
    assert proc.returncode == 143, err
    assert "verify: INTERRUPTED" in out, out
    assert err.strip() == "pmigrate: stopped by SIGTERM; run the same command again to resume", err
    doc = json.loads(report.read_text())
    assert (doc["command"], doc["interrupted"], doc["exit_code"]) == ("verify", True, 143)


def _readers(path: Path, pids: list[int]) -> list[int]:
    """Those of pids that hold path open."""
    out = []
    for p in pids:
        try:
            if any(os.readlink(f"/proc/{p}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{p}/fd")):
                out.append(p)
        except OSError:
            continue
    return out
