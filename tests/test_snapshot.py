"""Snapshots of a live sqlite3 source: one point in time, short read locks, nothing left behind."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pmigrate import cli
from pmigrate.errors import FatalError
from pmigrate.metadata import snapshot
from pmigrate.report import Report
from tests.conftest import REPO
from tests.metadata_helpers import load_cfg
from tests.servers import sqlite_database


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snap") / "src"
    assert cli.main(["fakedb", str(out), "--files", "3000", "--metadata-only", "-q"]) == 0
    return out / "plik.db"


@pytest.fixture
def live(small, tmp_path) -> Path:
    db = tmp_path / "live" / "plik.db"
    db.parent.mkdir()
    db.write_bytes(small.read_bytes())
    return db


@pytest.fixture
def sliced(monkeypatch):
    """Read locks of one 64 KiB chunk each: a small file behaves as a large one would."""
    monkeypatch.setattr(snapshot, "SLICE", 0.0)
    monkeypatch.setattr(snapshot, "CHUNK", 64 << 10)


class Writer:
    """tests/plikd_writer.py in its own process, as plikd would be."""

    def __init__(self, db: Path, tmp: Path) -> None:
        self.stop, self.out = tmp / "writer.stop", tmp / "writer.json"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.plikd_writer", str(db), str(self.stop), str(self.out)], env=env)
        deadline = time.monotonic() + 30
        while not Path(str(self.out) + ".ready").exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.02)

    def finish(self) -> dict:
        import json

        self.stop.touch()
        self.proc.wait(timeout=30)
        return json.loads(self.out.read_text())


def _writer_rows(db: Path) -> tuple[list[str], int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        keys = [k for (k,) in con.execute("SELECT key FROM settings WHERE key LIKE 'writer-%' ORDER BY key")]
        upload = con.execute("SELECT id FROM uploads ORDER BY id LIMIT 1").fetchone()[0]
        count = con.execute("SELECT download_count FROM uploads WHERE id = ?", (upload,)).fetchone()[0]
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        con.close()
    return keys, count


def test_a_quiet_source_is_copied_over_many_short_locks(live, tmp_path, sliced):
    snap = snapshot.take(live, tmp_path / "copy.db")
    assert snap.journal_mode == "rollback" and snap.attempts == 1
    assert snap.locks == -(-live.stat().st_size // (64 << 10))
    assert (tmp_path / "copy.db").read_bytes() == live.read_bytes()


def test_a_commit_between_two_locks_starts_the_copy_over(live, tmp_path, sliced):
    writer = Writer(live, tmp_path)
    threading.Timer(1.0, writer.stop.touch).start()  # writes for a second, then plikd is quiet
    snap = snapshot.take(live, tmp_path / "copy.db")
    figures = writer.finish()
    assert snap.attempts > 1
    keys, count = _writer_rows(tmp_path / "copy.db")
    assert keys == [f"writer-{i:06d}" for i in range(figures["commits"])] and count == figures["commits"]
    assert figures["failures"] == [] and figures["max_wait"] < 1.0


def test_a_source_never_quiet_is_refused_in_the_end(live, tmp_path, sliced, monkeypatch):
    monkeypatch.setattr(snapshot, "PATIENCE", 1.0)
    writer = Writer(live, tmp_path)
    try:
        with pytest.raises(FatalError, match=r"changed during each of \d+ attempts over 1s.*quieter or stopped, or put the database in WAL mode"):
            snapshot.take(live, tmp_path / "copy.db")
    finally:
        figures = writer.finish()
    assert figures["failures"] == [] and figures["max_wait"] < 1.0


def test_wal_source_is_copied_at_one_commit(live, tmp_path):
    con = sqlite3.connect(live)
    assert con.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
    con.close()
    writer = Writer(live, tmp_path)
    try:
        snap = snapshot.take(live, tmp_path / "copy.db")
    finally:
        figures = writer.finish()
    assert snap.journal_mode == "wal" and snap.locks == 0
    keys, count = _writer_rows(tmp_path / "copy.db")
    assert 1 <= len(keys) and keys == [f"writer-{i:06d}" for i in range(len(keys))] and count == len(keys)
    assert figures["failures"] == []


def test_the_snapshot_is_removed_and_so_are_those_of_killed_runs(live, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(snapshot.tempfile, "tempdir", None)  # read TMPDIR again
    killed = scratch / f"{snapshot.PREFIX}killed"  # a run killed with -9: its lock went with it
    killed.mkdir()
    (killed / "lock").touch()
    (killed / "source.db").write_bytes(b"x" * 100)
    running = scratch / f"{snapshot.PREFIX}running"  # another run, still going
    running.mkdir()
    (running / "lock").touch()
    held = os.open(running / "lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        cfg = load_cfg(sqlite_database(live), tmp_path / "src.cfg")
        with snapshot.of_source(cfg, report=Report("migrate")) as read:
            assert read.metadata.snapshot.is_file() and read.metadata.snapshot.parent.parent == scratch
            assert read.metadata.describe() == cfg.metadata.describe()  # the source is still named as it is
            assert not killed.exists() and running.exists()
        assert sorted(p.name for p in scratch.iterdir()) == [running.name]
    finally:
        os.close(held)
