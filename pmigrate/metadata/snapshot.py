"""A private copy of a sqlite3 source, taken at one point in time and read at leisure.

In rollback-journal mode (plikd's default, journal_mode=DELETE) a reader's
transaction blocks every writer until it ends, and plikd gives up after its
busy timeout (5 s): reading a large source for the whole metadata copy, let
alone for the blob copy's enumeration, would stall or fail plikd's uploads.
So a run reads a copy of the file instead, shared by the metadata copy, the
blob enumeration and verify: one point in time for all of them.

Rollback journal: the file is first copied without any lock (this warms the
page cache, so that the second copy runs at memory speed), then copied again
under read locks of at most SLICE seconds each, with a pause between them in
which plikd's waiting writers commit. A copy made under one lock is
consistent; over several, it is consistent when the file change counter
(header bytes 24-27, bumped by every commit) is the same under each of them;
otherwise it starts over, for up to PATIENCE seconds. SQLite's own online
backup restarts the same way when another process writes, never finishing
while plikd writes every few milliseconds, and copies several times slower
than the kernel's copy_file_range used here.

WAL: readers never block writers, so SQLite's online backup takes the copy
in one step; the snapshot still spares the live database a read transaction
held for hours, which would keep plikd's WAL from being checkpointed.

The copy goes to a folder of its own (mode 0700) in the system's temporary
folder (TMPDIR, else /tmp), removed when the run ends, or by the next run
when this one was killed.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pmigrate.errors import ConfigError, FatalError
from pmigrate.words import plural, size

AREA = "source"
SLICE = 0.25  # seconds a read lock is held at most (plus one CHUNK)
PAUSE = 0.02  # seconds between two read locks: plikd's writers go first
PATIENCE = 60.0  # seconds of attempts at a consistent copy of a large, busy source
CHUNK = 8 << 20  # bytes per copy call
PREFIX = "pmigrate-snapshot-"
HEADROOM = 16 << 20  # bytes left free in the temporary folder


@dataclass
class Snapshot:
    path: Path
    journal_mode: str
    size: int
    seconds: float = 0.0
    locks: int = 0  # read locks taken on the live file (rollback journal)
    longest_lock: float = 0.0  # seconds
    attempts: int = 1
    locked_bytes: int = 0  # copied under the locks, over locked_seconds: the copy's speed
    locked_seconds: float = 0.0

    def seconds_needed(self) -> float:
        """About how long the file takes to copy, all of it under one lock."""
        return self.size * self.locked_seconds / max(self.locked_bytes, 1)


@contextmanager
def of_source(cfg: Any, *, report: Any) -> Iterator[Any]:
    """``cfg`` with its sqlite3 metadata read from a snapshot (other drivers: as it is); removed on the way out."""
    if cfg.metadata.driver != "sqlite3":
        yield cfg
        return
    from pmigrate.metadata import db

    live = db.sqlite_file(cfg.metadata)
    timeout = float(cfg.metadata.translation().connect_args.get("timeout", 5.0))
    folder, lock = _folder(tempfile.gettempdir(), need=_size(live), live=live)
    try:
        snap = take(live, folder / "source.db", timeout=timeout)
        _report(snap, live, report=report)
        yield dataclasses.replace(cfg, metadata=dataclasses.replace(cfg.metadata, snapshot=snap.path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)


def take(live: Path, dest: Path, *, timeout: float = 5.0) -> Snapshot:
    """Copy the sqlite3 database ``live`` to ``dest`` as it was at one commit."""
    started = time.monotonic()
    con = sqlite3.connect(f"file:{quote(str(live))}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
    try:
        mode = str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        if mode == "wal":
            snap = _backup(con, dest)
        else:
            snap = _copy_locked(con, live, dest)
    except sqlite3.Error as exc:
        raise FatalError(f"cannot snapshot the source sqlite3 database {live}: {exc}") from None
    finally:
        con.close()
    snap.seconds = time.monotonic() - started
    return snap


def _backup(con: sqlite3.Connection, dest: Path) -> Snapshot:
    out = sqlite3.connect(dest, isolation_level=None)
    try:
        con.backup(out)  # one step: one read transaction, which holds back no writer in WAL mode
        out.execute("PRAGMA journal_mode = DELETE")  # a lone file, read with immutable=1
    finally:
        out.close()
    return Snapshot(path=dest, journal_mode="wal", size=dest.stat().st_size)


def _copy_locked(con: sqlite3.Connection, live: Path, dest: Path) -> Snapshot:
    with open(live, "rb") as src, open(dest, "wb") as out:
        sfd, dfd = src.fileno(), out.fileno()
        _copy(sfd, dfd, 0, os.fstat(sfd).st_size)  # no lock: warms the page cache; rewritten below
        snap = Snapshot(path=dest, journal_mode="rollback", size=0, attempts=0)
        deadline = time.monotonic() + PATIENCE
        while True:
            snap.attempts += 1
            if _attempt(con, sfd, dfd, snap):
                return snap
            if time.monotonic() > deadline:
                raise FatalError(
                    f"cannot snapshot the source sqlite3 database {live} ({size(snap.size)}): it changed during each "
                    f"of {snap.attempts} attempts over {PATIENCE:.0f}s, and a copy of it needs about "
                    f"{snap.seconds_needed():.1f}s without a write in rollback-journal mode. "
                    "Run again when plikd is quieter or stopped, or put the database in WAL mode"
                )


def _attempt(con: sqlite3.Connection, sfd: int, dfd: int, snap: Snapshot) -> bool:
    """One copy over as many read locks as it takes; False when a commit came in between."""
    counter = None
    offset = 0
    while True:
        try:
            con.execute("BEGIN")
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # a read lock until ROLLBACK
        except sqlite3.OperationalError as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            if "locked" in str(exc) or "busy" in str(exc):
                return False  # a writer held the file for the whole busy timeout: try again
            raise
        locked = time.monotonic()
        try:
            header = os.pread(sfd, 100, 0)
            if counter is None:
                counter = header[24:28]
                snap.size = os.fstat(sfd).st_size
            elif header[24:28] != counter:
                return False
            while offset < snap.size:
                n = min(CHUNK, snap.size - offset)
                if _copy(sfd, dfd, offset, n) != n:
                    raise FatalError(f"the source sqlite3 database shrank while read-locked, at byte {offset}")
                offset += n
                snap.locked_bytes += n
                if time.monotonic() - locked >= SLICE:
                    break
        finally:
            con.execute("ROLLBACK")
            held = time.monotonic() - locked
            snap.locked_seconds += held
            snap.locks += 1
            snap.longest_lock = max(snap.longest_lock, held)
        if offset >= snap.size:
            os.ftruncate(dfd, snap.size)
            return True
        time.sleep(PAUSE)


_copy_file_range = getattr(os, "copy_file_range", None)


def _copy(sfd: int, dfd: int, offset: int, length: int) -> int:
    """Bytes [offset, offset+length) of one file into the same place of another; the count copied."""
    global _copy_file_range
    done = 0
    while done < length:
        pos = offset + done
        if _copy_file_range is not None:
            try:
                n = _copy_file_range(sfd, dfd, length - done, pos, pos)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                _copy_file_range = None  # e.g. across file systems on an older kernel
                continue
        else:
            data = os.pread(sfd, min(length - done, 1 << 20), pos)
            n = 0
            while n < len(data):
                n += os.pwrite(dfd, data[n:], pos + n)
        if n == 0:
            break  # end of the source
        done += n
    return done


# -- the temporary folder ----------------------------------------------------


def _size(live: Path) -> int:
    wal = live.with_name(live.name + "-wal")
    return live.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _folder(root: str, *, need: int, live: Path) -> tuple[Path, int]:
    """A new folder for one snapshot, and the descriptor holding its lock for as long as the run lives."""
    _sweep(root)
    free = shutil.disk_usage(root).free
    if free < need + HEADROOM:
        raise ConfigError(
            f"the source sqlite3 database {live} is read from a copy in {root}, which has {size(free)} free "
            f"for its {size(need)}: set TMPDIR to a folder with room"
        )
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    fd = os.open(folder / "lock.new", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(folder / "lock.new", folder / "lock")  # seen by _sweep() only once locked
    return folder, fd


def _sweep(root: str) -> None:
    """Remove the snapshots of runs that were killed: folders whose lock nobody holds any more."""
    for folder in Path(root).glob(PREFIX + "*"):
        try:
            fd = os.open(folder / "lock", os.O_RDWR)
        except OSError:
            continue  # another user's, or not ours
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a run still going
        else:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)


def _report(snap: Snapshot, live: Path, *, report: Any) -> None:
    report.section("snapshot").update(
        source=str(live),
        journal_mode=snap.journal_mode,
        bytes=snap.size,
        seconds=round(snap.seconds, 3),
        read_locks=snap.locks,
        longest_lock_seconds=round(snap.longest_lock, 3),
        attempts=snap.attempts,
    )
    if snap.journal_mode == "wal":
        how = "WAL mode: no writer waited"
    else:
        how = f"rollback-journal mode: read-locked {plural(snap.locks, 'time')}, at most {snap.longest_lock:.2f}s"
    report.line(AREA, f"read from a snapshot of {live} taken in {snap.seconds:.1f}s ({size(snap.size)}; {how})")
