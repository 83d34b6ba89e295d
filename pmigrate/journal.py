"""The resume journal: an SQLite file listing blobs whose copy is durable on the target.

Only the parent writes it, in group commits: results are buffered, then the
engine makes the target durable (``sync()``: one syncfs for the file backend,
nothing for object stores, whose PUT is durable when it returns) and only then
commits the batch. So a row here always means "these bytes survive a crash";
losing the last uncommitted batch only means copying it again.

It is the run's record of one target, apart from any stage: the blob copy
writes it, verify reads and corrects it, the metadata copy keeps the SSE-C
secret there, and the run's lock finds it.

The journal belongs to one target: its data identity (backend and non-secret
options) is stored inside and checked, and its default file name carries a
short hash of it. It may also keep a secret of that target (the one SSE-C
keys made by pmigrate derive from, data/ssekeys.py); the file is then
readable by its owner only. The done set is read per batch of ids, never
whole, so a deployment with millions of files costs no memory here.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pmigrate.batching import batched
from pmigrate.data import registry
from pmigrate.errors import ConfigError
from pmigrate.redact import SECRET_KEYS

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blobs (
    file_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    xxh3 TEXT NOT NULL,          -- hex xxh3-128; 'server-side' when no byte passed through pmigrate
    md5 TEXT NOT NULL DEFAULT '',-- hex MD5 when --checksum md5
    seconds REAL NOT NULL DEFAULT 0,
    done_at REAL NOT NULL,
    upload_id TEXT NOT NULL DEFAULT '', -- where the blob's key is, after plikd purged its row (--prune)
    src TEXT NOT NULL DEFAULT '' -- digest of the source row the blob came from (transfer/delta.py); '' in older journals
) WITHOUT ROWID;
"""

LOOKUP_CHUNK = 500  # ids per IN (...) query, under every SQLite's parameter limit
VOUCH_ROWS = 4096  # digests given to listed rows per transaction


def target_identity(backend: str, options: Mapping[str, Any]) -> str:
    """A stable text naming where the target keeps its blobs (no secrets in it)."""
    # Secrets aside (named so, or declared by the backend), and run options ("pmigrate.*"), which say nothing of where blobs are
    declared = {o.name.lower() for o in registry.spec(backend).options if o.secret}
    hidden = SECRET_KEYS | declared
    public = {k: v for k, v in sorted(options.items()) if k.lower() not in hidden and not k.startswith("pmigrate.")}
    return json.dumps([backend, public], sort_keys=True, default=str, separators=(",", ":"))


def locate(target: Any, journal: Path | None) -> tuple[Path, str]:
    """(path, identity) of a target's journal (target: a PlikConfig): --journal, else the default beside it."""
    identity = target_identity(target.data.backend, target.data.options)
    return (Path(journal) if journal else default_path(target.path, identity)), identity


def default_path(target_config: Path, identity: str) -> Path:
    """``.pmigrate-journal-<hash of target>.db`` beside the target config."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return target_config.resolve().parent / f".pmigrate-journal-{digest}.db"


class Journal:
    """An open journal. ``record`` buffers; ``commit`` writes the buffer in one transaction."""

    def __init__(self, con: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._con = con
        self.path = path
        self.readonly = readonly
        self._pending: list[tuple[str, int, str, str, float, float, str, str]] = []
        self._vouched: list[tuple[str, str]] = []  # (src digest, file_id) of blobs found on the target, for rows without one
        # One connection, used by the parent's main thread (lookups) and by
        # the thread that commits after the target is made durable.
        self._lock = threading.Lock()

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, identity: str, restart: bool = False) -> Journal:
        """Open or create for writing; ``restart`` empties it first."""
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a power cut may lose the last commits, never corrupt; a lost
        # row only means copying that blob again.
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(SCHEMA)
        _upgrade(con)
        j = cls(con, path, readonly=False)
        stored = j.identity()
        if stored is not None and stored != identity and not restart:
            con.close()
            raise _foreign(path)
        con.execute("BEGIN IMMEDIATE")
        if restart:
            con.execute("DELETE FROM blobs")
        con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('target', ?)", (identity,))
        con.execute("COMMIT")
        return j

    @classmethod
    def peek(cls, path: Path, *, identity: str) -> Journal | None:
        """Open an existing journal read-only (preflight, dry run); None when absent."""
        if not path.exists():
            return None
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            j = cls(con, path, readonly=True)
            stored = j.identity()
        except sqlite3.Error as exc:
            raise ConfigError(
                f"journal {path} cannot be read ({exc}): pass --restart to start afresh, or --journal with another path"
            ) from None
        if stored is not None and stored != identity:
            con.close()
            raise _foreign(path)
        return j

    def identity(self) -> str | None:
        try:
            row = self._con.execute("SELECT value FROM meta WHERE key = 'target'").fetchone()
        except sqlite3.OperationalError:
            return None  # no table yet
        return row[0] if row else None

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def rebase(self, key: str, value: str) -> None:
        """Set meta ``key`` and, in the same transaction, forget every row's source digest (transfer/delta.py)."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            self._con.execute("UPDATE blobs SET src = '' WHERE src != ''")
            self._con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
            self._con.execute("COMMIT")

    def secret(self, name: str, *, create: bool = False) -> bytes | None:
        """A random 256-bit secret of this target; made on first request with create=True.

        Made, it is committed with a full fsync before it is returned: nothing
        derived from it is used before it is durable. --restart keeps it.
        """
        with self._lock:
            row = self._con.execute("SELECT value FROM meta WHERE key = ?", (f"secret:{name}",)).fetchone()
        if row is not None:
            return bytes.fromhex(row[0])
        if not create or self.readonly:
            return None
        for suffix in ("", "-wal", "-shm"):  # SQLite gives new -wal and -shm files the mode of the database
            if os.path.exists(f"{self.path}{suffix}"):
                os.chmod(f"{self.path}{suffix}", 0o600)
        with self._lock:
            self._con.execute("PRAGMA synchronous=FULL")
            try:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", (f"secret:{name}", secrets.token_hex(32))
                )
                self._con.execute("COMMIT")
            finally:
                self._con.execute("PRAGMA synchronous=NORMAL")
        return self.secret(name)

    # -- reading -----------------------------------------------------------------
    def done(self, ids: Sequence[str]) -> dict[str, int]:
        """file_id -> size for those of ``ids`` the journal lists as done."""
        out: dict[str, int] = {}
        for part in batched(ids, LOOKUP_CHUNK):
            marks = ",".join("?" * len(part))
            with self._lock:
                found = self._con.execute(f"SELECT file_id, size FROM blobs WHERE file_id IN ({marks})", part).fetchall()
            out.update(found)
        return out

    def lookup(self, ids: Sequence[str]) -> dict[str, tuple[int, str, str]]:
        """file_id -> (size, xxh3, md5) for those of ``ids`` that are listed."""
        out: dict[str, tuple[int, str, str]] = {}
        for part in batched(ids, LOOKUP_CHUNK):
            marks = ",".join("?" * len(part))
            q = f"SELECT file_id, size, xxh3, md5 FROM blobs WHERE file_id IN ({marks})"
            with self._lock:
                found = self._con.execute(q, part).fetchall()
            for fid, size, xxh3, md5 in found:
                out[fid] = (size, xxh3, md5)
        return out

    def digests(self, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
        """file_id -> (size, source row digest) for those of ``ids`` listed; '' for rows of an older journal."""
        out: dict[str, tuple[int, str]] = {}
        if not self._has_src():
            return {fid: (size, "") for fid, size in self.done(ids).items()}
        for i in range(0, len(ids), LOOKUP_CHUNK):
            part = ids[i : i + LOOKUP_CHUNK]
            marks = ",".join("?" * len(part))
            with self._lock:
                found = self._con.execute(f"SELECT file_id, size, src FROM blobs WHERE file_id IN ({marks})", part).fetchall()
            for fid, size, src in found:
                out[fid] = (size, src)
        return out

    def _has_src(self) -> bool:
        """A journal opened read-only may predate the src column."""
        if not hasattr(self, "_src_column"):
            with self._lock:
                cols = {r[1] for r in self._con.execute("PRAGMA table_info(blobs)")}
            self._src_column = "src" in cols
        return self._src_column

    def totals(self) -> tuple[int, int]:
        """(blobs, bytes) listed as done."""
        try:
            with self._lock:
                n, size = self._con.execute("SELECT count(*), coalesce(sum(size), 0) FROM blobs").fetchone()
        except sqlite3.OperationalError:
            return 0, 0  # no table yet
        return int(n), int(size)

    def count(self) -> int:
        with self._lock:
            return self._con.execute("SELECT count(*) FROM blobs").fetchone()[0]

    # -- writing -----------------------------------------------------------------
    def record(self, *, file_id: str, size: int, xxh3: str, md5: str = "", seconds: float = 0.0, upload_id: str = "", src: str = "") -> None:
        self._pending.append((file_id, size, xxh3, md5, seconds, time.time(), upload_id, src))

    def vouch(self, *, file_id: str, src: str) -> None:
        """Give a listed row the digest of its source row, once the target was found to hold its blob."""
        self._vouched.append((src, file_id))
        if len(self._vouched) >= VOUCH_ROWS:
            self._write_vouched()

    def _write_vouched(self) -> None:
        # Nothing to make durable first: the target already held these blobs when they were found.
        rows, self._vouched = self._vouched, []
        if rows and not self.readonly:
            with self._lock:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany("UPDATE blobs SET src = ? WHERE file_id = ?", rows)
                self._con.execute("COMMIT")

    @property
    def pending(self) -> int:
        return len(self._pending)

    def take(self) -> list[tuple]:
        """The rows recorded so far, handed over to write() once they are durable."""
        rows, self._pending = self._pending, []
        return rows

    def write(self, rows: list[tuple]) -> int:
        """Commit rows from take(); call only once those blobs are durable. Thread-safe."""
        if rows:
            with self._lock:
                self._con.execute("BEGIN IMMEDIATE")
                self._con.executemany(
                    "INSERT OR REPLACE INTO blobs(file_id, size, xxh3, md5, seconds, done_at, upload_id, src) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._con.execute("COMMIT")
        return len(rows)

    def commit(self) -> int:
        """Write what was recorded; call only once those blobs are durable."""
        return self.write(self.take())

    def forget(self, ids: Iterable[str]) -> None:
        """Drop rows (a blob found wrong on the target must be copied again)."""
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            self._con.executemany("DELETE FROM blobs WHERE file_id = ?", [(i,) for i in ids])
            self._con.execute("COMMIT")

    def close(self) -> None:
        if self._vouched:
            try:
                self._write_vouched()
            except sqlite3.Error:  # only costs a stat of those blobs again next time
                pass
        with self._lock:
            self._con.close()


def _upgrade(con: sqlite3.Connection) -> None:
    """A journal written before rows named their upload or carried their source digest gets the columns, empty.

    Rows without a digest are checked on the target once; without an upload id,
    a purged row's key is found only where it does not name the upload (file, S3).
    """
    cols = {r[1] for r in con.execute("PRAGMA table_info(blobs)")}
    for name in ("upload_id", "src"):
        if name not in cols:
            con.execute(f"ALTER TABLE blobs ADD COLUMN {name} TEXT NOT NULL DEFAULT ''")


def unwritable(path: Path, exc: sqlite3.Error) -> ConfigError:
    """The journal cannot be opened for writing, found before any blob is copied: one line, cause and fix."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return ConfigError(f"journal {path} cannot be written: its disk is full: free space there, or pass --journal with a path on another disk")
    return ConfigError(f"journal {path} cannot be written ({exc}): pass --journal with another path")


def _foreign(path: Path) -> ConfigError:
    return ConfigError(
        f"journal {path} belongs to another target: pass --journal with another path, or --restart to reuse it"
    )
