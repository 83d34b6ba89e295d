"""A reader that refuses to end at the wrong length, shared by the backends.

A blob whose length differs from files.size must never land under its final
name. Wrapping the source in SizedReader makes the store's own upload fail
(and abort) before it completes, whatever the backend's upload code does.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from pmigrate.errors import ItemError, Kind


def size_error(*, item: str, expected: int, got: int) -> ItemError:
    more = "more" if got > expected else "fewer"
    return ItemError(
        f"blob {item}: source gave {more} bytes than files.size ({got} != {expected})", item=item, kind=Kind.SIZE_MISMATCH
    )


class SizedReader:
    """Read-only, non-seekable view of src that fills every read and raises ItemError(kind=Kind.SIZE_MISMATCH) on a length mismatch."""

    def __init__(self, src: BinaryIO, *, expected: int, item: str) -> None:
        self._src = src
        self._expected = expected
        self._item = item
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        """Up to n bytes, fewer only at the end: upload code takes a short read for the end of the blob."""
        at_end = n is None or n < 0
        if at_end:
            data = self._src.read()
        else:
            data = self._src.read(n)
            if data and len(data) < n:
                # BytesIO.getvalue() hands over its buffer without a copy: one part in memory, not two
                acc = io.BytesIO()
                acc.write(data)
                del data
                while acc.tell() < n:
                    more = self._src.read(n - acc.tell())
                    if not more:
                        break
                    acc.write(more)
                data = acc.getvalue()
        self.count += len(data)
        if self._expected >= 0:
            if self.count > self._expected or ((at_end or (not data and n != 0)) and self.count != self._expected):
                raise size_error(item=self._item, expected=self._expected, got=self.count)
        return data

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        pass
