"""Small stream adapters the object-store backends share.

Object-store SDKs want either the whole body, a file object they may probe
(tell/seek) or an iterator; the engine hands a backend one forward-only
stream. These adapters bridge the two without buffering a whole blob.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import BinaryIO


class SourceFailure(Exception):
    """A source stream's error carried through an SDK, which might otherwise retry or
    re-class it (swiftclient retries any OSError as its own connection's)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.exc = exc


class Shielded:
    """A reader whose errors reach the backend as SourceFailure, to be unwrapped there."""

    def __init__(self, src: object) -> None:
        self._src = src

    def read(self, n: int = -1) -> bytes:
        try:
            return self._src.read(n)  # type: ignore[attr-defined]
        except Exception as exc:  # unwrapped again by the backend
            raise SourceFailure(exc) from exc


class Prefixed:
    """Bytes already read (a peeked head) followed by the rest of a stream.

    Deliberately not an io.IOBase: SDKs that see tell()/seek() assume they can
    rewind, and a forward-only stream cannot.
    """

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = memoryview(head)
        self._rest = rest
        self._pos = 0

    def tell(self) -> int:
        """Bytes handed out so far (resumable uploads check it; there is no seek)."""
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes unless the stream ends (SDKs take a short read for the end)."""
        out = self._read(n)
        if n is not None and 0 < len(out) < n:
            parts = [out]
            got = len(out)
            while got < n:
                more = self._read(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            out = b"".join(parts)
        self._pos += len(out)
        return out

    def _read(self, n: int | None) -> bytes:
        if self._head:
            if n is None or n < 0:
                out = bytes(self._head) + self._rest.read()
                self._head = memoryview(b"")
                return out
            out = bytes(self._head[:n])
            self._head = self._head[n:]
            return out
        return self._rest.read(-1 if n is None else n)

    def peek_eof(self) -> bool:
        """True when nothing is left; reads (and keeps) one byte to know."""
        if self._head:
            return False
        one = self._rest.read(1)
        if not one:
            return True
        self._head = memoryview(one)
        return False


class Limited:
    """At most `limit` bytes of a Prefixed stream, counting what went through."""

    def __init__(self, src: Prefixed, limit: int) -> None:
        self._src = src
        self._left = limit
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        if n is None or n < 0 or n > self._left:
            n = self._left
        chunk = self._src.read(n)
        self._left -= len(chunk)
        self.count += len(chunk)
        return chunk


class ChunkReader(io.RawIOBase):
    """A readable binary stream over a `read(n)` callable, mapping SDK errors.

    `translate` turns an SDK exception into pmigrate's taxonomy, so that an
    error halfway through a blob is classed like one at the start.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        *,
        translate: Callable[[BaseException], BaseException],
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._read = read
        self._translate = translate
        self._on_close = on_close
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        want = len(buffer)
        if not want:
            return 0
        if self._pending:
            data, self._pending = self._pending[:want], self._pending[want:]
        else:
            try:
                data = self._read(want)
            except Exception as exc:  # re-raised as pmigrate's class
                raise self._translate(exc) from exc
            if len(data) > want:
                data, self._pending = data[:want], data[want:]
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._on_close is not None:
            try:
                self._on_close()
            except Exception:  # noqa: BLE001 - closing a finished download must not fail it
                pass
        super().close()
