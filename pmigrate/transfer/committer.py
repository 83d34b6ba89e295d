"""The journal's group commit: what the workers copied is made durable, then the journal says so.

One syncfs (the target backend's sync()) covers a whole batch of blobs, so
the journal never lists a blob a crash could still lose. It runs in a thread
of its own, so that the parent keeps feeding workers while the filesystem
flushes; one commit at a time, and the next batch waits its turn.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from pmigrate.data.base import DataBackend
from pmigrate.errors import FatalError, PmigrateError
from pmigrate.journal import Journal
from pmigrate.transfer import stopcause

COMMIT_ROWS = 4096  # journal rows per group commit ...
COMMIT_SECONDS = 1.0  # ... or at least this often


class Committer:
    """Commits the journal's pending rows after the target's sync, in the background."""

    def __init__(self, journal: Journal, dst: DataBackend) -> None:
        self.journal = journal
        self.dst = dst
        self.last = time.monotonic()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._unlisted = 0  # blobs durable on the target whose journal rows could not be written

    def due(self) -> bool:
        """True once enough rows wait, or long enough since the last commit."""
        return self.journal.pending >= COMMIT_ROWS or time.monotonic() - self.last >= COMMIT_SECONDS

    def commit(self, *, wait: bool = False) -> None:
        """Start a commit of what is pending (skipped while one runs, unless ``wait``);
        with ``wait``, return once everything is committed. A failed commit raises here."""
        if self._thread is not None:
            if self._thread.is_alive() and not wait:
                return
            self._thread.join()
            self._thread = None
            self._raise()
        self.last = time.monotonic()
        rows = self.journal.take()
        if not rows:
            return
        if wait:
            self._durable(rows)
            self._raise()
            return
        self._thread = threading.Thread(target=self._durable, args=(rows,), name="pmigrate-journal", daemon=True)
        self._thread.start()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _durable(self, rows: list[tuple]) -> None:
        try:
            self.dst.sync()
            self.journal.write(rows)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                self._error = FatalError(f"journal commit failed: {exc}")
            else:
                self._unlisted += len(rows)
                free = stopcause.free_bytes(self.journal.path.parent)
                self._error = FatalError(stopcause.journal_full(self.journal.path, free=free, rows=self._unlisted))
        except BaseException as exc:  # noqa: BLE001 - raised again in the parent's thread
            self._error = exc if isinstance(exc, PmigrateError) else FatalError(f"journal commit failed: {exc}")
