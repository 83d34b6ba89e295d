"""Cutting a stream of items into lists, and a byte stream into pieces: the one way pmigrate does either.

Items go by count and, for blob jobs, by bytes too, so that one list never
holds a few thousand small files or a few huge ones alone. A byte stream is
read into one caller-owned buffer, piece by piece, so a blob of any size is
handled in that buffer's memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")


def batched(items: Iterable[T], n: int, *, weight: Callable[[T], int] | None = None, most: int = 0) -> Iterator[list[T]]:
    """Lists of at most n items, in order; with ``weight``, a list also ends once its weights reach ``most``."""
    it = iter(items)
    if weight is None:
        while batch := list(itertools.islice(it, n)):
            yield batch
        return
    batch: list[T] = []
    total = 0
    for x in it:
        batch.append(x)
        total += weight(x)
        if len(batch) >= n or total >= most:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def pieces(stream: BinaryIO, buffer: memoryview) -> Iterator[Any]:
    """The bytes of stream up to its end, each piece read into ``buffer`` (or as read() gave it).

    A piece is valid until the next one is asked for: the buffer is reused.
    """
    readinto = getattr(stream, "readinto", None)
    if readinto is None:
        while data := stream.read(len(buffer)):
            yield data
        return
    while n := readinto(buffer):
        yield buffer[:n]
