"""The one reader that holds a blob to files.size: whatever way a backend reads, a wrong length fails before the end."""

from __future__ import annotations

import io

import pytest

from pmigrate.data.sizing import SizedReader
from pmigrate.errors import ItemError

DATA = bytes(range(256)) * 40  # 10240 bytes


class Trickle(io.RawIOBase):
    """A source that gives at most 700 bytes a read, as a socket does."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), 700, len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def _by_read(r: SizedReader, n: int) -> bytes:
    out = b""
    while chunk := r.read(n):
        assert len(chunk) == n or not r.read(n)  # filled: short only at the end
        out += chunk
    return out


def _by_readinto(r: SizedReader, n: int) -> bytes:
    out, buf = b"", bytearray(n)
    while got := r.readinto(buf):
        out += bytes(buf[:got])
    return out


@pytest.mark.parametrize("consume", [_by_read, _by_readinto])
@pytest.mark.parametrize("expected", [len(DATA), -1])
def test_the_right_length_or_an_unknown_one_reads_whole(consume, expected):
    r = SizedReader(Trickle(DATA), expected=expected, item="F")
    assert consume(r, 4096) == DATA
    r.ensure_complete()
    assert r.count == len(DATA) and r.error is None


@pytest.mark.parametrize("consume", [_by_read, _by_readinto])
@pytest.mark.parametrize("delta", [-1, 1])
def test_a_wrong_length_fails(consume, delta):
    r = SizedReader(Trickle(DATA), expected=len(DATA) + delta, item="F")
    with pytest.raises(ItemError) as info:
        consume(r, 4096)
    assert info.value.kind == "size-mismatch" and r.error is info.value


def test_a_longer_source_fails_once_files_size_went_through():
    """A consumer that stops at files.size (an SDK told the length) still meets the extra byte."""
    r = SizedReader(Trickle(DATA), expected=len(DATA) - 1, item="F")
    with pytest.raises(ItemError):
        r.read(len(DATA) - 1)


def test_a_wrapped_reader_is_not_wrapped_again():
    r = SizedReader(io.BytesIO(DATA), expected=len(DATA), item="F")
    assert SizedReader.over(r, expected=len(DATA), item="F") is r
    assert SizedReader.over(r, expected=-1, item="F") is not r
