"""stdout and stderr that may vanish mid-run: a closed terminal or SSH session.

A hung-up terminal answers EIO and a closed pipe EPIPE. Neither may turn
the end of a run into a traceback, nor keep the journal from being
committed and the JSON report from being written. So the first such write
points that stream at /dev/null, and the run goes on with nobody to read
it; at exit, Python's own flush then has nothing to fail on either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

GONE = (errno.EIO, errno.EPIPE)


class _Guarded:
    """A text stream whose writes cannot fail once its reader is gone."""

    def __init__(self, raw: TextIO) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        try:
            return self._raw.write(text)
        except OSError as exc:
            self._gone(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._raw.flush()
        except OSError as exc:
            self._gone(exc)

    def _gone(self, exc: OSError) -> None:
        if exc.errno not in GONE:
            raise exc
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, self._raw.fileno())
        finally:
            os.close(null)
        with contextlib.suppress(OSError):
            self._raw.flush()  # what was buffered goes to /dev/null now

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._raw, name)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """sys.stdout and sys.stderr guarded for the length of a run; those made meanwhile (logging, bars) included."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (s if s is None else _Guarded(s) for s in saved)  # None: started without them
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
