"""The one reader that holds a blob to its size, shared by the copy and every backend.

A blob whose length differs from files.size must never land under its final
name. Wrapping the source in SizedReader makes the store's own upload fail
(and abort) before it completes, whatever the backend's upload code does:
a shorter source fails at its end, a longer one at the first byte past
files.size, found by peeking one byte once that many went through (before an
SDK that knows the length could finish an upload of exactly that many).
An expected size below 0 is unknown (files.size NULL): nothing is checked.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, BinaryIO

from pmigrate.errors import ItemError, Kind


def size_error(*, item: str, expected: int, got: int) -> ItemError:
    more = "more" if got > expected else "fewer"
    return ItemError(
        f"blob {item}: source gave {more} bytes than files.size ({got} != {expected})", item=item, kind=Kind.SIZE_MISMATCH
    )


class SizedReader:
    """Read-only, non-seekable view of src that fills every read and raises ItemError(kind=Kind.SIZE_MISMATCH) on a length mismatch.

    ``error`` keeps the first error raised, for a caller whose SDK wrapped it.
    Subclasses see every read of the source in _guard and every byte that
    goes through in _took.
    """

    def __init__(self, src: BinaryIO, *, expected: int, item: str) -> None:
        self._src = src
        self.expected = expected
        self._item = item
        self.count = 0
        self.finished = False  # the source's end was seen
        self.error: BaseException | None = None

    @classmethod
    def over(cls, src: Any, *, expected: int, item: str) -> SizedReader:
        """src itself when it already holds the blob to this size, else src wrapped."""
        if isinstance(src, SizedReader) and src.expected == expected:
            return src
        return cls(src, expected=expected, item=item)

    # io-ish surface the backends may use
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return False

    def close(self) -> None:
        pass

    # what subclasses may change
    def _guard(self, read: Callable[[Any], Any], arg: Any) -> Any:
        """Every read of the source goes through here."""
        return read(arg)

    def _source_read(self, n: int) -> bytes:
        return self._guard(self._src.read, n)

    def _source_readinto(self, view: memoryview) -> int:
        readinto = getattr(self._src, "readinto", None)
        if readinto is None:
            data = self._source_read(len(view))
            view[: len(data)] = data
            return len(data)
        return self._guard(readinto, view) or 0

    def _took(self, data: Any) -> None:
        """Every byte that goes through, once, in order."""

    def _fail(self, exc: BaseException) -> BaseException:
        if self.error is None:
            self.error = exc
        return exc

    # reading
    def read(self, n: int | None = -1) -> bytes:
        """Up to n bytes, fewer only at the end: upload code takes a short read for the end of the blob."""
        if self.finished or n == 0:
            return self._account(b"")
        if n is None or n < 0:
            data = self._source_read(-1)
            self.finished = True
        else:
            data = self._source_read(n)
            if not data:
                self.finished = True
            elif len(data) < n:
                # BytesIO.getvalue() hands over its buffer without a copy: one part in memory, not two
                acc = io.BytesIO()
                acc.write(data)
                del data
                while acc.tell() < n:
                    more = self._source_read(n - acc.tell())
                    if not more:
                        self.finished = True
                        break
                    acc.write(more)
                data = acc.getvalue()
        return self._account(data)

    def readinto(self, buf: Any) -> int:
        view = buf if buf.__class__ is memoryview and buf.format == "B" else memoryview(buf).cast("B")
        got = 0 if self.finished else self._source_readinto(view)
        while 0 < got < len(view):  # filled up, unless the source ends
            n = self._source_readinto(view[got:])
            if not n:
                break
            got += n
        if got < len(view):
            self.finished = True
        self._account(view[:got] if got else b"")
        return got

    def _account(self, data: Any) -> Any:
        if data:
            self.count += len(data)
            if 0 <= self.expected < self.count:
                raise self._fail(size_error(item=self._item, expected=self.expected, got=self.count))
            self._took(data)
            if self.count == self.expected and not self.finished:
                if self._source_read(1):
                    raise self._fail(size_error(item=self._item, expected=self.expected, got=self.count + 1))
                self.finished = True
        if self.finished and 0 <= self.expected != self.count:
            raise self._fail(size_error(item=self._item, expected=self.expected, got=self.count))
        return data

    def ensure_complete(self) -> None:
        """Read on to the end when the consumer stopped early (it may trust files.size): a longer source fails here."""
        if not self.finished and self.read(1):
            message = f"blob {self._item}: the target took {self.count - 1} bytes, the source holds more"
            raise self._fail(ItemError(message, item=self._item, kind=Kind.SIZE_MISMATCH))
